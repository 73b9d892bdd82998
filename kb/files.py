"""Durable small-file writes, the one home for them: a file is replaced whole or not at all, and is on
disk (file and folder fsynced) before the caller goes on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file beside it (a unique name: two writers never share one), fsync, rename, fsync the
    folder. On any failure (a full disk) the temp file is removed and `path` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def is_under(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """The path is one of the roots or lies below one (by their absolute names, no file system access)."""
    path = str(path)
    return any(path == str(r) or path.startswith(str(r).rstrip("/") + "/") for r in roots)
