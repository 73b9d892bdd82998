"""Text helpers shared by ingestion, retrieval and the UI: the CJK character ranges and normal forms."""

from __future__ import annotations

import re
import unicodedata

# CJK Unified Ideographs, Extension A and the compatibility block.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_CHAR = re.compile(f"[{CJK}]")


def squashed(text: str) -> str:
    """NFKC, lower case, no whitespace at all: for matching text across line breaks and PDF spacing."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def single_spaced(text: str) -> str:
    """NFKC with every run of whitespace made one space, trimmed: for display and highlighting."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


# Kangxi radicals (U+2F00-2FD5) and CJK radical supplements (U+2E80-2EF3) that NFKC maps to the everyday
# ideograph: PDF makers often map glyphs to them ("⽂档" for "文档"), which no typed question matches.
_RADICALS = {c: unicodedata.normalize("NFKC", chr(c)) for c in [*range(0x2E80, 0x2EF4), *range(0x2F00, 0x2FD6)]
             if len(unicodedata.normalize("NFKC", chr(c))) == 1 and unicodedata.normalize("NFKC", chr(c)) != chr(c)}


def unify_radicals(text: str) -> str:
    """Radical code points replaced by the ideographs they stand for; everything else untouched."""
    return text.translate(_RADICALS)


_WORDS = re.compile(r"[^\W\d_]+")  # runs of letters, any script
# Short words common in any English text and rare in other languages' (French, German, Dutch... share a few,
# "in", "on", "is", never many): their share of the words tells English from other Latin-script text.
_ENGLISH_WORDS = frozenset(
    "the of and to is are was were what how why which who whom where when that this these those with for from by "
    "at it its be been being can could do does did not or if you your i my me we our they their there here "
    "should would will have has had about into than then also any all some such".split())


def is_english(text: str) -> bool:
    """Written in English: nearly all letters a-z, and English function words at least 15 % of the words
    and at least two of them (a short German or Dutch question shares one: "was", "is").
    No Chinese character is not enough: French, Russian or Korean text is not English either."""
    words = _WORDS.findall(text.lower())
    letters = sum(len(w) for w in words)
    if not words or sum(len(w) for w in words if w.isascii()) < 0.9 * letters:
        return False
    hits = sum(w in _ENGLISH_WORDS for w in words)
    return hits >= 2 and hits >= 0.15 * len(words)
