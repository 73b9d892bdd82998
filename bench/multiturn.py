"""Follow-up questions (issue 25): recall of a conversation's second turn, searched four ways.

    python bench/multiturn.py [--eval-dir ../shared/eval] [--langs zh en] [--methods rrf joined ...]

bench/eval/followups.tsv pairs two questions of one chapter of the Debian FAQ: turn 1 is the set's own
question, turn 2 another one rewritten by hand as a person types a follow-up ("那 conffile 呢？",
"How do I report one?"). The zh and en sets are aligned by section id, so the same pairs serve both.
Turn 1 is answered by kb (extractive backend) as in a conversation; turn 2 is then searched:
- standalone: the set's original question of turn 2 (the upper bound);
- alone: the follow-up with no history (kb before conversations: the lower bound);
- joined (the naive method): the previous question and the follow-up searched as one query;
- kb: `KnowledgeBase.retrieve(follow-up, history=[turn 1])`, what the API and the page run with the
  extractive backend (retrieval/followup.py);
- original with history: turn 2's original question asked after turn 1 (a question that stands alone
  must not get worse in a conversation).
Contexts are cut to 1,500 characters and scored by ../shared/eval/score.py. The home of each corpus is
the one bench/retrieval.py indexes (cached under --work). Saves bench/results/multiturn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import load_scorer  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import ChunkingSettings, Settings  # noqa: E402
from kb.conversations import Turn  # noqa: E402
from retrieval.followup import joined  # noqa: E402

PAIRS = ROOT / "bench" / "eval" / "followups.tsv"
STANDALONE, ALONE = "standalone (the original question)", "alone (no history)"
KEYS = ["recall@1", "recall@3", "recall@5", "mrr@10"]


def load_pairs(path: Path = PAIRS) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            first, second, zh, en = line.split("\t")
            rows.append({"first": first, "second": second, "zh": zh, "en": en})
    return rows


def section(qa_id: str) -> str:
    return qa_id.rsplit("-", 1)[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--langs", nargs="+", default=["zh", "en"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-retrieval"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "multiturn.json")
    args = ap.parse_args()
    scorer = load_scorer(args.eval_dir)
    pairs = load_pairs()
    rows = []
    for lang in args.langs:
        name = f"debian_faq_{lang}"
        tokens = ChunkingSettings().chunk_tokens
        kb = KnowledgeBase(settings=Settings(home=args.work / f"{name}-{tokens}"))
        kb.sync([args.eval_dir / name / "corpus"])
        qa = {section(q["id"]): q for q in scorer.load_jsonl(args.eval_dir / name / "qa.jsonl")}
        gold = [{**qa[p["second"]], "id": f"{p['first']}>{p['second']}"} for p in pairs]
        runs: dict[str, list[dict]] = {}
        ms: dict[str, float] = {}

        def add(variant: str, pid: str, contexts: list, t: float) -> None:  # noqa: ANN001
            ctx = [{"source": Path(c.source).name, "text": c.text[:1500]} for c in contexts[:10]]
            runs.setdefault(variant, []).append({"id": pid, "contexts": ctx})
            ms[variant] = ms.get(variant, 0.0) + t

        for p, g in zip(pairs, gold, strict=True):
            first = kb.ask(qa[p["first"]]["question"], backend="extractive")
            history = [Turn(first.question, first.text, None, tuple(c.chunk_id for c in first.contexts))]
            follow, original = p[lang], qa[p["second"]]["question"]
            for variant, text, turns in ((STANDALONE, original, []), (ALONE, follow, []),
                                         ("joined (naive)", joined(follow, history[0]), []),
                                         ("kb", follow, history), ("original with history", original, history)):
                t0 = time.perf_counter()
                r = kb.retrieve(text, 10, history=turns, backend="extractive")
                add(variant, g["id"], r.contexts, time.perf_counter() - t0)
        for variant, results in runs.items():
            m = scorer.score(gold, results)
            rows.append({"set": name, "variant": variant, "pairs": len(gold),
                         "ms_per_question": round(ms[variant] / len(gold) * 1000, 1),
                         **{k: round(m[k], 3) for k in KEYS}})
    print(f"\n| set | variant | {' | '.join(KEYS)} | ms |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for r in rows:
        print(f"| {r['set']} | {r['variant']} | " + " | ".join(f"{r[k]:.3f}" for k in KEYS) + f" | {r['ms_per_question']} |")
    targets = []
    for lang in args.langs:
        by = {r["variant"]: r for r in rows if r["set"] == f"debian_faq_{lang}"}
        hi, lo = by[STANDALONE], by[ALONE]
        for v, r in by.items():
            if v in ("kb", "joined (naive)"):
                for k in ("recall@3", "mrr@10"):
                    gap = (r[k] - lo[k]) / (hi[k] - lo[k]) if hi[k] > lo[k] else 1.0
                    targets.append({"set": lang, "variant": v, "metric": k, "gap_closed": round(gap, 3),
                                    "of_standalone": round(r[k] / hi[k], 3),
                                    "meets": gap >= 0.75 and r[k] >= 0.97 * hi[k]})
    print("\n| set | variant | metric | gap closed (≥ 0.75) | of standalone (≥ 0.97) | meets |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        print(f"| {t['set']} | {t['variant']} | {t['metric']} | {t['gap_closed']:.3f} | {t['of_standalone']:.3f} | "
              f"{'yes' if t['meets'] else 'no'} |")
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows,
                                    "targets": targets}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
