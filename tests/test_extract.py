"""Extraction per format keeps provenance; bad files fail with a clear reason."""

from pathlib import Path

import pytest

from ingest.extract import CORRUPT, EMPTY, ENCRYPTED, UNSUPPORTED, extract
from kb.errors import ExtractionError
from tests.conftest import SAMPLES, pdf_excerpt


def test_pdf_keeps_physical_page_numbers_and_outline_headings(docs):
    ex = extract(docs["pdf"])
    assert ex.pages == 3
    assert [b.page for b in ex.blocks] == [1, 2, 3]
    assert "Debian" in ex.blocks[0].text
    assert " the " in ex.blocks[0].text  # words keep their spaces (pypdf alone glues them on this PDF)


def test_full_pdf_outline_gives_heading_paths():
    ex = extract(SAMPLES / "debian-faq-en-chapters-1-2.pdf")
    headings = {b.page: b.heading for b in ex.blocks}
    assert any(h and h.startswith("Definitions and overview") for h in headings.values())
    assert any(h and "Getting and installing" in h for h in headings.values())


def test_chinese_pdf_text(docs):
    ex = extract(docs["pdf_zh"])
    text = "".join(b.text for b in ex.blocks)
    assert "软件包" in text and ex.pages == 2


def test_html_heading_path(docs):
    ex = extract(docs["html"])
    assert any(b.heading and " > " in b.heading for b in ex.blocks)
    assert all(b.page is None for b in ex.blocks)


def test_markdown_heading_path(docs):
    ex = extract(docs["md"])
    b = next(b for b in ex.blocks if "security updates" in b.text)
    assert b.heading and "Are there package upgrades" in b.heading


def test_docx_headings_and_page_breaks(docs):
    ex = extract(docs["docx"])
    mail = next(b for b in ex.blocks if "mailing list" in b.text)
    bugs = next(b for b in ex.blocks if "reportbug" in b.text)
    assert mail.heading == "Debian support > Mailing lists"
    assert bugs.heading.endswith("Bug tracking")
    assert (mail.page, bugs.page) == (1, 2)


def test_pptx_slide_numbers(docs):
    ex = extract(docs["pptx"])
    upgrade = next(b for b in ex.blocks if "full-upgrade" in b.text)
    assert upgrade.page == 2 and upgrade.heading == "Upgrades"


def test_xlsx_sheet_name(docs):
    ex = extract(docs["xlsx"])
    assert any("bookworm" in b.text and b.heading and "Releases" in b.heading for b in ex.blocks)


def test_txt(docs):
    ex = extract(docs["txt"])
    assert "自由的操作系统" in ex.blocks[0].text


def test_encrypted_pdf_reported_then_opened_with_password(tmp_path):
    locked = pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", tmp_path / "locked.pdf", range(6, 7), "s3cret")
    with pytest.raises(ExtractionError) as err:
        extract(locked)
    assert err.value.reason == ENCRYPTED
    with pytest.raises(ExtractionError):
        extract(locked, pdf_password="wrong")
    assert "Debian" in extract(locked, pdf_password="s3cret").blocks[0].text


@pytest.mark.parametrize("name,content,reason", [
    ("empty.pdf", b"", EMPTY),
    ("truncated.pdf", None, CORRUPT),
    ("renamed.pdf", b"<html><body>not a pdf</body></html>", CORRUPT),
    ("fake.docx", b"this is plain text, not a zip", CORRUPT),
    ("image.png", b"\x89PNG\r\n\x1a\n", UNSUPPORTED),
    ("binary.txt", b"\x00\x01\x02garbage", CORRUPT),
])
def test_bad_files_fail_with_reason(tmp_path: Path, name, content, reason):
    p = tmp_path / name
    if content is None:
        p.write_bytes((SAMPLES / "debian-faq-en-chapters-1-2.pdf").read_bytes()[:3000])
    else:
        p.write_bytes(content)
    with pytest.raises(ExtractionError) as err:
        extract(p)
    assert err.value.reason == reason
