"""With a PostgreSQL catalogue, writers on different machines (different data homes) share one database:
its advisory lock serialises them, and the server releases it when its holder dies (even SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from kb.errors import LockedError
from kb.locking import ADVISORY_KEY, writer_lock
from tests.conftest import ROOT


def _with_password(url: str) -> str:
    """The same URL with a password in it (the test server trusts every local connection, so any works)."""
    return url.replace("postgres@", "postgres:s3cret-pw@", 1)


def _advisory_holders(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"))
    finally:
        engine.dispose()


def test_writers_with_different_homes_are_serialised_by_the_database(postgres_url, tmp_path):
    url = _with_password(postgres_url)
    waits: list[str] = []
    with writer_lock(tmp_path / "machine-a", 5, database_url=url) as unclean:
        assert unclean is False
        assert _advisory_holders(url) == 1
        t0 = time.monotonic()
        with pytest.raises(LockedError) as err:
            with writer_lock(tmp_path / "machine-b", 0.6, waits.append, database_url=url):
                pytest.fail("a second writer got in while the first held the lock")
        assert 0.5 <= time.monotonic() - t0 < 5
        message = str(err.value)
        assert "127.0.0.1" in message and postgres_url.rsplit("/", 1)[1] in message and "advisory" in message
        assert "s3cret-pw" not in message
        assert waits and "s3cret-pw" not in waits[0]
        assert not (tmp_path / "machine-b" / "writer.dirty").exists()  # it never began writing
        # its file lock was released too: the same home is free to the next writer of that machine
        with writer_lock(tmp_path / "machine-b", 0):
            pass
    assert _advisory_holders(url) == 0  # released at the end, not only when the connection is collected
    with writer_lock(tmp_path / "machine-b", 0.6, database_url=url) as unclean:
        assert unclean is False and _advisory_holders(url) == 1


def test_the_lock_is_released_by_an_error_inside(postgres_url, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with writer_lock(tmp_path / "a", 2, database_url=postgres_url):
            raise RuntimeError("boom")
    assert _advisory_holders(postgres_url) == 0
    with writer_lock(tmp_path / "b", 0.3, database_url=postgres_url):
        pass


def test_a_sqlite_url_takes_no_database_lock(tmp_path):
    with writer_lock(tmp_path / "a", 0.3, database_url=f"sqlite:///{tmp_path / 'catalogue.sqlite3'}"):
        with writer_lock(tmp_path / "b", 0.3, database_url=f"sqlite:///{tmp_path / 'catalogue.sqlite3'}"):
            pass  # separate homes with SQLite: nothing shared, nothing to wait for


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kb.locking import writer_lock
    with writer_lock(Path(sys.argv[1]), 10, database_url=sys.argv[2]):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_a_killed_holder_frees_the_lock(postgres_url, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "machine-a"), postgres_url],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError):
            with writer_lock(tmp_path / "machine-b", 0.5, database_url=postgres_url):
                pass
        os.killpg(holder.pid, signal.SIGKILL)
        assert holder.wait(10) == -signal.SIGKILL
        t0 = time.monotonic()
        with writer_lock(tmp_path / "machine-b", 10, database_url=postgres_url):
            assert time.monotonic() - t0 < 10
            assert _advisory_holders(postgres_url) == 1
        assert (tmp_path / "machine-a" / "writer.dirty").exists()  # the killed writer's marker stays
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)


def test_the_key_never_changes():
    """Writers of two kb versions on one database must take the same lock: the key is pinned."""
    assert ADVISORY_KEY == 8937890938929243573  # first 8 bytes of sha256(b"kb-writer"), signed big-endian


def test_processes_opening_a_new_database_at_once_create_its_tables_once(postgres_url):
    """Without a lock, two `Catalogue(url)` creating a new database's tables at once collide
    (duplicate key in pg_type): the web app and a re-index started together."""
    from kb.catalogue import Catalogue

    errors: list[str] = []
    counts: list[int] = []

    def open_catalogue() -> None:
        try:
            catalogue = Catalogue(postgres_url)
            counts.append(catalogue.counts("default")["documents"])
            catalogue.engine.dispose()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=open_catalogue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert counts == [0] * 8
