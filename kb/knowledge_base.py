"""KnowledgeBase: the facade the CLI, the UI and Python users call (open a home, sync, search, status).

The single documented exception to `kb` importing nothing above it: this module wires `ingest`
and `retrieval` together; nothing in `kb/` imports it back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from sqlalchemy import delete, select, update

from ingest.chunking import chunker_identity
from ingest.pipeline import Event, IndexWriter, SyncReport
from kb.catalogue import Catalogue, Collection, Document, Evaluation, IngestRun, QueryLog
from kb.device import faiss_gpu_count, torch_device
from kb.embeddings import Embedder, make_embedder
from kb.crash_points import crash_point
from kb.errors import CatalogueError, ConfigError, IndexCorruptError, IndexMismatchError, NotFoundError
from kb.keyword_index import ENGINE_ID, KeywordIndex
from kb.locking import writer_died, writer_lock
from kb.settings import Settings
from kb.vector_index import FaissIndex
from retrieval.answer import Answer, AnswerStream
from retrieval.evaluation import RetrievalScores, hit, latency_table, load_qa, rouge_l
from retrieval.generators import Generator, make_generator
from retrieval.retriever import Context, Retrieval, Retriever, documents_named

log = logging.getLogger(__name__)
# A full rebuild fills this hidden collection, then swaps it in: readers keep the old one until then.
REBUILD_PREFIX = "~rebuild~"


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


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

    # -- full rebuild, aside then swapped in -----------------------------------------------
    def _held_paths(self, collection: str) -> dict[str, int]:
        """Path -> chunk count of every document (indexed or failed) the collection holds."""
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, collection, create=False)
            if col is None:
                return {}
            return dict(s.execute(select(Document.path, Document.chunk_count).where(Document.collection_id == col.id)).all())

    def _rebuild(self, roots: list[str], progress: bool, on_event: Event | None) -> SyncReport:
        """Re-extract and re-embed everything the collection holds into a hidden collection and index,
        then swap both in at once. Readers keep the old documents until the swap; an interrupted rebuild
        leaves the old collection untouched and the next `--full` resumes where it stopped."""
        held = self._held_paths(self.collection)
        if roots:
            outside = sorted(p for p in held if not _under(p, roots))
            if outside:
                raise ConfigError(
                    f"`--full` rebuilds the whole collection {self.collection!r}, and it also holds "
                    f"{len(outside)} document(s) outside {', '.join(roots)} (e.g. {outside[0]}), which a rebuild "
                    "from these folders alone would delete. Run `kb reindex --full` with no folders to rebuild "
                    "everything it holds, name all of its folders, or remove those documents first (`kb remove`).")
        else:
            roots = self._held_roots(held)
            if not roots:
                raise ConfigError(f"collection {self.collection!r} holds nothing to rebuild; "
                                  "name the folders: kb reindex --full PATH...")
        shadow = REBUILD_PREFIX + self.collection
        self._start_shadow(shadow, roots)
        with self._writing(on_event, shadow) as writer:
            report = writer.sync([Path(r) for r in roots], delete_missing=True, progress=progress,
                                 command="reindex --full")
        new = self._held_paths(shadow)
        unread = sorted(p for p in held if p not in new and Path(p).exists())
        if unread:  # a plain reindex would keep them; a swap would delete them
            raise ConfigError(
                f"{len(unread)} file(s) the collection holds could not be read (e.g. {unread[0]}); nothing was "
                "swapped in and the old collection still answers. Fix their permissions or remove them "
                "(`kb remove`), then run `kb reindex --full` again: it resumes the rebuild kept aside.")
        self._swap_in(shadow, writer.index)
        self._record_sources()
        # The report compares what the collection held before with what it holds now.
        failed = {p for p, _ in report.failed}
        report.added = sorted(p for p in new if p not in held and p not in failed)
        report.updated = sorted(p for p in new if p in held and p not in failed)
        report.removed = sorted(p for p in held if p not in new)
        report.unchanged = []
        report.chunks_removed = sum(held.values())
        report.chunks_added = sum(new.values())
        return report

    def _held_roots(self, held: dict[str, int]) -> list[str]:
        """Where the collection's documents come from: every folder or file given to a reindex or an
        ingest that still holds one of its documents, its uploads, and any other document's own path."""
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            runs = [] if col is None else s.scalars(select(IngestRun.roots).where(IngestRun.collection_id == col.id))
            given = [r for roots in runs for r in roots or []]
        if self.uploads_dir().exists():
            given.append(str(self.uploads_dir().resolve()))
        roots = [r for r in dict.fromkeys(given) if any(_under(p, [r]) for p in held)]
        return roots + sorted(p for p in held if not _under(p, roots))

    def _start_shadow(self, shadow: str, roots: list[str]) -> None:
        """Keep what an interrupted rebuild with the same settings already did; otherwise start afresh."""
        try:
            self.open_index(shadow)
            stale = [p for p in self._held_paths(shadow) if not _under(p, roots)]
            if stale:
                with self._writing(None, shadow) as writer:
                    writer.remove(stale)
        except (IndexMismatchError, IndexCorruptError):
            with self.catalogue.session() as s:
                s.execute(delete(Collection).where(Collection.name == shadow))
            shutil.rmtree(self.index_dir(shadow), ignore_errors=True)

    def _swap_in(self, shadow: str, index: FaissIndex) -> None:
        """One catalogue transaction moves the rebuilt documents (with their chunks, postings and run)
        into the collection and deletes the old ones; the rebuilt index file replaces the old one just
        before it commits. A crash in between leaves the index ahead of the catalogue, which the next
        writer's reconciliation repairs, and the rebuild is still there to swap in again."""
        target = self.index_dir()
        target.mkdir(parents=True, exist_ok=True)
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection)
            aside = self.catalogue.collection(s, shadow)
            s.execute(delete(Document).where(Document.collection_id == col.id))  # chunks cascade
            for table in (Document, IngestRun):
                s.execute(update(table).where(table.collection_id == aside.id).values(collection_id=col.id))
            s.execute(delete(Collection).where(Collection.id == aside.id))
            s.flush()
            index.save()  # the shadow's files are current; copy them in atomically
            # Until the commit, a crash must make the next writer compare the keyword index in full.
            journal = target / "keywords.pending.json"
            KeywordIndex.for_reading(self.keyword_dir()).write_journal({"full": True})
            old_keywords = target / "keywords.old"
            shutil.rmtree(old_keywords, ignore_errors=True)
            if self.keyword_dir().exists():
                self.keyword_dir().replace(old_keywords)
            (index.directory / "keywords").replace(self.keyword_dir())
            for name in ("index.faiss", "manifest.json"):
                os.replace(index.directory / name, target / name)
            crash_point("before_swap_commit", self.settings.crash_at)
        journal.unlink(missing_ok=True)
        shutil.rmtree(old_keywords, ignore_errors=True)
        shutil.rmtree(index.directory, ignore_errors=True)
        self._reader_indexes.pop(self.collection, None)
        self._reader_keywords.pop(self.collection, None)

    def _record_sources(self) -> None:
        """Where the collection's documents come from (every folder or file still holding one, its
        uploads), kept beside its index after every write: `kb rebuild-catalogue` needs it when the
        catalogue itself is lost."""
        d = self.index_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "sources.json.tmp"
        tmp.write_text(json.dumps({"roots": self._held_roots(self._held_paths(self.collection))},
                                  ensure_ascii=False, indent=2))
        tmp.replace(d / "sources.json")

    # -- uploads (the web UI) ----------------------------------------------------------------
    def uploads_dir(self) -> Path:
        return self.home / "uploads" / self.collection

    @staticmethod
    def safe_upload_name(name: str) -> str:
        """A file name that stays inside the uploads folder: no directories, no hidden or odd characters."""
        name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
        name = re.sub(r"[^\w.\- ()\u3000-\u9fff]", "_", name).strip(" .")
        return name[:200] or "upload"

    def ingest_uploads(self, files: Iterable[tuple[str, int, Callable[[], bytes]]],
                       on_event: Event | None = None, on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """Store uploaded files (name, size, read) in the data home and index them. A file over the size
        limit is refused before it is read; an upload with a known name is a new version of that document."""
        limit = int(self.settings.ingest.max_file_mb * 1e6)
        target = self.uploads_dir()
        refused: list[tuple[str, str]] = []
        paths: list[Path] = []
        with self._write_lock(on_wait):
            target.mkdir(parents=True, exist_ok=True)
            for name, size, read in files:
                safe = self.safe_upload_name(name)
                if size > limit:
                    refused.append((safe, f"too large: {size / 1e6:.1f} MB > {self.settings.ingest.max_file_mb:g} MB"))
                    continue
                tmp = target / f".{safe}.part"
                tmp.write_bytes(read())
                tmp.replace(target / safe)  # atomic: the document's file is never half-written
                paths.append(target / safe)
            report = SyncReport()
            if paths:
                with self._writing(on_event) as writer:
                    report = writer.sync(paths, delete_missing=False, command="upload")
                self._record_sources()
        for name, reason in refused:
            report.failed.append((str(target / name), reason))
            if on_event:
                on_event("failed", str(target / name), reason)
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
        name = self.settings.retrieval.reranker
        if not name:
            return None
        from sentence_transformers import CrossEncoder

        return CrossEncoder(name, device=torch_device(self.settings.embedding.device))

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
        """Retrieval metrics (recall@1/3/5, MRR@10, nDCG@10; score.py's hit rule on the contexts as the
        prompt sees them), latency per stage and queries/s; with a backend, answer metrics too."""
        import time

        from tqdm import tqdm

        qa = load_qa(Path(qa_path))
        chars = self.settings.retrieval.context_chars
        top_k = self.settings.retrieval.top_k
        retriever = self.retriever()
        scores, timings, rows, retrievals = RetrievalScores(), [], [], []
        t0 = time.perf_counter()
        for q in tqdm(qa, desc="retrieving", unit="q", disable=not progress or None):
            r = retriever.search(q["question"], top_k=max(10, top_k))
            timings.append(r.timings)
            scores.add([hit(c.source, c.text[:chars], q["source"], q["answer"]) for c in r.contexts])
            rows.append({"id": q["id"], "contexts": [
                {"source": Path(c.source).name, "page": c.page, "text": c.text[:chars], "score": round(c.score, 5),
                 "chunk_id": c.chunk_id} for c in r.contexts]})
            retrievals.append(r)
        seconds = time.perf_counter() - t0
        out = {"questions": len(qa), "collection": self.collection, "chunks": self.catalogue.counts(self.collection)["chunks"],
               "chunk_tokens": self.settings.chunking.chunk_tokens, "context_chars": chars, **scores.metrics(),
               "latency": latency_table(timings), "queries_per_s": round(len(qa) / seconds, 2)}
        if results_out:
            Path(results_out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        if backend:
            gen = self.generator(backend)
            cited = cited_hits = sentences = supported = 0
            rouge, answer_timings = [], []
            for q, r in tqdm(list(zip(qa, retrievals))[:answer_limit], desc="answering", unit="q",
                             disable=not progress or None):
                top = Retrieval(r.question, r.contexts[:top_k], r.relevant, dict(r.timings))
                a = AnswerStream(q["question"], top, gen, chars).result()
                answer_timings.append(a.timings)
                cited += len(a.citations)
                cited_hits += sum(hit(c.source, c.text, q["source"], q["answer"]) for c in a.citations)
                sentences += len(a.sentences)
                supported += sum(1 for s in a.sentences if s["supported"])
                rouge.append(rouge_l(re.sub(r"\[\d+\]", "", a.text), q["answer"]))
            out["answers"] = {
                "backend": gen.backend, "model": gen.model, "questions": len(rouge),
                "citation_precision": round(cited_hits / cited, 4) if cited else 0.0,
                "answer_support": round(supported / sentences, 4) if sentences else 0.0,
                "rouge_l": round(sum(rouge) / len(rouge), 4) if rouge else 0.0,
                "latency": latency_table(answer_timings),
            }
        return out

    def record_evaluation(self, metrics: dict, qa_file: str, corpus: str | None) -> None:
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection)
            s.add(Evaluation(collection_id=col.id, qa_file=qa_file, corpus=corpus, metrics=metrics))

    def _log(self, kind: str, question: str, r: Retrieval, answer: Answer | None) -> None:
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection)
            s.add(QueryLog(
                collection_id=col.id, kind=kind, question=question,
                retrieved=[{"chunk_id": c.chunk_id, "score": round(c.score, 5)} for c in r.contexts],
                found=answer.found if answer else r.relevant,
                backend=answer.backend if answer else None, model=answer.model if answer else None,
                timings={k: round(v, 5) for k, v in (answer.timings if answer else r.timings).items()},
                prompt_tokens=(answer.usage or {}).get("prompt_tokens") if answer else None,
                completion_tokens=(answer.usage or {}).get("completion_tokens") if answer else None,
                answer=answer.text if answer else None,
                citations=[{"n": c.n, "chunk_id": c.chunk_id, "page": c.page} for c in answer.citations] if answer else [],
            ))

    def documents(self) -> list[dict]:
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            if col is None:
                return []
            return [
                {"id": d.id, "path": d.path, "type": d.mime, "pages": d.pages, "chunks": d.chunk_count,
                 "status": d.status, "error": d.error, "sha256": d.sha256, "size": d.size,
                 "indexed_at": d.indexed_at.isoformat(timespec="seconds") + "Z"}
                for d in s.scalars(select(Document).where(Document.collection_id == col.id).order_by(Document.path))
            ]

    def metrics(self, last: int = 1000) -> dict:
        """Monitoring from the query log: latency p50/p95 per stage (ms) and queries per minute."""
        import datetime as dt

        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            rows = [] if col is None else s.execute(
                select(QueryLog.asked_at, QueryLog.timings, QueryLog.found).where(QueryLog.collection_id == col.id)
                .order_by(QueryLog.id.desc()).limit(last)).all()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        recent = [r for r in rows if (now - r.asked_at).total_seconds() <= 3600]
        span_min = max(1.0, (now - min(r.asked_at for r in recent)).total_seconds() / 60) if recent else 1.0
        return {
            "queries": len(rows),
            "not_found": sum(1 for r in rows if not r.found),
            "queries_per_minute": round(len(recent) / span_min, 2),
            "latency": latency_table([r.timings for r in rows if r.timings]),
        }

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
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection, create=False)
            last = None
            if col is not None:
                run = s.scalar(select(IngestRun).where(IngestRun.collection_id == col.id)
                               .order_by(IngestRun.id.desc()).limit(1))
                if run is not None:
                    last = {"command": run.command, "started_at": run.started_at.isoformat(timespec="seconds") + "Z",
                            "finished": run.finished_at is not None, "seconds": run.seconds, "counts": run.counts}
            collections = [n for n in s.scalars(select(Collection.name).order_by(Collection.name))
                           if not n.startswith(REBUILD_PREFIX)]
            evaluation = None if col is None else s.scalar(
                select(Evaluation).where(Evaluation.collection_id == col.id).order_by(Evaluation.id.desc()).limit(1))
            last_evaluation = None if evaluation is None else {
                "finished_at": evaluation.finished_at.isoformat(timespec="seconds") + "Z", "qa_file": evaluation.qa_file,
                "corpus": evaluation.corpus, **{k: v for k, v in evaluation.metrics.items() if k != "latency"}}
        failures = [{"path": d["path"], "error": d["error"]} for d in self.documents() if d["status"] == "failed"]
        db_file = self.home / "catalogue.sqlite3"
        return {
            "home": str(self.home.resolve()),
            "collection": self.collection,
            "collections": collections,
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
            "last_run": last,
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
