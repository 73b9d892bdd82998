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
