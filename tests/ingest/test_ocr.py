"""Scanned PDFs (issue 13): pages without a text layer are read by OCR, offline, and their chunks cite
the scanned page they came from."""

from __future__ import annotations

import pypdf
import pytest
from sqlalchemy import select

from kb.catalogue import Chunk
from kb.knowledge_base import KnowledgeBase
from kb.settings import IngestSettings
from tests.conftest import SAMPLES, consistent


def _scan(dst, pages):
    """An image-only PDF: pages of the Chinese sample guide rendered to pictures, no text layer."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf"))
    images = [doc[i].render(scale=1.5).to_pil().convert("RGB") for i in pages]
    images[0].save(dst, save_all=True, append_images=images[1:], resolution=108)
    return dst


@pytest.mark.slow  # OCR: several seconds a page on 2 cores
def test_a_scanned_pdf_is_read_by_ocr_and_answers_cite_its_pages(settings, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    scan = _scan(folder / "scanned-guide.pdf", [8, 9])  # guide pages 9-10: sections 1.2 and 1.3
    assert not "".join(p.extract_text() for p in pypdf.PdfReader(str(scan)).pages).strip()  # no text layer

    # 1 s for the file, 60 s more for each page read by OCR: a scan is never cut short by the file's limit
    settings = settings.model_copy(update={"ingest": IngestSettings(lock_timeout_s=2, file_timeout_s=1,
                                                                    ocr_page_timeout_s=60)})
    report = KnowledgeBase(settings=settings).sync([folder])
    assert [p.rsplit("/", 1)[-1] for p in report.added] == ["scanned-guide.pdf"] and not report.failed
    kb = KnowledgeBase(settings=settings)
    consistent(kb)
    with kb.catalogue.session() as s:
        rows = s.execute(select(Chunk.page, Chunk.text)).all()
    by_page = {p: "".join(t for page, t in rows if page == p).replace(" ", "") for p in (1, 2)}
    assert "需要的开发工具" in by_page[1] and "需要的开发文档" in by_page[2]  # read from the pictures
    hits = [c for c in kb.search("需要的开发文档", top_k=5, log=False) if "开发文档" in c.text.replace(" ", "")]
    assert hits and all(c.page == 2 for c in hits)  # cited on the scanned page that holds it
