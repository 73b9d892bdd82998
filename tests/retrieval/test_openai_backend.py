"""The OpenAI-compatible backend against a real server (`transformers serve` of the tiny Qwen2 model),
and against real local HTTP servers that are down, hang, fail once, or answer garbage."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kb.errors import GeneratorError
from kb.knowledge_base import KnowledgeBase
from kb.settings import GeneratorSettings
from retrieval.generators import OpenAIGenerator
from retrieval.prompt import build_prompt
from retrieval.types import Context
from tests.processes import free_port, running
from tests.tiny_models import build_qwen2

CONTEXTS = [Context(1, 0.9, "Nightly backups run at 02:00.", None, None, "/docs/backup.md", 1)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`transformers serve` on a free port with the tiny model preloaded; yields (base_url, model)."""
    model = build_qwen2(tmp_path_factory.mktemp("served") / "qwen2")
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    with running([str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                 f"http://127.0.0.1:{port}/health", model.parent / "serve.log", {"HF_HUB_OFFLINE": "1"}):
        yield f"http://127.0.0.1:{port}/v1", str(model)


def test_streams_from_a_real_openai_compatible_server(served):
    url, model = served
    gen = OpenAIGenerator(GeneratorSettings(backend="openai", base_url=url, model=model, max_new_tokens=8))
    usage: dict = {}
    pieces = list(gen.stream(build_prompt("When do backups run?", CONTEXTS), usage))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert usage["prompt_tokens"] > 20 and 1 <= usage["completion_tokens"] <= 8


def test_kb_ask_through_the_openai_backend(served, settings, tmp_path):
    url, model = served
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backup.md").write_text("# Backups\n\nNightly backups of the file server run at 02:00 and are kept 30 days.\n")
    settings = settings.model_copy(update={"generator": GeneratorSettings(base_url=url, model=model, max_new_tokens=8)})
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    answer = kb.ask("When do the nightly backups run?", backend="openai")
    assert answer.backend == "openai" and answer.model == model
    assert answer.usage["completion_tokens"] >= 1 and "generate" in answer.timings
    assert answer.contexts[0].source.endswith("backup.md")


class _Misbehaving(BaseHTTPRequestHandler):
    """Real HTTP handlers that fail the ways endpoints do (a fake server, named as one)."""

    mode = "garbage"
    calls = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.mode == "hang":
            time.sleep(3)
        if self.mode == "fail_once" and type(self).calls == 1:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if self.mode == "garbage":
            self.wfile.write(b"<html>hello, this is not an API</html>\n")
            return
        for text in ("Backups run", " at 02:00 [1]."):
            chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def misbehaving():
    servers = []

    def start(mode: str) -> str:
        handler = type("Handler", (_Misbehaving,), {"mode": mode, "calls": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for s in servers:
        s.shutdown()


def gen_for(url: str, **kw) -> OpenAIGenerator:
    return OpenAIGenerator(GeneratorSettings(backend="openai", base_url=url, model="m", retries=1, **kw))


def test_server_down_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(GeneratorError, match="cannot reach the generator .* is the server running"):
        gen_for(url).generate(build_prompt("q?", CONTEXTS))


def test_server_that_hangs_times_out(misbehaving):
    with pytest.raises(GeneratorError, match="did not answer within 0.5 s"):
        gen_for(misbehaving("hang"), timeout_s=0.5).generate(build_prompt("q?", CONTEXTS))


def test_garbage_is_an_error_not_an_empty_answer(misbehaving):
    with pytest.raises(GeneratorError, match="not answer with an OpenAI event stream"):
        gen_for(misbehaving("garbage")).generate(build_prompt("q?", CONTEXTS))


def test_a_busy_server_is_retried(misbehaving):
    assert gen_for(misbehaving("fail_once")).generate(build_prompt("q?", CONTEXTS)) == "Backups run at 02:00 [1]."
