"""Retrieval and answer quality against a QA set, with the hit rule of ../shared/eval/score.py:
a context hits when its file name equals the gold source and it shares a run of
min(40, half the gold answer) characters with the answer (after NFKC, whitespace removal, lowercase)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KS = (1, 3, 5)
MRR_K = NDCG_K = 10


def norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def hit(context_source: str, context_text: str, gold_source: str, gold_answer: str) -> bool:
    if Path(context_source).name != Path(gold_source).name:
        return False
    gold, text = norm(gold_answer), norm(context_text)
    t = max(1, math.ceil(min(40, 0.5 * len(gold))))
    grams = {gold[i:i + t] for i in range(len(gold) - t + 1)}
    return any(text[i:i + t] in grams for i in range(len(text) - t + 1))


def load_qa(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            missing = {"id", "question", "answer", "source"} - set(row)
            if missing:
                raise ValueError(f"{path}:{n}: missing {sorted(missing)}")
            rows.append(row)
    return rows


def _tokens(text: str) -> list[str]:
    """Characters for Chinese, lower-cased words otherwise (the usual ROUGE-L units for each)."""
    return re.findall(r"[\u3400-\u9fff]|[a-z0-9]+", unicodedata.normalize("NFKC", text).lower())


def rouge_l(candidate: str, reference: str) -> float:
    a, b = _tokens(candidate), _tokens(reference)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[-1]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


@dataclass
class RetrievalScores:
    first_hits: list[int | None] = field(default_factory=list)  # rank of the first hit per question

    def add(self, ranked_hits: list[bool]) -> None:
        self.first_hits.append(next((i for i, h in enumerate(ranked_hits, 1) if h), None))

    def metrics(self) -> dict[str, float]:
        n = len(self.first_hits) or 1
        out = {f"recall@{k}": sum(1 for r in self.first_hits if r and r <= k) / n for k in KS}
        out[f"mrr@{MRR_K}"] = sum(1 / r for r in self.first_hits if r and r <= MRR_K) / n
        # one relevant passage per question: ideal DCG is 1
        out[f"ndcg@{NDCG_K}"] = sum(1 / math.log2(r + 1) for r in self.first_hits if r and r <= NDCG_K) / n
        return {k: round(v, 4) for k, v in out.items()}


def latency_table(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.items():
            stages.setdefault(k, []).append(v * 1000)
        stages.setdefault("total", []).append(sum(v for k, v in t.items() if k != "first_token") * 1000)
    return {k: {"p50_ms": round(float(np.percentile(v, 50)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2)}
            for k, v in stages.items()}
