"""`kb reindex --full`: rebuild everything a collection holds aside, in a hidden collection with its own
indexes, then swap it in at once; and where a collection's documents come from (`sources.json`).

Readers keep answering from the old documents until the swap; an interrupted rebuild leaves the
collection untouched, and the next `--full` resumes what the hidden one already holds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, update

from ingest.pipeline import Event, IndexWriter, SyncReport, log_changes
from kb.files import atomic_write
from kb.catalogue import Catalogue, Chunk, Collection, Document, IngestRun
from kb.crash_points import crash_point
from kb.errors import ConfigError, IndexCorruptError, IndexMismatchError
from kb.keyword_index import KeywordIndex
from kb.locking import clear_ahead, mark_ahead
from kb.monitoring import REBUILD_PREFIX
from kb.vector_index import FaissIndex

Writing = Callable[..., AbstractContextManager[IndexWriter]]  # (collection, on_event=None) -> writer


@dataclass
class CollectionLayout:
    catalogue: Catalogue
    collection: str
    collections_dir: Path  # HOME/collections: one folder per collection (FAISS, keywords, sources.json)
    uploads: Path

    def folder(self, name: str | None = None) -> Path:
        return self.collections_dir / (name or self.collection)


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def held_paths(catalogue: Catalogue, collection: str) -> dict[str, int]:
    """Path -> chunk count of every document (indexed or failed) the collection holds."""
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        if col is None:
            return {}
        return dict(s.execute(select(Document.path, Document.chunk_count).where(Document.collection_id == col.id)).all())


def held_roots(layout: CollectionLayout, held: dict[str, int]) -> list[str]:
    """Where the collection's documents come from: every folder or file given to a reindex or an
    ingest that still holds one of its documents, its uploads, and any other document's own path."""
    with layout.catalogue.session() as s:
        col = layout.catalogue.collection(s, layout.collection, create=False)
        runs = [] if col is None else s.scalars(select(IngestRun.roots).where(IngestRun.collection_id == col.id))
        given = [r for roots in runs for r in roots or []]
    if layout.uploads.exists():
        given.append(str(layout.uploads.resolve()))
    roots = [r for r in dict.fromkeys(given) if any(under(p, [r]) for p in held)]
    return roots + sorted(p for p in held if not under(p, roots))


def record_sources(layout: CollectionLayout) -> None:
    """Kept beside the collection's indexes after every write: `kb rebuild-catalogue` needs it when
    the catalogue itself is lost."""
    roots = held_roots(layout, held_paths(layout.catalogue, layout.collection))
    atomic_write(layout.folder() / "sources.json", json.dumps({"roots": roots}, ensure_ascii=False, indent=2).encode())


def full_rebuild(layout: CollectionLayout, roots: list[str], writing: Writing,
                 open_index: Callable[[str], FaissIndex], progress: bool, on_event: Event | None,
                 crash_at: str = "") -> SyncReport:
    """Re-extract and re-embed everything the collection holds into a hidden collection and index,
    then swap both in at once. The caller holds the writer lock."""
    collection, catalogue = layout.collection, layout.catalogue
    held = held_paths(catalogue, collection)
    if roots:
        outside = sorted(p for p in held if not under(p, roots))
        if outside:
            raise ConfigError(
                f"`--full` rebuilds the whole collection {collection!r}, and it also holds "
                f"{len(outside)} document(s) outside {', '.join(roots)} (e.g. {outside[0]}), which a rebuild "
                "from these folders alone would delete. Run `kb reindex --full` with no folders to rebuild "
                "everything it holds, name all of its folders, or remove those documents first (`kb remove`).")
    else:
        roots = held_roots(layout, held)
        if not roots:
            raise ConfigError(f"collection {collection!r} holds nothing to rebuild; "
                              "name the folders: kb reindex --full PATH...")
    shadow = REBUILD_PREFIX + collection
    _start_shadow(layout, shadow, roots, writing, open_index)
    with writing(shadow, on_event) as writer:
        report = writer.sync([Path(r) for r in roots], delete_missing=True, progress=progress,
                             command="reindex --full")
    new = held_paths(catalogue, shadow)
    unread = sorted(p for p in held if p not in new and Path(p).exists())
    if unread:  # a plain reindex would keep them; a swap would delete them
        raise ConfigError(
            f"{len(unread)} file(s) the collection holds could not be read (e.g. {unread[0]}); nothing was "
            "swapped in and the old collection still answers. Fix their permissions or remove them "
            "(`kb remove`), then run `kb reindex --full` again: it resumes the rebuild kept aside.")
    _swap_in(layout, shadow, writer.index, crash_at)
    record_sources(layout)
    # The report compares what the collection held before with what it holds now.
    failed = {p for p, _ in report.failed}
    report.added = sorted(p for p in new if p not in held and p not in failed)
    report.updated = sorted(p for p in new if p in held and p not in failed)
    report.removed = sorted(p for p in held if p not in new)
    report.unchanged = []
    report.chunks_removed = sum(held.values())
    report.chunks_added = sum(new.values())
    return report


def _start_shadow(layout: CollectionLayout, shadow: str, roots: list[str], writing: Writing,
                  open_index: Callable[[str], FaissIndex]) -> None:
    """Keep what an interrupted rebuild with the same settings already did; otherwise start afresh."""
    try:
        open_index(shadow)
        stale = [p for p in held_paths(layout.catalogue, shadow) if not under(p, roots)]
        if stale:
            with writing(shadow) as writer:
                writer.remove(stale)
    except (IndexMismatchError, IndexCorruptError):
        with layout.catalogue.session() as s:
            s.execute(delete(Collection).where(Collection.name == shadow))
        shutil.rmtree(layout.folder(shadow), ignore_errors=True)


def _swap_in(layout: CollectionLayout, shadow: str, index: FaissIndex, crash_at: str) -> None:
    """One catalogue transaction moves the rebuilt documents (with their chunks and run) into the
    collection and deletes the old ones; the rebuilt keyword folder and FAISS files replace the old ones
    just before it commits. A crash in between leaves the indexes ahead of the catalogue: the next reader
    or writer repairs them from the catalogue, and the rebuild is still there to swap in again."""
    target = layout.folder()
    keywords = target / "keywords"
    target.mkdir(parents=True, exist_ok=True)
    with layout.catalogue.session() as s:
        col = layout.catalogue.collection(s, layout.collection)
        aside = layout.catalogue.collection(s, shadow)
        chunk_ids = lambda c: list(s.scalars(select(Chunk.id).join(Document).where(Document.collection_id == c)))  # noqa: E731
        # Other serving nodes follow the change sequence: the swap is one removal and one addition there.
        index.change_seq = log_changes(s, col.id, chunk_ids(col.id), chunk_ids(aside.id)) or index.change_seq
        s.execute(delete(Document).where(Document.collection_id == col.id))  # chunks cascade
        for table in (Document, IngestRun):
            s.execute(update(table).where(table.collection_id == aside.id).values(collection_id=col.id))
        s.execute(delete(Collection).where(Collection.id == aside.id))
        s.flush()
        index.save()  # the shadow's files are current; move them in atomically
        # Until the commit, a crash or a failed commit must make the next reader or writer repair, and
        # that repair compare the keyword index in full.
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
        crash_point("before_swap_commit", crash_at)
    journal.unlink(missing_ok=True)
    clear_ahead(target)
    shutil.rmtree(old_keywords, ignore_errors=True)
    shutil.rmtree(index.directory, ignore_errors=True)
