"""The data home is private whatever the umask: a fresh one is 0700 with files 0600 (catalogue, WAL,
indexes, uploads, the log), and an existing one open to other accounts is tightened on open."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kb.knowledge_base import KnowledgeBase
from tests.conftest import FAST_MODEL, ROOT


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: what kb created was world-readable before
    yield
    os.umask(old)


def open_to_others(home: Path) -> list[str]:
    return [f"{p.relative_to(home)} {stat.S_IMODE(p.lstat().st_mode):o}" for p in [home, *home.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o077]


def test_a_fresh_home_is_private_under_umask_022(settings, tmp_path, umask_022):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pay.md").write_text("# Pay\n\nSECRET: the bonus pool is 4.2 million.\n", encoding="utf-8")
    os.umask(0o022)
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    job, _ = kb.submit_uploads([("leave.md", 20, lambda: b"# Leave\n\nthirty days\n")])
    home = settings.home
    assert (home / "catalogue.sqlite3").exists() and (home / "uploads" / "default" / "leave.md").exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert open_to_others(home) == []
    env = {**os.environ, "KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120",
           "KB_CHUNKING__OVERLAP_TOKENS": "20"}
    subprocess.run([sys.executable, "-m", "app.cli", "--home", str(home), "status"], cwd=ROOT, env=env,
                   check=True, capture_output=True, preexec_fn=lambda: os.umask(0o022))
    assert (home / "kb.log").exists() and open_to_others(home) == []  # the CLI's log file too


def test_an_existing_home_open_to_others_is_tightened_with_a_message(settings, caplog, umask_022):
    home = settings.home
    (home / "uploads").mkdir(parents=True)
    (home / "uploads" / "old.md").write_text("x")
    (home / "catalogue.sqlite3").touch()
    for p in (home, home / "uploads"):
        p.chmod(0o755)
    (home / "catalogue.sqlite3").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="kb.private_home"):
        KnowledgeBase(settings=settings)
    assert open_to_others(home) == []
    assert [r.getMessage() for r in caplog.records if "made it private" in r.getMessage()]
    caplog.clear()
    KnowledgeBase(settings=settings)
    assert not caplog.records  # said once: a private home is left as it is
