"""A cited PDF page as a picture, the cited sentences marked on it: what a reader checks a citation
against, instead of downloading the whole file. Rendered with pypdfium2 (already a dependency of the
PDF reader); sentences are found on the page's own text layer, so a scan read by OCR gets no marks."""

from __future__ import annotations

import io
import re
from pathlib import Path

SCALE = 1.6  # ≈ 115 dpi: small print readable, a page ~200 KB as PNG
MAX_SIDE = 2400  # pixels: a page with a huge media box is drawn smaller, never gigabytes of pixels
MARK = (255, 190, 0, 90)  # translucent amber
_PIECE = 60  # sentences are searched in pieces of this many characters: PDF text breaks lines and hyphens


def pieces(sentence: str) -> list[str]:
    """Searchable pieces of a cited sentence (its [n] markers and an ellipsis left out)."""
    text = re.sub(r"\[\d+\]", "", sentence).rstrip("…").strip()
    words, out, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > _PIECE:
            out.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        out.append(cur)
    if not words and text:  # Chinese: no spaces
        out = [text[i:i + _PIECE // 2] for i in range(0, len(text), _PIECE // 2)]
    return [p for p in out if len(p) >= 4]


def cited_page_png(pdf: Path, page: int, sentences: list[str]) -> tuple[bytes, int] | None:
    """(PNG of page `page` (1-based) with each found piece of `sentences` marked, how many were
    found), or None when the file is not a readable PDF or has no such page."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    try:
        doc = pdfium.PdfDocument(str(pdf))
    except (pdfium.PdfiumError, OSError):
        return None
    try:
        if not 1 <= page <= len(doc):
            return None
        p = doc[page - 1]
        width, height = p.get_width(), p.get_height()
        scale = min(SCALE, MAX_SIDE / max(width, height, 1))
        image = p.render(scale=scale).to_pil().convert("RGBA")
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))  # marks blended over the page, not painted on it
        layer = ImageDraw.Draw(overlay)
        text, found = p.get_textpage(), 0
        for sentence in sentences:
            for piece in pieces(sentence):
                hit = text.search(piece, match_case=False).get_next()
                if not hit:
                    continue
                found += 1
                start, count = hit
                for i in range(text.count_rects(start, count)):
                    left, bottom, right, top = text.get_rect(i)
                    layer.rectangle([left * scale, (height - top) * scale, right * scale, (height - bottom) * scale],
                                    fill=MARK)
        out = io.BytesIO()
        Image.alpha_composite(image, overlay).convert("RGB").save(out, "PNG", optimize=True)
        return out.getvalue(), found
    finally:
        doc.close()
