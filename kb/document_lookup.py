"""A data home's collections and their documents in the catalogue: the names of the collections users
see, a collection's documents listed, and found by a user's reference, for download, by the folders its
last re-index was given."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from kb.catalogue import Catalogue, Collection, Document, IngestRun, iso
from kb.errors import ConfigError, NotFoundError


# A full rebuild fills this hidden collection, then swaps it in: never listed to users.
REBUILD_PREFIX = "~rebuild~"


def collection_names(catalogue: Catalogue) -> list[str]:
    with catalogue.session() as s:
        return [n for n in s.scalars(select(Collection.name).order_by(Collection.name))
                if not n.startswith(REBUILD_PREFIX)]


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    path: str
    type: str | None  # MIME type
    pages: int | None
    chunks: int
    status: str  # indexed | failed
    error: str | None
    sha256: str | None
    size: int | None
    indexed_at: str  # ISO 8601, UTC


def documents(catalogue: Catalogue, collection: str, failed_only: bool = False) -> list[DocumentInfo]:
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        if col is None:
            return []
        q = select(Document).where(Document.collection_id == col.id)
        if failed_only:
            q = q.where(Document.status == "failed")
        return [DocumentInfo(d.id, d.path, d.mime, d.pages, d.chunk_count, d.status, d.error, d.sha256, d.size,
                             iso(d.indexed_at)) for d in s.scalars(q.order_by(Document.path))]


def resolve(catalogue: Catalogue, collection: str, ref: str) -> list[str]:
    """The one document named by id, exact path, or a path suffix / file name that names exactly one."""
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        docs = list(s.execute(select(Document.id, Document.path).where(Document.collection_id == col.id))) if col else []
    if ref.isdigit():
        hits = [d.path for d in docs if d.id == int(ref)]
    else:
        full = str(Path(ref).resolve())
        hits = [d.path for d in docs if d.path == full] or [
            d.path for d in docs if d.path.endswith("/" + ref.lstrip("/")) or Path(d.path).name == ref]
    if not hits:
        raise NotFoundError(f"no document {ref!r} in collection {collection!r}")
    if len(hits) > 1:
        raise NotFoundError(f"{ref!r} names {len(hits)} documents; give the full path or the id")
    return hits


def _known(catalogue: Catalogue, collection: str, path: str) -> bool:
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        return col is not None and s.scalar(
            select(Document.id).where(Document.collection_id == col.id, Document.path == path)) is not None


def downloadable(catalogue: Catalogue, collection: str, path: str) -> bool:
    """Whether `original` would serve it, without reading it (a page offers the download, and reads the
    file only when it is clicked)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.path.realpath(path) == path and _known(catalogue, collection, path)


def original(catalogue: Catalogue, collection: str, path: str) -> bytes | None:
    """An indexed document's original bytes, for download. None unless the path is one of this
    collection's documents and still the regular file that was indexed there: opened without
    following a link, so a file swapped for a link after indexing is never served."""
    if not _known(catalogue, collection, path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or os.path.realpath(path) != path:
            return None
        return f.read()


def previous_roots(catalogue: Catalogue, collection: str) -> list[str]:
    """The folders/files given to the collection's last re-index (a bare `kb reindex` syncs them again)."""
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        run = None if col is None else s.scalar(
            select(IngestRun).where(IngestRun.collection_id == col.id, IngestRun.command.like("reindex%"))
            .order_by(IngestRun.id.desc()).limit(1))
        roots = list(run.roots) if run is not None and run.roots else []
    if not roots:
        raise ConfigError(f"no folders given and collection {collection!r} was never re-indexed; "
                          "name the folders: kb reindex PATH...")
    return roots


def indexed_roots(catalogue: Catalogue, collections: list[str], runs: int = 500) -> set[str]:
    """Every file or folder the collections' recent syncs were given (for showing paths relative to them)."""
    with catalogue.session() as s:
        rows = s.scalars(select(IngestRun.roots).join(Collection, Collection.id == IngestRun.collection_id)
                         .where(Collection.name.in_(collections)).order_by(IngestRun.id.desc()).limit(runs))
        return {root for roots in rows for root in roots or []}
