"""KnowledgeBase: the facade the CLI, the web page, the API and Python users call. Wiring only: each
method hands one job to the module that owns it (ingest/, retrieval/, kb/).

The single documented exception to `kb` importing nothing above it: this module wires `ingest`
and `retrieval` together; nothing in `kb/` imports it back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from ingest.chunking import chunker_identity
from ingest.pipeline import Event, SyncReport
from ingest.uploads import Upload, UploadSink, store_uploads, uploads_dir
from ingest.writing import Wait, Writes
from kb import document_lookup, monitoring
from kb.access import AccessControl, Identity
from kb.catalogue import Catalogue
from kb.embeddings import Embedder, english_embedder, make_embedder
from kb.errors import CatalogueError, ConfigError, PermissionDeniedError
from kb.index_store import IndexStore
from kb.jobs import Job, JobQueue
from kb.keyword_index import ENGINE_ID
from kb.locking import writer_died
from kb.private_home import make_private
from kb.settings import Settings, check_collection_name
from kb.status import Status, collection_status, integrity_problems, refuse_damaged_catalogue
from retrieval.answer import Answer, AnswerStream, query_log_row
from retrieval.evaluation import EvalReport, evaluate, load_qa
from retrieval.generators import GENERATORS, Generator, choose_backend, make_generator
from retrieval.rerank import make_reranker
from retrieval.retriever import Retriever, documents_named
from retrieval.types import Context, Retrieval


class KnowledgeBase:
    def __init__(self, home: str | Path | None = None, settings: Settings | None = None,
                 collection: str | None = None):
        settings = settings or Settings()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        self.settings = settings
        self.home = Path(settings.home)
        self.collection = check_collection_name(collection or settings.collection)
        make_private(self.home)
        self.indexes = IndexStore(self.home, settings.index, self.index_identity,
                                  lambda c: self.writes.repair(c), lambda c: self.writes.catch_up(c))
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
        catalogue = Catalogue(self.settings.catalogue_url)
        if writer_died(self.home):  # the last writer was killed mid-way: check before anyone reads
            refuse_damaged_catalogue(catalogue, self.settings)
        return catalogue

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
        """The answer generator (one per process and settings: a local model is loaded once). A caller
        may name only the backend the operator configured; administrators may choose another, and
        `openai` only when its endpoint is configured (questions and passages never go to a default URL)."""
        cfg = self.settings.generator
        if backend and backend not in (cfg.backend, choose_backend(cfg, self.settings.embedding.device)):
            if backend not in GENERATORS:
                raise ConfigError(f"unknown generator backend {backend!r}; choose one of: {', '.join(sorted(GENERATORS))}")
            if self.caller is not None and not self.caller.admin:
                raise PermissionDeniedError(f"{self.caller.name} may not choose the answer backend "
                                            "(administrators only)")
            if self.caller is not None and backend == "openai" and "base_url" not in cfg.model_fields_set:
                raise ConfigError("the openai backend has no endpoint here (the operator sets KB_GENERATOR__BASE_URL)")
        cfg = cfg.model_copy(update={"backend": backend}) if backend else cfg
        return make_generator(cfg, self.settings.embedding.device, self.settings.retrieval.context_chars)

    def index_identity(self) -> dict:
        """What an index was built with; a difference from the running settings needs `reindex --full`."""
        return {"embedding_model": self.embedder.name, "dimension": self.embedder.dimension, "normalized": True,
                "chunking": chunker_identity(self.settings.chunking), "keyword_index": ENGINE_ID,
                "index_type": self.settings.index.type}

    def uploads_dir(self) -> Path:
        return uploads_dir(self.home, self.collection)

    # -- writes (ingest/writing.py: one writer at a time) ----------------------------------------
    @cached_property
    def writes(self) -> Writes:
        return Writes(self.settings, self.catalogue, self.embedder, self.indexes)

    def sync(self, paths: list[str | Path], full: bool = False, progress: bool = False,
             on_event: Event | None = None, on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Make the collection match these files/folders: add new, update changed, remove deleted (needs
        `write`: every write below goes through here, `ingest` or `remove`).
        With no paths, re-syncs the folders of the previous reindex. `full` rebuilds everything the
        collection holds aside and swaps it in when done (ingest/rebuild.py)."""
        self._allow("write")
        roots = [str(Path(p).resolve()) for p in paths]
        if full:
            return self.writes.rebuild(self.collection, roots, progress, on_event, on_wait)
        roots = roots or document_lookup.previous_roots(self.catalogue, self.collection)
        return self.writes.sync(self.collection, roots, "reindex", progress, on_event, on_wait, retry_failed)

    def ingest(self, paths: list[str | Path], progress: bool = False, on_event: Event | None = None,
               on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Add or update files/folders without removing anything else."""
        self._allow("write")
        return self.writes.sync(self.collection, [str(Path(p).resolve()) for p in paths], "ingest", progress,
                                on_event, on_wait, retry_failed)

    # -- background jobs (run by app/worker.py: in-process or `kb worker`) --------------------
    @cached_property
    def jobs(self) -> JobQueue:
        return JobQueue(self.catalogue)

    def upload_sink(self) -> UploadSink:
        """Where an upload is received, piece by piece, within the upload limits (needs `write`: checked
        before a byte is stored); `queue_uploads` then makes its files visible and queues their indexing."""
        self._allow("write")
        ing = self.settings.ingest
        return UploadSink(self.uploads_dir(), ing.max_file_mb, ing.max_upload_mb, ing.max_upload_files)

    def queue_uploads(self, sink: UploadSink) -> tuple[Job | None, list[tuple[str, str]]]:
        """The received files under their names, and the job indexing them (None when every file was
        refused); returns the job and the refused (path, reason)."""
        self._allow("write")
        paths = sink.commit()
        if paths:
            self._allow("write", "upload", files=[p.name for p in paths])
        job = self.jobs.submit(self.collection, "upload", {"paths": [str(p) for p in paths]}) if paths else None
        return job, sink.refused

    def submit_uploads(self, files: Iterable[Upload]) -> tuple[Job | None, list[tuple[str, str]]]:
        """Files already in memory (the web page): each refused before it is read when its type, its size
        or the upload's total says so; the others are stored and queued for indexing."""
        sink = self.upload_sink()
        store_uploads(files, sink)
        return self.queue_uploads(sink)

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
        return self.writes.remove(self.collection, doc, on_wait)

    def reindex_all(self, progress: bool = False, on_event: Event | None = None, on_wait: Wait = None) -> SyncReport:
        """Re-sync the collection: the folders of its previous reindex and its uploaded files."""
        roots = self.writes.resync_roots(self.collection)
        return self.sync(roots, progress=progress, on_event=on_event, on_wait=on_wait) if roots else SyncReport()

    def repair_index(self, collection: str | None = None, on_wait: Wait = None) -> dict:
        """Rebuild a damaged or missing index from the catalogue's stored embeddings (no re-embedding)."""
        self._allow("write")
        return self.writes.repair(collection or self.collection, on_wait)

    # -- reads ----------------------------------------------------------------------------------
    def retriever(self, collection: str | None = None) -> Retriever:
        if collection not in (None, self.collection) and self.caller is not None:
            raise PermissionDeniedError("a view reads its own collection only")
        self._allow("read")
        c = collection or self.collection
        return Retriever(self.settings.retrieval, self.embedder, self.indexes.reader_index(c),
                         self.indexes.reader_keywords(c), self.catalogue, c, self.reranker,
                         english_embedder(self.settings.embedding, self.embedder))

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
        generator = self.generator(backend)  # a backend the caller may not use is refused before any work
        r = self.retrieve(question, top_k, documents)
        log = lambda a: self.query_log.add(self.collection, **query_log_row("ask", question, r, a))  # noqa: E731
        return AnswerStream(question, r, generator, self.settings.retrieval.context_chars, on_done=log)

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

