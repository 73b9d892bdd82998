"""Dense retrieval: the question's embedding against a collection's FAISS index, content from the catalogue."""

from __future__ import annotations

from dataclasses import dataclass

from kb.catalogue import Catalogue
from kb.embeddings import Embedder
from kb.vector_index import FaissIndex


@dataclass
class Context:
    chunk_id: int
    score: float
    text: str
    page: int | None
    heading: str | None
    source: str  # document path


def dense_search(question: str, embedder: Embedder, index: FaissIndex, catalogue: Catalogue, k: int = 3) -> list[Context]:
    scores, ids = index.search(embedder.embed_query(question), k)
    hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    rows = catalogue.chunks_by_ids(i for i, _ in hits)
    # An id missing from the catalogue is an orphan vector from an interrupted write: never shown.
    return [
        Context(i, s, rows[i].text, rows[i].page, rows[i].heading, rows[i].document.path)
        for i, s in hits
        if i in rows
    ]
