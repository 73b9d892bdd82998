"""Query latency and throughput of the vector index at 10k, 100k and 1M chunks (synthetic unit
vectors, dim 384 like the default model), exact (flat) and approximate (HNSW, recall@10 against
exact), one query at a time and batched, beside the memory-bandwidth bound of a flat scan.

    python bench/query.py [--sizes 10000 100000 1000000] [--hnsw-max 100000]

Also times kb's own end-to-end retrieval (embed + dense + BM25 + fuse) on an indexed home when
--home is given. Saves bench/results/query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

DIM = 384


def bandwidth_gbs() -> float:
    """Single-pass read bandwidth as numpy sees it (sum over a 1 GiB array)."""
    a = np.ones(1 << 28, dtype=np.float32)
    a.sum()
    t0 = time.perf_counter()
    for _ in range(3):
        a.sum()
    return 3 * a.nbytes / (time.perf_counter() - t0) / 1e9


def vectors(n: int, rng: np.random.Generator, clusters: int = 0) -> np.ndarray:
    """Unit vectors; with clusters, topic centres plus noise (text embeddings cluster by topic; pure
    random 384-d points are the worst case for HNSW and unlike any real collection)."""
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    if clusters:
        centres = rng.standard_normal((clusters, DIM), dtype=np.float32)
        x = centres[rng.integers(0, clusters, n)] + 0.6 * x
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed_single(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, float, float]:
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    return float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 95)), len(lat) / float(sum(lat))


def approximate_row(index: faiss.Index, label: str, n: int, queries: np.ndarray, exact: np.ndarray, build: float,
                    memory_bytes: int) -> dict:
    """Latency, throughput and recall@10 against the exact top 10 of one approximate index."""
    _, approx = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    p50, p95, qps1 = timed_single(index, queries, 10)
    t0 = time.perf_counter()
    index.search(queries, 10)
    qps_batch = len(queries) / (time.perf_counter() - t0)
    row = {"chunks": n, "index": label, "build_s": round(build, 1), "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
           "qps_single": round(qps1, 1), "qps_batched": round(qps_batch, 1), "recall@10": round(float(recall), 4),
           "bandwidth_bound_qps": None, "share_of_bound": None, "memory_mb": round(memory_bytes / 1e6, 1)}
    print(json.dumps(row), flush=True)
    return row


def ivf_rows(base: np.ndarray, queries: np.ndarray, exact: np.ndarray, nprobes: list[int]) -> list[dict]:
    """kb's own FaissIndex in 'auto' mode past its threshold: IVF trained on the vectors it holds."""
    import tempfile

    from kb.settings import IndexSettings
    from kb.vector_index import FaissIndex

    n = len(base)
    identity = {"embedding_model": "bench", "dimension": DIM, "normalized": True, "index_type": "auto"}
    with tempfile.TemporaryDirectory() as tmp:
        index = FaissIndex(Path(tmp), identity, IndexSettings(auto_ivf_above=0))
        t0 = time.perf_counter()
        index.add(np.arange(n, dtype=np.int64), base)  # flat, then trained into IVF
        build = time.perf_counter() - t0
        rows = []
        for nprobe in nprobes:
            index.cfg = IndexSettings(auto_ivf_above=0, ivf_nprobe=nprobe)
            rows.append(approximate_row(index._searchable(), f"ivf nlist={index.index.nlist} nprobe={nprobe} (kb auto)",
                                        n, queries, exact, build, n * (DIM * 4 + 8 + 16)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size (build time)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--home", type=Path, help="an indexed kb home: also time end-to-end retrieval")
    ap.add_argument("--questions", type=Path, help="JSONL with 'question' fields for --home")
    ap.add_argument("--ivf-nprobe", type=int, nargs="*", default=[16, 32, 64],
                    help="also kb's IVF index (the structure an 'auto' index turns into) at these nprobe")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "query.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    bw = bandwidth_gbs()
    print(f"measured read bandwidth {bw:.1f} GB/s; faiss threads {faiss.omp_get_max_threads()}", flush=True)
    rows = []
    for n in args.sizes:
        base = vectors(n, rng, clusters=max(10, n // 100))
        # queries near stored vectors, like real questions near their passages
        queries = base[rng.choice(n, args.queries, replace=False)] + 0.05 * vectors(args.queries, rng)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        flat.add_with_ids(base, np.arange(n, dtype=np.int64))
        _, exact = flat.search(queries, 10)
        bound_qps = bw * 1e9 / (n * DIM * 4)
        p50, p95, qps1 = timed_single(flat, queries, 10)
        t0 = time.perf_counter()
        flat.search(queries, 10)
        qps_batch = len(queries) / (time.perf_counter() - t0)
        rows.append({"chunks": n, "index": "flat (exact)", "build_s": 0.0, "p50_ms": round(p50, 3),
                     "p95_ms": round(p95, 3), "qps_single": round(qps1, 1), "qps_batched": round(qps_batch, 1),
                     "recall@10": 1.0, "bandwidth_bound_qps": round(bound_qps, 1),
                     "share_of_bound": round(qps1 / bound_qps, 3), "memory_mb": round(n * DIM * 4 / 1e6, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if n <= args.hnsw_max:
            inner = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            hnsw = faiss.IndexIDMap2(inner)
            t0 = time.perf_counter()
            hnsw.add_with_ids(base, np.arange(n, dtype=np.int64))
            build = time.perf_counter() - t0
            inner.hnsw.efSearch = 128
            rows.append(approximate_row(hnsw, "hnsw M=32 ef=128", n, queries, exact, build, n * (DIM * 4 + 32 * 2 * 4)))
            del hnsw
        if args.ivf_nprobe:
            rows += ivf_rows(base, queries, exact, args.ivf_nprobe)
        del flat, base
    end_to_end = None
    if args.home and args.questions:
        from kb.knowledge_base import KnowledgeBase
        from kb.query_log import latency_table

        kb = KnowledgeBase(home=args.home)
        qs = [json.loads(x)["question"] for x in args.questions.read_text().splitlines() if x.strip()]
        retriever = kb.retriever()
        retriever.search(qs[0])  # warm-up: model and jieba load
        t0 = time.perf_counter()
        timings = [retriever.search(q).timings for q in qs]
        end_to_end = {"home": str(args.home), "chunks": kb.status().chunks, "questions": len(qs),
                      "qps": round(len(qs) / (time.perf_counter() - t0), 1), "latency": latency_table(timings)}
        print(json.dumps(end_to_end), flush=True)
    print("\n| chunks | index | build s | p50 ms | p95 ms | q/s single | q/s batched | recall@10 | bound q/s (flat) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunks']:,} | {r['index']} | {r['build_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['qps_single']} | "
              f"{r['qps_batched']} | {r['recall@10']} | {r['bandwidth_bound_qps'] or '-'} |")
    out = args.out
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "bandwidth_gbs": round(bw, 1),
                               "rows": rows, "end_to_end": end_to_end}, indent=2))


if __name__ == "__main__":
    main()
