"""A write that fails after touching the indexes (a full disk during the FAISS save, a catalogue commit
that raises) leaves a durable mark; the next reader answers from what the catalogue holds (never from
the orphans of the failed write), and asks the home's upkeep to repair (issue 30, item 1; issue 24)."""

from __future__ import annotations

import errno
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import kb.vector_index
from kb.chunk_store import ChunkStore
from kb.home import Home
from kb.locking import AHEAD
from kb.settings import EmbeddingSettings, Settings


def _docs(folder, n: int, start: int = 0):  # noqa: ANN202
    folder.mkdir(exist_ok=True)
    for i in range(start, start + n):
        (folder / f"pump-{i}.md").write_text(f"# Pump model P{i}\n\nThe pump P{i} needs impeller service every {i + 2} "
                                             f"months; its seal kit is part K{i}.\n")
    return folder


def _settings(tmp_path, database_url=None) -> Settings:  # noqa: ANN001
    return Settings(home=tmp_path / "home", database_url=database_url, embedding=EmbeddingSettings(model="hash-384"))


def _consistent(home: Home, collection: str = "default") -> bool:
    in_catalogue = home.catalogue.chunk_ids(collection)
    return (set(home.indexes.reader_index(collection).ids().tolist()) == in_catalogue
            == home.indexes.reader_keywords(collection).ids())


def test_a_full_disk_during_the_faiss_save_leaves_a_mark_the_upkeep_repairs(tmp_path, monkeypatch):
    """The reader answers at once from what the catalogue holds, says why, and never writes: the home's
    upkeep thread repairs the indexes."""
    settings = _settings(tmp_path)
    docs = _docs(tmp_path / "docs", 3)
    Home(settings).collection().sync([docs])
    _docs(docs, 3, start=3)
    real = kb.vector_index.atomic_write

    def disk_full(path, data):  # a FAKE full disk, for the FAISS file only
        if path.name == "index.faiss":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(kb.vector_index, "atomic_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        Home(settings).collection().sync([docs])
    monkeypatch.setattr(kb.vector_index, "atomic_write", real)
    folder = settings.home / "collections" / "default"
    assert (folder / AHEAD).exists()  # the keyword index holds the batch; the catalogue does not
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))  # no temp file left behind

    repaired_on = []
    real_reconcile = ChunkStore.reconcile
    monkeypatch.setattr(ChunkStore, "reconcile", lambda store: repaired_on.append(threading.current_thread().name)
                        or real_reconcile(store))
    reader = Home(settings)  # another process's reader, or the web page after the failure
    r = reader.collection().retrieve("pump P4 impeller service", top_k=3)
    assert any("being repaired" in n for n in r.notes), r.notes
    assert all(c.source.rsplit("/", 1)[-1] in {"pump-0.md", "pump-1.md", "pump-2.md"} for c in r.contexts)
    assert len(r.contexts) == 3  # from what the catalogue holds, not 1 context and two dropped orphans
    assert reader.upkeep.wait(60)
    assert _consistent(reader) and not (folder / AHEAD).exists()
    assert repaired_on and set(repaired_on) == {"kb-upkeep"}  # never on the reader's thread
    assert not reader.collection().retrieve("pump P4 impeller service").notes
    report = reader.collection().sync([docs])  # and the next write does the batch again
    assert len(report.added) == 3 and _consistent(reader)


def test_a_catalogue_commit_that_fails_after_the_indexes_were_saved_is_repaired(tmp_path, postgres_url):
    """The real failure: a deferred constraint raises at COMMIT on PostgreSQL, after FAISS and the
    keyword index already hold the batch."""
    settings = _settings(tmp_path, postgres_url)
    docs = _docs(tmp_path / "docs", 3)
    Home(settings).collection().sync([docs])
    engine = create_engine(postgres_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"))
        conn.execute(text("CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON chunks DEFERRABLE INITIALLY "
                          "DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"))
    _docs(docs, 3, start=3)
    with pytest.raises(Exception, match="refused at commit"):
        Home(settings).collection().sync([docs])
    folder = settings.home / "collections" / "default"
    assert (folder / AHEAD).exists()
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER at_commit ON chunks"))
    engine.dispose()
    reader = Home(settings)
    assert len(reader.collection().search("pump P4 impeller service", top_k=3, log=False)) == 3
    assert reader.upkeep.wait(60)
    assert _consistent(reader) and not (folder / AHEAD).exists()


def test_a_full_sqlite_catalogue_is_disk_full_and_loses_nothing(tmp_path):
    """SQLite's own "database or disk is full" (its page limit reached: the same error as a full disk)
    is a DiskFull with one line, and the home stays consistent for the next write."""
    from sqlalchemy import event

    from kb.errors import DiskFull

    settings = _settings(tmp_path)
    docs = _docs(tmp_path / "docs", 3)
    home = Home(settings)
    home.collection().sync([docs])
    pages = home.catalogue.engine.connect().exec_driver_sql("PRAGMA page_count").scalar()
    home.catalogue.engine.dispose()

    @event.listens_for(home.catalogue.engine, "connect")
    def _small(dbapi_conn, _record) -> None:  # noqa: ANN001 - as if the disk had room for 2 more pages
        dbapi_conn.execute(f"PRAGMA max_page_count={pages + 2}")

    (docs / "big.md").write_text("# Big\n\n" + "\n\n".join(f"Paragraph {i} about pump P{i} and its "
                                                         f"seal kit K{i}." for i in range(300)))
    with pytest.raises(DiskFull, match="full; nothing of this change was kept"):
        home.collection().sync([docs])
    reader = Home(settings)
    assert _consistent(reader) and len(reader.collection().documents()) == 3
