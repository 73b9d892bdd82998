"""Uploaded files (the web page): stored under a safe name in the data home, size-checked before they
are read, written atomically; indexing them is then an ordinary sync of those paths."""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

Upload = tuple[str, int, Callable[[], bytes]]  # (name as sent, size in bytes, read the bytes)


def safe_upload_name(name: str) -> str:
    """A file name that stays inside the uploads folder: no directories, no hidden or odd characters."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^\w.\- ()\u3000-\u9fff]", "_", name).strip(" .")
    return name[:200] or "upload"


def store_uploads(files: Iterable[Upload], target: Path, max_mb: float) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write each upload to `target` (temp file, then rename: never half-written); a file over the limit
    is refused before it is read. Returns the stored paths and the refused (path, reason)."""
    target.mkdir(parents=True, exist_ok=True)
    stored: list[Path] = []
    refused: list[tuple[str, str]] = []
    for name, size, read in files:
        safe = safe_upload_name(name)
        if size > max_mb * 1e6:
            refused.append((str(target / safe), f"too large: {size / 1e6:.1f} MB > {max_mb:g} MB"))
            continue
        tmp = target / f".{safe}.{os.getpid()}-{threading.get_ident()}.part"  # concurrent uploads never share one
        tmp.write_bytes(read())
        tmp.replace(target / safe)
        stored.append(target / safe)
    return stored, refused


def uploads_dir(home: Path, collection: str) -> Path:
    """Where a collection's uploaded originals are kept (removed with their document)."""
    return Path(home) / "uploads" / collection
