"""More than one machine: two `kb serve` nodes, each with its own home (local FAISS + keyword copies),
on one real PostgreSQL catalogue, while a third process re-indexes. Both nodes answer from the new
document within seconds and never error; a node started later builds its indexes from the catalogue."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import FAST_MODEL, ROOT, SAMPLES
from tests.processes import free_port, running

pytestmark = pytest.mark.slow
ENV = {"KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120", "KB_CHUNKING__OVERLAP_TOKENS": "20"}
NEW = "Badger rotation: the on-call badger keeper changes every Tuesday at the Kestrel datacenter."


def serve(home, log, env):  # noqa: ANN001, ANN201
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "app.cli", "--home", str(home), "serve", "--port", str(port), "--no-jobs"]
    return running(cmd, url + "/healthz", log, env, cwd=ROOT), url


TOKEN: dict[str, str] = {}


def top_document(url: str, question: str) -> str | None:
    r = httpx.post(url + "/v1/search", json={"question": question, "top_k": 1}, timeout=30, headers=TOKEN)
    r.raise_for_status()
    contexts = r.json()["contexts"]
    return contexts[0]["document"] if contexts else None


def kb_cli(home, *args, env):  # noqa: ANN001, ANN201
    return subprocess.run([sys.executable, "-m", "app.cli", "--home", str(home), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, start_new_session=True)


def test_two_nodes_follow_a_third_writer_and_a_late_node_builds_from_the_catalogue(postgres_url, tmp_path):
    import os

    env = {**os.environ, **ENV, "KB_DATABASE_URL": postgres_url}
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLES / "debian-faq-getting-debian.en.md", docs / "getting.md")
    writer_home = tmp_path / "writer"
    assert kb_cli(writer_home, "reindex", str(docs), env=env).returncode == 0
    assert kb_cli(writer_home, "user", "add", "reader", "--password", "reader-password", env=env).returncode == 0
    assert kb_cli(writer_home, "grant", "reader", "default", "read", env=env).returncode == 0
    made = kb_cli(writer_home, "token", "create", "reader", env=env)
    TOKEN["Authorization"] = "Bearer " + made.stdout.strip().splitlines()[-1]  # the token alone on the last line

    (a_ctx, a), (b_ctx, b) = serve(tmp_path / "node-a", tmp_path / "a.log", env), serve(tmp_path / "node-b",
                                                                                         tmp_path / "b.log", env)
    with a_ctx, b_ctx:
        for url in (a, b):  # fresh homes: built from the catalogue on first use
            assert top_document(url, "How do I get Debian?") == "getting.md"
        errors: list[str] = []
        stop = threading.Event()

        def hammer(url: str) -> None:
            while not stop.is_set():
                try:
                    top_document(url, "Who is the badger keeper?")
                except httpx.HTTPError as exc:
                    errors.append(f"{url}: {exc}")

        threads = [threading.Thread(target=hammer, args=(u,)) for u in (a, b)]
        for t in threads:
            t.start()
        try:
            (docs / "oncall.md").write_text(f"# On-call\n\n{NEW}\n", encoding="utf-8")
            assert kb_cli(writer_home, "reindex", env=env).returncode == 0  # the third process
            written = time.monotonic()
            seen = {}
            while len(seen) < 2 and time.monotonic() - written < 15:
                for name, url in (("a", a), ("b", b)):
                    if name not in seen and top_document(url, "Who is the on-call badger keeper?") == "oncall.md":
                        seen[name] = round(time.monotonic() - written, 2)
                time.sleep(0.2)
            assert set(seen) == {"a", "b"}, seen  # both nodes found the new document within 15 s
            (docs / "getting.md").unlink()
            assert kb_cli(writer_home, "reindex", env=env).returncode == 0
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                    top_document(u, "How do I get Debian?") == "getting.md" for u in (a, b)):
                time.sleep(0.2)
            assert all(top_document(u, "How do I get Debian?") != "getting.md" for u in (a, b))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:3]
        for url in (a, b):
            status = httpx.get(url + "/v1/status", timeout=30, headers=TOKEN).json()
            assert status["consistent"] and status["documents"] == 1

    c_ctx, c = serve(tmp_path / "node-c", tmp_path / "c.log", env)  # started later, from nothing
    with c_ctx:
        assert top_document(c, "Who is the on-call badger keeper?") == "oncall.md"
        status = httpx.get(c + "/v1/status", timeout=30, headers=TOKEN).json()
        assert status["consistent"] and status["index_vectors"] == status["chunks"] > 0
    assert (tmp_path / "node-c" / "collections" / "default" / "index.faiss").exists()
    print(f"new document visible after (s): {seen}")
