"""OCR for PDF pages without a text layer (issue 13): scanned pages become searchable text.

RapidOCR (PP-OCRv6 small detection and recognition, Chinese and English) on onnxruntime; its models
ship inside the `rapidocr` wheel, so nothing is downloaded. It runs only on pages whose text layer is
empty, inside the extraction worker: each page read adds KB_INGEST__OCR_PAGE_TIMEOUT_S (60 s) to the
file's time limit (a page takes ~5-10 s on 2 CPU cores), and at most KB_INGEST__MAX_OCR_PAGES pages of
one file are read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache

RENDER_SCALE = 1.5  # 108 dpi: small print still reads, and a page costs half what 144 dpi does
# Called as each page is about to be read: the extraction worker tells the writer, which gives every OCR page its
# own time budget (KB_INGEST__OCR_PAGE_TIMEOUT_S) on top of the file's limit.
on_page: Callable[[], None] | None = None


@lru_cache(maxsize=1)
def _engine():  # noqa: ANN202 - a rapidocr.RapidOCR
    from rapidocr import RapidOCR

    quiet = logging.getLogger("RapidOCR")
    quiet.handlers.clear()  # its own console handler would print every model path; records still reach the log
    quiet.setLevel(logging.WARNING)
    return RapidOCR()


def read_page(page) -> str:  # noqa: ANN001 - a pypdfium2 PdfPage
    """The text of one rendered page, one detected line per line, in reading order."""
    if on_page is not None:  # before the work: the page's budget covers it (and loading the models)
        on_page()
    result = _engine()(page.render(scale=RENDER_SCALE).to_numpy())
    return "\n".join(t for t in (result.txts or ()) if t.strip())
