"""Scanned PDFs (issue 13): pages without a text layer are read by OCR, offline, and their chunks cite
the scanned page they came from."""

from __future__ import annotations

import pypdf
import pytest
from sqlalchemy import select

from kb.catalogue import Chunk
from kb.knowledge_base import KnowledgeBase
from kb.settings import IngestSettings
from tests.conftest import SAMPLES, consistent, scanned_pdf


@pytest.mark.slow  # OCR: several seconds a page on 2 cores
def test_a_scanned_pdf_is_read_by_ocr_and_answers_cite_its_pages(settings, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    # guide pages 9-10 (sections 1.2 and 1.3) as pictures, then page 11 as it is (a text layer)
    scan = scanned_pdf(folder / "scanned-guide.pdf", SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf", [8, 9], keep=[10])
    pages = [p.extract_text() for p in pypdf.PdfReader(str(scan)).pages]
    assert not (pages[0] + pages[1]).strip() and pages[2].strip()  # no text layer but on the last page

    # 1 s for the file, 60 s more for each page read by OCR: a scan is never cut short by the file's limit
    settings = settings.model_copy(update={"ingest": IngestSettings(lock_timeout_s=2, file_timeout_s=1,
                                                                    ocr_page_timeout_s=60)})
    report = KnowledgeBase(settings=settings).sync([folder])
    assert [p.rsplit("/", 1)[-1] for p in report.added] == ["scanned-guide.pdf"] and not report.failed
    kb = KnowledgeBase(settings=settings)
    consistent(kb)
    with kb.catalogue.session() as s:
        rows = s.execute(select(Chunk.page, Chunk.text, Chunk.ocr)).all()
    by_page = {p: "".join(t for page, t, _ in rows if page == p).replace(" ", "") for p in (1, 2)}
    assert "需要的开发工具" in by_page[1] and "需要的开发文档" in by_page[2]  # read from the pictures
    assert {page: ocr for page, _, ocr in rows} == {1: True, 2: True, 3: False}  # each chunk says where its text came from
    hits = [c for c in kb.search("需要的开发文档", top_k=5, log=False) if "开发文档" in c.text.replace(" ", "")]
    assert hits and all(c.page == 2 and c.ocr for c in hits)  # cited on the scanned page that holds it, marked OCR
    answer = kb.ask("需要的开发文档有哪些？")
    assert answer.found and any(c.page == 2 and c.ocr for c in answer.citations)
