"""PDF tables (issue 13): pdfplumber finds ruled tables, and the text of a page that holds one is rebuilt
with each table as rows ("column: value | column: value", ingest/tables.py) where it stood, instead of
pypdf's loose cell words that no question matches.

Only pages that draw several lines are looked at (pdfium counts them in microseconds; pdfplumber takes
~70 ms a page), and a "table" of one column (a framed code listing) is left as text.
"""

from __future__ import annotations

from pathlib import Path

from ingest.tables import table_lines

MIN_PATHS = 4  # a ruled table draws at least its frame and one rule
X_TOLERANCE = 1.5  # pdfplumber's default (3) glues words on tightly set PDFs ("October8,2022")


def ruled_pages(path: Path, password: str | None, texts: list[str]) -> list[int]:
    """0-based pages with a text layer that draw enough lines to hold a ruled table."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    doc = pdfium.PdfDocument(str(path), password=password)
    try:
        return [i for i, text in enumerate(texts) if text.strip() and sum(
            o.type == pdfium_c.FPDF_PAGEOBJ_PATH for o in doc[i].get_objects(max_depth=2)) >= MIN_PATHS]
    finally:
        doc.close()


def _is_table(rows: list[list[str | None]]) -> bool:
    """Two or more rows with two or more filled cells: a grid of values, not a framed paragraph."""
    return sum(sum(bool(c and c.strip()) for c in r) >= 2 for r in rows) >= 2


def _text(region) -> str:  # noqa: ANN001 - a pdfplumber page or cropped page
    return region.extract_text(x_tolerance=X_TOLERANCE) or ""


def page_with_tables(page) -> str | None:  # noqa: ANN001 - a pdfplumber Page
    """The page's text with its tables as rows, in reading order (bands above, between and below them);
    None when it holds no real table."""
    tables = sorted((t for t in page.find_tables() if _is_table(t.extract(x_tolerance=X_TOLERANCE))),
                    key=lambda t: t.bbox[1])
    if not tables:
        return None
    x0, top, x1, bottom = page.bbox
    parts, y = [], top
    for t in tables:
        t_top, t_bottom = max(t.bbox[1], y), min(t.bbox[3], bottom)
        if t_top > y:
            parts.append(_text(page.crop((x0, y, x1, t_top))))
        band = page.crop((x0, t_top, x1, t_bottom))
        rows = [[c or "" for c in r] for r in t.extract(x_tolerance=X_TOLERANCE)]
        parts.append("\n".join(table_lines(rows)))
        parts.append(_text(band.outside_bbox(t.bbox)))  # text beside the table, if any
        y = max(y, t_bottom)
    if y < bottom:
        parts.append(_text(page.crop((x0, y, x1, bottom))))
    return "\n\n".join(p.strip() for p in parts if p.strip())


def tables_into_pages(path: Path, password: str | None, texts: list[str]) -> int:
    """Rewrite, in place, the text of each page that holds a table; returns how many pages changed."""
    pages = ruled_pages(path, password, texts)
    if not pages:
        return 0
    import pdfplumber

    changed = 0
    with pdfplumber.open(str(path), password=password or "") as pdf:
        for i in pages:
            text = page_with_tables(pdf.pages[i])
            if text:
                texts[i], changed = text, changed + 1
            pdf.pages[i].close()  # frees the page's parsed objects: long PDFs stay small
    return changed
