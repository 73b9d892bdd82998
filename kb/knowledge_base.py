"""KnowledgeBase: the facade the CLI, the web page, the API and Python users call. Wiring only: each
method hands one job to the module that owns it (ingest/, retrieval/, kb/).

With kb/home.py (the parts it shares), the documented exception to `kb` importing nothing above it:
these two modules wire `ingest` and `retrieval` together; nothing else in `kb/` imports them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ingest.pipeline import Event, SyncReport
from ingest.uploads import Upload, UploadSink, store_uploads, uploads_dir
from ingest.writing import Wait
from kb import document_lookup, history, query_log
from kb.access import Identity
from kb.conversations import Turn
from kb.errors import (CatalogueError, ConfigError, GeneratorError, IndexCorruptError, KBError, LockedError,
                       PermissionDeniedError)
from kb.home import Home
from kb.index_store import BUILD_WAIT_S
from kb.jobs import Job
from kb.keyword_index import KeywordIndex
from kb.settings import Settings, check_collection_name
from kb.status import Status, collection_status, integrity_problems
from retrieval.answer import Answer, AnswerStream, query_log_row, turn_row
from retrieval.evaluation import EvalReport, evaluate, load_qa
from retrieval.followup import condense, recent, search_with_history, stands_alone
from retrieval.generators import GENERATORS, Generator, choose_backend, make_generator
from retrieval.retriever import Retriever, Shard, documents_named
from retrieval.types import Context, Retrieval
log = logging.getLogger(__name__)


class KnowledgeBase:
    """One collection of a Home, acting for one caller (None: the local operator). Cheap to make: every
    part (catalogue, models, indexes, jobs, query log) belongs to the Home and is shared."""

    def __init__(self, home: str | Path | Home | None = None, settings: Settings | None = None,
                 collection: str | None = None, caller: Identity | None = None):
        self.house = home if isinstance(home, Home) else Home(settings, home)  # a path: a Home of its own
        self.settings = self.house.settings
        self.home = self.house.path
        self.collection = check_collection_name(collection or self.settings.collection)
        self.caller = caller  # who this view acts for (for_caller); None = the local operator
        self.lock_timeout_s: float | None = None  # how long a write waits for the writer lock (None: the setting)

    # the Home's parts, shared by every view
    catalogue = property(lambda self: self.house.catalogue)
    access = property(lambda self: self.house.access)
    jobs = property(lambda self: self.house.jobs)
    query_log = property(lambda self: self.house.query_log)
    embedder = property(lambda self: self.house.embedder)
    reranker = property(lambda self: self.house.reranker)
    indexes = property(lambda self: self.house.indexes)
    writes = property(lambda self: self.house.writes)

    # -- who may do what (kb/access.py) --------------------------------------------------------
    def for_caller(self, caller: Identity, collection: str | None = None) -> KnowledgeBase:
        """A view acting for `caller`: reads need `read` on the collection, writes `write`; questions,
        uploads, deletions and re-indexing are audited."""
        if collection is None:
            return self._view(caller=caller)
        return self._view(caller=caller, collection=check_collection_name(collection), scope=())

    def patient(self, lock_timeout_s: float) -> KnowledgeBase:
        """This view, its writes waiting up to `lock_timeout_s` for the writer lock (the job worker)."""
        return self._view(lock_timeout_s=lock_timeout_s)

    def _view(self, **changes) -> KnowledgeBase:  # noqa: ANN003 - view attributes
        """Another view of the same Home: this one's attributes, with `changes`."""
        view = copy.copy(self)
        view.__dict__.update(changes)
        return view

    def _allow(self, level: str, action: str | None = None, **detail) -> None:  # noqa: ANN003
        """Checked before anything is read or written, so a forbidden chunk never reaches a prompt."""
        if len(self.scope) > 1 and level != "read":
            raise ConfigError(f"a write goes to one collection, not {', '.join(self.scope)}")
        if self.caller is None:
            return
        self.caller.require(self.collection, level)
        if action:
            self.access.audit(self.caller.name, action, self.collection, **detail)

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
        return self.house.index_identity()

    def uploads_dir(self) -> Path:
        return uploads_dir(self.home, self.collection)

    # -- writes (ingest/writing.py: one writer at a time) ----------------------------------------
    def sync(self, paths: list[str | Path], full: bool = False, progress: bool = False,
             on_event: Event | None = None, on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Make the collection match these files/folders: add new, update changed, remove deleted (needs
        `write`: every write below goes through here, `ingest` or `remove`).
        With no paths, re-syncs the folders of the previous reindex. `full` rebuilds everything the
        collection holds aside and swaps it in when done (ingest/rebuild.py)."""
        self._allow("write")
        roots = [str(Path(p).resolve()) for p in paths]
        if full:
            return self.writes.rebuild(self.collection, roots, progress, on_event, on_wait, self.lock_timeout_s)
        roots = roots or document_lookup.previous_roots(self.catalogue, self.collection)
        return self.writes.sync(self.collection, roots, "reindex", progress, on_event, on_wait, retry_failed,
                                self.lock_timeout_s)

    def ingest(self, paths: list[str | Path], progress: bool = False, on_event: Event | None = None,
               on_wait: Wait = None, retry_failed: bool = False) -> SyncReport:
        """Add or update files/folders without removing anything else."""
        self._allow("write")
        return self.writes.sync(self.collection, [str(Path(p).resolve()) for p in paths], "ingest", progress,
                                on_event, on_wait, retry_failed, self.lock_timeout_s)

    # -- background jobs (run by app/worker.py: in-process or `kb worker`) --------------------
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
        return self.writes.remove(self.collection, doc, on_wait, self.lock_timeout_s)

    def remove_or_queue(self, doc: str) -> tuple[list[str], Job | None]:
        """Remove at once when the collection has no job running or waiting and the writer lock is free
        within a second; otherwise queue the removal behind them as a job (returned): a request never
        waits for an upload. An unknown document is refused at once either way."""
        self._allow("write", "delete", document=doc)
        paths = document_lookup.resolve(self.catalogue, self.collection, doc)
        if not self.jobs.pending(self.collection):
            try:
                return self.writes.remove(self.collection, doc, None, 1.0), None
            except LockedError:
                pass  # another collection's writer: queued too
        return paths, self.jobs.submit(self.collection, "delete", {"document": paths[0]})

    def reindex_all(self, progress: bool = False, on_event: Event | None = None, on_wait: Wait = None) -> SyncReport:
        """Re-sync the collection: the folders of its previous reindex and its uploaded files."""
        roots = self.writes.resync_roots(self.collection)
        return self.sync(roots, progress=progress, on_event=on_event, on_wait=on_wait) if roots else SyncReport()

    def repair_index(self, collection: str | None = None, on_wait: Wait = None) -> dict:
        """Rebuild a damaged or missing index from the catalogue's stored embeddings (no re-embedding)."""
        self._allow("write")
        return self.writes.repair(collection or self.collection, on_wait)

    # -- reads: this collection, or several as one (`reading`) ------------------------------------
    def reading(self, collections: list[str]) -> KnowledgeBase:
        """A view whose questions search these collections as one ranking (scores that compare across
        them: retrieval/retriever.py), each question logged in each; needs `read` on every one."""
        scope = tuple(check_collection_name(c) for c in dict.fromkeys(collections))
        return self._view(collection=scope[0], scope=scope)

    scope: tuple[str, ...] = ()  # the collections a read covers (empty: this collection)

    def _read_scope(self, action: str | None = None, **detail) -> list[str]:  # noqa: ANN003
        names = list(self.scope or (self.collection,))
        if self.caller is not None:
            for c in names:
                self.caller.require(c, "read")
            if action:
                self.access.audit(self.caller.name, action, ",".join(names)[:200], **detail)  # the column's size
        return names

    def retriever(self) -> Retriever:
        """A collection whose indexes cannot be opened (damaged, being rebuilt) is left out of a search over
        several, with a warning; alone, its error is raised."""
        names, shards = self._read_scope(), []
        for c in names:
            try:
                limits = tuple(self.indexes.limits(c))  # before the indexes: opening them may ask for a repair
                shards.append(Shard(c, self.indexes.reader_index(c), self.indexes.reader_keywords(c), limits))
            except KBError as exc:
                if len(names) == 1:
                    raise
                log.warning("search of %s skipped: %s", c, exc)
        if not shards:
            raise IndexCorruptError(f"no collection of {', '.join(names)} can be searched now (see the log)")
        return Retriever(self.settings.retrieval, self.embedder, shards, self.catalogue, self.reranker,
                         self.house.english())

    def retrieve(self, question: str, top_k: int | None = None, documents: list[str] | None = None,
                 record: bool = False, history: Sequence[Turn] = (), backend: str | None = None) -> Retrieval:
        """The hybrid retriever's result: contexts (top-k), whether anything relevant was found, timings.
        `record`: a search of its own (audited and logged; an answer records itself). `history`: the
        conversation's earlier turns; a follow-up that leans on them is condensed by the language model
        of `backend` (the configured one by default), or searched with the previous question by the
        extractive backend (retrieval/followup.py); `Retrieval.standalone` then says what was searched."""
        names = self._read_scope("search" if record else None, question=question)
        doc_ids = set().union(*(documents_named(self.catalogue, c, documents) for c in names)) if documents else None
        retriever = self.retriever()

        def search(text: str, k: int | None) -> Retrieval:
            nonlocal retriever
            r = retriever.search(text, k, doc_ids)
            if r.orphans and len(r.contexts) < (k or self.settings.retrieval.top_k) \
                    and self.house.upkeep.wait(BUILD_WAIT_S, names):  # indexes ahead, too little left to answer:
                retriever = self.retriever()  # the repair the reader asked for, waited for
                r = retriever.search(text, k, doc_ids)
            return r

        history = list(history)
        if history and not stands_alone(question):
            generator = self.generator(backend)
            if generator.backend == "extractive":
                r = search_with_history(search, question, history, top_k or self.settings.retrieval.top_k)
            else:
                t0 = time.perf_counter()
                try:
                    text = condense(generator, question, history)
                except GeneratorError as exc:  # the model is out of reach: its answer will say so; search anyway
                    log.warning("condensing a follow-up failed (%s); searched with the previous question", exc)
                    text = None
                spent = time.perf_counter() - t0
                if text is None:
                    r = search_with_history(search, question, history, top_k or self.settings.retrieval.top_k)
                else:
                    r = search(text, top_k)
                    r.question, r.standalone = question, text
                r.timings = {"condense": spent, **r.timings}
        else:
            r = search(question, top_k)
        for c in names:
            self.indexes.after_search(c)
        if record:
            self._log("search", question, r, None)
        return r

    def _log(self, kind: str, question: str, r: Retrieval, answer: Answer | None) -> None:
        for c in self.scope or (self.collection,):
            self.query_log.add(c, **query_log_row(kind, question, r, answer))

    def search(self, question: str, top_k: int | None = None, documents: list[str] | None = None,
               log: bool = True) -> list[Context]:
        """Ranked contexts for a question (empty when nothing passes the relevance floor)."""
        if not log:
            self._read_scope("search", question=question)
        return self.retrieve(question, top_k, documents, record=log).contexts

    def ask_stream(self, question: str, backend: str | None = None, top_k: int | None = None,
                   documents: list[str] | None = None, history: Sequence[Turn] = (),
                   on_done: Callable[[Answer, Retrieval], None] | None = None) -> AnswerStream:
        """Iterate for the answer text as it streams; `.answer` (an Answer) is set at the end and logged.
        With `history`, the follow-up is resolved before retrieval (`retrieve`) and the prompt quotes the
        recent turns, so an answer can refer back to them."""
        self._read_scope("ask", question=question)
        generator = self.generator(backend)  # a backend the caller may not use is refused before any work
        r = self.retrieve(question, top_k, documents, history=history, backend=backend)

        def done(a: Answer) -> None:
            self._log("ask", question, r, a)
            if on_done is not None:
                on_done(a, r)

        return AnswerStream(question, r, generator, self.settings.retrieval.context_chars, on_done=done,
                            history=recent(list(history)))

    def ask(self, question: str, backend: str | None = None, top_k: int | None = None,
            documents: list[str] | None = None, history: Sequence[Turn] = ()) -> Answer:
        """The answer text, its citations (document, page, chunk), the contexts and the time per stage."""
        return self.ask_stream(question, backend, top_k, documents, history).result()

    # -- conversations (kb/conversations.py): a signed-in user's chats, kept ------------------------
    def converse(self, question: str, conversation: int | None = None, backend: str | None = None,
                 top_k: int | None = None, documents: list[str] | None = None,
                 regenerate: int | None = None) -> AnswerStream:
        """`ask_stream` within one of the caller's conversations (None: a new one, titled from the
        question, made once the question is checked and searched): its earlier turns are the history, and
        the answered turn is kept in it (`stream.conversation_id`, and `stream.turn_id` once the answer is
        done). `regenerate`: that turn is answered again, from the turns before it, and replaced."""
        if self.caller is None:
            raise ConfigError("conversations belong to a signed-in user")
        convs, history = self.house.conversations, []
        if conversation is not None:
            collection, history = convs.history(self.caller, conversation, before=regenerate)
            if (collection is None) != bool(self.scope) or (collection is not None and collection != self.collection):
                raise ConfigError(f"this conversation is about {collection or 'every readable collection'!r}, "
                                  f"not {', '.join(self.scope) or self.collection!r}")

        def keep(a: Answer, r: Retrieval) -> None:
            stream.turn_id = convs.add_turn(self.caller, stream.conversation_id, turn_row(a, r), regenerate)

        stream = self.ask_stream(question, backend, top_k, documents, history, on_done=keep)
        stream.conversation_id = conversation if conversation is not None else \
            convs.start(self.caller, None if self.scope else self.collection, question)
        return stream

    def downloadable(self, path: str) -> bool:
        """Whether `original(path)` would serve the file (checked without reading it)."""
        return any(document_lookup.downloadable(self.catalogue, c, path) for c in self._read_scope())

    def original(self, path: str) -> bytes | None:
        """A document's original bytes for download (None unless it is still the file indexed there)."""
        for c in self._read_scope():
            data = document_lookup.original(self.catalogue, c, path)
            if data is not None:
                return data
        return None

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
        history.record_evaluation(self.catalogue, self.collection, report.to_dict(), qa_file, corpus)

    def documents(self) -> list[document_lookup.DocumentInfo]:
        self._allow("read")
        return document_lookup.documents(self.catalogue, self.collection)

    def metrics(self, last: int = 1000) -> query_log.QueryMetrics:
        """Monitoring from the query log: latency p50/p95 per stage (ms) and queries per minute."""
        self._allow("read")
        self.query_log.flush()
        return query_log.query_metrics(self.catalogue, self.collection, last)

    def check(self) -> dict[str, list[str]]:
        """Integrity problems per part (`kb status --check`); empty lists = healthy."""
        self._allow("read")
        try:
            self.catalogue
        except CatalogueError as exc:  # too damaged to open
            return {"catalogue": [str(exc)], "index": []}
        return integrity_problems(self.catalogue, self.collection, self.indexes.open_index,  # opened as they are:
                                  lambda c: KeywordIndex.for_reading(self.indexes.keyword_dir(c)))  # never repaired

    def status(self) -> Status:
        self._allow("read")
        c = self.collection
        return collection_status(self.settings, self.catalogue, c, self.index_identity(),
                                 self.indexes.reader_index(c), self.indexes.reader_keywords(c))

