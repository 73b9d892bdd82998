"""One writer at a time per data home: a file lock the OS releases if the holder dies (even SIGKILL).

Beside it a marker file says a writer is at work; finding it when taking the lock means the previous
writer died mid-way, so the caller checks the catalogue's integrity before writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from kb.errors import CatalogueError, LockedError

DIRTY = "writer.dirty"


@contextmanager
def writer_lock(home: Path, timeout_s: float, on_wait: Callable[[str], None] | None = None) -> Iterator[bool]:
    """Hold the writer lock; yields True when the previous writer did not finish cleanly."""
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
        lock.release()


def writer_died(home: Path) -> bool:
    """True when a writer left its marker behind and no writer holds the lock now."""
    if not (home / DIRTY).exists():
        return False
    lock = FileLock(str(home / "writer.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False  # a writer is at work: its marker is expected
    lock.release()
    return True
