"""Enterprise scale on one machine: build collections of 10k, 100k and 1M chunks through kb's real write
path (SQL catalogue, FAISS, tantivy keyword index) and measure search per stage.

    python bench/scale.py [--sizes 10000 100000 1000000] [--queries 200] [--out bench/results/scale.json]

Text is synthetic but shaped like real text: half Chinese, half English documents of 20 chunks, each
chunk ~120 words drawn from a Zipf distribution (s = 1.1) over a 50k-word vocabulary per language.
Questions mix 2 common words (ranks 10-100) and 3 rarer ones (ranks 1k-20k) of one language.
Embeddings come from the `hash-384` STAND-IN (a random unit vector per text, no semantic meaning):
the real model would need hours for 1M chunks on 2 cores, and the question's embedding is timed
apart anyway ("embed"). The write throughput excludes embedding (vectors are made before the clock).

Per size it reports: write chunks/s (catalogue + keyword index + FAISS, durable commits), disk size,
peak RSS, and p50/p95 of embed, dense, keyword, fuse and total for single queries and for 8 concurrent
ones (threads sharing one KnowledgeBase, as web sessions do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.chunking import ChunkDraft  # noqa: E402
from ingest.pipeline import IndexWriter, SyncReport  # noqa: E402
from kb.chunk_store import DocumentWrite  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import EmbeddingSettings, IndexSettings, IngestSettings, Settings  # noqa: E402

VOCAB = 50_000
WORDS_PER_CHUNK = 120
CHUNKS_PER_DOC = 20
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]  # the commonest block of ideographs
SYLLABLES = [c + v for c in "bcdfghjklmnprtvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]


def vocabularies(rng: np.random.Generator) -> dict[str, list[str]]:
    """50k distinct pseudo-words per language: English-like syllable words, 2-3 ideograph Chinese words."""
    out: dict[str, list[str]] = {}
    en: set[str] = set()
    while len(en) < VOCAB:
        w = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5))))
        if not w.endswith("s"):  # kb folds plurals; keep words distinct after folding
            en.add(w)
    zh: set[str] = set()
    while len(zh) < VOCAB:
        zh.add("".join(rng.choice(CJK, size=int(rng.integers(2, 4)))))
    out["en"], out["zh"] = sorted(en), sorted(zh)
    for lang in out:
        rng.shuffle(out[lang])  # rank order = list order after the shuffle
    return out


def zipf_ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    ranks = rng.zipf(1.1, size=n * 2)
    ranks = ranks[ranks <= VOCAB][:n]
    while len(ranks) < n:
        more = rng.zipf(1.1, size=n)
        ranks = np.concatenate([ranks, more[more <= VOCAB]])[:n]
    return ranks - 1


def chunk_text(words: list[str], lang: str) -> str:
    if lang == "en":
        return " ".join(words)
    # Chinese has no spaces; a sentence mark every ~15 words like real text
    return "".join(w + ("。" if i % 15 == 14 else "") for i, w in enumerate(words))


def documents(n_chunks: int, vocab: dict[str, list[str]], rng: np.random.Generator):
    """Yield (path, lang, [chunk texts]) until n_chunks chunks are made."""
    made = 0
    d = 0
    while made < n_chunks:
        lang = "zh" if d % 2 else "en"
        k = min(CHUNKS_PER_DOC, n_chunks - made)
        ranks = zipf_ranks(rng, k * WORDS_PER_CHUNK).reshape(k, WORDS_PER_CHUNK)
        texts = [chunk_text([vocab[lang][r] for r in row], lang) for row in ranks]
        yield f"/synthetic/{lang}/doc-{d:07d}.txt", lang, texts
        made += k
        d += 1


def questions(n: int, vocab: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
    out = []
    for i in range(n):
        lang = "zh" if i % 2 else "en"
        words = [vocab[lang][int(r)] for r in rng.integers(10, 100, 2)] + \
                [vocab[lang][int(r)] for r in rng.integers(1000, 20000, 3)]
        out.append((" " if lang == "en" else "，").join(words) + ("?" if lang == "en" else "？"))
    return out


def build(kb: KnowledgeBase, n_chunks: int, vocab, rng) -> dict:
    """Write the collection through ChunkStore.write (the sync loop's durable step), batched as sync does."""
    embedder = kb.embedder
    write_s = 0.0
    report = SyncReport()
    with kb.writes.writing(kb.collection) as writer:
        writer: IndexWriter
        pending: list[DocumentWrite] = []
        n_pending = 0
        for path, _lang, texts in documents(n_chunks, vocab, rng):
            drafts = [ChunkDraft(t, 1 + i // 4, f"Section {i // 4 + 1}", 0, len(t), WORDS_PER_CHUNK)
                      for i, t in enumerate(texts)]
            vectors = embedder.embed_passages([d.embed_text for d in drafts])  # not timed: a stand-in
            pending.append(DocumentWrite(path, f"{hash(path):064x}"[-64:], 1000, "text/plain", 5, drafts, vectors))
            n_pending += len(drafts)
            if n_pending >= writer.batch_limit():
                t0 = time.perf_counter()
                writer._write(pending, [], report)
                write_s += time.perf_counter() - t0
                pending, n_pending = [], 0
                print(f"  {report.chunks_added:>9,} chunks written, {report.chunks_added / write_s:,.0f}/s",
                      file=sys.stderr, flush=True)
        if pending:
            t0 = time.perf_counter()
            writer._write(pending, [], report)
            write_s += time.perf_counter() - t0
    return {"chunks": report.chunks_added, "write_s": round(write_s, 1),
            "write_chunks_per_s": round(report.chunks_added / write_s)}


def pct(values: list[float]) -> dict[str, float]:
    a = np.array(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}


def measure(kb: KnowledgeBase, qs: list[str], threads: int) -> dict:
    retriever = kb.retriever()
    retriever.search(qs[0])  # warm: index loaded, searcher opened
    stages: dict[str, list[float]] = {}
    lock = threading.Lock()

    def one(q: str) -> None:
        t0 = time.perf_counter()
        r = retriever.search(q)
        total = time.perf_counter() - t0
        with lock:
            for k, v in r.timings.items():
                stages.setdefault(k, []).append(v)
            stages.setdefault("total", []).append(total)
            stages.setdefault("total_without_embed", []).append(total - r.timings.get("embed", 0.0))

    t0 = time.perf_counter()
    if threads == 1:
        for q in qs:
            one(q)
    else:
        chunks = [qs[i::threads] for i in range(threads)]
        workers = [threading.Thread(target=lambda c=c: [one(q) for q in c]) for c in chunks]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    wall = time.perf_counter() - t0
    return {"queries": len(qs), "queries_per_s": round(len(qs) / wall, 1),
            **{k: pct(v) for k, v in stages.items()}}


def disk_mb(path: Path) -> dict[str, float]:
    def size(p: Path) -> float:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6 if p.exists() else 0.0
    col = path / "collections" / "default"
    return {"catalogue": round(size(path) - size(path / "collections"), 1), "faiss": round(size(col) - size(col / "keywords"), 1),
            "keywords": round(size(col / "keywords"), 1)}


def run(n: int, n_queries: int, index_type: str, workdir: Path) -> dict:
    rng = np.random.default_rng(n)
    vocab = vocabularies(np.random.default_rng(0))
    home = workdir / f"scale-{n}"
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(home=home, embedding=EmbeddingSettings(model="hash-384"), index=IndexSettings(type=index_type),
                        ingest=IngestSettings(write_batch_chunks=2000))
    kb = KnowledgeBase(settings=settings)
    print(f"building {n:,} chunks in {home}", file=sys.stderr, flush=True)
    row = {"chunks_target": n, "index_type": index_type, **build(kb, n, vocab, rng)}
    qs = questions(n_queries, vocab, np.random.default_rng(1))
    reader = KnowledgeBase(settings=settings)  # a fresh reader, as a web worker would be
    t0 = time.perf_counter()
    reader.retriever()
    row["reader_open_s"] = round(time.perf_counter() - t0, 2)
    row["single"] = measure(reader, qs, 1)
    row["concurrent_8"] = measure(reader, qs, 8)
    t0 = time.perf_counter()
    reader.status()
    row["status_s"] = round(time.perf_counter() - t0, 3)
    row["disk_mb"] = disk_mb(home)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index-type", default="flat")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kb-bench-scale")
    ap.add_argument("--keep", action="store_true", help="keep the built homes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        row = run(n, args.queries, args.index_type, args.workdir)
        rows.append(row)
        s, c = row["single"], row["concurrent_8"]
        print(f"{n:>9,} chunks  write {row['write_chunks_per_s']:>6,}/s  keyword p50/p95 "
              f"{s['keyword']['p50_ms']}/{s['keyword']['p95_ms']} ms  dense {s['dense']['p50_ms']}/{s['dense']['p95_ms']}  "
              f"search w/o embed {s['total_without_embed']['p50_ms']}/{s['total_without_embed']['p95_ms']}  "
              f"8 concurrent: {c['queries_per_s']} q/s, p95 {c['total']['p95_ms']} ms  rss {row['peak_rss_mb']} MB  "
              f"disk {row['disk_mb']}", flush=True)
        if not args.keep:
            shutil.rmtree(args.workdir / f"scale-{n}", ignore_errors=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "embedder": "hash-384 (stand-in, no semantic meaning)", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    keep = [r for r in previous.get("rows", []) if (r["chunks_target"], r["index_type"]) not in
            {(r2["chunks_target"], r2["index_type"]) for r2 in rows}]
    out["rows"] = sorted(keep + rows, key=lambda r: (r["index_type"], r["chunks_target"]))
    args.out.write_text(json.dumps(out, indent=2))
    print(f"saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
