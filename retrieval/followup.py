"""Follow-up questions: how a question that leans on the conversation before it is searched.

With a language model (the transformers and openai backends) it is first condensed into a question
that stands alone (`condense_prompt`; the model's reply is searched). Without one (extractive), it is
searched twice, alone and after the previous question, and the two rankings are combined: what the
follow-up names itself keeps its weight, the previous question lends its topic, the passages already
answered step aside, and the previous answer's documents get a prior (a follow-up mostly stays in
them). Measured against the alternatives on bench/multiturn.py (docs/benchmarks.md).
A question that stands alone (no pronoun, no ellipsis) is searched as it is, by every backend."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from kb.conversations import Turn
from retrieval.generators import Generator
from retrieval.prompt import Prompt, language
from retrieval.retriever import scaled
from retrieval.think import ThinkSplitter
from retrieval.types import Context, Retrieval

POOL = 20  # candidates taken from each of the two searches
JOINED_WEIGHT = 0.3  # the previous question's search, beside the follow-up's own (weight 1)
SAME_DOCUMENT_PRIOR = 0.3  # added to a passage of a document the previous answer came from
HISTORY_CHARS = 1200  # of the earlier turns given to a condense step or to an answer's prompt

# Words that point back: pronouns and demonstratives, and openings that continue a conversation.
_POINTS_BACK = {
    "en": re.compile(r"\b(it|its|they|them|their|theirs|this|that|these|those|such|one|ones|there|then|"
                     r"he|she|him|her|the latter|the former|same|above)\b|^(and|so|but|also|what about|"
                     r"how about|why not|what else|and what|then)\b", re.IGNORECASE),
    "zh": re.compile(r"[它其此该这那哪也还再]|一个|^(如果|反过来|同样|另外|然后|为什么不)"),
}
_WORD = re.compile(r"[A-Za-z0-9][\w'.-]*|[\u3400-\u9fff]")


def stands_alone(question: str) -> bool:
    """True when the question names its own topic: no word that points back, and more than a few
    words (a short "And modules?" / "那模块呢？" leans on what came before)."""
    text = question.strip()
    if len(_WORD.findall(text)) <= (6 if language(text) == "zh" else 3):
        return False
    return not any(p.search(text) for p in _POINTS_BACK.values())  # "那 conffile 呢？" reads as English


Search = Callable[[str, int], Retrieval]


JOINED_CHARS = 300  # of the previous turn's searched text: a chain of follow-ups does not snowball


def joined(question: str, previous: Turn) -> str:
    """The question after the previous turn's searched question (the naive follow-up query); of a
    long one (a follow-up of follow-ups), its last words."""
    before = previous.searched
    if len(before) > JOINED_CHARS:
        before = before[-JOINED_CHARS:].split(" ", 1)[-1]
    return f"{before} {question}"


def relative(ranking: list[tuple[int, float]], weight: float) -> dict[int, float]:
    """weight × score / the best score: each ranking on one scale, however its scores run (fused
    scores near 1, RRF's near 0.03), keeping how far apart they are; min-max scaled when scores go
    below zero (a cross-encoder's logits)."""
    if not ranking:
        return {}
    top, low = ranking[0][1], min(sc for _, sc in ranking)
    if low < 0 or top <= 0:
        return scaled(ranking, weight)
    return {i: weight * sc / top for i, sc in ranking}


def search_with_history(search: Search, question: str, history: list[Turn], top_k: int) -> Retrieval:
    """The extractive backend's follow-up: the question's own ranking (weight 1) plus the ranking of
    the question after the previous one (JOINED_WEIGHT, the previous answer's passages left out of it),
    plus SAME_DOCUMENT_PRIOR for the previous answer's documents, on the fused scores."""
    if not history or stands_alone(question):
        return search(question, top_k)
    prev = history[-1]
    text = joined(question, prev)
    alone, both = search(question, max(top_k, POOL)), search(text, max(top_k, POOL))
    # the passages the previous answer came from; a client that sends only the text of earlier turns
    # (an OpenAI client) gets them back by searching the previous question again
    answered = set(prev.chunk_ids) or {c.chunk_id for c in search(prev.searched, top_k).contexts}
    documents = {c.document_id for c in alone.contexts + both.contexts if c.chunk_id in answered}
    by_id: dict[int, Context] = {c.chunk_id: c for c in both.contexts + alone.contexts}
    score = relative([(c.chunk_id, c.score) for c in alone.contexts], 1.0)
    for i, s in relative([(c.chunk_id, c.score) for c in both.contexts if c.chunk_id not in answered],
                         JOINED_WEIGHT).items():
        score[i] = score.get(i, 0.0) + s
    for i in score:
        if by_id[i].document_id in documents:
            score[i] += SAME_DOCUMENT_PRIOR
    order = sorted(score, key=lambda i: (-score[i], i))
    timings = {k: alone.timings.get(k, 0.0) + both.timings.get(k, 0.0) for k in alone.timings.keys() | both.timings.keys()}
    relevant = alone.relevant or both.relevant
    contexts = [Context(**{**vars(by_id[i]), "score": score[i]}) for i in order[:top_k]] if relevant else []
    return Retrieval(question, contexts, relevant and bool(contexts), timings,
                     list(dict.fromkeys(alone.notes + both.notes)), alone.orphans + both.orphans, standalone=text)


def recent(history: list[Turn], chars: int = HISTORY_CHARS) -> list[Turn]:
    """The latest turns that fit in `chars` (questions and answers), oldest first; at least the last."""
    kept, used = [], 0
    for t in reversed(history):
        used += len(t.question) + len(t.answer)
        if kept and used > chars:
            break
        kept.append(t)
    return kept[::-1]


CONDENSE = {
    "zh": ("根据下面的对话，把最后一个问题改写成一个不依赖上文、可以单独理解的问题。"
           "把代词（它、这个、那些等）换成所指的内容，不要回答问题，只输出改写后的问题。"),
    "en": ("Given the conversation below, rewrite the last question as one question that can be understood "
           "without the conversation: replace pronouns (it, that, those…) with what they refer to. Do not "
           "answer it; reply with the rewritten question only."),
}


def condense_messages(question: str, history: list[Turn]) -> list[dict[str, str]]:
    """The chat messages of the condense step: the rule, the recent turns, the follow-up."""
    lang = language(question)
    q, a, last = ("问", "答", "最后一个问题") if lang == "zh" else ("Q", "A", "Last question")
    lines = []
    for t in recent(history):
        lines.append(f"{q}: {t.question}")
        if t.answer:
            lines.append(f"{a}: {t.answer[:400]}")
    return [{"role": "system", "content": CONDENSE[lang]},
            {"role": "user", "content": "\n".join(lines) + f"\n\n{last}: {question}"}]


def condensed(reply: str, question: str) -> str:
    """The model's rewritten question, cleaned; the question itself when the reply is no use."""
    text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    for prefix in ("Rewritten question:", "Question:", "改写后的问题：", "问题：", "Q:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    text = text.strip('"“”「」').strip()
    return text if 2 <= len(text) <= 4 * len(question) + 200 else question


CONDENSE_CHARS = 400  # a rewritten question longer than this is not one: the model is answering instead


def condense(generator: Generator, question: str, history: list[Turn]) -> str:
    """A language model's standalone version of a follow-up (its reasoning, if any, left out); read
    until its first line ends, so a model that goes on to answer is stopped early."""
    prompt = Prompt(question, [], language(question), condense_messages(question, history))
    splitter, stop, text = ThinkSplitter(generator.starts_in_reasoning(prompt)), threading.Event(), ""
    stream = generator.stream(prompt, {}, stop)
    try:
        for piece in stream:
            text += "".join(t for kind, t in splitter.feed(piece) if kind == "answer")
            if "\n" in text.strip() or len(text) > CONDENSE_CHARS:
                break
        else:
            text += "".join(t for kind, t in splitter.flush() if kind == "answer")
    finally:
        stop.set()
        close = getattr(stream, "close", None)
        if close:
            close()
    return condensed(text, question)
