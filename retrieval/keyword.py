"""BM25 over the catalogue's postings table: persisted and kept in step by ingestion, never rebuilt per query."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from kb.catalogue import Catalogue, Chunk, Document, Posting
from kb.keywords import terms


@dataclass
class KeywordHits:
    ranking: list[tuple[int, float]]  # (chunk id, BM25 score), best first
    coverage: float  # best share of the question's IDF weight found in one chunk (0 = no term matched)


def keyword_search(question: str, catalogue: Catalogue, collection: str, k: int,
                   document_ids: set[int] | None = None, k1: float = 1.2, b: float = 0.75) -> KeywordHits:
    """BM25 over chunks sharing at least one term with the question; terms unknown to the
    collection count at full IDF in the coverage, so an off-topic question has low coverage."""
    none = KeywordHits([], 0.0)
    query = Counter(terms(question))
    if not query:
        return none
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        if col is None:
            return none
        n, total = s.execute(select(func.count(Chunk.id), func.sum(Chunk.terms)).join(Document)
                             .where(Document.collection_id == col.id)).one()
        if not n:
            return none
        q = (select(Posting.term, Posting.chunk_id, Posting.tf, Chunk.terms, Chunk.document_id)
             .join(Chunk, Chunk.id == Posting.chunk_id)
             .where(Posting.collection_id == col.id, Posting.term.in_(list(query))))
        rows = s.execute(q).all()
    avgdl = (total or 0) / n or 1.0
    df = Counter(r.term for r in rows)
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in query}
    scores: dict[int, float] = defaultdict(float)
    matched: dict[int, float] = defaultdict(float)
    for term, chunk_id, tf, dl, doc_id in rows:
        if document_ids is not None and doc_id not in document_ids:
            continue
        scores[chunk_id] += query[term] * idf[term] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        matched[chunk_id] += query[term] * idf[term]
    ranking = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    total_idf = sum(query[t] * idf[t] for t in query) or 1.0
    return KeywordHits(ranking, max((matched[i] / total_idf for i, _ in ranking), default=0.0))
