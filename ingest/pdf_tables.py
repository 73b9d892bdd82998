"""PDF tables (issue 13): pdfplumber finds ruled tables, and the text of a page that holds one is rebuilt
with each table as rows ("column: value | column: value", ingest/tables.py) where it stood, instead of
pypdf's loose cell words that no question matches.

Only pages that draw a grid are looked at: 2+ thin horizontal and 2+ thin vertical strokes, or cells
drawn as boxes side by side (pdfium measures them in microseconds; pdfplumber takes ~100 ms a page).
Link underlines, bullets and framed code listings (boxes stacked in one column) draw neither, so the
pages of a printed web page or a LaTeX manual are skipped. A "table" of one column is left as text.
"""

from __future__ import annotations

import time
from pathlib import Path

from ingest.tables import table_lines

RULES = 2  # a ruled table draws at least two horizontal and two vertical rules (its frame)
THIN = 2.0  # points: a rule is at most this thick
MAX_SEGMENTS = 4000  # segments read per path: a 60-row grid drawn as one path has ~300
MAX_BOXES = 2000  # boxes compared on one page
BUDGET_S = 30.0  # per file: a long PDF ruled on every page keeps the rest of its time limit for the text
X_TOLERANCE = 1.5  # pdfplumber's default (3) glues words on tightly set PDFs ("October8,2022")


def _straight_edges(path) -> tuple[list[float], list[float]]:  # noqa: ANN001 - a pypdfium2 path object
    """The heights of the horizontal and the x of the vertical straight segments longer than THIN in a
    stroked path that is no thin rule itself (the sides of a cell box, `re`, or a grid drawn as one
    path), in page space. Filled shapes (a bar chart's bars) and paths with curves (figures) are no
    table's: nothing."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    n = pdfium_c.FPDFPath_CountSegments(path.raw)
    fill, stroke = ctypes.c_int(), ctypes.c_int()
    if not 0 < n <= MAX_SEGMENTS or not pdfium_c.FPDFPath_GetDrawMode(path.raw, ctypes.byref(fill),
                                                                      ctypes.byref(stroke)) or not stroke.value:
        return [], []
    a, b, c, d, e, f = path.get_matrix().get()  # segment points are in the path's own space
    x, y = ctypes.c_float(), ctypes.c_float()
    across: list[float] = []
    down: list[float] = []
    last = None
    for i in range(n):
        segment = pdfium_c.FPDFPath_GetPathSegment(path.raw, i)
        if not segment or not pdfium_c.FPDFPathSegment_GetPoint(segment, ctypes.byref(x), ctypes.byref(y)):
            return [], []
        point = (a * x.value + c * y.value + e, b * x.value + d * y.value + f)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_BEZIERTO:
            return [], []
        if last is not None and kind == pdfium_c.FPDF_SEGMENT_LINETO:
            dx, dy = abs(point[0] - last[0]), abs(point[1] - last[1])
            if dy < 0.01 and dx > THIN:
                across.append(point[1])
            elif dx < 0.01 and dy > THIN:
                down.append(point[0])
        last = point
    return across, down


def _distinct(values: list[float]) -> int:
    """How many different positions, those within THIN of each other counted once."""
    count, last = 0, None
    for v in sorted(values):
        if last is None or v - last > THIN:
            count += 1
        last = v
    return count


def _side_by_side(boxes: list[tuple[float, float, float, float]]) -> bool:
    """Two boxes sharing a vertical side, over most of their height: cells of one row. (A framed code
    listing stacks its boxes in one column.)"""
    boxes = sorted(boxes)[:MAX_BOXES]
    for i, (l1, b1, r1, t1) in enumerate(boxes):
        for l2, b2, r2, t2 in boxes[i + 1:]:
            if l2 > r1 + THIN:
                break
            if abs(l2 - r1) <= THIN and min(t1, t2) - max(b1, b2) > 0.5 * min(t1 - b1, t2 - b2):
                return True
    return False


def _draws_a_grid(page) -> bool:  # noqa: ANN001 - a pypdfium2 PdfPage
    import pypdfium2.raw as pdfium_c

    across = down = 0
    boxes = []
    for o in page.get_objects(max_depth=2):
        if o.type == pdfium_c.FPDF_PAGEOBJ_PATH:
            left, bottom, right, top = bounds = o.get_bounds()
            if top - bottom <= THIN < right - left:
                across += 1
            elif right - left <= THIN < top - bottom:
                down += 1
            elif right - left > THIN and top - bottom > THIN:
                ys, xs = _straight_edges(o)
                if _distinct(ys) > RULES and _distinct(xs) > RULES:  # a whole grid drawn as one path
                    return True
                if ys and xs:
                    boxes.append(bounds)
            if across >= RULES and down >= RULES:
                return True
    return _side_by_side(boxes)


def ruled_pages(path: Path, password: str | None, texts: list[str], deadline: float) -> list[int]:
    """0-based pages with a text layer that draw the rules of a table (a few ms a page: a long PDF can
    run past the deadline here already)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(path), password=password)
    try:
        ruled = []
        for i, text in enumerate(texts):
            if time.monotonic() > deadline:
                raise TableBudgetSpent(0, 0, len(ruled), len(texts) - i)
            if text.strip() and _draws_a_grid(doc[i]):
                ruled.append(i)
        return ruled
    finally:
        doc.close()


def _is_table(rows: list[list[str | None]]) -> bool:
    """Two or more rows with two or more filled cells: a grid of values, not a framed paragraph."""
    return sum(sum(bool(c and c.strip()) for c in r) >= 2 for r in rows) >= 2


def _text(region) -> str:  # noqa: ANN001 - a pdfplumber page or cropped page
    return region.extract_text(x_tolerance=X_TOLERANCE) or ""


def _centre_outside(box: tuple[float, float, float, float]):  # noqa: ANN202 - a pdfplumber filter
    """Objects whose centre lies outside the box: a letter touching a table's rule stays in the text
    beside it (pdfplumber gives a cell the characters whose centre is in it, so none is read twice)."""
    x0, top, x1, bottom = box

    def outside(o) -> bool:  # noqa: ANN001 - a pdfplumber object dict
        if "x0" not in o or "top" not in o:
            return True
        return not (x0 <= (o["x0"] + o["x1"]) / 2 <= x1 and top <= (o["top"] + o["bottom"]) / 2 <= bottom)

    return outside


def _bands(tables: list) -> list[list]:
    """Tables grouped into horizontal bands: tables side by side (overlapping vertically) share one."""
    bands: list[list] = []
    for t in sorted(tables, key=lambda t: t.bbox[1]):
        if bands and t.bbox[1] < max(b.bbox[3] for b in bands[-1]):
            bands[-1].append(t)
        else:
            bands.append([t])
    return bands


def page_with_tables(page) -> str | None:  # noqa: ANN001 - a pdfplumber Page
    """The page's text with its tables as rows, in reading order: the text above each band of tables,
    the band's tables left to right, the text beside them; None when the page holds no real table."""
    found = [(t, t.extract(x_tolerance=X_TOLERANCE)) for t in page.find_tables()]
    rows_of = {id(t): rows for t, rows in found if _is_table(rows)}
    if not rows_of:
        return None
    x0, top, x1, bottom = page.bbox
    parts, y = [], top
    for band in _bands([t for t, _ in found if id(t) in rows_of]):
        b_top, b_bottom = max(min(t.bbox[1] for t in band), y), min(max(t.bbox[3] for t in band), bottom)
        if b_top > y:
            parts.append(_text(page.crop((x0, y, x1, b_top))))
        if b_bottom <= b_top:
            continue
        beside = page.crop((x0, b_top, x1, b_bottom))
        for t in sorted(band, key=lambda t: t.bbox[0]):
            parts.append("\n".join(table_lines(rows_of[id(t)])))
            beside = beside.filter(_centre_outside((t.bbox[0], b_top, t.bbox[2], b_bottom)))
        parts.append(_text(beside))  # text beside the tables, if any
        y = b_bottom
    if y < bottom:
        parts.append(_text(page.crop((x0, y, x1, bottom))))
    return "\n\n".join(p.strip() for p in parts if p.strip())


def tables_into_pages(path: Path, password: str | None, texts: list[str], budget_s: float = BUDGET_S) -> int:
    """Rewrite, in place, the text of each page that holds a table; returns how many pages changed.
    Past `budget_s` the remaining pages keep their text as it was (TableBudgetSpent says how far it got)."""
    deadline = time.monotonic() + budget_s
    pages = ruled_pages(path, password, texts, deadline)
    if not pages:
        return 0
    import pdfplumber

    changed = 0
    with pdfplumber.open(str(path), password=password or "") as pdf:
        for n, i in enumerate(pages):
            if time.monotonic() > deadline:
                raise TableBudgetSpent(changed, n, len(pages), 0)
            text = page_with_tables(pdf.pages[i])
            if text:
                texts[i], changed = text, changed + 1
            pdf.pages[i].close()  # frees the page's parsed objects: long PDFs stay small
    return changed


class TableBudgetSpent(Exception):
    """Out of time for tables: `changed` pages were rewritten; the rest keep their text."""

    def __init__(self, changed: int, looked_at: int, ruled: int, unchecked: int):
        left = f"{ruled - looked_at} of {ruled} ruled pages" + (f" and {unchecked} unchecked pages" if unchecked else "")
        super().__init__(f"tables read on {changed} page(s); out of time for tables, {left} left as text")
        self.changed = changed
