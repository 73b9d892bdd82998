"""One writer at a time per data home: a file lock the OS releases if the holder dies (even SIGKILL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from kb.errors import LockedError


@contextmanager
def writer_lock(home: Path, timeout_s: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
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
    try:
        yield
    finally:
        lock.release()
