"""The ingestion pipeline: make a collection match files and folders.

discover -> extract (in a watched worker process) -> chunk -> embed (cached by text hash) ->
`ChunkStore.write()`, which owns the order in which the catalogue, FAISS and the keyword index change
(kb/chunk_store.py). Every sync starts with the store's reconciliation, so a SIGKILL at any point leaves
the collection consistent and the next run resumes without redoing committed files.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from ingest.chunking import chunk_document
from ingest.extract import (CORRUPT, EMPTY, ENCRYPTED, MIME, NO_TEXT, READER_STOPPED, TIMED_OUT, TOO_LARGE,
                            UNSUPPORTED, Limits)
from ingest.extraction_worker import POOL, Extractor, WorkerLimits
from kb.catalogue import Document, IngestRun, utcnow
from kb.chunk_store import ChunkStore, DocumentWrite
from kb.files import is_under
from kb.embeddings import Embedder, english_embedder, english_failed, text_hash
from kb.errors import EmbeddingError, ExtractionError
from kb.settings import Settings
from kb.text import is_english

log = logging.getLogger(__name__)
Event = Callable[[str, str, str], None]  # (action, path, detail)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    still_failed: list[tuple[str, str]] = field(default_factory=list)  # failed before, same bytes: not re-read
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unsupported files met in folders
    warnings: list[tuple[str, str]] = field(default_factory=list)  # indexed, but not whole (a sheet cut at its row limit)
    chunks_added: int = 0
    chunks_removed: int = 0
    embedded: int = 0  # texts sent to the model
    reused: int = 0  # texts found in the embedding cache
    pages: int = 0
    repaired: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added), "updated": len(self.updated), "removed": len(self.removed),
            "unchanged": len(self.unchanged), "failed": len(self.failed), "still_failed": len(self.still_failed),
            "skipped": len(self.skipped),
            "chunks_added": self.chunks_added, "chunks_removed": self.chunks_removed,
            "embedded": self.embedded, "reused_embeddings": self.reused, "pages": self.pages,
        }

    def to_dict(self) -> dict:
        return {
            **self.counts(),
            "failures": [{"path": p, "reason": r} for p, r in self.failed],
            "still_failing": [{"path": p, "reason": r} for p, r in self.still_failed],
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "cut": [{"path": p, "reason": r} for p, r in self.warnings],
            "changed": {"added": self.added, "updated": self.updated, "removed": self.removed},
            "repaired": self.repaired,
            "seconds": round(self.seconds, 3),
        }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Reason prefix of a folder (or given root) that could not be read: nothing under it is removed.
UNREACHABLE = "folder not searched, nothing under it removed: "


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to index under the given files/folders (real paths, sorted, each once), and every file or
    folder met that is not indexed, with the reason: unsupported, hidden, a link pointing outside the
    folders being indexed, a broken link or a link loop. Links inside them are indexed once, at the
    target's own path; a link is never followed out of the indexed folders."""
    roots = [Path(r).resolve() for r in paths]
    files: set[Path] = set()
    skipped: list[tuple[Path, str]] = []
    for root in roots:
        if root.is_file():
            files.add(root)  # named explicitly by the user
            continue
        if not root.exists():
            skipped.append((root, UNREACHABLE + "not found"))
            continue

        def unreadable(exc: OSError) -> None:
            skipped.append((Path(exc.filename or root), UNREACHABLE + f"unreadable ({exc.strerror})"))

        for folder, dirs, names in os.walk(root, followlinks=False, onerror=unreadable):
            base = Path(folder)
            for name in sorted(dirs):
                p = base / name
                if name.startswith("."):
                    skipped.append((p, "hidden folder (name starts with '.'), not searched"))
                    dirs.remove(name)
                elif p.is_symlink():
                    reason = _link_problem(p, roots)
                    if reason:
                        skipped.append((p, reason))
            dirs.sort()
            for name in sorted(names):
                p = base / name
                if name.startswith("."):
                    skipped.append((p, "hidden file (name starts with '.')"))
                    continue
                if p.is_symlink():
                    reason = _link_problem(p, roots)
                    if reason:
                        skipped.append((p, reason))
                        continue
                    p = p.resolve()  # indexed once, under the target's own path
                    if any(part.startswith(".") for part in p.parts):
                        skipped.append((base / name, f"link to a hidden file or folder (-> {p})"))
                        continue
                    if not p.is_file():
                        skipped.append((base / name, "link to something that is not a file"))
                        continue
                elif not p.is_file():
                    skipped.append((p, "not a regular file"))
                    continue
                if p.suffix.lower() in MIME:
                    files.add(p)
                else:
                    skipped.append((p, f"unsupported file type {p.suffix or '(none)'}"))
    return sorted(files), skipped


def _same_file(path: Path, before: os.stat_result) -> bool:
    """Still the very file that was hashed: not replaced, not turned into a link, not rewritten."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(now.st_mode) and (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) == \
        (before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns)


def _link_problem(link: Path, roots: list[Path]) -> str | None:
    """Why a symbolic link is not followed, or None when it points inside the indexed folders."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return f"broken link (-> {os.readlink(link)})"
    except (RuntimeError, OSError) as exc:  # RuntimeError: "Symlink loop" on Python 3.11
        return "link loop" if "loop" in str(exc).lower() or getattr(exc, "errno", None) == errno.ELOOP \
            else f"unreadable link ({exc})"
    if not is_under(target, roots):
        return f"link outside the indexed folders (-> {target}), not followed"
    return None  # a folder link's files are indexed where they really are (os.walk does not follow it)


REPEATED = "the second time on the same bytes: not read again until the file changes"
STOPPED_TWICE = READER_STOPPED + " twice"  # the reason of a file that stopped its reader twice
UNREADABLE, CHANGED = "unreadable", "changed"  # reasons of files that could not be read whole this time
NEVER_BETTER = (CORRUPT, EMPTY, NO_TEXT, UNSUPPORTED, STOPPED_TWICE, TOO_LARGE, TOO_LARGE + " when unpacked",
                TIMED_OUT)  # the same bytes fail the same way, unless a limit recorded with them was raised


class IndexWriter:
    """One collection's sync. The caller holds the home's writer lock."""

    def __init__(self, settings: Settings, store: ChunkStore, embedder: Embedder, on_event: Event | None = None,
                 extractor: Extractor = POOL):
        self.settings, self.store, self.embedder, self.extractor = settings, store, embedder, extractor
        self.catalogue, self.index, self.collection = store.catalogue, store.index, store.collection
        self.english = english_embedder(settings.embedding, embedder)
        self.on_event = on_event or (lambda *_: None)
        self.rebuilt_damaged_index = False  # set by the caller when the index was damaged and started empty

    def _english_vectors(self, s: Session, drafts: list) -> None:
        """The English model's vectors of the chunks written in English, into the embedding cache, where
        the retriever reads them (Retriever.english_ranking). Nothing else depends on them: a chunk
        without one is ranked as if the English model agreed with the main one, so a model that fails
        to load is reported and switched off, and the write goes on."""
        if self.english is None:
            return
        try:
            self.store.cache.fill(s, self.english, [(text_hash(d.embed_text), d.embed_text) for d in drafts
                                                    if is_english(d.embed_text)], count=False)
        except EmbeddingError as exc:
            english_failed(self.english, exc)
            self.english = None

    def _write(self, docs: list[DocumentWrite], removals: list[str], report: SyncReport) -> None:
        added, removed = self.store.write(docs, removals)
        report.chunks_added += added
        report.chunks_removed += removed

    def batch_limit(self) -> int:
        """Chunks buffered before a durable write. Each write saves the whole FAISS file, so on a large
        collection batches grow with it (1/20 of its size): the save cost per chunk stays flat, and a
        crash redoes at most that much (embeddings come back from the cache)."""
        return max(self.settings.ingest.write_batch_chunks, self.index.count // 20)

    # -- sync ------------------------------------------------------------------------------
    def sync(self, paths: list[Path], delete_missing: bool, progress: bool = False, command: str = "reindex",
             retry_failed: bool = False) -> SyncReport:
        t0 = time.perf_counter()
        report = SyncReport()
        first = self.index.read_manifest() is None and not self.rebuilt_damaged_index  # never written on this node
        report.repaired = self.store.reconcile()
        if first and any(report.repaired.values()):  # another node's writes, copied from the catalogue: no damage
            log.info("%s: this node's indexes built from the catalogue: %s", self.collection, report.repaired)
            report.repaired = dict.fromkeys(report.repaired, 0)
        elif any(report.repaired.values()):
            log.warning("%s: repaired after an interrupted write: %s", self.collection, report.repaired)
        if self.rebuilt_damaged_index:
            report.repaired["damaged_index_rebuilt"] = 1
            self.index.save()
        files, skipped = discover(paths)
        report.skipped = [(str(p), r) for p, r in skipped]
        self.on_event("discovered", "", str(len(files)))  # progress: how many files this sync reads
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection)
            run = IngestRun(collection_id=col.id, command=command, roots=[str(Path(p).resolve()) for p in paths])
            s.add(run)
            s.flush()
            run_id = run.id
            known = {d.path: (d.sha256, d.status, d.error, d.error_code, d.limit_setting, d.limit_value)
                     for d in s.scalars(select(Document).where(Document.collection_id == col.id))}
        roots = [str(Path(p).resolve()) for p in paths]
        gone: list[str] = []
        if delete_missing:
            present = {str(f) for f in files}
            # A folder that could not be read (unmounted share, permissions) is not an empty folder.
            kept = [str(p) for p, reason in skipped if reason.startswith(UNREACHABLE)]
            for path in known:
                shielded = any(path.startswith(k.rstrip("/") + "/") for k in kept)  # strictly below: a given
                if is_under(path, roots) and not shielded and path not in present:  # file that is gone goes
                    gone.append(path)

        pending: list[DocumentWrite] = []
        pending_chunks = 0
        bar = tqdm(files, desc=f"indexing {self.collection}", unit="file", disable=not progress or None)
        for f in bar:
            path = str(f)
            if f.resolve() != f:  # became a link after discovery: never follow it out of the folders
                report.skipped.append((path, "turned into a link while indexing, not followed"))
                continue
            try:
                before = os.lstat(f)
                sha = file_sha256(f)
            except OSError as exc:
                report.failed.append((path, f"unreadable: {exc}"))
                continue
            prev = known.get(path)
            if prev is not None and prev[:2] == (sha, "indexed"):
                report.unchanged.append(path)
                self.on_event("unchanged", path, "")
                continue
            if prev is not None and prev[:2] == (sha, "failed") and not retry_failed \
                    and not self._worth_retrying(prev[3], prev[4], prev[5]):
                report.still_failed.append((path, prev[2] or "failed"))
                self.on_event("unchanged", path, "failed before")
                continue
            action = "added" if prev is None else "updated"
            item = self._prepare(f, sha, before.st_size, report)
            item.action = action
            if not item.error and not _same_file(f, before):  # swapped (for a link?) while being read
                item.drafts, item.vectors = [], None
                item.error, item.error_code = "changed while being indexed; the next run retries", CHANGED
            if item.error_code == READER_STOPPED and prev is not None and prev[:2] == (sha, "failed") \
                    and prev[3] in (READER_STOPPED, STOPPED_TWICE):  # twice on the same bytes: the file's doing
                item.error = f"{item.error.split(';')[0]}; {REPEATED} (--retry-failed reads it again)"
                item.error_code = STOPPED_TWICE
            pending.append(item)
            pending_chunks += len(item.drafts)
            if item.error:
                report.failed.append((path, item.error))
                self.on_event("failed", path, item.error)
            else:
                (report.added if action == "added" else report.updated).append(path)
                self.on_event(action, path, f"{len(item.drafts)} chunks")
            if pending_chunks >= self.batch_limit():
                self._write(pending, [], report)
                pending, pending_chunks = [], 0
        bar.close()
        if pending or gone:
            self._write(pending, gone, report)
        for path in gone:
            report.removed.append(path)
            self.on_event("removed", path, "")
        report.seconds = time.perf_counter() - t0
        report.embedded, report.reused = self.store.cache.embedded, self.store.cache.reused
        with self.catalogue.session() as s:
            run = s.get(IngestRun, run_id)
            run.finished_at = utcnow()
            run.seconds = report.seconds
            run.counts = report.counts()
            run.errors = [{"path": p, "reason": r} for p, r in report.failed] + \
                [{"path": p, "reason": r, "indexed": True} for p, r in report.warnings]
        return report

    def _worth_retrying(self, code: str | None, setting: str | None, value: float | None) -> bool:
        """Whether the same bytes that failed may succeed now, from the failure's recorded reason and limit:
        a PDF password configured since, the limit it hit (time, memory, size, unpacked size) raised past
        the value recorded, a file that was unreadable or changing, a reader stopped once (a kill from
        outside, the machine's memory). Corrupt, empty, textless or unsupported files, and a fixed limit
        (a zip's ratio or part count), fail the same way again: not read again (`--retry-failed` forces it)."""
        cfg = self.settings.ingest
        if code == ENCRYPTED:
            return cfg.pdf_password is not None
        if setting is not None and value is not None:
            return float(getattr(cfg, setting, 0) or 0) > value + 1e-6  # recorded from bytes: rounded
        return code not in NEVER_BETTER

    def limits(self) -> Limits:
        cfg = self.settings.ingest
        return Limits(int(cfg.max_file_mb * 1e6), int(cfg.max_unpacked_mb * 1e6), cfg.max_sheet_rows, cfg.ocr,
                      cfg.max_ocr_pages)

    def _prepare(self, f: Path, sha: str, size: int, report: SyncReport) -> DocumentWrite:
        """Extract, chunk and embed one file; a failure becomes an error on the item, never an exception."""
        cfg = self.settings.ingest
        password = cfg.pdf_password.get_secret_value() if cfg.pdf_password else None
        mime = MIME.get(f.suffix.lower())
        try:
            doc = self.extractor.extract(f, password, self.limits(), WorkerLimits(cfg.file_timeout_s, int(cfg.max_memory_mb * 1e6),
                                                                        cfg.ocr_page_timeout_s))
            for warning in doc.warnings:  # shown by `kb -v`, always in HOME/kb.log
                log.info("%s: %s", f, warning)
            report.warnings += [(str(f), w) for w in doc.warnings if w.startswith(("sheet ", "OCR stopped"))]
            drafts = chunk_document(doc, self.embedder, self.settings.chunking)
            report.pages += doc.pages or 0
            with self.catalogue.session() as s:
                vectors = self.store.cache.vectors(s, [(text_hash(d.embed_text), d.embed_text) for d in drafts])
                self._english_vectors(s, drafts)
            return DocumentWrite(str(f), sha, size, mime, doc.pages, drafts, vectors)
        except ExtractionError as exc:
            return DocumentWrite(str(f), sha, size, mime, None, [], None, error=str(exc), error_code=exc.reason,
                                 limit=exc.limit)
        except OSError as exc:  # deleted or made unreadable while being indexed
            return DocumentWrite(str(f), sha, size, mime, None, [], None, error=f"unreadable: {exc.strerror or exc}",
                                 error_code=UNREADABLE)

    def remove(self, paths: list[str]) -> int:
        return self.store.remove(paths)
