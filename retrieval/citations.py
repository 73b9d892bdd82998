"""Citations in generated text: sentence splitting, [n] markers mapped to contexts, support checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kb.keyword_index import terms
from kb.text import squashed

# [1] [1, 2] [1][2] 【1】 — the forms models actually write.
MARKER = re.compile(r"\[(\d+(?:\s*[,，、]\s*\d+)*)\]|【(\d+)】")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；])|(?<=[.;])\s+|\n+")
SUPPORT_SHARE = 0.5  # share of a sentence's terms that must occur in its cited contexts


def split_sentences(text: str) -> list[str]:
    """Sentences; a citation marker (group) ends a sentence, and the punctuation or markers that
    follow a sentence end stay on that sentence ("… 1993 [1]. Next" -> "… 1993 [1].", "Next")."""
    text = re.sub(r"((?:\[\d+(?:\s*[,，、]\s*\d+)*\]|【\d+】)+)", "\\1\n", text)
    out: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip() if piece else ""
        if not piece:
            continue
        lead = re.match(r"^(?:(?:\[\d+(?:\s*[,，、]\s*\d+)*\]|【\d+】)|[.,;:!?。，；：！？])+", piece)
        if lead and out:
            out[-1] += lead.group()
            piece = piece[lead.end():].strip()
        if piece:
            out.append(piece)
    return out


@dataclass
class CitedSentence:
    text: str  # without markers
    citations: list[int]  # context numbers (1-based), valid ones only
    support: float | None = None  # share of its terms found in the cited contexts
    supported: bool | None = None  # None: the sentence cites nothing


@dataclass
class ParsedAnswer:
    text: str  # the answer with invalid markers removed
    sentences: list[CitedSentence] = field(default_factory=list)
    dropped_markers: list[int] = field(default_factory=list)

    @property
    def cited(self) -> list[int]:
        return sorted({n for s in self.sentences for n in s.citations})


def support(sentence: str, sources: list[str]) -> float:
    """1.0 when the sentence occurs verbatim in a source; else the share of its terms found there."""
    norm = squashed(sentence)
    if norm and any(norm in squashed(src) for src in sources):
        return 1.0
    words = set(terms(sentence))
    if not words:
        return 1.0
    found: set[str] = set()
    for src in sources:
        found |= words & set(terms(src))
    return len(found) / len(words)


def parse_answer(text: str, context_texts: list[str]) -> ParsedAnswer:
    """Map [n] markers to contexts 1..k (others dropped) and check each cited sentence against them."""
    k = len(context_texts)
    dropped: list[int] = []

    def keep_valid(m: re.Match) -> str:
        nums = [int(x) for x in re.split(r"\s*[,，、]\s*", m.group(1) or m.group(2))]
        dropped.extend(n for n in nums if not 1 <= n <= k)
        valid = [n for n in nums if 1 <= n <= k]
        return "".join(f"[{n}]" for n in valid)

    clean = MARKER.sub(keep_valid, text)
    sentences = []
    for sent in split_sentences(clean):
        nums = sorted({int(n) for m in MARKER.finditer(sent) for n in re.findall(r"\d+", m.group())})
        plain = re.sub(r"\s+(?=[.,;:!?。，；！？])", "", MARKER.sub("", sent)).strip()
        if not plain:
            continue
        cs = CitedSentence(plain, nums)
        if nums:
            cs.support = round(support(plain, [context_texts[n - 1] for n in nums]), 3)
            cs.supported = cs.support >= SUPPORT_SHARE
        sentences.append(cs)
    return ParsedAnswer(clean.strip(), sentences, dropped)
