"""A collection's state for `kb status`, the web page and the API, and its integrity check."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from kb import document_lookup, history
from kb.catalogue import Catalogue
from kb.device import faiss_gpu_count, torch_device
from kb.errors import CatalogueError, IndexCorruptError, IndexMismatchError
from kb.keyword_index import KeywordIndex
from kb.settings import Settings
from kb.vector_index import FaissIndex, chunk_intact


@dataclass
class Status:
    home: str
    collection: str
    collections: list[str]
    documents: int
    indexed: int
    failed: int
    chunks: int
    failures: list[dict]  # {"path", "error"}
    embedding_model: str
    dimension: int
    chunking: dict
    index_type: str  # the configured type, and what it is now when they differ: "auto (ivf)"
    index_vectors: int
    keyword_entries: int
    index_bytes: int
    consistent: bool  # vectors == chunks == keyword entries
    catalogue_url: str  # without credentials
    catalogue_bytes: int | None
    device: dict  # {"torch", "faiss_gpus"}
    last_run: dict | None
    last_evaluation: dict | None
    check: dict[str, list[str]] = field(default_factory=dict)  # filled by `kb status --check`

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def collection_status(settings: Settings, catalogue: Catalogue, collection: str, identity: dict,
                      index: FaissIndex, keywords: KeywordIndex) -> Status:
    counts = catalogue.counts(collection)
    manifest = index.read_manifest() or {}
    last_run, last_evaluation = history.history(catalogue, collection)
    db_file = Path(settings.home) / "catalogue.sqlite3"
    configured = settings.index.type
    return Status(
        home=str(Path(settings.home).resolve()), collection=collection,
        collections=document_lookup.collection_names(catalogue), **counts,
        failures=[{"path": d.path, "error": d.error}
                  for d in document_lookup.documents(catalogue, collection, failed_only=True)],
        embedding_model=identity["embedding_model"], dimension=identity["dimension"], chunking=identity["chunking"],
        index_type=configured if index.kind == configured else f"{configured} ({index.kind})",
        index_vectors=index.count, keyword_entries=keywords.count, index_bytes=manifest.get("index_bytes", 0),
        consistent=index.count == counts["chunks"] == keywords.count,
        catalogue_url=settings.catalogue_url.split("@")[-1],
        catalogue_bytes=db_file.stat().st_size if not settings.database_url and db_file.exists() else None,
        device={"torch": torch_device(settings.embedding.device), "faiss_gpus": faiss_gpu_count()},
        last_run=last_run, last_evaluation=last_evaluation)


def integrity_problems(catalogue: Catalogue, collection: str, open_index, open_keywords) -> dict[str, list[str]]:  # noqa: ANN001
    """Problems per part (`kb status --check`): the catalogue's own check and its chunks' hashes, the
    indexes' checksums, and whether they hold the same chunks as the catalogue. Empty lists = healthy;
    an index only behind the catalogue's change log (another node's writes) is under "behind", which is
    not damage."""
    problems: dict[str, list[str]] = {"catalogue": [], "index": []}
    try:
        problems["catalogue"] = catalogue.check()
    except CatalogueError as exc:
        problems["catalogue"] = [str(exc)]
    if problems["catalogue"]:
        return problems
    garbled = catalogue.garbled_chunks(collection, chunk_intact)
    if garbled:
        docs = sorted({p for _, p in garbled})
        problems["catalogue"].append(
            f"{len(garbled)} chunks whose text no longer matches what was embedded (damaged pages; they are left "
            f"out of answers) in {len(docs)} documents ({', '.join(docs[:3])}{', …' if len(docs) > 3 else ''}): "
            "restore the catalogue from a backup, or re-read them with `kb reindex --full`")
    try:
        index = open_index(collection)
    except (IndexCorruptError, IndexMismatchError) as exc:
        problems["index"] = [str(exc)]
        return problems
    try:
        keywords = open_keywords(collection)
        damage = keywords.verify()  # every recorded segment's checksum, then a full read
    except IndexCorruptError as exc:
        damage = [str(exc)]
    if damage:
        problems["index"] += [f"keyword index: {d} (the next search or write rebuilds it from the catalogue)"
                              for d in damage]
        return problems
    ids, chunks, words = set(index.ids().tolist()), catalogue.chunk_ids(collection), keywords.ids()
    changes = catalogue.changes_since(collection, index.change_seq)
    if (ids != chunks or words != chunks) and changes \
            and (ids ^ chunks) | (words ^ chunks) <= {chunk_id for _, chunk_id, _ in changes}:
        # not damage: writes made since this node's indexes were saved (another node's), applied at its
        # next search
        problems["behind"] = [f"{len(changes)} catalogue changes not applied yet (writes from another node; "
                              "this node applies them at its next search)"]
        return problems
    if ids != chunks:
        problems["index"] = [f"{len(ids - chunks)} vectors not in the catalogue, {len(chunks - ids)} chunks "
                             "without a vector (the next write repairs this)"]
    if words != chunks:
        problems["index"].append(f"{len(words - chunks)} keyword entries not in the catalogue, "
                                 f"{len(chunks - words)} chunks without one (the next write repairs this)")
    return problems


def refuse_damaged_catalogue(catalogue: Catalogue, settings: Settings) -> None:
    """Raised before anyone reads or writes after a killed writer left the catalogue damaged."""
    if problems := catalogue.check():
        fix = ("Restore the database from its backup" if settings.database_url else
               "Restore it from a backup, or rebuild it from the indexed files with `kb rebuild-catalogue` "
               "(the damaged file is kept beside it)")
        raise CatalogueError(f"the catalogue {settings.catalogue_url.split('@')[-1]} is damaged "
                             f"({'; '.join(problems[:3])}). {fix}")
