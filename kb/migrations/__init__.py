"""The catalogue's schema, versioned with Alembic: `upgrade(connection)` brings any catalogue (SQLite
or PostgreSQL, fresh, from the last release, or older) to HEAD when kb opens it.

A schema change is a revision file in versions/ (`alembic -c kb/migrations/alembic.ini revision -m …`
writes one from script.py.mako) and HEAD moves to it; tests/kb/test_migrations.py upgrades a catalogue
the last release wrote, on both databases. The version lives in its own table, so a database shared
with other applications' Alembic keeps theirs.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from kb.errors import CatalogueError

HEAD = "0004"  # the newest revision in versions/ (a test checks they agree)
VERSION_TABLE = "kb_schema_version"


def current(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def config():  # noqa: ANN201 - alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    return cfg


def upgrade(conn: Connection) -> bool:
    """Run the revisions this catalogue lacks, in the caller's transaction; False when already at HEAD
    (one query: the common case costs nothing more)."""
    at = current(conn)
    if at == HEAD:
        return False
    from alembic import command
    from alembic.util import CommandError

    cfg = config()
    cfg.attributes["connection"] = conn
    try:
        command.upgrade(cfg, "head")
    except CommandError as exc:  # e.g. a revision this kb does not know: a newer kb wrote the catalogue
        raise CatalogueError(f"the catalogue's schema is at revision {at!r}, which this kb does not know "
                             f"({exc}); it was written by a newer kb: upgrade kb on this machine") from None
    return True
