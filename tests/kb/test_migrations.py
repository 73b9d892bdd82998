"""Catalogue migrations (Alembic, kb/migrations): a catalogue the last release wrote, on SQLite and on
PostgreSQL, opens in this kb upgraded to HEAD with everything it held; a fresh one is exactly the models'
schema; a catalogue older still (no `chunks.ocr`) gets its column too."""

from __future__ import annotations

import shutil

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, insert, select, text
from sqlalchemy.pool import NullPool

from kb import migrations
from kb.catalogue import Base, Catalogue, Document
from kb.home import Home
from kb.settings import EmbeddingSettings, IngestSettings, Settings
from tests.conftest import ROOT

RELEASE = ROOT / "tests" / "data" / "release-0.1-home"
QUESTION = "How many days of annual leave?"


def test_head_is_the_newest_revision():
    assert ScriptDirectory.from_config(migrations.config()).get_current_head() == migrations.HEAD


@pytest.mark.parametrize("catalogue_backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)],
                         indirect=True)
def test_a_fresh_catalogue_has_exactly_the_models_schema(settings, catalogue_backend):
    settings.home.mkdir(exist_ok=True)
    catalogue = Catalogue(settings.catalogue_url)
    with catalogue.engine.connect() as conn:
        assert migrations.current(conn) == migrations.HEAD
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if d[0] != "remove_table" or d[1].name != migrations.VERSION_TABLE] == []
    with catalogue.session() as s:  # and it takes rows
        catalogue.collection(s, "default")
    catalogue.engine.dispose()


def _release_home(tmp_path):  # noqa: ANN001, ANN202
    home = tmp_path / "home"
    shutil.copytree(RELEASE, home)
    return home


def _check_upgraded(settings: Settings) -> None:
    home = Home(settings)
    with home.catalogue.engine.connect() as conn:
        assert migrations.current(conn) == migrations.HEAD
        assert "terms" not in {c["name"] for c in inspect(conn).get_columns("chunks")}  # 0002 ran
    kb = home.collection()
    assert [c.source.rsplit("/", 1)[-1] for c in kb.search(QUESTION, log=False)][0] == "leave.md"
    assert home.access.sign_in("alice", "alice-password-1").may("default", "read")  # users and grants kept
    assert home.collection().metrics().queries == 1  # the query log too
    docs = settings.home.parent / "more"
    docs.mkdir()
    (docs / "desk.md").write_text("# Desks\n\nHot desks are booked in the office app.\n")
    assert len(kb.ingest([docs]).added) == 1  # new rows insert into the upgraded tables


def test_the_last_releases_sqlite_catalogue_is_upgraded(tmp_path):
    settings = Settings(home=_release_home(tmp_path), embedding=EmbeddingSettings(model="hash-384"))
    _check_upgraded(settings)


def test_the_last_releases_catalogue_is_upgraded_on_postgresql(tmp_path, postgres_url):
    """The release's schema on PostgreSQL (revision 0001 is that schema, frozen), holding the release
    home's rows copied from its SQLite file; then this kb opens it."""
    home = _release_home(tmp_path)
    pg = create_engine(postgres_url, poolclass=NullPool)
    with pg.begin() as conn:
        cfg = migrations.config()
        cfg.attributes["connection"] = conn
        from alembic import command

        command.upgrade(cfg, "0001")
    old = create_engine(f"sqlite:///{home / 'catalogue.sqlite3'}", poolclass=NullPool)
    source, target = MetaData(), MetaData()
    source.reflect(old)
    target.reflect(pg)
    assert "terms" in target.tables["chunks"].c  # the release's schema
    with old.connect() as src, pg.begin() as dst:
        for table in source.sorted_tables:
            rows = [dict(r._mapping) for r in src.execute(select(table))]
            if rows:
                dst.execute(insert(target.tables[table.name]), rows)
        for table in target.sorted_tables:  # ids continue after the copied ones, as they would have
            for col in table.primary_key.columns:
                if dst.scalar(text(f"SELECT pg_get_serial_sequence('{table.name}', '{col.name}')")):
                    dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                                     f"COALESCE((SELECT max({col.name}) FROM {table.name}), 1))"))
    old.dispose()
    pg.dispose()
    (home / "catalogue.sqlite3").unlink()
    settings = Settings(home=home, database_url=postgres_url, embedding=EmbeddingSettings(model="hash-384"))
    _check_upgraded(settings)


def test_a_catalogue_from_before_the_ocr_column_gains_it(tmp_path):
    home = _release_home(tmp_path)
    engine = create_engine(f"sqlite:///{home / 'catalogue.sqlite3'}", poolclass=NullPool)
    with engine.begin() as conn:  # as a kb from before OCR left it
        conn.execute(text("ALTER TABLE chunks DROP COLUMN ocr"))
    engine.dispose()
    settings = Settings(home=home, embedding=EmbeddingSettings(model="hash-384"))
    found = Home(settings).collection().search(QUESTION, log=False)
    assert found and not any(c.ocr for c in found)  # old rows read as "not OCR"


def test_failures_written_before_0003_get_their_reason_and_limit_and_are_retried_by_them(tmp_path):
    """A timed-out file recorded by the release (its limit only in the error's words) is, after the
    upgrade, skipped while the limit stays and read again once file_timeout_s is raised past it."""
    import hashlib
    import sqlite3

    home = _release_home(tmp_path)
    slow = tmp_path / "docs" / "slow.md"
    slow.parent.mkdir()
    slow.write_text("# Slow\n\nA file that once took too long to read.\n")
    corrupt = slow.with_name("bad.md")
    corrupt.write_text("# Bad\n\nSaid to be corrupt once.\n")
    db = sqlite3.connect(home / "catalogue.sqlite3")
    (collection,) = db.execute("SELECT id FROM collections WHERE name = 'default'").fetchone()
    for path, error in ((slow, "timed out: still reading after 120 s (limit 120 s)"),
                        (corrupt, "corrupt: binary content in a text file")):
        db.execute("INSERT INTO documents (collection_id, path, sha256, size, status, error, chunk_count, indexed_at)"
                   " VALUES (?, ?, ?, ?, 'failed', ?, 0, '2026-01-01 00:00:00')",
                   (collection, str(path), hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size, error))
    db.commit()
    db.close()

    def sync(timeout_s: float):  # noqa: ANN202
        settings = Settings(home=home, embedding=EmbeddingSettings(model="hash-384"),
                            ingest=IngestSettings(file_timeout_s=timeout_s))
        return Home(settings).collection().ingest([slow.parent])

    first = sync(120)
    assert {p.rsplit("/", 1)[-1] for p, _ in first.still_failed} == {"slow.md", "bad.md"}
    catalogue = Catalogue(f"sqlite:///{home / 'catalogue.sqlite3'}")
    with catalogue.session() as s:
        rows = {d.path.rsplit("/", 1)[-1]: (d.error_code, d.limit_setting, d.limit_value)
                for d in s.scalars(select(Document).where(Document.status == "failed"))}
    catalogue.engine.dispose()
    assert rows == {"slow.md": ("timed out", "file_timeout_s", 120.0), "bad.md": ("corrupt", None, None)}
    again = sync(300)  # the limit it hit, raised: worth reading; a corrupt file is not
    assert [p.rsplit("/", 1)[-1] for p in again.added + again.updated] == ["slow.md"]
    assert [p.rsplit("/", 1)[-1] for p, _ in again.still_failed] == ["bad.md"]
