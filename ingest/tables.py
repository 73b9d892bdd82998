"""Tables as text a question can match (issue 13): one line per row, "column: value | column: value"
under a header row, else "value | value". Used for spreadsheet rows and for the tables unstructured
finds in DOCX, PPTX and HTML (their cells would otherwise come out as one run of loose words)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_NUMBER = re.compile(r"[-+]?[\d.,%\s]+")


def _clean(cell: str | None) -> str:
    return " ".join((cell or "").split())  # merged cells come as None


def is_header(cells: list[str]) -> bool:
    """A first row of two or more cells, none of them a number, reads as column names."""
    filled = [c for c in cells if c]
    return len(filled) > 1 and not any(_NUMBER.fullmatch(c) for c in filled)


def row_line(cells: list[str], header: list[str] | None) -> str:
    if header:
        return " | ".join(f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {c}"
                          for i, c in enumerate(cells) if c)
    return " | ".join(c for c in cells if c)


def table_lines(rows: list[list[str]]) -> list[str]:
    """Rows of cell texts -> one line per row (the header row, when there is one, names the columns)."""
    rows = [[_clean(c) for c in r] for r in rows]
    rows = [r for r in rows if any(r)]
    # rows of one filled cell above a header row ("TITLE: …"): the table's title, not its header
    lead = next((k for k, r in enumerate(rows) if sum(map(bool, r)) != 1), len(rows))
    captions = []
    if 0 < lead < len(rows) - 1 and is_header(rows[lead]):
        captions, rows = [next(c for c in r if c) for r in rows[:lead]], rows[lead:]
    if len(rows) > 1 and is_header(rows[0]):
        return captions + [row_line(r, rows[0]) for r in rows[1:]]
    return captions + [row_line(r, None) for r in rows]


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_table_lines(html: str) -> list[str]:
    """unstructured's `text_as_html` of a table -> one line per row."""
    parser = _Rows()
    parser.feed(html)
    parser.close()
    return table_lines(parser.rows)
