"""Uploaded files (the web page and `POST /v1/documents`): received piece by piece into the data home
under a safe name, refused as early as can be (a type kb cannot read when its name arrives, a file or a
batch past its limit as soon as it passes it, with nothing of the batch left on disk), written to temp
names and renamed only when the whole batch arrived; indexing them is then an ordinary sync of those paths."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from ingest.extract import supported_suffixes

Upload = tuple[str, int, Callable[[], bytes]]  # (name as sent, size in bytes, read the bytes)
MAX_NAME_BYTES = 200


class UploadTooLarge(Exception):
    """A file or the whole batch passed its limit: the batch is cut off (the reason says which)."""


def safe_upload_name(name: str) -> str:
    """A file name that stays inside the uploads folder: no directories, no hidden or odd characters;
    a long name is shortened in its stem, so it keeps its extension."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^\w.\- ()\u3000-\u9fff]", "_", name).strip(" .")
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    if len(name) > MAX_NAME_BYTES:
        name = name[: MAX_NAME_BYTES - len(suffix)].rstrip(" .") + suffix
    while len(name.encode()) > MAX_NAME_BYTES:  # file systems count bytes (255): a CJK character is 3
        name = name[: len(name) - len(suffix) - 1].rstrip(" .") + suffix
    return name or "upload"


class UploadSink:
    """One batch of uploaded files on its way into TARGET: `begin(name)`, `write(data)`…, `end()` per
    file, then `commit()` (every file appears under its name) or `abort()` (nothing is left)."""

    def __init__(self, target: Path, max_file_mb: float, max_total_mb: float, max_files: int):
        self.target = target
        self.max_file, self.max_total, self.max_files = max_file_mb * 1e6, max_total_mb * 1e6, max_files
        self.limits = (max_file_mb, max_total_mb)
        self.refused: list[tuple[str, str]] = []  # (path, reason)
        self.parts: list[tuple[Path, Path]] = []  # (temp file, final path) of files received whole
        self.total = 0
        self._current: tuple[int, Path, Path, int] | None = None  # (fd, temp, final, bytes so far)

    def begin(self, name: str) -> str | None:
        """Start a file; returns why it is refused (its data is then to be skipped), None when accepted."""
        safe = safe_upload_name(name)
        final = self.target / safe
        if Path(safe).suffix.lower() not in supported_suffixes():
            reason = f"unsupported file type {Path(safe).suffix or '(none)'!r}; kb reads {', '.join(supported_suffixes())}"
        elif len(self.parts) + 1 > self.max_files:
            reason = f"more than {self.max_files} files in one upload"
        else:
            self.target.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.target, prefix=f".{safe[:50]}.", suffix=".part")  # 0600, unique
            self._current = (fd, Path(tmp), final, 0)
            return None
        self.refused.append((str(final), reason))
        return reason

    def write(self, data: bytes) -> None:
        fd, tmp, final, size = self._current
        size += len(data)
        self.total += len(data)
        if size > self.max_file:
            self.abort()
            raise UploadTooLarge(f"{final.name}: too large: more than {self.limits[0]:g} MB")
        if self.total > self.max_total:
            self.abort()
            raise UploadTooLarge(f"the upload is too large: more than {self.limits[1]:g} MB in all")
        os.write(fd, data)
        self._current = (fd, tmp, final, size)

    def end(self) -> None:
        if self._current is not None:
            fd, tmp, final, _ = self._current
            os.close(fd)
            self.parts.append((tmp, final))
            self._current = None

    def commit(self) -> list[Path]:
        """Rename every file received whole to its name (a file uploaded again is a new version of it);
        one still being received is not whole and is dropped."""
        if self._current is not None:
            os.close(self._current[0])
            self._current[1].unlink(missing_ok=True)
            self._current = None
        stored = []
        try:
            for tmp, final in self.parts:
                tmp.replace(final)
                if final not in stored:
                    stored.append(final)
        except OSError:
            self.abort()  # what was not renamed yet is removed; what was is a complete file of this batch
            raise
        self.parts = []
        return stored

    def abort(self) -> None:
        if self._current is not None:
            os.close(self._current[0])
            self.parts.append(self._current[1:3])
            self._current = None
        for tmp, _ in self.parts:
            tmp.unlink(missing_ok=True)
        self.parts = []


def store_uploads(files: Iterable[Upload], sink: UploadSink) -> None:
    """Files already in memory (the web page): each refused before it is read when its type, its size
    or the batch's total says so; the others go into the sink."""
    for name, size, read in files:
        final = sink.target / safe_upload_name(name)
        if size > sink.max_file:
            sink.refused.append((str(final), f"too large: {size / 1e6:.1f} MB > {sink.limits[0]:g} MB"))
        elif sink.total + size > sink.max_total:
            sink.refused.append((str(final), f"the upload passes {sink.limits[1]:g} MB in all"))
        elif sink.begin(name) is None:
            sink.write(read())
            sink.end()


def uploads_dir(home: Path, collection: str) -> Path:
    """Where a collection's uploaded originals are kept (removed with their document)."""
    return Path(home) / "uploads" / collection
