"""A client that goes away from a streamed answer stops the model: `kb serve` with a tiny random Qwen2
(transformers backend, real HTTP), the client disconnects after the first tokens, and the server's CPU
goes quiet within a second instead of generating on to max_new_tokens."""

from __future__ import annotations

import json
import sys
import time

import httpx
import psutil
import pytest

from kb.knowledge_base import KnowledgeBase
from kb.settings import ChunkingSettings, EmbeddingSettings, Settings
from tests.conftest import FAST_MODEL, ROOT
from tests.processes import free_port, running
from tests.tiny_models import build_qwen2

pytestmark = pytest.mark.slow
QUESTION = {"question": "When do the nightly backups of the file server run?"}


def test_a_disconnecting_stream_stops_the_generation(tmp_path):
    model = build_qwen2(tmp_path / "qwen2")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backup.md").write_text("# Backups\n\nNightly backups of the file server run at 02:00 and are "
                                    "kept for thirty days.\n", encoding="utf-8")
    home = tmp_path / "home"
    kb = KnowledgeBase(settings=Settings(home=home, embedding=EmbeddingSettings(model=FAST_MODEL),
                                         chunking=ChunkingSettings(chunk_tokens=120, overlap_tokens=20)))
    kb.sync([docs])
    kb.access.add_user("tester", None, admin=True)
    token = kb.access.create_token("tester")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120", "KB_CHUNKING__OVERLAP_TOKENS": "20",
           "KB_GENERATOR__BACKEND": "transformers", "KB_GENERATOR__MODEL": str(model),
           "KB_GENERATOR__TEMPERATURE": "0", "KB_GENERATOR__MAX_NEW_TOKENS": "2500", "KB_SERVE_JOBS": "0"}
    with running([sys.executable, "-m", "app.cli", "--home", str(home), "serve", "--port", str(port), "--no-jobs"],
                 url + "/healthz", tmp_path / "serve.log", env, cwd=ROOT) as proc, \
            httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as c:
        server = psutil.Process(proc.pid)
        t0 = time.perf_counter()
        whole = c.post("/v1/ask", json=QUESTION).json()  # loads the model; shows how long a full answer runs
        full_s = time.perf_counter() - t0
        assert whole["usage"]["completion_tokens"] >= 1500, whole["usage"]  # it does not stop on its own
        with c.stream("POST", "/v1/ask", json={**QUESTION, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and "text" in json.loads(line[5:]):
                    break  # the first token arrived: go away
        time.sleep(1.0)
        cpu0 = sum(server.cpu_times()[:2])
        time.sleep(2.0)
        busy = sum(server.cpu_times()[:2]) - cpu0
        assert busy < 0.4, f"the server kept working {busy:.2f} s of CPU in 2 s (a full answer takes {full_s:.1f} s)"
        t1 = time.perf_counter()
        again = c.post("/v1/ask", json=QUESTION)  # the model's lock was released
        assert again.status_code == 200 and time.perf_counter() - t1 < full_s + 30
