"""OCR for PDF pages without a text layer (issue 13): scanned pages become searchable text.

RapidOCR (PP-OCRv6 small detection and recognition, Chinese and English) on onnxruntime; its models
ship inside the `rapidocr` wheel, so nothing is downloaded. It runs only on pages whose text layer is
empty, inside the extraction worker, so its time counts in the file's time limit (~5-10 s a page on
2 CPU cores: a long scan needs a higher KB_INGEST__FILE_TIMEOUT_S).
"""

from __future__ import annotations

import logging
from functools import lru_cache

RENDER_SCALE = 1.5  # 108 dpi: small print still reads, and a page costs half what 144 dpi does


@lru_cache(maxsize=1)
def _engine():  # noqa: ANN202 - a rapidocr.RapidOCR
    from rapidocr import RapidOCR

    quiet = logging.getLogger("RapidOCR")
    quiet.handlers.clear()  # its own console handler would print every model path; records still reach the log
    quiet.setLevel(logging.WARNING)
    return RapidOCR()


def read_page(page) -> str:  # noqa: ANN001 - a pypdfium2 PdfPage
    """The text of one rendered page, one detected line per line, in reading order."""
    result = _engine()(page.render(scale=RENDER_SCALE).to_numpy())
    return "\n".join(t for t in (result.txts or ()) if t.strip())
