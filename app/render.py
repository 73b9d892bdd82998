"""Turning document and model text into safe Streamlit Markdown: everything escaped, so a document
holding `<script>`, links, images or `:color[...]` directives shows as plain text."""

from __future__ import annotations

import re
import unicodedata

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def md_escape(text: str) -> str:
    """Backslash-escape every Markdown/HTML-significant character; keep line breaks visible."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def highlight(passage: str, sentences: list[str]) -> str:
    """The passage escaped, with each cited sentence that occurs in it marked with a background."""
    text = _norm(passage)
    spans = []
    for sent in sentences:
        s = _norm(sent).rstrip("…").strip()
        i = text.find(s) if s else -1
        if i >= 0:
            spans.append((i, i + len(s)))
    out, pos = [], 0
    for start, end in sorted(spans):
        if start < pos:
            continue
        out.append(md_escape(text[pos:start]))
        out.append(":orange-background[" + md_escape(text[start:end]) + "]")
        pos = end
    out.append(md_escape(text[pos:]))
    return "".join(out)
