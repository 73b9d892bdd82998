"""One collection's chunks: its catalogue rows, its FAISS index and its keyword index, and the one order
in which the three change. Every write goes through `ChunkStore`; nothing else touches the indexes.

The commit protocol (a crash or a failed commit at any step leaves the three consistent or repairable):
1. the catalogue transaction is opened and the rows written (not committed);
2. `indexes.ahead` is written beside the indexes: until it is cleared they may hold what the catalogue lacks;
3. the keyword index commits (its journal names the chunk ids involved), then FAISS is saved by rename;
4. the catalogue commits; the journal and the mark are cleared.
`reconcile()` (the writer, before every write; the home's upkeep after a failure) makes both indexes
hold exactly the catalogue's chunk ids, from the stored vectors and text: nothing is re-embedded.
`catch_up()` replays the catalogue's change sequence (another node's writes). `swap_in()` is the same
protocol for a `reindex --full` built aside.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from kb.catalogue import Catalogue, Chunk, ChunkChange, Collection, Document, IngestRun, utcnow
from kb.crash_points import crash_point
from kb.embedding_cache import EmbeddingCache
from kb.embeddings import text_hash
from kb.files import atomic_write
from kb.keyword_index import KeywordIndex
from kb.locking import clear_ahead, mark_ahead
from kb.vector_index import FaissIndex, embedded_text


class ChunkDraft(Protocol):
    """A chunk ready to store (made by ingest.chunking)."""

    text: str
    page: int | None
    heading: str | None
    char_start: int
    char_end: int
    token_count: int
    embed_text: str
    ocr: bool


@dataclass
class DocumentWrite:
    """One file's outcome, ready to store: its chunks and their vectors, or the reason it failed."""

    path: str
    sha: str
    size: int
    mime: str | None
    pages: int | None
    drafts: Sequence[ChunkDraft]
    vectors: np.ndarray | None
    error: str | None = None  # the failure in words
    error_code: str | None = None  # its reason (ingest/extract.py)
    limit: tuple[str, float] | None = None  # the ingest setting it hit and that setting's value then
    action: str = "added"


def log_changes(s: Session, collection_id: int, removed: Iterable[int], added: Iterable[int]) -> int | None:
    """Record chunk ids removed and added in the catalogue's change sequence, inside the caller's
    transaction; returns the newest sequence number (None when nothing changed)."""
    rows = [{"collection_id": collection_id, "chunk_id": int(i), "added": False} for i in removed] + \
        [{"collection_id": collection_id, "chunk_id": int(i), "added": True} for i in added]
    if not rows:
        return None
    s.execute(insert(ChunkChange), rows)
    return int(s.scalar(select(func.max(ChunkChange.seq)).where(ChunkChange.collection_id == collection_id)))


class ChunkStore:
    """The caller holds the home's writer lock."""

    def __init__(self, catalogue: Catalogue, collection: str, index: FaissIndex, keywords: KeywordIndex,
                 cache: EmbeddingCache, crash_at: str = ""):
        self.catalogue, self.collection = catalogue, collection
        self.index, self.keywords, self.cache, self.crash_at = index, keywords, cache, crash_at

    @property
    def directory(self) -> Path:
        return self.index.directory

    # -- consistency -----------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Make the vector and keyword indexes hold exactly the catalogue's chunk ids (run before any write)."""
        position = self.catalogue.last_change(self.collection)  # first: a change committed later is replayed
        in_index = set(self.index.ids().tolist())
        in_catalogue = self.catalogue.chunk_ids(self.collection)
        orphans = in_index - in_catalogue
        missing = in_catalogue - in_index
        if orphans:
            self.index.remove(sorted(orphans))
        if missing:
            rows = self._chunk_rows(missing)
            self.index.add(np.array([r.id for r in rows], dtype=np.int64), self._stored_vectors(rows))
        if orphans or missing or position != self.index.change_seq:
            self.index.change_seq = position  # now exactly the catalogue: other nodes' changes included
            self.index.save()
        repaired = {"orphan_vectors_removed": len(orphans), "missing_vectors_restored": len(missing),
                    "keyword_entries_repaired": self._reconcile_keywords(in_catalogue)}
        clear_ahead(self.directory)  # both indexes now hold exactly the catalogue's chunks
        return repaired

    def catch_up(self) -> int:
        """Apply the catalogue's changes since this index's position (writes made by another node):
        removed ids out, added ids in with their stored vectors and text (nothing re-embedded). Replaying
        a change is harmless, so a crash mid-way only repeats work. When the counts still differ (a
        change log cut short), a full reconcile settles it. Returns the number of changes applied."""
        changes = self.catalogue.changes_since(self.collection, self.index.change_seq)
        if not changes:
            return 0
        latest = {chunk_id: added for _seq, chunk_id, added in changes}
        present = set(self.index.ids().tolist())
        removed = [c for c, added in latest.items() if not added and c in present]
        rows = [r for r in self._chunk_rows({c for c, added in latest.items() if added}) if r.id not in present]
        self.index.remove(removed)
        if rows:
            self.index.add(np.array([r.id for r in rows], dtype=np.int64), self._stored_vectors(rows))
        touched = sorted(set(removed) | {r.id for r in rows})
        if touched:
            self.keywords.stage(touched, [(r.id, r.document_id, embedded_text(r.heading, r.text)) for r in rows])
            self.keywords.commit(touched, [r.id for r in rows])
            self.keywords.settled()
        self.index.change_seq = changes[-1][0]
        if self.index.count != self.catalogue.counts(self.collection)["chunks"]:
            self.reconcile()
        self.index.save()
        return len(changes)

    def _reconcile_keywords(self, in_catalogue: set[int]) -> int:
        """The journal names the ids a crash may have left out of step; without one, a count that differs
        from the catalogue's means a full comparison. Suspects are deleted, and those the catalogue holds
        are re-added from their stored text (nothing re-embedded)."""
        suspects = self.keywords.suspects(len(in_catalogue), max(in_catalogue, default=None))
        if suspects is None:
            suspects = self.keywords.ids() ^ in_catalogue
        if suspects:
            readd = self._chunk_rows(suspects & in_catalogue)
            self.keywords.stage(sorted(suspects), [(r.id, r.document_id, embedded_text(r.heading, r.text))
                                                   for r in readd])
            self.keywords.commit(suspects, [r.id for r in readd])
        self.keywords.settled()
        return len(suspects)

    def _chunk_rows(self, ids: set[int]) -> list:
        out = []
        ids_sorted = sorted(ids)
        with self.catalogue.session() as s:
            for i in range(0, len(ids_sorted), 5000):  # stay under SQL parameter limits
                out += s.execute(select(Chunk.id, Chunk.document_id, Chunk.embed_sha256, Chunk.text, Chunk.heading)
                                 .where(Chunk.id.in_(ids_sorted[i:i + 5000]))).all()
        return out

    def _stored_vectors(self, rows: list) -> np.ndarray:
        with self.catalogue.session() as s:
            return self.cache.vectors(s, [(r.embed_sha256, embedded_text(r.heading, r.text)) for r in rows], count=False)

    # -- one durable write -----------------------------------------------------------------
    def write(self, docs: list[DocumentWrite], removals: list[str]) -> tuple[int, int]:
        """Store these documents (replacing their earlier chunks) and remove those paths, as one durable
        step in the protocol's order. Returns (chunks added, chunks removed)."""
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, self.collection)
            old_ids: list[int] = []
            for path in removals:
                doc = s.scalar(select(Document).where(Document.collection_id == col.id, Document.path == path))
                if doc is not None:
                    old_ids += list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
                    s.delete(doc)
            new_ids: list[int] = []
            new_vecs: list[np.ndarray] = []
            new_keywords: list[tuple[int, int, str]] = []
            for p in docs:
                doc = s.scalar(select(Document).where(Document.collection_id == col.id, Document.path == p.path))
                if doc is None:
                    doc = Document(collection_id=col.id, path=p.path)
                    s.add(doc)
                else:
                    old_ids += list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
                    s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
                doc.sha256, doc.size, doc.mime, doc.pages = p.sha, p.size, p.mime, p.pages
                doc.status = "failed" if p.error else "indexed"
                doc.error, doc.error_code = p.error, p.error_code if p.error else None
                doc.limit_setting, doc.limit_value = p.limit if p.error and p.limit else (None, None)
                doc.chunk_count = len(p.drafts)
                doc.indexed_at = utcnow()
                s.flush()
                if not p.drafts:
                    continue
                # One bulk INSERT … RETURNING: the ids, in the drafts' order, become FAISS and keyword ids.
                ids = list(s.scalars(insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True), [
                    {"document_id": doc.id, "ordinal": i, "text": d.text, "page": d.page, "heading": d.heading,
                     "char_start": d.char_start, "char_end": d.char_end, "token_count": d.token_count,
                     "embed_sha256": text_hash(d.embed_text), "ocr": d.ocr}
                    for i, d in enumerate(p.drafts)]))
                new_ids += ids
                new_vecs.append(p.vectors)
                new_keywords += [(i, doc.id, d.embed_text) for i, d in zip(ids, p.drafts, strict=True)]
            self.index.change_seq = log_changes(s, col.id, old_ids, new_ids) or self.index.change_seq
            # Both indexes commit before the catalogue: a crash or a failed commit in between leaves them
            # ahead of it, which the mark says until a reconciliation repairs it (the keyword journal
            # names the ids involved).
            mark_ahead(self.directory)
            self.keywords.stage(old_ids, new_keywords)
            self.keywords.commit(old_ids, new_ids)
            crash_point("after_keyword_commit", self.crash_at)
            self.index.remove(old_ids)
            if new_ids:
                self.index.add(np.array(new_ids, dtype=np.int64), np.vstack(new_vecs))
            crash_point("before_index_save", self.crash_at)
            self.index.save()
            crash_point("after_index_save", self.crash_at)
        self.keywords.settled()
        clear_ahead(self.directory)
        crash_point("after_commit", self.crash_at)
        return len(new_ids), len(old_ids)

    def remove(self, paths: list[str]) -> int:
        """Remove these documents; returns the chunks removed."""
        self.reconcile()
        return self.write([], paths)[1]

    # -- `reindex --full` -------------------------------------------------------------------
    def swap_into(self, collection: str, target: Path) -> None:
        """Make this store (a collection rebuilt aside, hidden, with its own indexes, its keyword writer
        closed) the collection `collection` whose indexes live in `target`, at once. One catalogue
        transaction moves the rebuilt documents (with their chunks and runs) in and deletes the old ones;
        the rebuilt keyword folder and FAISS files replace the old ones just before it commits. A crash in
        between leaves the indexes ahead of the catalogue (marked): the next repair compares the keyword
        index in full, and the rebuild is still there to swap in again."""
        index = self.index
        keywords = target / "keywords"
        target.mkdir(parents=True, exist_ok=True)
        with self.catalogue.session() as s:
            col = self.catalogue.collection(s, collection)
            aside = self.catalogue.collection(s, self.collection)
            chunk_ids = lambda c: list(s.scalars(select(Chunk.id).join(Document).where(Document.collection_id == c)))  # noqa: E731
            # Other serving nodes follow the change sequence: the swap is one removal and one addition there.
            index.change_seq = log_changes(s, col.id, chunk_ids(col.id), chunk_ids(aside.id)) or index.change_seq
            s.execute(delete(Document).where(Document.collection_id == col.id))  # chunks cascade
            for table in (Document, IngestRun):
                s.execute(update(table).where(table.collection_id == aside.id).values(collection_id=col.id))
            s.execute(delete(Collection).where(Collection.id == aside.id))
            s.flush()
            index.save()  # the rebuilt files are current; move them in atomically
            mark_ahead(target)
            journal = target / "keywords.pending.json"
            atomic_write(journal, json.dumps({"full": True}).encode())
            old_keywords = target / "keywords.old"
            shutil.rmtree(old_keywords, ignore_errors=True)
            if keywords.exists():
                keywords.replace(old_keywords)
            (index.directory / "keywords").replace(keywords)
            sums = KeywordIndex.sums_path(index.directory / "keywords")  # the rebuilt segments' checksums go with them
            if sums.exists():
                os.replace(sums, KeywordIndex.sums_path(keywords))
            else:
                KeywordIndex.sums_path(keywords).unlink(missing_ok=True)
            KeywordIndex.damaged_mark(keywords).unlink(missing_ok=True)  # the damaged folder is gone
            for name in ("index.faiss", "manifest.json"):
                os.replace(index.directory / name, target / name)
            crash_point("before_swap_commit", self.crash_at)
        journal.unlink(missing_ok=True)
        clear_ahead(target)
        shutil.rmtree(old_keywords, ignore_errors=True)
        shutil.rmtree(index.directory, ignore_errors=True)
