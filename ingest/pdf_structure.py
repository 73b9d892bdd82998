"""A PDF's structure from its page texts (issue 13): running headers and footers taken out, and
sections cut where their heading stands on the page, not at page boundaries. The headings come from
the PDF's outline (bookmarks) or, in a PDF without one, from numbered heading lines ("4.3 How do I…?").

Both work on plain page texts, whichever library extracted them (pypdf, or pdfium when pypdf glues
words), so they need no layout analysis.
"""

from __future__ import annotations

import re
from collections import Counter

_DIGITS = re.compile(r"\d+")
# page-number lines that say so themselves: "7 / 57", "- 7 -", "Page 7", "Page 7 of 57", "第 7 页"
_PAGE_LABEL = re.compile(r"#\s*(?:/|of)\s*#|[-–—]\s*#\s*[-–—]|page\s*#(?:\s*(?:/|of)\s*#)?|第\s*#\s*页(?:\s*共\s*#\s*页)?",
                         re.IGNORECASE)
_ROMAN = re.compile(r"(?=[ivxl])(?:xl|l?x{0,3})(?:ix|iv|v?i{0,3})")  # i .. lxxxix: front-matter page numbers
_ROMAN_VALUES = {"i": 1, "v": 5, "x": 10, "l": 50}
_LABEL = re.compile(r"(?:chapter|part|appendix|section|annex)\s+[\w.]{1,6}|第\s*\S{1,6}\s*[章节部篇]|[\dIVXivx.]{1,6}",
                    re.IGNORECASE)
EDGE_LINES = 2  # lines looked at, at the top and at the bottom of each page


def _shape(line: str) -> str:
    """A line with its numbers blanked: "Debian 新维护者手册 7 / 57" and "... 8 / 57" have one shape."""
    return _DIGITS.sub("#", " ".join(line.split())).lower()


def _lead(shape: str) -> str | None:
    """The first two words of a shape, when they say enough to recognise a running header whose tail
    changes with the section ("chapter #. getting and installing …")."""
    words = shape.split()
    lead = " ".join(words[:2])
    return lead if len(words) > 2 and len(lead) >= 6 else None


def _number(line: str) -> int | None:
    """The value of a line that is only a number, Arabic or a small Roman one ("iv": front matter)."""
    text = line.strip().lower()
    if text.isdigit():
        return int(text)
    if text and _ROMAN.fullmatch(text):
        values = [_ROMAN_VALUES[c] for c in text]
        return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))
    return None


def strip_running_lines(pages: list[str]) -> tuple[list[str], int]:
    """Remove running headers/footers and page numbers from the top and bottom lines of each page.

    Looked at: the two non-blank lines at each edge of a page. A line there goes when it is a page
    number — a label that says so ("7 / 57", "Page 7", "第 7 页"), or a bare number that keeps the same
    distance to the page's index as the bare numbers at that edge of at least 3 other pages (so a total
    "1250" or a year is not one) — or when its shape (numbers blanked) is a running one: the outermost
    line of at least 3 pages and a quarter of them, or an edge line of half of them, or whose first two
    words lead the outermost line of a quarter of them (a book's chapter header names the section, so
    only its start repeats). A page keeps at least one line, and its blank lines (paragraph breaks).
    Returns the pages and the number of lines removed."""
    raw = [p.splitlines() for p in pages]
    lines = [[i for i, ln in enumerate(r) if ln.strip()] for r in raw]  # indices of non-blank lines
    n = len(pages)
    need_outer, need_half, need_lead = max(3, n // 4), max(3, (n + 1) // 2), max(3, n // 4)
    drop: list[set[int]] = [set() for _ in lines]
    for top in (True, False):
        zones = [(ls[:EDGE_LINES] if top else ls[::-1][:EDGE_LINES]) for ls in lines]  # outermost first
        shapes = [[_shape(r[i]) for i in zone] for r, zone in zip(raw, zones, strict=True)]
        outer = Counter(z[0] for z in shapes if z)
        anywhere = Counter(s for z in shapes for s in set(z))
        leads = Counter(_lead(z[0]) for z in shapes if z and _lead(z[0]))
        running = ({s for s, c in outer.items() if c >= need_outer} | {s for s, c in anywhere.items() if c >= need_half}) - {"#"}
        # (a bare number is a page number only by the distance rule below: a total or a year is not)
        offsets = Counter(v - page for page, (r, zone) in enumerate(zip(raw, zones, strict=True)) for i in zone
                          if (v := _number(r[i])) is not None)
        for page, (r, zone, zs, d) in enumerate(zip(raw, zones, shapes, drop, strict=True)):
            for i, s in zip(zone, zs, strict=True):
                value = _number(r[i])
                numbered = value is not None and offsets[value - page] >= 3
                if numbered or _PAGE_LABEL.fullmatch(s) or s in running or (_lead(s) and leads[_lead(s)] >= need_lead):
                    d.add(i)
    for ls, d in zip(lines, drop, strict=True):
        if len(d) >= len(ls):  # nothing would be left: the page's lines are its content
            d.clear()
    kept = ["\n".join(ln for i, ln in enumerate(r) if i not in d).strip("\n") for r, d in zip(raw, drop, strict=True)]
    return kept, sum(map(len, drop))


def _title_patterns(title: str) -> list[re.Pattern]:
    """Where a heading's title stands: first at the start of a line (after a section number like "2.3"),
    only then anywhere (a title that pdf text runs into the line before)."""
    words = title.split()
    if not words:
        return []
    body = r"\s+".join(map(re.escape, words))
    return [re.compile(r"(?m)^[ \t]*(?:[\w.]{1,10}[ \t]+)?" + body), re.compile(body)]


def outline_sections(marks: list[tuple[int, int, str]], pages: list[str]) -> list[list[tuple[int, str | None]]]:
    """Per page, where each section starts: [(offset into the page text, heading path), ...], the first
    at offset 0. `marks` are the outline entries (page index, depth, title) in outline order.

    An entry's section starts at the line holding its title on its page (the heading stays with the
    text below it). An entry whose title is not found on its page starts at the top of the next page,
    unless no section ran before it (then its page is its own)."""
    by_page: dict[int, list[tuple[int, str]]] = {}
    for page, depth, title in sorted(marks, key=lambda m: m[0]):  # stable: outline order within a page
        by_page.setdefault(page, []).append((depth, title))
    stack: list[tuple[int, str]] = []  # (depth, title): an entry closes every entry at its depth or deeper
    out: list[list[tuple[int, str | None]]] = []

    def path() -> str | None:
        return " > ".join(t for _, t in stack) or None

    for page, text in enumerate(pages):
        starts: list[tuple[int, str | None]] = [(0, path())]
        cursor = 0
        for depth, title in by_page.get(page, []):
            stack = [(d, t) for d, t in stack if d < depth] + [(depth, title)]
            found = next((m for p in _title_patterns(title) if (m := p.search(text, cursor))), None)
            if found is None:
                if starts[0][1] is None:  # nothing ran before: better this heading than none
                    starts[0] = (0, path())
                continue
            at = text.rfind("\n", 0, found.start()) + 1  # the start of the heading's line ("2.3 Where/how ...")
            cursor = found.end()
            above = text[:at].strip()
            if not above or _LABEL.fullmatch(above):  # the page opens with this section ("Chapter 2" above
                # a chapter's title belongs to it)
                starts = [s for s in starts if s[0] != 0]
                at = 0
            starts.append((at, path()))
        out.append(sorted(starts))
    return out


# "4.3 How do I install it?", "2 Getting started", "1.2.1. Pinning": a section number, then a short title
_NUMBERED = re.compile(r"(\d{1,2}(?:\.\d{1,3}){0,3})\.?\s+(\S.{1,118})")
_NOT_A_TITLE = re.compile(r"[.。;；,，:：]$|(?:\.\s+){3,}|…\s*\d+$|\s\d+$")  # a sentence, a contents line


def numbered_marks(pages: list[str]) -> list[tuple[int, int, str]]:
    """Headings of a PDF without an outline, as outline entries (page index, depth, title): lines that
    start with a section number and hold a short title. Numbered list items and figures are told apart
    by order: each heading's number must come right after the previous one (2.1 -> 2.2, 2.3 -> 2.3.1,
    2.3.1 -> 2.4 or 3), so a list restarting at 1 or a stray "2.6 GHz" is not a heading.
    Contents lists are not headings: a numbered line whose number comes again further on (the section
    it lists), and 4+ numbered lines in a row but the last (a listing with no sections after it)."""
    candidates: list[tuple[int, int, tuple[int, ...], str]] = []  # (line no. over all pages, page, number, title)
    n = 0
    for page, text in enumerate(pages):
        for line in text.splitlines():
            if not line.strip():
                continue
            n += 1
            m = _NUMBERED.fullmatch(line.strip())
            if not m or _NOT_A_TITLE.search(m.group(2)) or not any(c.isalpha() for c in m.group(2)[:3]):
                continue
            candidates.append((n, page, tuple(int(x) for x in m.group(1).split(".")), " ".join(m.group(2).split())))
    by_number: dict[tuple[int, ...], list[tuple[int, str]]] = {}
    for line_no, _, number, title in candidates:
        by_number.setdefault(number, []).append((line_no, "".join(title.split())))
    contents = set()  # a line whose number comes again later with the same title (or its start: a cut or wrap)
    for same_number in by_number.values():
        for k, (line_no, title) in enumerate(same_number):
            if any(t.startswith(title) or title.startswith(t) for _, t in same_number[k + 1:]):
                contents.add(line_no)
    run = candidates[:1]
    for c in [*candidates[1:], None]:
        if c is not None and c[0] == run[-1][0] + 1:
            run.append(c)
            continue
        if len(run) >= 4:
            contents |= {r[0] for r in run[:-1]}
        run = [c]
    marks: list[tuple[int, int, str]] = []
    last: tuple[int, ...] = ()
    for line_no, page, number, title in candidates:
        if line_no not in contents and _follows(last, number):
            marks.append((page, len(number) - 1, title))
            last = number
    return marks if len(marks) >= 2 else []


def _follows(last: tuple[int, ...], number: tuple[int, ...]) -> bool:
    """Whether a section number can come next: at the first place the two differ it goes up by one
    or two (one heading may be missed) or opens a first child, and every later part is 1:
    2.3 -> 2.4, 2.5, 2.3.1, 3, 3.1; never 1.1 again, nor 2.6.7."""
    if not last:
        return all(n == 1 for n in number[1:])
    for i, n in enumerate(number):
        if i >= len(last):
            return n == 1 and all(m == 1 for m in number[i + 1:])
        if n != last[i]:
            return 0 < n - last[i] <= 2 and all(m == 1 for m in number[i + 1:])
    return False  # the same number, or a parent of the last one
