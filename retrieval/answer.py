"""Cited answers: retrieval result -> prompt -> generator (streamed) -> reasoning kept apart ->
[n] markers mapped to (document, page, chunk) and checked against their sources."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval.citations import ParsedAnswer, parse_answer
from retrieval.think import ThinkSplitter
from retrieval.generators import Generator
from retrieval.prompt import NOT_FOUND, build_prompt, language
from retrieval.types import Context, Retrieval


@dataclass
class Citation:
    n: int  # the marker number in the answer
    chunk_id: int
    document_id: int
    source: str  # document path
    page: int | None
    heading: str | None
    text: str  # the cited passage (as given to the model)
    sentences: list[str] = field(default_factory=list)  # answer sentences that cite it
    ocr: bool = False  # the passage was read by OCR from a scanned page


@dataclass
class Answer:
    question: str
    text: str
    found: bool  # False: the knowledge base had nothing relevant (or the model said so)
    backend: str
    model: str
    label: str
    citations: list[Citation]
    contexts: list[Context]
    reasoning: str = ""
    sentences: list[dict] = field(default_factory=list)  # {"text", "citations", "supported": bool | None}
    unsupported: list[str] = field(default_factory=list)  # cited sentences whose source does not back them
    uncited: list[str] = field(default_factory=list)
    dropped_markers: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what limited the search (Retrieval.notes)
    standalone: str | None = None  # what was searched for a follow-up, when not the question itself

    def to_dict(self) -> dict:
        d = asdict(self)
        d["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return d


class AnswerStream:
    """Iterate to receive the answer text as it is generated; `.answer` holds the result afterwards."""

    def __init__(self, question: str, retrieval: Retrieval, generator: Generator, context_chars: int = 1500,
                 on_done: Callable[[Answer], None] | None = None, history: list | None = None):
        self.question = question
        self.history = history or []  # earlier turns the prompt quotes (kb.conversations.Turn)
        self.conversation_id: int | None = None  # set by KnowledgeBase.converse
        self.turn_id: int | None = None
        self.retrieval = retrieval
        self.generator = generator
        self.context_chars = context_chars
        self.on_done = on_done  # e.g. the query log
        self.reasoning = ""
        self.answer: Answer | None = None
        self.stopped = threading.Event()

    def close(self) -> None:
        """The reader went away: the generator stops within a token (it may be mid-step in another thread)."""
        self.stopped.set()

    def __iter__(self) -> Iterator[str]:
        yield from self._produce()
        if self.on_done is not None:
            self.on_done(self.answer)

    def _produce(self) -> Iterator[str]:
        r, gen = self.retrieval, self.generator
        timings = dict(r.timings)
        lang = language(self.question)
        if not r.relevant:  # nothing relevant: say so and call no model
            text = NOT_FOUND[lang]
            yield text
            self.answer = Answer(self.question, text, False, gen.backend, gen.model, self._label(lang), [], [],
                                 timings=timings, notes=r.notes, standalone=r.standalone)
            return
        prompt = build_prompt(self.question, r.contexts, self.context_chars, self.history, r.standalone or "")
        splitter = ThinkSplitter(gen.starts_in_reasoning(prompt))
        usage: dict = {}
        answer_parts: list[str] = []
        t0 = time.perf_counter()
        first = None
        for piece in gen.stream(prompt, usage, self.stopped):
            for kind, text in splitter.feed(piece):
                if kind == "reasoning":
                    self.reasoning += text
                    continue
                if first is None:
                    first = time.perf_counter() - t0
                answer_parts.append(text)
                yield text
        for kind, text in splitter.flush():
            if kind == "reasoning":
                self.reasoning += text
            else:
                answer_parts.append(text)
                yield text
        timings["generate"] = time.perf_counter() - t0
        if first is not None:
            timings["first_token"] = first
        self.answer = self._finish("".join(answer_parts), prompt.contexts, lang, timings, usage)

    @property
    def label(self) -> str:
        """What produced the answer, in the question's language for the extractive backend."""
        return self._label(language(self.question))

    def _label(self, lang: str) -> str:
        return self.generator.label_for(lang)

    def _finish(self, text: str, contexts: list[Context], lang: str, timings: dict, usage: dict) -> Answer:
        t0 = time.perf_counter()
        texts = [c.text[: self.context_chars] for c in contexts]
        parsed: ParsedAnswer = parse_answer(text, texts)
        found = not any(msg.rstrip("。.") in parsed.text for msg in NOT_FOUND.values()) and bool(parsed.text)
        citations = []
        for n in parsed.cited:
            c = contexts[n - 1]
            citations.append(Citation(n, c.chunk_id, c.document_id, c.source, c.page, c.heading, texts[n - 1],
                                      [s.text for s in parsed.sentences if n in s.citations], c.ocr))
        timings["verify"] = time.perf_counter() - t0
        gen = self.generator
        return Answer(
            self.question, parsed.text, found, gen.backend, gen.model, self._label(lang),
            citations if found else [], contexts, self.reasoning.strip(),
            sentences=[{"text": s.text, "citations": s.citations, "supported": s.supported} for s in parsed.sentences],
            unsupported=[s.text for s in parsed.sentences if s.supported is False],
            uncited=[s.text for s in parsed.sentences if s.supported is None] if found else [],
            dropped_markers=parsed.dropped_markers, timings=timings, usage=usage, notes=self.retrieval.notes,
            standalone=self.retrieval.standalone,
        )

    def result(self) -> Answer:
        """Consume the stream (if not yet) and return the answer."""
        if self.answer is None:
            for _ in self:
                pass
        return self.answer


def cite_label(c: Citation) -> str:
    return Path(c.source).name + (f", page {c.page}" if c.page else "")


def query_log_row(kind: str, question: str, r: Retrieval, answer: Answer | None) -> dict:
    """What the query log keeps of one search ("search") or answer ("ask"): the monitoring page's source."""
    return dict(
        kind=kind, question=question,
        retrieved=[{"chunk_id": c.chunk_id, "score": round(c.score, 5)} for c in r.contexts],
        found=answer.found if answer else r.relevant,
        backend=answer.backend if answer else None, model=answer.model if answer else None,
        timings={k: round(v, 5) for k, v in (answer.timings if answer else r.timings).items()},
        prompt_tokens=(answer.usage or {}).get("prompt_tokens") if answer else None,
        completion_tokens=(answer.usage or {}).get("completion_tokens") if answer else None,
        answer=answer.text if answer else None,
        citations=[{"n": c.n, "chunk_id": c.chunk_id, "page": c.page} for c in answer.citations] if answer else [])


def citation_json(c: Citation) -> dict:
    """The one JSON shape of a citation (API, page, a conversation's turn)."""
    return {"n": c.n, "document": Path(c.source).name, "path": c.source, "page": c.page, "heading": c.heading,
            "chunk_id": c.chunk_id, "text": c.text, "sentences": c.sentences, "ocr": c.ocr}


def turn_row(a: Answer, r: Retrieval) -> dict:
    """What a conversation keeps of an answered question (kb/conversations.py)."""
    return dict(question=a.question, standalone=r.standalone, answer=a.text, found=a.found,
                citations=[citation_json(c) for c in a.citations],
                retrieved=[{"chunk_id": c.chunk_id, "score": round(c.score, 5)} for c in r.contexts],
                backend=a.backend, model=a.model, timings={k: round(v, 5) for k, v in a.timings.items()})
