"""The hybrid retriever: dense (FAISS) and BM25 (tantivy) candidates, fused (weighted by default, or
reciprocal rank), optionally reranked by a cross-encoder, cut to top-k, with a relevance floor that can
answer "nothing relevant"."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from kb.catalogue import Catalogue, Chunk, Document
from kb.embeddings import Embedder, english_failed
from kb.errors import EmbeddingError, IndexCorruptError
from kb.keyword_index import KeywordHits, KeywordIndex
from kb.settings import RetrievalSettings
from kb.text import is_english
from kb.vector_index import FaissIndex, chunk_intact, embedded_text
from retrieval.dense import dense_search
from retrieval.types import Context, Retrieval

log = logging.getLogger(__name__)


def rrf(rankings: Iterable[tuple[float, list[int]]], k: int) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of weight / (k + rank)."""
    fused: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, i in enumerate(ids, 1):
            fused[i] = fused.get(i, 0.0) + weight / (k + rank)
    return fused


def scaled(ranking: list[tuple[int, float]], weight: float) -> dict[int, float]:
    """weight x score scaled to [0, 1] over a ranking (best first)."""
    if not ranking:
        return {}
    hi, lo = ranking[0][1], ranking[-1][1]
    return {i: weight * ((s - lo) / (hi - lo) if hi > lo else 1.0) for i, s in ranking}


def weighted_fusion(dense: list[tuple[int, float]], keyword: list[tuple[int, float]], wd: float,
                    wk: float) -> dict[int, float]:
    """wd x cosine scaled to [0, 1] over the dense candidates + wk x BM25 / best BM25.

    Unlike RRF it keeps how far apart the scores are, which measured better here (docs/benchmarks.md)."""
    fused = scaled(dense, wd)
    if keyword:
        top = keyword[0][1] or 1.0
        for i, s in keyword:
            fused[i] = fused.get(i, 0.0) + wk * s / top
    return fused


@dataclass(frozen=True)
class Shard:
    """One collection's part of a search: its name, its two indexes, and what limits them now."""

    collection: str
    index: FaissIndex
    keywords: KeywordIndex
    notes: tuple[str, ...] = ()


class Retriever:
    """Searches one collection, or several as one (`shards`): their candidates are pooled and fused on
    the raw signals (dense cosines of the same model, BM25 over the pool), so a weak collection's best
    chunk does not score like a strong one's."""

    def __init__(self, cfg: RetrievalSettings, embedder: Embedder, shards: list[Shard], catalogue: Catalogue,
                 reranker=None, english: Embedder | None = None):  # noqa: ANN001 - CrossEncoder-like
        self.cfg = cfg
        self.embedder = embedder
        self.english = english  # embedding.english_model, or None
        self.shards = shards
        self.collections = [sh.collection for sh in shards]
        self.catalogue = catalogue
        self.reranker = reranker

    def _document_chunks(self, document_ids: set[int]) -> list[int]:
        with self.catalogue.session() as s:
            return list(s.scalars(select(Chunk.id).where(Chunk.document_id.in_(document_ids)).order_by(Chunk.id)))

    def candidates(self, question: str, documents: set[int] | None = None) -> tuple[list, KeywordHits, dict]:
        """Dense and keyword rankings [(chunk id, score)], before fusion; timings."""
        cfg, t = self.cfg, {}
        t0 = time.perf_counter()
        dense: list[tuple[int, float]] = []
        denses, keywords = [], []
        if cfg.mode != "keyword":
            qv = self.embedder.embed_query(question)
            t["embed"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            restrict = self._document_chunks(documents) if documents is not None else None
            denses = [dense_search(qv, sh.index, cfg.candidates, restrict) for sh in self.shards]
            t["dense"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        if cfg.mode != "dense":
            keywords = [self._keyword_search(sh, question, documents) for sh in self.shards]
            t["keyword"] = time.perf_counter() - t0
        if len(self.shards) == 1:
            return (denses[0] if denses else dense), (keywords[0] if keywords else KeywordHits([], 0.0)), t
        return self._pooled(denses, keywords, t)

    def _keyword_search(self, shard: Shard, question: str, documents: set[int] | None) -> KeywordHits:
        """A damaged keyword index (marked for a rebuild by the search that found it) leaves the question
        to the dense side, with a note, instead of failing it."""
        try:
            return shard.keywords.search(question, self.cfg.candidates, documents)
        except IndexCorruptError as exc:
            log.warning("%s: keyword search skipped: %s", shard.collection, exc)
            return KeywordHits([], 0.0, notes=[f"{shard.collection}: the keyword index is damaged and being rebuilt; "
                                               "these results come from the dense search alone"])

    def _pooled(self, denses: list[list[tuple[int, float]]], keywords: list[KeywordHits],
                t: dict) -> tuple[list, KeywordHits, dict]:
        """Several collections' candidates as one pool, best first, each id kept only from the collection
        the catalogue says it belongs to (an index left ahead by a crash may hold another's id)."""
        t0 = time.perf_counter()
        ids = {i for r in denses for i, _ in r} | {i for h in keywords for i, _ in h.ranking}
        owner = self.catalogue.chunk_collections(ids)
        def own(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
            pooled = [(i, sc) for sh, r in zip(self.shards, rankings, strict=True) for i, sc in r
                      if owner.get(i) == sh.collection]
            return sorted(pooled, key=lambda kv: (-kv[1], kv[0]))[: self.cfg.candidates]
        dense = own(denses) if denses else []  # cosines of one model compare as they are
        hits = KeywordHits([], 0.0)
        if keywords:  # BM25 does not: each index weighs a term by its own IDF. Rescaled to the pool's.
            docs = sum(h.docs for h in keywords)
            dfs: dict[str, int] = {}
            for h in keywords:
                for term, (_, df) in h.doc_freq.items():
                    dfs[term] = dfs.get(term, 0) + df
            rescaled = []
            for h in keywords:
                own_weight = h.idf_weight(h.docs, {t: df for t, (_, df) in h.doc_freq.items()})
                factor = h.idf_weight(docs, dfs) / own_weight if own_weight else 1.0
                rescaled.append([(i, sc * factor) for i, sc in h.ranking])
            hits = KeywordHits(own(rescaled), max(h.coverage for h in keywords), notes=[n for h in keywords for n in h.notes])
        t["pool"] = time.perf_counter() - t0
        return dense, hits, t

    def search(self, question: str, top_k: int | None = None, documents: set[int] | None = None) -> Retrieval:
        cfg = self.cfg
        top_k = top_k or cfg.top_k
        dense, hits, timings = self.candidates(question, documents)
        keyword = hits.ranking
        t0 = time.perf_counter()
        english = self.english_ranking(question, dense, keyword)
        if english:
            timings["english"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        fused = self.fuse(dense, keyword, english)
        order = sorted(fused, key=lambda i: (-fused[i], i))
        relevant = self.passes_floor(dense, hits, english)
        signals = {i: {"fused": fused[i]} for i in order}
        for name, ranking in (("dense", dense), ("bm25", keyword), ("english", english)):
            for i, s in ranking:
                signals[i][name] = s
        # a few more than needed: an orphan or a damaged chunk left out below still leaves top_k
        rows = self.catalogue.chunks_by_ids(order[: max(2 * top_k, cfg.rerank_candidates if self.reranker else 0)],
                                            self.collections)
        orphans = sum(1 for i in order[: max(2 * top_k, cfg.rerank_candidates if self.reranker else 0)] if i not in rows)
        order = [i for i in order if i in rows]  # an id not in this collection's catalogue is an orphan
        garbled = [i for i in order if not chunk_intact(rows[i].heading, rows[i].text, rows[i].embed_sha256)]
        if garbled:  # text changed since it was embedded (a damaged page of the catalogue): never served
            log.warning("chunks %s left out: their text no longer matches its stored hash (run "
                        "`kb status --check`)", garbled)
            order = [i for i in order if i not in garbled]
            hits.notes.append(f"{len(garbled)} damaged passage(s) left out (see `kb status --check`)")
        timings["fuse"] = time.perf_counter() - t0
        scores = {i: fused[i] for i in order}
        if self.reranker is not None and order:
            t0 = time.perf_counter()
            pool = order[: cfg.rerank_candidates]
            preds = self.reranker.predict([(question, self._passage(rows[i])) for i in pool])
            scores = {i: float(p) for i, p in zip(pool, preds, strict=True)}
            for i in pool:
                signals[i]["rerank"] = scores[i]
            order = sorted(pool, key=lambda i: (-scores[i], i))
            timings["rerank"] = time.perf_counter() - t0
        contexts = [
            Context(i, scores[i], rows[i].text, rows[i].page, rows[i].heading, rows[i].document.path,
                    rows[i].document_id, signals[i], rows[i].ocr)
            for i in order[:top_k]
        ]
        notes = [n for sh in self.shards for n in sh.notes] + hits.notes
        return Retrieval(question, contexts if relevant else [], relevant and bool(contexts), timings, notes, orphans)

    def english_ranking(self, question: str, dense: list[tuple[int, float]],
                        keyword: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """For a question in English, the English model's cosine of each candidate whose vector was
        written with it (ingest/pipeline.py), best first; [] when that does not apply, or when fewer than
        half the candidates (or fewer than 2) have one: scaled over a few, the cosines would say little.

        A rescoring of the candidates, not a third search: it needs no second index to keep consistent,
        and measured within one question of one on the English sets (docs/benchmarks.md)."""
        cfg = self.cfg
        if self.english is None or cfg.english_weight <= 0 or cfg.fusion != "weighted" or cfg.mode == "keyword" \
                or not is_english(question):
            return []
        pool = {i for i, _ in dense} | {i for i, _ in keyword}
        # Only chunks in English: the cache may also hold this model's vectors of other text (written when
        # it was a home's main model, under the same name).
        vectors = self.catalogue.chunk_vectors(self.english.name, pool, only=is_english)
        enough = max(2, len(pool) / 2)
        if len(vectors) < enough:
            return []
        try:
            query = self.english.embed_query(question).reshape(-1)
        except EmbeddingError as exc:  # the main ranking still answers
            english_failed(self.english, exc)
            self.english = None
            return []
        ids = [i for i in sorted(vectors) if len(vectors[i]) == 4 * len(query)]  # same name, other model: skip
        if len(ids) < enough:
            return []
        sims = np.vstack([np.frombuffer(vectors[i], dtype=np.float32) for i in ids]) @ query
        return [(ids[j], float(sims[j])) for j in np.argsort(-sims, kind="stable")]

    def fuse(self, dense: list[tuple[int, float]], keyword: list[tuple[int, float]],
             english: list[tuple[int, float]]) -> dict[int, float]:
        """Fused score per candidate. With an English ranking, english_weight of the dense weight goes to
        it; a candidate without an English vector (Chinese text, or written before the English model was
        on) gets that share from the main model's cosine, as if both agreed."""
        cfg = self.cfg
        if cfg.fusion == "rrf":
            return rrf([(cfg.dense_weight, [i for i, _ in dense]), (cfg.keyword_weight, [i for i, _ in keyword])],
                       cfg.rrf_k)
        if not english:
            return weighted_fusion(dense, keyword, cfg.dense_weight, cfg.keyword_weight)
        fused = weighted_fusion(dense, keyword, cfg.dense_weight - cfg.english_weight, cfg.keyword_weight)
        own, main = scaled(english, cfg.english_weight), scaled(dense, cfg.english_weight)
        for i in fused.keys() | own.keys():
            fused[i] = fused.get(i, 0.0) + own.get(i, main.get(i, 0.0))
        return fused

    def passes_floor(self, dense: list[tuple[int, float]], hits: KeywordHits,
                     english: list[tuple[int, float]] = ()) -> bool:
        """Relevant when the best dense cosine reaches the floor (the main model's; unless a floor is
        set, the English model's for a question in English), or one chunk holds most of the question's
        keyword weight. Calibrated on ../shared/eval (every in-domain question passes) against off-topic
        questions (none passes): see docs/benchmarks.md."""
        floor = self.cfg.min_dense_score
        if dense and dense[0][1] >= (self.embedder.relevance_floor if floor is None else floor):
            return True
        if floor is None and english and self.english.relevance_floor \
                and english[0][1] >= self.english.relevance_floor:
            return True
        if self.cfg.mode == "keyword" and hits.ranking:
            return True
        return hits.coverage >= self.cfg.min_keyword_coverage

    @staticmethod
    def _passage(chunk: Chunk) -> str:
        return embedded_text(chunk.heading, chunk.text)


def documents_named(catalogue: Catalogue, collection: str, names: Iterable[str]) -> set[int]:
    """Document ids for a filter given as ids, paths or file names."""
    wanted = set(names)
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        if col is None:
            return set()
        docs = s.execute(select(Document.id, Document.path).where(Document.collection_id == col.id)).all()
    return {d.id for d in docs if str(d.id) in wanted or d.path in wanted or d.path.rsplit("/", 1)[-1] in wanted}
