"""KnowledgeBase: the facade the CLI, the web page, the API and Python users call. Wiring only: each
method hands one job to the module that owns it (ingest/, retrieval/, kb/).

The single documented exception to `kb` importing nothing above it: this module wires `ingest`
and `retrieval` together; nothing in `kb/` imports it back.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from ingest.chunking import chunker_identity
from ingest.pipeline import Event, IndexWriter, SyncReport
from ingest.rebuild import CollectionLayout, full_rebuild, record_sources
from ingest.uploads import Upload, store_uploads
from kb import document_lookup, monitoring
from kb.access import AccessControl, Identity
from kb.catalogue import Catalogue
from kb.embeddings import Embedder, make_embedder
from kb.errors import CatalogueError, ConfigError, LockedError, PermissionDeniedError
from kb.index_store import IndexStore
from kb.jobs import Job, JobQueue
from kb.keyword_index import ENGINE_ID
from kb.locking import writer_died, writer_lock
from kb.settings import Settings
from kb.status import Status, collection_status, integrity_problems
from retrieval.answer import Answer, AnswerStream, query_log_row
from retrieval.evaluation import EvalReport, evaluate, load_qa
from retrieval.generators import Generator, make_generator
from retrieval.rerank import make_reranker
from retrieval.retriever import Retriever, documents_named
from retrieval.types import Context, Retrieval

Wait = Callable[[str], None] | None  # told when another writer holds the lock
_NAME = re.compile(r"[^\W_][\w.-]{0,99}")  # letters (any script), digits, . _ -; no path separators


def check_collection_name(name: str) -> str:
    """A collection name becomes a folder name under the data home: nothing that could leave it."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-' (up to 100), "
                          "starting with a letter or digit")
    return name


class KnowledgeBase:
    def __init__(self, home: str | Path | None = None, settings: Settings | None = None,
                 collection: str | None = None):
        settings = settings or Settings()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        self.settings = settings
        self.home = Path(settings.home)
        self.collection = check_collection_name(collection or settings.collection)
        self.indexes = IndexStore(self.home, settings.index, self.index_identity, self.repair_index, self.catch_up)
        self.caller: Identity | None = None  # who this view acts for (for_caller); None = the local operator

    # -- who may do what (kb/access.py) --------------------------------------------------------
    @cached_property
    def access(self) -> AccessControl:
        return AccessControl(self.catalogue)

    def for_caller(self, caller: Identity, collection: str | None = None) -> KnowledgeBase:
        """A view acting for `caller`: reads need `read` on the collection, writes `write`; questions,
        uploads, deletions and re-indexing are audited. Shares every loaded part with this one."""
        self.catalogue, self.query_log, self.access, self.reranker  # noqa: B018 - made once, shared by every view
        view = copy.copy(self)
        view.caller, view.collection = caller, check_collection_name(collection or self.collection)
        return view

    def _allow(self, level: str, action: str | None = None, **detail) -> None:  # noqa: ANN003
        """Checked before anything is read or written, so a forbidden chunk never reaches a prompt."""
        if self.caller is None:
            return
        self.caller.require(self.collection, level)
        if action:
            self.access.audit(self.caller.name, action, self.collection, **detail)

    # -- parts, made on first use ------------------------------------------------------------
    @cached_property
    def catalogue(self) -> Catalogue:
        self.home.mkdir(parents=True, exist_ok=True)
        catalogue = Catalogue(self.settings.catalogue_url)
        if writer_died(self.home):  # the last writer was killed mid-way: check before anyone reads
            self._raise_if_damaged(catalogue)
        return catalogue

    def _raise_if_damaged(self, catalogue: Catalogue) -> None:
        if problems := catalogue.check():
            fix = ("Restore the database from its backup" if self.settings.database_url else
                   "Restore it from a backup, or rebuild it from the indexed files with `kb rebuild-catalogue` "
                   "(the damaged file is kept beside it)")
            raise CatalogueError(f"the catalogue {self.settings.catalogue_url.split('@')[-1]} is damaged "
                                 f"({'; '.join(problems[:3])}). {fix}")

    @cached_property
    def embedder(self) -> Embedder:
        return make_embedder(self.settings.embedding)

    @cached_property
    def query_log(self) -> monitoring.QueryLogWriter:
        return monitoring.QueryLogWriter(self.catalogue)

    @cached_property
    def reranker(self):  # noqa: ANN201 - a sentence-transformers CrossEncoder, or None
        return make_reranker(self.settings.retrieval.reranker, self.settings.embedding.device)

    def generator(self, backend: str | None = None) -> Generator:
        """The answer generator (one per process and settings: a local model is loaded once)."""
        cfg = self.settings.generator
        cfg = cfg.model_copy(update={"backend": backend}) if backend else cfg
        return make_generator(cfg, self.settings.embedding.device, self.settings.retrieval.context_chars)

    def index_identity(self) -> dict:
        """What an index was built with; a difference from the running settings needs `reindex --full`."""
        return {"embedding_model": self.embedder.name, "dimension": self.embedder.dimension, "normalized": True,
                "chunking": chunker_identity(self.settings.chunking), "keyword_index": ENGINE_ID,
                "index_type": self.settings.index.type}

    def uploads_dir(self) -> Path:
        return self.home / "uploads" / self.collection

    # -- writes, one at a time (the writer lock) ----------------------------------------------
    @contextmanager
    def _locked(self, on_wait: Wait) -> Iterator[None]:
        """The writer lock; after a killed writer, the catalogue's integrity is checked before any write."""
        with writer_lock(self.home, self.settings.ingest.lock_timeout_s, on_wait,
                         database_url=self.settings.database_url) as unclean:
            if unclean:
                self._raise_if_damaged(self.catalogue)
            yield

    @contextmanager
    def _writing(self, on_wait: Wait = None, on_event: Event | None = None,
                 collection: str | None = None, lock: bool = True) -> Iterator[IndexWriter]:
        """An IndexWriter on the collection's indexes, under the writer lock (unless the caller holds it)."""
        with self._locked(on_wait) if lock else _held():
            collection = collection or self.collection
            index, keywords, rebuilt = self.indexes.for_writing(collection)  # checks the identity first
            writer = IndexWriter(self.settings, self.catalogue, index, keywords, self.embedder, collection, on_event)
            writer.rebuilt_damaged_index = rebuilt
            try:
                yield writer
            finally:
                keywords.close()  # releases tantivy's own writer lock at once

    def sync(self, paths: list[str | Path], full: bool = False, progress: bool = False,
             on_event: Event | None = None, on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Make the collection match these files/folders: add new, update changed, remove deleted (needs
        `write`: every write below goes through here, `ingest` or `remove`).
        With no paths, re-syncs the folders of the previous reindex. `full` rebuilds everything the
        collection holds aside and swaps it in when done (ingest/rebuild.py)."""
        self._allow("write")
        roots = [str(Path(p).resolve()) for p in paths]
        if full:
            with self._locked(on_wait):
                layout = CollectionLayout(self.catalogue, self.collection, self.home / "collections", self.uploads_dir())
                report = full_rebuild(layout, roots, lambda c, e=None: self._writing(on_event=e, collection=c, lock=False),
                                      self.indexes.open_index, progress, on_event, self.settings.crash_at)
                self.indexes.forget(self.collection)
                return report
        return self._sync(roots or document_lookup.previous_roots(self.catalogue, self.collection), "reindex",
                          progress, on_event, on_wait, retry_failed)

    def ingest(self, paths: list[str | Path], progress: bool = False, on_event: Event | None = None,
               on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Add or update files/folders without removing anything else."""
        self._allow("write")
        return self._sync([str(Path(p).resolve()) for p in paths], "ingest", progress, on_event, on_wait,
                          retry_failed)

    def _sync(self, roots: list[str], command: str, progress: bool, on_event: Event | None, on_wait: Wait,
              retry_failed: bool = False) -> SyncReport:
        """Failed files whose bytes did not change are not read again unless `retry_failed`."""
        with self._writing(on_wait, on_event) as writer:
            report = writer.sync([Path(p) for p in roots], delete_missing=command == "reindex",
                                 progress=progress, command=command, retry_failed=retry_failed)
        record_sources(CollectionLayout(self.catalogue, self.collection, self.home / "collections", self.uploads_dir()))
        return report

    # -- background jobs (run by app/worker.py: in-process or `kb worker`) --------------------
    @cached_property
    def jobs(self) -> JobQueue:
        return JobQueue(self.catalogue)

    def submit_uploads(self, files: Iterable[Upload]) -> tuple[Job | None, list[tuple[str, str]]]:
        """Store uploaded files now (a file over the size limit is refused before it is read) and queue
        their indexing; returns the job (None when every file was refused) and the refused (path, reason)."""
        self._allow("write")
        paths, refused = store_uploads(files, self.uploads_dir(), self.settings.ingest.max_file_mb)
        if paths:
            self._allow("write", "upload", files=[p.name for p in paths])
        job = self.jobs.submit(self.collection, "upload", {"paths": [str(p) for p in paths]}) if paths else None
        return job, refused

    def submit_reindex(self, paths: list[str | Path] = (), full: bool = False) -> Job:
        """Queue a re-index (no paths: the previous folders and the uploads) or a full rebuild. Naming
        folders of the server is for administrators: anything the server can read would become searchable."""
        if paths and self.caller is not None and not self.caller.admin:
            raise PermissionDeniedError(f"{self.caller.name} may not index folders of the server (administrators only)")
        self._allow("write", "reindex", paths=[str(p) for p in paths], full=full)
        return self.jobs.submit(self.collection, "reindex_full" if full else "reindex",
                                {"paths": [str(Path(p).resolve()) for p in paths]})

    def remove(self, doc: str, on_wait: Wait = None) -> list[str]:
        """Remove documents by id, exact path, or a path suffix that names exactly one."""
        self._allow("write", "delete", document=doc)
        with self._writing(on_wait) as writer:
            paths = document_lookup.resolve(self.catalogue, self.collection, doc)
            writer.remove(paths)
        uploads = self.uploads_dir().resolve()
        for p in paths:  # an uploaded original goes with its document; files in user folders stay
            if Path(p).parent == uploads:
                Path(p).unlink(missing_ok=True)
        return paths

    def reindex_all(self, progress: bool = False, on_event: Event | None = None, on_wait: Wait = None) -> SyncReport:
        """Re-sync the collection: the folders of its previous reindex and its uploaded files."""
        try:
            roots = document_lookup.previous_roots(self.catalogue, self.collection)
        except ConfigError:
            roots = []
        if self.uploads_dir().exists():
            roots.append(str(self.uploads_dir()))
        return self.sync(roots, progress=progress, on_event=on_event, on_wait=on_wait) if roots else SyncReport()

    def repair_index(self, collection: str | None = None, on_wait: Wait = None) -> dict:
        """Rebuild a damaged or missing index from the catalogue's stored embeddings (no re-embedding)."""
        self._allow("write")
        with self._writing(on_wait, collection=collection) as writer:
            repaired = writer.reconcile()
            writer.index.save()
        return {**repaired, "damaged_index_rebuilt": int(writer.rebuilt_damaged_index)}

    def catch_up(self, collection: str | None = None) -> int:
        """Bring this node's indexes of a collection up to the catalogue's change sequence (writes made by
        another machine sharing the database). Skipped while a writer of this home holds the lock: it
        brings them up to date itself. Returns the changes applied."""
        collection = collection or self.collection
        if self.catalogue.last_change(collection) <= self.indexes.position(collection):
            return 0
        try:
            with writer_lock(self.home, 0), self._writing(collection=collection, lock=False) as writer:
                return writer.catch_up()
        except LockedError:
            return 0

    # -- reads ----------------------------------------------------------------------------------
    def retriever(self, collection: str | None = None) -> Retriever:
        if collection not in (None, self.collection) and self.caller is not None:
            raise PermissionDeniedError("a view reads its own collection only")
        self._allow("read")
        c = collection or self.collection
        return Retriever(self.settings.retrieval, self.embedder, self.indexes.reader_index(c),
                         self.indexes.reader_keywords(c), self.catalogue, c, self.reranker)

    def retrieve(self, question: str, top_k: int | None = None, documents: list[str] | None = None) -> Retrieval:
        """The hybrid retriever's result: contexts (top-k), whether anything relevant was found, timings."""
        self._allow("read")
        doc_ids = documents_named(self.catalogue, self.collection, documents) if documents else None
        return self.retriever().search(question, top_k, doc_ids)

    def search(self, question: str, top_k: int | None = None, documents: list[str] | None = None,
               log: bool = True) -> list[Context]:
        """Ranked contexts for a question (empty when nothing passes the relevance floor)."""
        self._allow("read", "search", question=question)
        r = self.retrieve(question, top_k, documents)
        if log:
            self.query_log.add(self.collection, **query_log_row("search", question, r, None))
        return r.contexts

    def ask_stream(self, question: str, backend: str | None = None, top_k: int | None = None,
                   documents: list[str] | None = None) -> AnswerStream:
        """Iterate for the answer text as it streams; `.answer` (an Answer) is set at the end and logged."""
        self._allow("read", "ask", question=question)
        r = self.retrieve(question, top_k, documents)
        log = lambda a: self.query_log.add(self.collection, **query_log_row("ask", question, r, a))  # noqa: E731
        return AnswerStream(question, r, self.generator(backend), self.settings.retrieval.context_chars, on_done=log)

    def ask(self, question: str, backend: str | None = None, top_k: int | None = None,
            documents: list[str] | None = None) -> Answer:
        """The answer text, its citations (document, page, chunk), the contexts and the time per stage."""
        return self.ask_stream(question, backend, top_k, documents).result()

    def original(self, path: str) -> bytes | None:
        """A document's original bytes for download (None unless it is still the file indexed there)."""
        self._allow("read")
        return document_lookup.original(self.catalogue, self.collection, path)

    def evaluate(self, qa_path: str | Path, backend: str | None = None, answer_limit: int | None = None,
                 results_out: str | Path | None = None, progress: bool = False) -> EvalReport:
        """Retrieval metrics on a QA set (and answer metrics with a backend): see retrieval/evaluation.py."""
        self._allow("read")
        report = evaluate(self.retriever(), load_qa(Path(qa_path)), self.settings.retrieval,
                          self.generator(backend) if backend else None, answer_limit, results_out, progress)
        report.collection, report.chunk_tokens = self.collection, self.settings.chunking.chunk_tokens
        report.chunks = self.catalogue.counts(self.collection)["chunks"]
        return report

    def record_evaluation(self, report: EvalReport, qa_file: str, corpus: str | None) -> None:
        self._allow("write")
        monitoring.record_evaluation(self.catalogue, self.collection, report.to_dict(), qa_file, corpus)

    def documents(self) -> list[monitoring.DocumentInfo]:
        self._allow("read")
        return monitoring.documents(self.catalogue, self.collection)

    def metrics(self, last: int = 1000) -> monitoring.QueryMetrics:
        """Monitoring from the query log: latency p50/p95 per stage (ms) and queries per minute."""
        self._allow("read")
        self.query_log.flush()
        return monitoring.query_metrics(self.catalogue, self.collection, last)

    def check(self) -> dict[str, list[str]]:
        """Integrity problems per part (`kb status --check`); empty lists = healthy."""
        self._allow("read")
        try:
            self.catalogue
        except CatalogueError as exc:  # too damaged to open
            return {"catalogue": [str(exc)], "index": []}
        return integrity_problems(self.catalogue, self.collection, self.indexes.open_index,
                                  self.indexes.reader_keywords)

    def status(self) -> Status:
        self._allow("read")
        c = self.collection
        return collection_status(self.settings, self.catalogue, c, self.index_identity(),
                                 self.indexes.reader_index(c), self.indexes.reader_keywords(c))


@contextmanager
def _held() -> Iterator[None]:
    """Stands in for the writer lock when the caller already holds it (a full rebuild's steps)."""
    yield
