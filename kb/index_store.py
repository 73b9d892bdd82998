"""Where a data home keeps each collection's derived indexes (FAISS + keywords), and the readers' cache.

Readers keep a loaded index until a writer saves a new one (writers replace files by rename: a new
inode), so one process serves every question from memory and still sees each committed write.
Readers never write: what needs repair or catching up is asked of the home's upkeep (ingest/upkeep.py),
and the question is answered from what is consistent meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kb.errors import IndexCorruptError
from kb.keyword_index import KeywordIndex, Unreadable
from kb.locking import left_ahead, writer_active, writer_died
from kb.settings import IndexSettings
from kb.vector_index import FaissIndex

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identifies one saved version of a file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# How long a reader with nothing consistent to answer from (a fresh node, an unreadable vector index)
# waits for the upkeep to build it before saying so.
BUILD_WAIT_S = 120.0


class Upkeep(Protocol):
    def request(self, collection: str, kind: str) -> None: ...
    def pending(self, collection: str) -> bool: ...
    def failed(self, collection: str) -> bool: ...
    def wait(self, timeout: float | None = None, collections: list[str] | None = None) -> bool: ...


class IndexStore:
    def __init__(self, home: Path, cfg: IndexSettings, identity: Callable[[], dict], upkeep: Upkeep,
                 last_change: Callable[[str], int], catch_up_s: float = 1.0):
        self.home, self.cfg, self.identity = home, cfg, identity
        self.upkeep = upkeep  # repairs and catch-ups, done by a writer of this process (never the reader)
        self._last_change = last_change  # the catalogue's change sequence of a collection
        self.catch_up_s = catch_up_s
        self._checked: dict[str, float] = {}  # collection -> when the catalogue was last asked for changes
        self._lock = threading.RLock()  # one store serves every web session / API request
        self._readers: dict[tuple[str, str], tuple] = {}  # (kind, collection) -> (file stamp, index)

    def index_dir(self, collection: str) -> Path:
        return self.home / "collections" / collection

    def keyword_dir(self, collection: str) -> Path:
        return self.index_dir(collection) / "keywords"

    def open_index(self, collection: str) -> FaissIndex:
        return FaissIndex(self.index_dir(collection), self.identity(), self.cfg)

    def for_writing(self, collection: str) -> tuple[FaissIndex, KeywordIndex, bool]:
        """The indexes a writer updates. A damaged vector index is set aside and started empty, so the
        writer's reconciliation rebuilds it from the stored embeddings (nothing re-embedded); the flag says so."""
        try:
            index, rebuilt = self.open_index(collection), False
        except IndexCorruptError as exc:
            log.warning("%s; rebuilding it from the catalogue", exc)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            for name in ("index.faiss", "manifest.json"):
                f = self.index_dir(collection) / name
                if f.exists():
                    f.replace(f.with_name(f"{name}.damaged-{stamp}"))
            index, rebuilt = self.open_index(collection), True
        if (index.count or rebuilt) and not (self.keyword_dir(collection) / "meta.json").exists():
            log.warning("the keyword index %s is missing; rebuilding it from the catalogue", self.keyword_dir(collection))
        return index, KeywordIndex.open_or_reset(self.keyword_dir(collection)), rebuilt

    def position(self, collection: str) -> int:
        """The catalogue change this node's index of a collection reflects (from its manifest; 0 if none)."""
        try:
            return int(json.loads((self.index_dir(collection) / "manifest.json").read_bytes()).get("change_seq", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def forget(self, collection: str) -> None:
        with self._lock:
            for kind in ("vectors", "keywords"):
                self._readers.pop((kind, collection), None)

    def reader_index(self, collection: str) -> FaissIndex:
        """The FAISS index for searching, loaded once and reused until a writer saves a new one."""
        return self._cached(("vectors", collection), self.index_dir(collection) / "index.faiss", self.open_index)

    def reader_keywords(self, collection: str) -> KeywordIndex:
        """The keyword index for searching, reopened when a writer has committed (or a rebuild swapped one in)."""
        return self._cached(("keywords", collection), self.keyword_dir(collection) / "meta.json", self._open_keywords)

    def _open_keywords(self, collection: str) -> KeywordIndex:
        """A collection whose vector index holds chunks must have a keyword index: a missing one (deleted,
        lost in a copy) is damage to repair, not an empty index to search."""
        directory = self.keyword_dir(collection)
        if not (directory / "meta.json").exists() and self._vector_count(collection):
            raise IndexCorruptError(f"the keyword index {directory} is missing")
        return KeywordIndex.for_reading(directory)

    def _vector_count(self, collection: str) -> int:
        try:
            return int(json.loads((self.index_dir(collection) / "manifest.json").read_bytes()).get("count", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            return 0

    def after_search(self, collection: str) -> None:
        """The upkeep is asked to rebuild what a search found damaged."""
        if KeywordIndex.damaged_mark(self.keyword_dir(collection)).exists() and not writer_active(self.home):
            self.upkeep.request(collection, "repair")

    def limits(self, collection: str) -> list[str]:
        """What limits a search of the collection now (the answer's notes); asked before its indexes."""
        if left_ahead(self.home, self.index_dir(collection)) or writer_died(self.home):
            return [f"{collection}: its indexes are being repaired after an interrupted write; passages "
                    "changed by that write may be missing from these results"]
        if self.position(collection) < self._last_change(collection):
            return [f"{collection}: this node is catching up with changes written elsewhere; the newest "
                    "may be missing from these results"]
        return []

    def _cached(self, key: tuple[str, str], stamp_file: Path, opener: Callable):  # noqa: ANN202
        """The index, opened once per saved version. What needs repair (a write that left the indexes
        ahead of the catalogue, a damaged keyword index, a killed writer) or catching up (another node's
        writes) is asked of the upkeep; meanwhile the reader answers from what is consistent (the
        retriever leaves out ids the catalogue lacks; a damaged keyword index leaves the question to the
        dense side; an unreadable new version leaves the last good one). It waits only when it has
        nothing to answer from, and never past one deadline; a repair that failed is not waited for."""
        collection = key[1]
        deadline = time.monotonic() + BUILD_WAIT_S
        damaged = KeywordIndex.damaged_mark(self.keyword_dir(collection))
        if damaged.exists() and not writer_active(self.home):
            self.upkeep.request(collection, "repair")
        if damaged.exists() and key[0] == "keywords":
            return Unreadable(f"the keyword index of {collection} is damaged; it is being rebuilt")
        if writer_died(self.home) or left_ahead(self.home, self.index_dir(collection)):
            self.upkeep.request(collection, "repair")
        now = time.monotonic()
        if now - self._checked.get(collection, -1e9) >= self.catch_up_s:  # at most once a second
            self._checked[collection] = now
            if self._last_change(collection) > self.position(collection):
                self.upkeep.request(collection, "catch_up")
                if not (self.index_dir(collection) / "manifest.json").exists():  # a fresh node: nothing yet
                    self.upkeep.wait(BUILD_WAIT_S, [collection])
        failures = 0
        while True:
            stamp = _stamp(stamp_file)
            with self._lock:
                hit = self._readers.get(key)
                if hit is not None and hit[0] == stamp:
                    return hit[1]
                try:
                    index = opener(collection)
                except IndexCorruptError:
                    if key[0] == "keywords":  # the dense side still answers
                        self.upkeep.request(collection, "repair")
                        return Unreadable(f"the keyword index of {collection} cannot be read; it is being rebuilt")
                    index = None
                else:
                    if stamp is not None or not self.upkeep.pending(collection):
                        self._readers[key] = (stamp, index)
                        return index
                    # no file: set aside by the upkeep rebuilding it, not an empty collection
            if time.monotonic() >= deadline or self.upkeep.failed(collection):
                return opener(collection)  # still unreadable, or set aside: its error, or the empty index
            if index is None:
                failures += 1
                if failures == 1:  # a writer may be between renaming an index and its manifest
                    time.sleep(0.2)
                    continue
                if hit is not None:  # the last good version answers until the new one settles
                    if not writer_active(self.home):
                        self.upkeep.request(collection, "repair")
                    return hit[1]
                if writer_active(self.home):  # the running writer saves or repairs it itself
                    time.sleep(0.2)
                    continue
                self.upkeep.request(collection, "repair")
            self.upkeep.wait(max(0.0, deadline - time.monotonic()), [collection])
