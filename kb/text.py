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
