"""KnowledgeBase: the facade the CLI, the UI and Python users call (open a home, sync, search, status).

The single documented exception to `kb` importing nothing above it: this module wires `ingest`
and `retrieval` together; nothing in `kb/` imports it back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from sqlalchemy import select

from ingest.chunking import chunker_identity
from ingest.pipeline import Event, IndexWriter, SyncReport
from ingest.rebuild import CollectionLayout, full_rebuild, record_sources
from ingest.uploads import Upload, store_uploads
from kb import monitoring
from kb.catalogue import Catalogue, Document, IngestRun
from kb.monitoring import REBUILD_PREFIX
from kb.device import faiss_gpu_count, torch_device
from kb.embeddings import Embedder, make_embedder
from kb.errors import CatalogueError, ConfigError, IndexCorruptError, IndexMismatchError, NotFoundError
from kb.keyword_index import ENGINE_ID, KeywordIndex
from kb.locking import writer_died, writer_lock
from kb.settings import Settings
from kb.vector_index import FaissIndex
from retrieval.answer import Answer, AnswerStream
from retrieval.evaluation import evaluate, load_qa
from retrieval.generators import Generator, make_generator
from retrieval.rerank import make_reranker
from retrieval.retriever import Retriever, documents_named
from retrieval.types import Context, Retrieval

log = logging.getLogger(__name__)


class KnowledgeBase:
    def __init__(self, home: str | Path | None = None, settings: Settings | None = None,
                 collection: str | None = None):
        settings = settings or Settings()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        self.settings = settings
        self.home = Path(settings.home)
        self.collection = collection or settings.collection
        self._lock = threading.RLock()  # one KnowledgeBase serves every web session
        self._reader_indexes: dict[str, tuple] = {}  # collection -> (file stamp, FaissIndex)
        self._reader_keywords: dict[str, tuple] = {}  # collection -> (meta.json stamp, KeywordIndex)
        self._generators: dict[tuple, Generator] = {}

    @cached_property
    def catalogue(self) -> Catalogue:
        self.home.mkdir(parents=True, exist_ok=True)
        catalogue = Catalogue(self.settings.catalogue_url)
        if writer_died(self.home):  # the last writer was killed mid-way: check before anyone reads
            self._raise_if_damaged(catalogue)
        return catalogue

    def _raise_if_damaged(self, catalogue: Catalogue) -> None:
        problems = catalogue.check()
        if problems:
            raise CatalogueError(
                f"the catalogue {self.settings.catalogue_url.split('@')[-1]} is damaged "
                f"({'; '.join(problems[:3])}). Restore it from a backup, or rebuild it from the indexed "
                "files with `kb rebuild-catalogue` (the damaged file is kept beside it)")

    @contextmanager
    def _write_lock(self, on_wait: Callable[[str], None] | None) -> Iterator[None]:
        """The writer lock; after a killed writer, the catalogue's integrity is checked before any write."""
        with writer_lock(self.home, self.settings.ingest.lock_timeout_s, on_wait) as unclean:
            if unclean:
                self._raise_if_damaged(self.catalogue)
            yield

    @cached_property
    def embedder(self) -> Embedder:
        return make_embedder(self.settings.embedding)

    def index_identity(self) -> dict:
        return {
            "embedding_model": self.embedder.name,
            "dimension": self.embedder.dimension,
            "normalized": True,
            "chunking": chunker_identity(self.settings.chunking),
            "keyword_index": ENGINE_ID,
            "index_type": self.settings.index.type,
        }

    def index_dir(self, collection: str | None = None) -> Path:
        return self.home / "collections" / (collection or self.collection)

    def open_index(self, collection: str | None = None) -> FaissIndex:
        return FaissIndex(self.index_dir(collection), self.index_identity(), self.settings.index)

    def keyword_dir(self, collection: str | None = None) -> Path:
        return self.index_dir(collection) / "keywords"

    def _index_for_writing(self, collection: str) -> tuple[FaissIndex, bool]:
        """The index a writer updates; a damaged one is set aside and started empty, so the writer's
        reconciliation rebuilds it from the catalogue's stored embeddings (nothing re-embedded)."""
        try:
            return self.open_index(collection), False
        except IndexCorruptError as exc:
            log.warning("%s; rebuilding it from the catalogue", exc)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            for name in ("index.faiss", "manifest.json"):
                f = self.index_dir(collection) / name
                if f.exists():
                    f.replace(f.with_name(f"{name}.damaged-{stamp}"))
            return self.open_index(collection), True

    # -- writes (under the writer lock) ----------------------------------------------------
    def _writer(self, on_event: Event | None, collection: str | None = None) -> IndexWriter:
        collection = collection or self.collection
        index, rebuilt = self._index_for_writing(collection)  # checks the identity first
        keywords = KeywordIndex.open_or_reset(self.keyword_dir(collection))
        writer = IndexWriter(self.settings, self.catalogue, index, keywords, self.embedder, collection, on_event)
        writer.rebuilt_damaged_index = rebuilt
        return writer

    @contextmanager
    def _writing(self, on_event: Event | None = None, collection: str | None = None) -> Iterator[IndexWriter]:
        writer = self._writer(on_event, collection)
        try:
            yield writer
        finally:
            writer.keywords.close()  # releases tantivy's own writer lock at once

    def sync(self, paths: list[str | Path], full: bool = False, progress: bool = False,
             on_event: Event | None = None, on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """Make the collection match these files/folders: add new, update changed, remove deleted.

        With no paths, re-syncs the files/folders given to the collection's previous reindex. `full`
        rebuilds everything the collection holds aside and swaps it in when done (see `_rebuild`).
        """
        with self._write_lock(on_wait):
            if full:
                return self._rebuild([str(Path(p).resolve()) for p in paths], progress, on_event)
            roots = [str(Path(p).resolve()) for p in paths] or self._previous_roots()
            with self._writing(on_event) as writer:
                report = writer.sync([Path(p) for p in roots], delete_missing=True, progress=progress,
                                     command="reindex")
            self._record_sources()
            return report

    def ingest(self, paths: list[str | Path], progress: bool = False, on_event: Event | None = None,
               on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """Add or update files/folders without removing anything else."""
        with self._write_lock(on_wait):
            with self._writing(on_event) as writer:
                report = writer.sync([Path(p) for p in paths], delete_missing=False, progress=progress,
                                     command="ingest")
            self._record_sources()
            return report

    # -- full rebuild, aside then swapped in (ingest/rebuild.py) ---------------------------
    def _rebuild(self, roots: list[str], progress: bool, on_event: Event | None) -> SyncReport:
        report = full_rebuild(self._layout(), roots, lambda c, e=None: self._writing(e, c), self.open_index,
                              progress, on_event, self.settings.crash_at)
        self._reader_indexes.pop(self.collection, None)
        self._reader_keywords.pop(self.collection, None)
        return report

    def _layout(self) -> CollectionLayout:
        return CollectionLayout(self.catalogue, self.collection, self.home / "collections", self.uploads_dir())

    def _record_sources(self) -> None:
        record_sources(self._layout())

    # -- uploads (the web UI) ----------------------------------------------------------------
    def uploads_dir(self) -> Path:
        return self.home / "uploads" / self.collection

    def ingest_uploads(self, files: Iterable[Upload], on_event: Event | None = None,
                       on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """Store uploaded files (name, size, read) in the data home and index them. A file over the size
        limit is refused before it is read; an upload with a known name is a new version of that document."""
        report = SyncReport()
        with self._write_lock(on_wait):
            paths, refused = store_uploads(files, self.uploads_dir(), self.settings.ingest.max_file_mb)
            if paths:
                with self._writing(on_event) as writer:
                    report = writer.sync(paths, delete_missing=False, command="upload")
                self._record_sources()
        for path, reason in refused:
            report.failed.append((path, reason))
            if on_event:
                on_event("failed", path, reason)
        return report

    def original(self, path: str) -> bytes | None:
        """An indexed document's original bytes, for download. None unless the path is one of this
        collection's documents and still the regular file that was indexed there: opened without
        following a link, so a file swapped for a link after indexing is never served."""
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            known = col is not None and s.scalar(
                select(Document.id).where(Document.collection_id == col.id, Document.path == path)) is not None
        if not known:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or os.path.realpath(path) != path:
                return None
            return f.read()

    def remove(self, doc: str, on_wait: Callable[[str], None] | None = None) -> list[str]:
        """Remove documents by id, exact path, or a path suffix that names exactly one."""
        with self._write_lock(on_wait):
            paths = self._resolve_documents(doc)
            with self._writing() as writer:
                writer.remove(paths)
            uploads = self.uploads_dir().resolve()
            for p in paths:  # an uploaded original goes with its document; files in user folders stay
                if Path(p).parent == uploads:
                    Path(p).unlink(missing_ok=True)
            return paths

    def reindex_all(self, progress: bool = False, on_event: Event | None = None,
                    on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """Re-sync the collection: the folders of its previous reindex and its uploaded files."""
        try:
            roots = self._previous_roots()
        except ConfigError:
            roots = []
        if self.uploads_dir().exists():
            roots.append(str(self.uploads_dir()))
        if not roots:
            return SyncReport()
        return self.sync(roots, progress=progress, on_event=on_event, on_wait=on_wait)

    def _previous_roots(self) -> list[str]:
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            run = None if col is None else s.scalar(
                select(IngestRun).where(IngestRun.collection_id == col.id, IngestRun.command.like("reindex%"))
                .order_by(IngestRun.id.desc()).limit(1))
        if run is None or not run.roots:
            raise ConfigError(f"no folders given and collection {self.collection!r} was never re-indexed; "
                              "name the folders: kb reindex PATH...")
        return list(run.roots)

    def _resolve_documents(self, ref: str) -> list[str]:
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            docs = list(s.scalars(select(Document).where(Document.collection_id == col.id))) if col else []
        if ref.isdigit():
            hits = [d.path for d in docs if d.id == int(ref)]
        else:
            full = str(Path(ref).resolve())
            hits = [d.path for d in docs if d.path == full] or [
                d.path for d in docs if d.path.endswith("/" + ref.lstrip("/")) or Path(d.path).name == ref
            ]
        if not hits:
            raise NotFoundError(f"no document {ref!r} in collection {self.collection!r}")
        if len(hits) > 1:
            raise NotFoundError(f"{ref!r} names {len(hits)} documents; give the full path or the id")
        return hits

    # -- reads -----------------------------------------------------------------------------
    @cached_property
    def reranker(self):  # noqa: ANN201 - a sentence-transformers CrossEncoder, or None
        return make_reranker(self.settings.retrieval.reranker, self.settings.embedding.device)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        """Identifies one saved version of a file (writers replace files by rename: a new inode)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _cached_reader(self, cache: dict, collection: str, stamp_file: Path, opener: Callable):  # noqa: ANN202
        """Reuse a reader while its file is unchanged; a damaged index is repaired (outside the lock
        every web session shares, under the writer lock) and opened again. After a killed writer the
        indexes may be ahead of the catalogue (its last batch, or a full rebuild's swap): repaired first."""
        if writer_died(self.home):
            self.repair_index(collection)
        for attempt in range(3):
            stamp = self._stamp(stamp_file)
            with self._lock:
                hit = cache.get(collection)
                if hit is not None and hit[0] == stamp:
                    return hit[1]
                try:
                    index = opener(collection)
                except IndexCorruptError:
                    index = None
                else:
                    cache[collection] = (stamp, index)
                    return index
            if attempt == 0:
                time.sleep(0.2)  # a writer may be between renaming an index and its manifest
            else:
                self.repair_index(collection)
        return opener(collection)  # still damaged: raise its error

    def reader_index(self, collection: str | None = None) -> FaissIndex:
        """The collection's FAISS index for searching, loaded once and reused until a writer saves a new one."""
        collection = collection or self.collection
        return self._cached_reader(self._reader_indexes, collection, self.index_dir(collection) / "index.faiss",
                                   self.open_index)

    def reader_keywords(self, collection: str | None = None) -> KeywordIndex:
        """The collection's keyword index for searching, reopened when a writer has committed (or a full
        rebuild has swapped in a new one)."""
        collection = collection or self.collection
        return self._cached_reader(self._reader_keywords, collection, self.keyword_dir(collection) / "meta.json",
                                   lambda c: KeywordIndex.for_reading(self.keyword_dir(c)))

    def repair_index(self, collection: str | None = None, on_wait: Callable[[str], None] | None = None) -> dict:
        """Rebuild a damaged or missing index from the catalogue's stored embeddings (no re-embedding)."""
        with self._write_lock(on_wait):
            with self._writing(None, collection) as writer:
                repaired = writer.reconcile()
                writer.index.save()
            return {**repaired, "damaged_index_rebuilt": int(writer.rebuilt_damaged_index)}

    def retriever(self, collection: str | None = None) -> Retriever:
        collection = collection or self.collection
        return Retriever(self.settings.retrieval, self.embedder, self.reader_index(collection),
                         self.reader_keywords(collection), self.catalogue, collection, self.reranker)

    def retrieve(self, question: str, top_k: int | None = None, documents: list[str] | None = None) -> Retrieval:
        """The hybrid retriever's result: contexts (top-k), whether anything relevant was found, timings."""
        doc_ids = documents_named(self.catalogue, self.collection, documents) if documents else None
        return self.retriever().search(question, top_k, doc_ids)

    def search(self, question: str, top_k: int | None = None, documents: list[str] | None = None,
               log: bool = True) -> list[Context]:
        """Ranked contexts for a question (empty when nothing passes the relevance floor)."""
        r = self.retrieve(question, top_k, documents)
        if log:
            self._log("search", question, r, None)
        return r.contexts

    def generator(self, backend: str | None = None) -> Generator:
        """The answer generator (cached per backend: a local model is loaded once and reused)."""
        cfg = self.settings.generator
        if backend:
            cfg = cfg.model_copy(update={"backend": backend})
        key = (cfg.backend, cfg.model, cfg.base_url)
        cache = self._generators
        if key not in cache:
            cache[key] = make_generator(cfg, self.settings.embedding.device, self.settings.retrieval.context_chars)
        return cache[key]

    def ask_stream(self, question: str, backend: str | None = None, top_k: int | None = None,
                   documents: list[str] | None = None) -> AnswerStream:
        """Iterate for the answer text as it streams; `.answer` (an Answer) is set at the end and logged."""
        retrieval = self.retrieve(question, top_k, documents)
        return AnswerStream(question, retrieval, self.generator(backend), self.settings.retrieval.context_chars,
                            on_done=lambda answer: self._log("ask", question, retrieval, answer))

    def ask(self, question: str, backend: str | None = None, top_k: int | None = None,
            documents: list[str] | None = None) -> Answer:
        """The answer text, its citations (document, page, chunk), the contexts and the time per stage."""
        return self.ask_stream(question, backend, top_k, documents).result()

    def evaluate(self, qa_path: str | Path, backend: str | None = None, answer_limit: int | None = None,
                 results_out: str | Path | None = None, progress: bool = False) -> dict:
        """Retrieval metrics on a QA set (and answer metrics with a backend): see retrieval/evaluation.py."""
        metrics = evaluate(self.retriever(), load_qa(Path(qa_path)), self.settings.retrieval,
                           self.generator(backend) if backend else None, answer_limit, results_out, progress)
        return {"collection": self.collection, "chunks": self.catalogue.counts(self.collection)["chunks"],
                "chunk_tokens": self.settings.chunking.chunk_tokens, **metrics}

    def record_evaluation(self, metrics: dict, qa_file: str, corpus: str | None) -> None:
        monitoring.record_evaluation(self.catalogue, self.collection, metrics, qa_file, corpus)

    def _log(self, kind: str, question: str, r: Retrieval, answer: Answer | None) -> None:
        monitoring.log_query(
            self.catalogue, self.collection, kind=kind, question=question,
            retrieved=[{"chunk_id": c.chunk_id, "score": round(c.score, 5)} for c in r.contexts],
            found=answer.found if answer else r.relevant,
            backend=answer.backend if answer else None, model=answer.model if answer else None,
            timings={k: round(v, 5) for k, v in (answer.timings if answer else r.timings).items()},
            prompt_tokens=(answer.usage or {}).get("prompt_tokens") if answer else None,
            completion_tokens=(answer.usage or {}).get("completion_tokens") if answer else None,
            answer=answer.text if answer else None,
            citations=[{"n": c.n, "chunk_id": c.chunk_id, "page": c.page} for c in answer.citations] if answer else [])

    def documents(self) -> list[dict]:
        return monitoring.documents(self.catalogue, self.collection)

    def metrics(self, last: int = 1000) -> dict:
        """Monitoring from the query log: latency p50/p95 per stage (ms) and queries per minute."""
        return monitoring.query_metrics(self.catalogue, self.collection, last)

    def check(self) -> dict[str, list[str]]:
        """Integrity problems per part (`kb status --check`): the catalogue's own check, the index's
        checksum, and whether both hold the same chunks. Empty lists = healthy."""
        problems: dict[str, list[str]] = {"catalogue": [], "index": []}
        try:
            problems["catalogue"] = self.catalogue.check()
        except CatalogueError as exc:
            problems["catalogue"] = [str(exc)]
        if problems["catalogue"]:
            return problems
        try:
            index = self.open_index()
        except (IndexCorruptError, IndexMismatchError) as exc:
            problems["index"] = [str(exc)]
            return problems
        ids, chunks = set(index.ids().tolist()), self.catalogue.chunk_ids(self.collection)
        if ids != chunks:
            problems["index"] = [f"{len(ids - chunks)} vectors not in the catalogue, {len(chunks - ids)} chunks "
                                 "without a vector (the next write repairs this)"]
        words = self.reader_keywords().ids()
        if words != chunks:
            problems["index"].append(f"{len(words - chunks)} keyword entries not in the catalogue, "
                                     f"{len(chunks - words)} chunks without one (the next write repairs this)")
        return problems

    def status(self) -> dict:
        counts = self.catalogue.counts(self.collection)
        index = self.reader_index()
        keywords = self.reader_keywords()
        manifest = index.read_manifest() or {}
        last_run, last_evaluation = monitoring.history(self.catalogue, self.collection)
        failures = [{"path": d["path"], "error": d["error"]}
                    for d in monitoring.documents(self.catalogue, self.collection, failed_only=True)]
        db_file = self.home / "catalogue.sqlite3"
        return {
            "home": str(self.home.resolve()),
            "collection": self.collection,
            "collections": monitoring.collection_names(self.catalogue),
            **counts,
            "failures": failures,
            "embedding_model": self.embedder.name,
            "dimension": self.embedder.dimension,
            "chunking": chunker_identity(self.settings.chunking),
            "index_type": self.settings.index.type if index.kind == self.settings.index.type
            else f"{self.settings.index.type} ({index.kind})",
            "index_vectors": index.count,
            "keyword_entries": keywords.count,
            "index_bytes": manifest.get("index_bytes", 0),
            "consistent": index.count == counts["chunks"] == keywords.count,
            "catalogue_url": self.settings.catalogue_url.split("@")[-1],
            "catalogue_bytes": db_file.stat().st_size if db_file.exists() else None,
            "device": {"torch": torch_device(self.settings.embedding.device), "faiss_gpus": faiss_gpu_count()},
            "last_run": last_run,
            "last_evaluation": last_evaluation,
        }


def rebuild_catalogue(home: str | Path | None = None, settings: Settings | None = None,
                      sources: dict[str, list[str]] | None = None, progress: bool = False,
                      force: bool = False) -> dict[str, SyncReport]:
    """Replace a damaged SQLite catalogue: the file is kept aside, every collection's index is dropped
    (its ids belong to the old catalogue) and each collection is re-indexed from its recorded folders
    (`sources.json` beside its index, plus its uploads) or from `sources` {collection: [paths]}."""
    settings = settings or Settings()
    if home is not None:
        settings = settings.model_copy(update={"home": Path(home)})
    home = Path(settings.home)
    db = home / "catalogue.sqlite3"
    if settings.database_url:
        raise ConfigError("kb rebuild-catalogue rebuilds the embedded SQLite catalogue only; restore your "
                          "database server's catalogue from its backup")
    if not force and db.exists():
        try:
            existing = Catalogue(settings.catalogue_url)
            problems = existing.check()
            existing.engine.dispose()
        except CatalogueError as exc:
            problems = [str(exc)]
        if not problems:
            raise ConfigError(f"the catalogue {db} passes its integrity check; rebuilding it would drop the query "
                              "log, evaluations and embedding cache. Add --force to rebuild it anyway.")
    reports: dict[str, SyncReport] = {}
    with writer_lock(home, settings.ingest.lock_timeout_s):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            f = Path(str(db) + suffix)
            if f.exists():
                f.replace(Path(f"{db}.damaged-{stamp}{suffix}"))
        wanted = dict(sources or {})
        for d in sorted((home / "collections").glob("*")):
            if d.name.startswith(REBUILD_PREFIX):
                shutil.rmtree(d, ignore_errors=True)
                continue
            for name in ("index.faiss", "manifest.json", "keywords.pending.json"):
                (d / name).unlink(missing_ok=True)
            shutil.rmtree(d / "keywords", ignore_errors=True)
            if d.name not in wanted and (d / "sources.json").exists():
                wanted[d.name] = json.loads((d / "sources.json").read_text())["roots"]
        for d in sorted((home / "uploads").glob("*")):
            wanted.setdefault(d.name, []).append(str(d.resolve()))
    for name, roots in wanted.items():
        roots = [r for r in dict.fromkeys(roots) if Path(r).exists()]
        if roots:
            reports[name] = KnowledgeBase(settings=settings, collection=name).sync(roots, progress=progress)
    return reports
