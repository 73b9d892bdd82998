"""SIGKILL a real `kb reindex` at several points: the index and catalogue stay consistent, and the
next run finishes the job without redoing committed files or duplicating chunks."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kb.catalogue import Chunk, Document
from kb.knowledge_base import KnowledgeBase
from kb.settings import Settings
from tests.conftest import FAST_MODEL, ROOT, SAMPLES, consistent



def _env(home: Path, crash_at: str = "") -> dict:
    env = dict(os.environ)
    env.update(KB_HOME=str(home), KB_EMBEDDING__MODEL=FAST_MODEL, KB_INGEST__WRITE_BATCH_CHUNKS="25",
               KB_CRASH_AT=crash_at, PYTHONPATH=str(ROOT))
    return env


def _reindex(home: Path, corpus: Path, crash_at: str = "", kill_after_first_commit_s: float | None = None) -> int:
    cmd = [sys.executable, "-m", "app.cli", "reindex", str(corpus)]
    proc = subprocess.Popen(cmd, env=_env(home, crash_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    if kill_after_first_commit_s is not None:
        db = home / "catalogue.sqlite3"
        while proc.poll() is None and _committed_documents(db) == 0:
            time.sleep(0.05)
        time.sleep(kill_after_first_commit_s)
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=600)
    return proc.returncode


def _committed_documents(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0  # tables not created yet


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for name in ("debian-faq-getting-debian.en.md", "debian-faq-software.en.html",
                 "debian-faq-pkg-basics.zh-cn.html", "debian-faq-support.zh-cn.docx"):
        shutil.copy(SAMPLES / name, d / name)
    return d


def _committed_docs_are_whole(home: Path) -> int:
    """Every committed document has exactly its chunks; returns how many are committed."""
    kb = KnowledgeBase(settings=Settings(home=home))
    with kb.catalogue.session() as s:
        docs = s.scalars(select(Document)).all()
        for d in docs:
            n = s.scalar(select(func.count(Chunk.id)).where(Chunk.document_id == d.id))
            assert n == d.chunk_count, d.path
    return len(docs)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["after_keyword_commit:2", "before_index_save:2", "after_index_save:2",
                                      "after_commit:1", "timed"])
def test_sigkill_then_reindex_is_consistent(tmp_path, corpus, crash_at, monkeypatch):
    home = tmp_path / "home"
    if crash_at == "timed":  # mid-way at a random moment: after the first committed file, before the end
        code = _reindex(home, corpus, kill_after_first_commit_s=random.uniform(0.0, 1.0))
    else:
        code = _reindex(home, corpus, crash_at=crash_at)
    assert code == -signal.SIGKILL  # it really was killed, not finished
    committed = _committed_docs_are_whole(home) if (home / "catalogue.sqlite3").exists() else 0

    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    kb = KnowledgeBase(home=home)
    report = kb.sync([corpus])
    assert not report.failed
    assert len(report.unchanged) == committed  # committed files are not redone
    assert len(report.added) == 4 - committed
    docs, chunks = consistent(kb)
    assert docs == 4

    # The same corpus indexed in one clean run gives the same chunk count: nothing lost, nothing doubled.
    clean = KnowledgeBase(home=tmp_path / "clean")
    clean.sync([corpus])
    assert chunks == consistent(clean)[1]


def test_second_writer_waits_then_fails_clearly(settings, tmp_path):
    from filelock import FileLock

    from kb.errors import LockedError

    kb = KnowledgeBase(settings=settings)
    settings.home.mkdir(parents=True, exist_ok=True)  # (KnowledgeBase made it already, private)
    lock = FileLock(str(settings.home / "writer.lock"))
    lock.acquire()
    try:
        messages = []
        t0 = time.monotonic()
        with pytest.raises(LockedError, match="another kb writer"):
            kb.sync([SAMPLES / "debian-faq-getting-debian.en.md"], on_wait=messages.append)
        assert time.monotonic() - t0 >= settings.ingest.lock_timeout_s * 0.9  # it waited first
        assert messages and "waiting" in messages[0]
    finally:
        lock.release()
    assert len(kb.sync([SAMPLES / "debian-faq-getting-debian.en.md"]).added) == 1


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["after_commit:1", "before_swap_commit"])
def test_sigkill_during_a_full_rebuild_keeps_the_old_collection(tmp_path, corpus, crash_at, monkeypatch):
    """A killed `kb reindex --full` leaves the collection as it was (searchable), and the next one finishes."""
    home = tmp_path / "home"
    assert _reindex(home, corpus) == 0
    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    before = KnowledgeBase(home=home)
    docs_before = sorted(d.path for d in before.documents())
    ids_before = before.catalogue.chunk_ids(before.collection)
    answer = [c.chunk_id for c in before.search("How do I get Debian?", log=False)]

    cmd = [sys.executable, "-m", "app.cli", "reindex", "--full"]
    proc = subprocess.run(cmd, env=_env(home, crash_at), capture_output=True, cwd=ROOT, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    kb = KnowledgeBase(home=home)
    assert sorted(d.path for d in kb.documents()) == docs_before
    assert kb.catalogue.chunk_ids(kb.collection) == ids_before  # the catalogue still holds the old chunks
    # nothing consistent is left to answer from (the swap's files hold the rebuild): the reader waits for the
    # upkeep's repair (the reader itself never writes)
    assert [c.chunk_id for c in kb.search("How do I get Debian?", log=False)] == answer
    report = kb.sync([], full=True)
    assert not report.failed and len(report.updated) == 4 and not report.removed
    docs, chunks = consistent(kb)
    assert docs == 4 and chunks == report.chunks_added
    assert kb.status().collections == ["default"]
