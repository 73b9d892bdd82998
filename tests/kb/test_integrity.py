"""Damaged files in the data home: a manifest cut short, an index that fails its checksum, a damaged
SQLite catalogue. Each gives a clear message (never a traceback) and is repaired from what is intact.
The index repairs and the check after a killed writer also run with a PostgreSQL catalogue. Repairs do
not depend on what vectors mean: `hash-384` (a named stand-in, no model to load) embeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kb.knowledge_base import KnowledgeBase
from tests.conftest import ROOT, SAMPLES, consistent, copy_of_indexed

STAND_IN = "hash-384"

QUESTION = "How do I get Debian?"


def kb_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KB_EMBEDDING__MODEL": STAND_IN, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", "--home", str(home), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _index_three(home: Path, corpus: Path) -> list[int]:
    corpus.mkdir()
    for name in ("debian-faq-getting-debian.en.md", "debian-faq-software.en.html", "debian-faq-support.zh-cn.docx"):
        shutil.copy(SAMPLES / name, corpus / name)
    kb = KnowledgeBase(home=home)
    kb.sync([corpus])
    answer = [c.chunk_id for c in kb.search(QUESTION, log=False)]
    kb.catalogue.engine.dispose()  # last connection closed: the WAL is checkpointed into the file
    return answer


@pytest.fixture
def indexed(request, tmp_path, monkeypatch, home_cache):
    """A home with three real documents indexed, and the chunk ids the question finds; on the test's
    `catalogue_backend` when it asks for one (it sets KB_DATABASE_URL for PostgreSQL). On SQLite a copy
    of one home built once per session (its corpus is shared: tests read it, never change it)."""
    url = request.getfixturevalue("catalogue_backend") if "catalogue_backend" in request.fixturenames else None
    monkeypatch.setenv("KB_EMBEDDING__MODEL", STAND_IN)
    if url:  # a database of its own
        corpus, home = tmp_path / "corpus", tmp_path / "home"
        return home, corpus, _index_three(home, corpus)
    build = lambda home: {"answer": _index_three(home, home.parent / "corpus"),  # noqa: E731
                          "corpus": str(home.parent / "corpus")}
    home, info = copy_of_indexed(home_cache, "integrity-three-docs", build, tmp_path / "home")
    return home, Path(info["corpus"]), info["answer"]


@pytest.mark.parametrize(("catalogue_backend", "damage"), [
    *(("sqlite", d) for d in ("truncated", "empty object", "half zeroed index", "index deleted")),
    pytest.param("postgresql", "half zeroed index", marks=pytest.mark.slow),  # the repair reads it alike
], indirect=["catalogue_backend"])
def test_damaged_index_is_rebuilt_from_the_catalogue(indexed, catalogue_backend, damage):
    home, corpus, answer = indexed
    d = home / "collections" / "default"
    manifest, index = d / "manifest.json", d / "index.faiss"
    if damage == "truncated":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif damage == "empty object":
        manifest.write_text("{}")
    elif damage == "half zeroed index":
        data = index.read_bytes()
        index.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    else:
        index.unlink()
    st = kb_cli(home, "status", "--json")
    assert st.returncode == 0 and "Traceback" not in st.stderr, st.stderr
    status = json.loads(st.stdout)
    assert status["consistent"] and status["index_vectors"] == status["chunks"] > 0, json.dumps(status)
    kb = KnowledgeBase(home=home)
    assert [c.chunk_id for c in kb.search(QUESTION, log=False)] == answer  # ranks as before, not silently wrong
    assert json.loads(manifest.read_text())["count"] == status["chunks"]
    assert list(d.glob("*.damaged-*")) or damage == "index deleted"  # the damaged file is kept for inspection


@pytest.mark.slow  # two CLI runs in subprocesses
def test_kb_search_rebuilds_damaged_indexes_says_so_and_answers(indexed):
    """No dead end: `kb search` with a truncated index.faiss and the keyword folder deleted rebuilds both
    from the catalogue under the writer lock (the stored embeddings and text: nothing re-embedded), says
    so in one line each, and answers exactly as before; the next run says nothing."""
    home, corpus, answer = indexed
    d = home / "collections" / "default"
    index = d / "index.faiss"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 3])
    shutil.rmtree(d / "keywords")
    r = kb_cli(home, "search", QUESTION, "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "does not match" in r.stderr and "keyword index" in r.stderr and "is missing" in r.stderr, r.stderr
    assert r.stderr.count("rebuilding it from the catalogue") == 2, r.stderr
    assert [c["chunk_id"] for c in json.loads(r.stdout)] == answer
    again = kb_cli(home, "search", QUESTION, "--json")
    assert "rebuilding" not in again.stderr and [c["chunk_id"] for c in json.loads(again.stdout)] == answer


def test_a_truncated_keyword_segment_is_answered_around_then_rebuilt(indexed, caplog):
    home, corpus, answer = indexed
    for segment in (home / "collections" / "default" / "keywords").glob("*.term"):
        segment.write_bytes(segment.read_bytes()[:10])
    kb = KnowledgeBase(home=home)
    with caplog.at_level("WARNING"):
        first = kb.retrieve(QUESTION)  # at once, from the dense side, saying so
        assert first.notes and first.contexts
        assert kb.house.upkeep.wait(60)
        assert [c.chunk_id for c in kb.search(QUESTION, log=False)] == answer  # rebuilt: ranks as before
    assert "rebuilding it from the catalogue" in caplog.text
    assert kb.indexes.reader_keywords("default").count == consistent(kb)[1]


@pytest.mark.usefixtures("catalogue_backend")
def test_a_writer_rebuilds_a_damaged_index_without_re_embedding(indexed):
    home, corpus, answer = indexed
    index = home / "collections" / "default" / "index.faiss"
    index.write_bytes(index.read_bytes()[:-100] + bytes(100))
    r = KnowledgeBase(home=home).sync([corpus])
    assert r.repaired["damaged_index_rebuilt"] == 1 and r.embedded == 0 and len(r.unchanged) == 3
    kb = KnowledgeBase(home=home)
    consistent(kb)
    assert [c.chunk_id for c in kb.search(QUESTION, log=False)] == answer


def test_changed_keyword_index_identity_is_a_mismatch(indexed):
    home, _, _ = indexed
    manifest = home / "collections" / "default" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["keyword_index"] = "an-older-keyword-engine"
    manifest.write_text(json.dumps(m))
    r = kb_cli(home, "search", QUESTION)
    assert r.returncode == 2 and "keyword_index" in r.stderr and "kb reindex --full" in r.stderr


@pytest.mark.usefixtures("catalogue_backend")
def test_a_killed_writer_makes_every_command_check_the_catalogue_first(indexed):
    """The marker a killed writer leaves: the next commands check the catalogue (SQLite's quick_check, a
    plain query on PostgreSQL), find it healthy and go on; the next write clears the marker."""
    home, corpus, answer = indexed
    (home / "writer.dirty").touch()
    check = kb_cli(home, "status", "--check")
    assert check.returncode == 0 and "check       catalogue: ok" in check.stdout, check.stdout + check.stderr
    kb = KnowledgeBase(home=home)
    assert kb.catalogue.check() == []
    assert [c.chunk_id for c in kb.search(QUESTION, log=False)] == answer
    r = kb.sync([corpus])
    assert len(r.unchanged) == 3 and not (home / "writer.dirty").exists()


def _damage_catalogue(home: Path, how: str) -> None:
    db = home / "catalogue.sqlite3"
    data = bytearray(db.read_bytes())
    if how == "header":
        data[:100] = b"\x00" * 100
    else:  # the middle third
        third = len(data) // 3
        data[third: 2 * third] = b"\x00" * third
    db.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


@pytest.mark.slow  # six CLI runs in subprocesses
def test_damaged_catalogue_header_is_a_clear_error_then_rebuilt(indexed):
    home, corpus, _ = indexed
    _damage_catalogue(home, "header")
    for args in (["status"], ["search", QUESTION], ["reindex", str(corpus)], ["reindex", "--full"], ["ask", QUESTION]):
        r = kb_cli(home, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "damaged" in r.stderr and "kb rebuild-catalogue" in r.stderr, args
    check = kb_cli(home, "status", "--check")
    assert check.returncode == 1 and "catalogue: DAMAGED" in check.stdout

    r = kb_cli(home, "rebuild-catalogue")  # the folders are recorded beside the index
    assert r.returncode == 0, r.stderr
    assert list(home.glob("catalogue.sqlite3.damaged-*"))
    kb = KnowledgeBase(home=home)
    assert consistent(kb)[0] == 3
    assert kb.search(QUESTION, log=False)
    assert kb_cli(home, "status", "--check").returncode == 0
    healthy = kb_cli(home, "rebuild-catalogue")  # a healthy catalogue is not thrown away by mistake
    assert healthy.returncode == 2 and "--force" in healthy.stderr


def test_partly_damaged_catalogue_is_found_by_the_check(indexed):
    home, corpus, _ = indexed
    _damage_catalogue(home, "middle")
    check = kb_cli(home, "status", "--check")
    assert check.returncode == 1 and "DAMAGED" in check.stdout
    write = kb_cli(home, "reindex", str(corpus))  # a writer never carries on into a damaged catalogue
    assert write.returncode == 2 and "kb rebuild-catalogue" in write.stderr and "Traceback" not in write.stderr
    (home / "writer.dirty").touch()  # as a killed writer leaves it: every command checks first
    for args in (["status"], ["search", QUESTION]):
        r = kb_cli(home, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "kb rebuild-catalogue" in r.stderr, r.stderr


@pytest.mark.slow
def test_library_warnings_go_to_the_log_not_the_terminal(tmp_path):
    """pypdf logs a warning per broken object (11,278 lines in one run): stderr stays quiet."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pdf = (SAMPLES / "debian-faq-en-chapters-1-2.pdf").read_bytes()
    start = pdf.rindex(b"startxref")
    broken = pdf[:start] + b"startxref\n12345\n%%EOF\n"  # a wrong xref offset: pypdf warns and recovers
    (corpus / "broken-xref.pdf").write_bytes(broken)
    home = tmp_path / "home"
    r = kb_cli(home, "reindex", str(corpus))
    assert r.returncode == 0, r.stderr
    log = (home / "kb.log").read_text()
    assert "pypdf" in log
    assert "pypdf" not in r.stderr and "startxref" not in r.stderr.lower()
    verbose = kb_cli(home, "-v", "reindex", "--full")
    assert "pypdf" in verbose.stderr
