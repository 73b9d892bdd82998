"""Every write to a data home's collections, one writer at a time: the writer lock, the catalogue's
integrity check after a killed writer, an IndexWriter on the right indexes, and `sources.json` after
each write. The facade (kb/knowledge_base.py) checks who may write and hands the job here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ingest.extraction_worker import POOL, Extractor
from ingest.pipeline import Event, IndexWriter, SyncReport
from ingest.rebuild import CollectionLayout, full_rebuild, record_sources
from ingest.uploads import uploads_dir
from kb import document_lookup
from kb.catalogue import Catalogue
from kb.chunk_store import ChunkStore
from kb.embedding_cache import EmbeddingCache
from kb.embeddings import Embedder
from kb.errors import ConfigError, LockedError
from kb.index_store import IndexStore
from kb.locking import writer_lock
from kb.settings import Settings
from kb.status import refuse_damaged_catalogue

Wait = Callable[[str], None] | None  # told when another writer holds the lock
# A writer checks the catalogue's integrity (SQLite's quick_check reads every page: ~1 s per GB) at its
# first write in a process, then at most this often, and always after a killed writer.
CHECK_EVERY_S = 3600.0


class Writes:
    def __init__(self, settings: Settings, catalogue: Catalogue, embedder: Embedder, indexes: IndexStore,
                 extractor: Extractor = POOL):
        self.settings, self.catalogue, self.embedder, self.indexes = settings, catalogue, embedder, indexes
        self.extractor = extractor
        self.home = Path(settings.home)
        self._checked = -CHECK_EVERY_S  # when this process last ran the catalogue's integrity check

    def layout(self, collection: str) -> CollectionLayout:
        return CollectionLayout(self.catalogue, collection, self.home / "collections", uploads_dir(self.home, collection))

    @contextmanager
    def locked(self, on_wait: Wait = None, timeout_s: float | None = None) -> Iterator[None]:
        """The writer lock (waited for up to `timeout_s`, default the setting); after a killed writer, the
        catalogue's integrity is checked before any write."""
        with writer_lock(self.home, self.settings.ingest.lock_timeout_s if timeout_s is None else timeout_s, on_wait,
                         database_url=self.settings.database_url) as unclean:
            if unclean or time.monotonic() - self._checked >= CHECK_EVERY_S:
                refuse_damaged_catalogue(self.catalogue, self.settings)  # never write into a damaged catalogue
                self._checked = time.monotonic()
            yield

    @contextmanager
    def writing(self, collection: str, on_wait: Wait = None, on_event: Event | None = None,
                lock: bool = True, timeout_s: float | None = None) -> Iterator[IndexWriter]:
        """An IndexWriter on the collection's indexes, under the writer lock (unless the caller holds it)."""
        with self.locked(on_wait, timeout_s) if lock else nullcontext():
            index, keywords, rebuilt = self.indexes.for_writing(collection)  # checks the identity first
            store = ChunkStore(self.catalogue, collection, index, keywords, EmbeddingCache(self.catalogue, self.embedder),
                               self.settings.crash_at)
            writer = IndexWriter(self.settings, store, self.embedder, on_event, self.extractor)
            writer.rebuilt_damaged_index = rebuilt
            try:
                yield writer
            finally:
                keywords.close()  # releases tantivy's own writer lock at once

    def sync(self, collection: str, roots: list[str], command: str, progress: bool = False,
             on_event: Event | None = None, on_wait: Wait = None, retry_failed: bool = False,
             timeout_s: float | None = None) -> SyncReport:
        """`reindex` also removes what is gone from `roots`; `ingest` only adds and updates. Failed files
        whose bytes did not change are not read again unless `retry_failed`."""
        with self.writing(collection, on_wait, on_event, timeout_s=timeout_s) as writer:
            report = writer.sync([Path(p) for p in roots], delete_missing=command == "reindex",
                                 progress=progress, command=command, retry_failed=retry_failed)
            record_sources(self.layout(collection))  # under the lock: two writers never race on it
        return report

    def rebuild(self, collection: str, roots: list[str], progress: bool = False, on_event: Event | None = None,
                on_wait: Wait = None, timeout_s: float | None = None) -> SyncReport:
        """`reindex --full`: everything rebuilt aside, then swapped in (ingest/rebuild.py)."""
        with self.locked(on_wait, timeout_s):
            writing = lambda c, e=None: self.writing(c, on_event=e, lock=False)  # noqa: E731 - we hold the lock
            report = full_rebuild(self.layout(collection), roots, writing, self.indexes.open_index, progress,
                                  on_event)
            self.indexes.forget(collection)
            return report

    def resync_roots(self, collection: str) -> list[str]:
        """What a plain re-index covers: the folders of the previous reindex and the uploaded files."""
        try:
            roots = document_lookup.previous_roots(self.catalogue, collection)
        except ConfigError:
            roots = []
        if uploads_dir(self.home, collection).exists():
            roots.append(str(uploads_dir(self.home, collection)))
        return roots

    def remove(self, collection: str, doc: str, on_wait: Wait = None, timeout_s: float | None = None) -> list[str]:
        """Documents by id, exact path, or a path suffix that names exactly one; an uploaded original goes
        with its document, files in user folders stay."""
        with self.writing(collection, on_wait, timeout_s=timeout_s) as writer:
            paths = document_lookup.resolve(self.catalogue, collection, doc)
            writer.remove(paths)
        uploads = uploads_dir(self.home, collection).resolve()
        for p in paths:
            if Path(p).parent == uploads:
                Path(p).unlink(missing_ok=True)
        return paths

    def repair(self, collection: str, on_wait: Wait = None) -> dict:
        """Rebuild a damaged or missing index from the catalogue's stored embeddings (no re-embedding)."""
        with self.writing(collection, on_wait) as writer:
            repaired = writer.store.reconcile()
            writer.index.save()
        return {**repaired, "damaged_index_rebuilt": int(writer.rebuilt_damaged_index)}

    def catch_up(self, collection: str) -> int:
        """Bring this node's indexes up to the catalogue's change sequence (writes made by another machine
        sharing the database). Skipped while a writer of this home holds the lock: it brings them up to
        date itself. Returns the changes applied."""
        if self.catalogue.last_change(collection) <= self.indexes.position(collection):
            return 0
        try:
            with writer_lock(self.home, 0), self.writing(collection, lock=False) as writer:
                return writer.store.catch_up()
        except LockedError:
            return 0
