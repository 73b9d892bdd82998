"""Retrieval quality per variant (dense, BM25, fused, reranked) on ../shared/eval, scored by its score.py.

    python bench/retrieval.py [--eval-dir ../shared/eval] [--sets ...] [--chunk-tokens 200] [--second-dense MODEL]

The "kb default" row is kb's own fusion, with the English model (embedding.english_model) rescoring the
candidates of questions in English; "weighted 0.7:0.3" is the same without it. The chunk column says how
many chunks have an English vector (a --work home indexed before the English model has none).
--second-dense (issue 13, item 5) also embeds every chunk with a second model (e.g. the bundled English
all-MiniLM-L6-v2; its time is reported as `second_embed_s`) and adds its full ranking, as a second index
would give it, as a third one in the fusion for questions in English ("second index" rows).

Each corpus is indexed once with kb's defaults (cached under --work); every question is searched once
per retriever, and the variants are fused from those rankings. Contexts are cut to 1,500 characters, as
the prompt sees them. Prints a table and saves bench/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kb.catalogue import Chunk, Document  # noqa: E402
from kb.embeddings import make_embedder  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.vector_index import embedded_text  # noqa: E402
from kb.text import is_english  # noqa: E402
from kb.settings import ChunkingSettings, EmbeddingSettings, Settings  # noqa: E402
from retrieval.retriever import rrf, scaled, weighted_fusion  # noqa: E402

SETS = ["debian_faq_zh", "debian_faq_en", "debian_faq_zh_bodies"]


def load_scorer(eval_dir: Path):
    spec = importlib.util.spec_from_file_location("score", eval_dir / "score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def variants(dense: list, keyword: list, english: list, retriever) -> dict[str, list[int]]:  # noqa: ANN001
    d, k = [i for i, _ in dense], [i for i, _ in keyword]
    out = {"dense": d, "bm25": k}
    for name, f in (("rrf k=60 (1:1)", rrf([(1.0, d), (1.0, k)], 60)),
                    ("rrf k=10 (1:0.3)", rrf([(1.0, d), (0.3, k)], 10)),
                    ("weighted 0.7:0.3 (no English model)", weighted_fusion(dense, keyword, 0.7, 0.3)),
                    ("weighted 0.8:0.2", weighted_fusion(dense, keyword, 0.8, 0.2)),
                    ("kb default (+ English model among the candidates)", retriever.fuse(dense, keyword, english))):
        out[name] = sorted(f, key=lambda i: (-f[i], i))
    return out


class SecondDense:
    """Every chunk of the collection embedded with a second model; a cosine ranking per question."""

    def __init__(self, kb: KnowledgeBase, model: str):
        self.embedder = make_embedder(EmbeddingSettings(model=model))
        with kb.catalogue.session() as s:
            col = kb.catalogue.collection(s, kb.collection, create=False)
            rows = s.execute(select(Chunk.id, Chunk.heading, Chunk.text).join(Document)
                             .where(Document.collection_id == col.id)).all()
        self.ids = np.array([r.id for r in rows])
        t0 = time.perf_counter()
        self.vectors = self.embedder.embed_passages([embedded_text(r.heading, r.text) for r in rows])
        self.embed_s = time.perf_counter() - t0

    def ranking(self, question: str, k: int) -> list[tuple[int, float]]:
        """The top k by cosine."""
        scores = self.vectors @ self.embedder.embed_query(question)
        top = np.argsort(-scores)[:k]
        return [(int(self.ids[j]), float(scores[j])) for j in top]


def language_aware(question: str, dense: list, keyword: list, second: list, weights: tuple) -> list[int]:
    we, ws, wk = weights
    if not is_english(question):  # the second model is English-only: kb's plain ranking for the others
        f = weighted_fusion(dense, keyword, DEFAULTS.dense_weight, DEFAULTS.keyword_weight)
    else:
        f = scaled(dense, we)
        for i, s in scaled(second, ws).items():
            f[i] = f.get(i, 0.0) + s
        if keyword:
            top = keyword[0][1] or 1.0
            for i, s in keyword:
                f[i] = f.get(i, 0.0) + wk * s / top
    return sorted(f, key=lambda i: (-f[i], i))


DEFAULTS = Settings().retrieval  # the fusion weights kb runs with
LANG_AWARE = {"second index e5+MiniLM+bm25 0.4:0.3:0.3": (0.4, 0.3, 0.3),
              "second index e5+MiniLM+bm25 0.5:0.2:0.3": (0.5, 0.2, 0.3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--chunk-tokens", type=int, default=ChunkingSettings().chunk_tokens)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-retrieval"))
    ap.add_argument("--only", help="print only variants containing this string")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    ap.add_argument("--second-dense", help="also fuse this model's dense ranking for English questions")
    args = ap.parse_args()
    scorer = load_scorer(args.eval_dir)
    rows = []
    for name in args.sets:
        home = args.work / f"{name}-{args.chunk_tokens}"
        settings = Settings(home=home, chunking=ChunkingSettings(chunk_tokens=args.chunk_tokens))
        kb = KnowledgeBase(settings=settings)
        t0 = time.perf_counter()
        kb.sync([args.eval_dir / name / "corpus"])
        ingest_s = time.perf_counter() - t0
        retriever = kb.retriever()
        second = SecondDense(kb, args.second_dense) if args.second_dense else None
        qa = scorer.load_jsonl(args.eval_dir / name / "qa.jsonl")
        runs: dict[str, list[dict]] = {}
        t0 = time.perf_counter()
        for q in qa:
            dense, hits, _ = retriever.candidates(q["question"])
            keyword = hits.ranking
            ranked = variants(dense, keyword, retriever.english_ranking(q["question"], dense, keyword), retriever)
            if second is not None:
                other = second.ranking(q["question"], len(dense) or 50)
                ranked[f"dense {args.second_dense}"] = [i for i, _ in other]
                for v, weights in LANG_AWARE.items():
                    ranked[v] = language_aware(q["question"], dense, keyword, other, weights)
            chunks = kb.catalogue.chunks_by_ids({i for ids in ranked.values() for i in ids[:10]})
            for v, ids in ranked.items():
                ctx = [{"source": Path(chunks[i].document.path).name, "text": chunks[i].text[:1500]} for i in ids[:10]]
                runs.setdefault(v, []).append({"id": q["id"], "contexts": ctx})
        query_ms = (time.perf_counter() - t0) / len(qa) * 1000
        status = kb.status()
        # a --work home from before the English model has none: its "kb default" row is then the plain fusion
        english = retriever.english
        english_vectors = len(kb.catalogue.chunk_vectors(english.name, kb.catalogue.chunk_ids(kb.collection))) \
            if english else 0
        for v, results in runs.items():
            m = scorer.score(qa, results)
            row = {"set": name, "variant": v, "chunks": status.chunks, "english_vectors": english_vectors,
                   "chunk_tokens": args.chunk_tokens,
                   "ingest_s": round(ingest_s, 1), "candidates_ms": round(query_ms, 1),
                   **({"second_embed_s": round(second.embed_s, 1)} if second else {}),
                   **{k: round(m[k], 3) for k in ("recall@1", "recall@3", "recall@5", "mrr@10")}}
            rows.append(row)
    keys = ["recall@1", "recall@3", "recall@5", "mrr@10"]
    print(f"\n| set | variant | chunks (tokens; with an English vector) | {' | '.join(keys)} |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        if args.only and args.only not in r["variant"]:
            continue
        print(f"| {r['set']} | {r['variant']} | {r['chunks']} ({r['chunk_tokens']}; {r['english_vectors']}) | "
              + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    out = args.out
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
