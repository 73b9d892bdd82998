"""Turning document and model text into safe Streamlit Markdown: everything escaped, so a document
holding `<script>`, links, images or `:color[...]` directives shows as plain text."""

from __future__ import annotations

import re

from kb.text import single_spaced

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


# GFM "autolink literals" (http://…, https://…, www.…, user@host.tld) are found in the text *after* backslash
# escapes are resolved, so escaping alone still leaves a bare URL a live link: a WORD JOINER (U+2060, invisible,
# zero width) after the scheme or "www" and before "@" breaks the pattern without changing what is shown.
_AUTOLINK = re.compile(r"(https?|www)(?=[:.])|(?=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def md_escape(text: str) -> str:
    """Backslash-escape every Markdown/HTML-significant character and defuse bare URLs and e-mail addresses;
    keep line breaks visible."""
    text = _AUTOLINK.sub(lambda m: (m.group(1) or "") + WORD_JOINER, text)
    return _SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


# control characters and bidi embeddings/overrides/isolates (which can make "gpj.exe" read as "exe.jpg")
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def label_escape(text: object) -> str:
    """One-line, escaped text for widget labels, expander titles, button labels, progress text, toasts
    and messages (all of which Streamlit renders as Markdown): control and bidi characters dropped,
    whitespace and line breaks collapsed to single spaces, then every Markdown/HTML character escaped."""
    one_line = re.sub(r"\s+", " ", _INVISIBLE.sub(" ", str(text))).strip()
    return md_escape(one_line)


def highlight(passage: str, sentences: list[str]) -> str:
    """The passage escaped, with each cited sentence that occurs in it marked with a background."""
    text = single_spaced(passage)
    spans = []
    for sent in sentences:
        s = single_spaced(sent).rstrip("…").strip()
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


_MARKER = re.compile(r"\\\[(\d+)\\\]")  # an escaped [n]


def linked_markers(escaped: str, anchor: str) -> str:
    """Each escaped [n] of an answer as a link to its source's anchor (`{anchor}-{n}`) on the page."""
    return _MARKER.sub(lambda m: f"[\\[{m.group(1)}\\]](#{anchor}-{m.group(1)})", escaped)
