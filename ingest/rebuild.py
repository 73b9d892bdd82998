"""`kb reindex --full`: rebuild everything a collection holds aside, in a hidden collection with its own
indexes, then swap it in at once; and where a collection's documents come from (`sources.json`).

Readers keep answering from the old documents until the swap; an interrupted rebuild leaves the
collection untouched, and the next `--full` resumes what the hidden one already holds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from ingest.pipeline import Event, IndexWriter, SyncReport
from kb.catalogue import Catalogue, Collection, Document, IngestRun
from kb.errors import ConfigError, IndexCorruptError, IndexMismatchError
from kb.files import atomic_write, is_under as under
from kb.document_lookup import REBUILD_PREFIX
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
                 open_index: Callable[[str], FaissIndex], progress: bool, on_event: Event | None) -> SyncReport:
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
    writer.store.swap_into(collection, layout.folder())
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
