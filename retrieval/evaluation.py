"""Retrieval and answer quality against a QA set, with the hit rule of ../shared/eval/score.py:
a context hits when its file name equals the gold source and it shares a run of
min(40, half the gold answer) characters with the answer (after NFKC, whitespace removal, lowercase)."""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from kb.query_log import latency_table
from kb.settings import RetrievalSettings
from kb.text import CJK, squashed
from kb.conversations import Turn
from retrieval.answer import AnswerStream
from retrieval.followup import search_with_history
from retrieval.generators import Generator
from retrieval.retriever import Retriever
from retrieval.types import Retrieval

KS = (1, 3, 5)
MRR_K = NDCG_K = 10


def hit(context_source: str, context_text: str, gold_source: str, gold_answer: str) -> bool:
    if Path(context_source).name != Path(gold_source).name:
        return False
    gold, text = squashed(gold_answer), squashed(context_text)
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
    return re.findall(f"[{CJK}]|[a-z0-9]+", unicodedata.normalize("NFKC", text).lower())


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


@dataclass
class EvalReport:
    questions: int
    context_chars: int
    retrieval: dict[str, float]  # recall@1/3/5, mrr@10, ndcg@10
    latency: dict[str, dict[str, float]]  # stage -> p50/p95 ms
    queries_per_s: float
    answers: dict | None = None  # with a generator: citation precision, answer support, ROUGE-L, latency
    collection: str = ""
    chunks: int = 0
    chunk_tokens: int = 0

    def to_dict(self) -> dict:
        """Flat, as stored in the catalogue and printed by `kb eval --json`."""
        out = {"collection": self.collection, "chunks": self.chunks, "chunk_tokens": self.chunk_tokens,
               "questions": self.questions, "context_chars": self.context_chars, **self.retrieval,
               "latency": self.latency, "queries_per_s": self.queries_per_s}
        return out | ({"answers": self.answers} if self.answers else {})


def evaluate(retriever: Retriever, qa: list[dict], cfg: RetrievalSettings, generator: Generator | None = None,
             answer_limit: int | None = None, results_out: str | Path | None = None,
             progress: bool = False) -> EvalReport:
    """Retrieval metrics (recall@1/3/5, MRR@10, nDCG@10; score.py's hit rule on the contexts as the
    prompt sees them), latency per stage and queries/s; with a generator, answer metrics too
    (citation precision, answer support, ROUGE-L)."""
    chars, top_k = cfg.context_chars, cfg.top_k
    scores, timings, rows, retrievals = RetrievalScores(), [], [], []
    t0 = time.perf_counter()
    for q in tqdm(qa, desc="retrieving", unit="q", disable=not progress or None):
        history = [Turn.of(t) for t in q.get("history") or []]  # a follow-up (`kb feedback export`)
        r = search_with_history(retriever.search, q["question"], history, max(10, top_k))
        timings.append(r.timings)
        scores.add([hit(c.source, c.text[:chars], q["source"], q["answer"]) for c in r.contexts])
        rows.append({"id": q["id"], "contexts": [
            {"source": Path(c.source).name, "page": c.page, "text": c.text[:chars], "score": round(c.score, 5),
             "chunk_id": c.chunk_id} for c in r.contexts]})
        retrievals.append(r)
    seconds = time.perf_counter() - t0
    out = EvalReport(len(qa), chars, scores.metrics(), latency_table(timings), round(len(qa) / seconds, 2))
    if results_out:
        Path(results_out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if generator is not None:
        cited = cited_hits = sentences = supported = 0
        rouge, answer_timings = [], []
        for q, r in tqdm(list(zip(qa, retrievals))[:answer_limit], desc="answering", unit="q",
                         disable=not progress or None):
            top = Retrieval(r.question, r.contexts[:top_k], r.relevant, dict(r.timings))
            a = AnswerStream(q["question"], top, generator, chars).result()
            answer_timings.append(a.timings)
            cited += len(a.citations)
            cited_hits += sum(hit(c.source, c.text, q["source"], q["answer"]) for c in a.citations)
            sentences += len(a.sentences)
            supported += sum(1 for s in a.sentences if s["supported"])
            rouge.append(rouge_l(re.sub(r"\[\d+\]", "", a.text), q["answer"]))
        out.answers = {
            "backend": generator.backend, "model": generator.model, "questions": len(rouge),
            "citation_precision": round(cited_hits / cited, 4) if cited else 0.0,
            "answer_support": round(supported / sentences, 4) if sentences else 0.0,
            "rouge_l": round(sum(rouge) / len(rouge), 4) if rouge else 0.0,
            "latency": latency_table(answer_timings),
        }
    return out
