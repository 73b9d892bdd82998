"""Several collections searched as one (issue 24): an eval corpus split over two collections must rank
as well as the same corpus in one.

    python bench/collections.py [--eval-dir ../shared/eval] [--sets debian_faq_en debian_faq_zh]

Per set, one home holds three collections: `whole` (every file), `a` and `b` (the files alternately; the
embedding cache makes them free to index). Each question is searched in `whole`, in `a,b` as one (the
facade's pooled fusion) and, as the baseline, the way the API merged collections before: each
collection ranked alone, then their fused scores (each scaled within its own collection) sorted
together. Contexts are cut to 1,500 characters. Prints recall@3 and saves bench/results/collections.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kb.home import Home  # noqa: E402
from kb.settings import Settings  # noqa: E402


def scorer(eval_dir: Path):  # noqa: ANN201 - the score module
    spec = importlib.util.spec_from_file_location("score", eval_dir / "score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(qid: str, contexts: list) -> dict:  # noqa: ANN001 - retrieval.types.Context
    return {"id": qid, "contexts": [{"source": Path(c.source).name, "text": c.text[:1500]} for c in contexts]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--sets", nargs="+", default=["debian_faq_en", "debian_faq_zh"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-collections"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "collections.json")
    args = ap.parse_args()
    score = scorer(args.eval_dir)
    results = {"machine": platform.processor() or platform.machine(), "sets": {}}
    for name in args.sets:
        corpus = args.eval_dir / name / "corpus"
        qa = [json.loads(line) for line in (args.eval_dir / name / "qa.jsonl").read_text().splitlines() if line.strip()]
        home = Home(Settings(home=args.work / name))
        files = sorted(corpus.iterdir())
        t0 = time.perf_counter()
        home.collection("whole").sync([corpus])
        home.collection("a").sync(files[0::2])
        home.collection("b").sync(files[1::2])
        index_s = time.perf_counter() - t0
        whole, both = home.collection("whole"), home.collection("a").reading(["a", "b"])
        parts = [home.collection("a"), home.collection("b")]
        rows: dict[str, list[dict]] = {"one collection": [], "a,b pooled (now)": [], "a,b merged (before)": []}
        t0 = time.perf_counter()
        for q in qa:
            rows["one collection"].append(row(q["id"], whole.search(q["question"], log=False)))
            rows["a,b pooled (now)"].append(row(q["id"], both.search(q["question"], log=False)))
            alone = [p.retrieve(q["question"]) for p in parts]
            merged = sorted((c for r in alone if r.relevant for c in r.contexts), key=lambda c: -c.score)[:3]
            rows["a,b merged (before)"].append(row(q["id"], merged))
        search_s = time.perf_counter() - t0
        out = {variant: score.score(qa, rs) for variant, rs in rows.items()}
        results["sets"][name] = {"questions": len(qa), "index_s": round(index_s, 1),
                                 "search_s": round(search_s, 1), "metrics": out}
        print(f"{name} ({len(qa)} questions, indexed in {index_s:.0f}s)")
        for variant, m in out.items():
            print(f"  {variant:24s} recall@3 {m['recall@3']:.3f}  recall@1 {m['recall@1']:.3f}  MRR@10 {m['mrr@10']:.3f}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
