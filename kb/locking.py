"""One writer at a time per data home: a file lock the OS releases if the holder dies (even SIGKILL).
With a PostgreSQL catalogue, also one writer at a time per database (writers on other machines share
it): a session-level advisory lock on a connection of its own, which the server releases when that
connection closes, the holder's death included.

Beside it a marker file says a writer is at work; finding it when taking the lock means the previous
writer died mid-way, so the caller checks the catalogue's integrity before writing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from kb.errors import CatalogueError, LockedError
from kb.files import atomic_write

DIRTY = "writer.dirty"
AHEAD = "indexes.ahead"  # in a collection's index folder: its indexes may hold a write the catalogue lacks
# The advisory lock's key: one fixed signed 64-bit number for every kb writer of a database.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"kb-writer").digest()[:8], "big", signed=True)
_POLL_S = 0.2


def _advisory_lock(database_url: str, deadline: float, timeout_s: float,
                   on_wait: Callable[[str], None] | None) -> Connection:
    """The database-wide writer lock, polled until `deadline`; the returned connection holds it."""
    url = make_url(database_url)
    where = f"{url.host or 'localhost'}{f':{url.port}' if url.port else ''}/{url.database}"
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    conn = engine.connect()
    try:
        waited = False
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}):
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another kb writer (re-index or upload, perhaps on another machine) still holds the writer "
                    f"lock of the catalogue database {where} (PostgreSQL advisory lock {ADVISORY_KEY}) after "
                    f"{timeout_s:.0f}s; try again when it finishes")
            if on_wait and not waited:
                on_wait(f"another kb writer is using the catalogue database {where}; "
                        f"waiting up to {timeout_s:.0f}s for it to finish")
            waited = True
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
    except BaseException:
        conn.close()
        engine.dispose()
        raise
    return conn


def _advisory_unlock(conn: Connection) -> None:
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
    except SQLAlchemyError:
        pass  # the connection is gone, and the server released the lock with it
    finally:
        conn.close()  # closing alone releases it too
        conn.engine.dispose()


@contextmanager
def writer_lock(home: Path, timeout_s: float, on_wait: Callable[[str], None] | None = None, *,
                database_url: str | None = None) -> Iterator[bool]:
    """Hold the writer lock; yields True when the previous writer did not finish cleanly. With a
    PostgreSQL `database_url` the database's advisory lock is held too, within the same `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(home / "writer.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait:
            on_wait(f"another kb writer is running on {home}; waiting up to {timeout_s:.0f}s for it to finish")
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as exc:
            raise LockedError(
                f"another kb writer (re-index or upload) still holds {home / 'writer.lock'} after {timeout_s:.0f}s; "
                "try again when it finishes"
            ) from exc
    advisory = None
    if database_url and make_url(database_url).get_backend_name() == "postgresql":
        try:
            advisory = _advisory_lock(database_url, deadline, timeout_s, on_wait)
        except BaseException:
            lock.release()
            raise
    marker = home / DIRTY
    unclean = marker.exists()
    try:
        marker.touch()
        yield unclean
        marker.unlink(missing_ok=True)
    except CatalogueError:
        raise  # the marker stays: every later command checks the catalogue again until it is rebuilt
    except BaseException:
        marker.unlink(missing_ok=True)  # an ordinary error is a clean finish; only a kill leaves the marker
        raise
    finally:
        try:
            if advisory is not None:
                _advisory_unlock(advisory)
        finally:
            lock.release()


def mark_ahead(index_dir: Path) -> None:
    """Durably, before a write touches the collection's indexes: cleared only once the catalogue has
    committed the same change (or a repair made the indexes the catalogue's again). Any exit in between,
    an exception, a full disk or a failed commit included, leaves it for the next reader or writer."""
    atomic_write(index_dir / AHEAD, b"")


def clear_ahead(index_dir: Path) -> None:
    (index_dir / AHEAD).unlink(missing_ok=True)


def left_ahead(home: Path, index_dir: Path) -> bool:
    """True when a write left the collection's indexes ahead of the catalogue and no writer is at work."""
    return (index_dir / AHEAD).exists() and not writer_active(home)


def writer_active(home: Path) -> bool:
    """A writer of this home holds the lock now."""
    lock = FileLock(str(home / "writer.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def writer_died(home: Path) -> bool:
    """True when a writer left its marker behind and no writer holds the lock now."""
    return (home / DIRTY).exists() and not writer_active(home)  # a writer at work: its marker is expected
