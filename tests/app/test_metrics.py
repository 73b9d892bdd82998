"""`kb serve --workers 2`: /metrics adds up every server process's counters, whichever process answers
the scrape (each used to report only its own, so two scrapes disagreed and both undercounted)."""

from __future__ import annotations

import re
import sys

import httpx
import pytest

from kb.knowledge_base import KnowledgeBase
from kb.settings import EmbeddingSettings, Settings
from tests.conftest import ROOT
from tests.processes import free_port, running

pytestmark = pytest.mark.slow


def test_metrics_count_every_worker_process(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pumps\n\nError XQZ4471 means the impeller is blocked.\n")
    home = tmp_path / "home"
    kb = KnowledgeBase(settings=Settings(home=home, embedding=EmbeddingSettings(model="hash-384")))
    kb.sync([docs])
    kb.access.add_user("tester", "tester-password", admin=True)
    token = kb.access.create_token("tester")
    port = free_port()
    with running([sys.executable, "-m", "app.cli", "--home", str(home), "serve", "--port", str(port),
                  "--workers", "2"], f"http://127.0.0.1:{port}/healthz", tmp_path / "serve.log",
                 {"KB_EMBEDDING__MODEL": "hash-384"}, cwd=ROOT):
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(40):  # a new connection each: the two processes share them out
            r = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"question": "XQZ4471"}, headers=auth)
            assert r.status_code == 200
        for _ in range(6):
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=auth).text
            line = re.search(r'kb_requests_total\{method="POST",route="/v1/search",status="200"\} (\S+)', text)
            assert line and float(line.group(1)) == 40, text[:2000]
            assert 'kb_chunks{collection="default"} 1.0' in text
    assert (home / "run" / "metrics").is_dir()
