"""Rebuild sample_docs/ from Debian documentation packages (provenance for sample_docs/NOTICE).

    mkdir -p /tmp/debs && cd /tmp/debs && apt-get download debian-faq debian-faq-zh-cn maint-guide-zh-cn
    for f in *.deb; do dpkg-deb -x "$f" x; done
    python scripts/build_sample_docs.py /tmp/debs/x sample_docs

PDFs keep a page range of the originals; the Markdown and DOCX files are faithful conversions of
one FAQ chapter each (headings, paragraphs, lists), so every format carries real text.
"""

import gzip
import shutil
import sys
from pathlib import Path

import docx
import pypdf
from bs4 import BeautifulSoup


def pdf_pages(src: Path, dst: Path, first: int, last: int) -> None:
    data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
    tmp = dst.with_suffix(".src.pdf")
    tmp.write_bytes(data)
    writer = pypdf.PdfWriter()
    writer.append(str(tmp), pages=(first - 1, last), import_outline=True)  # keep bookmarks: heading paths
    with open(dst, "wb") as f:
        writer.write(f)
    tmp.unlink()


def chapter_blocks(html: Path) -> list[tuple[str, str]]:
    """(kind, text) in reading order: h1..h4, p, li, pre; skipping navigation and the TOC."""
    soup = BeautifulSoup(html.read_text(encoding="utf-8"), "html.parser")
    for junk in soup.select(".navheader, .navfooter, .toc"):
        junk.decompose()
    out = []
    for el in soup.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre"]):
        if el.name in ("p",) and el.find_parent("li"):
            continue
        text = " ".join(el.get_text(" ").split()) if el.name != "pre" else el.get_text()
        if text.strip():
            out.append((el.name, text.strip()))
    return out


def to_markdown(blocks: list[tuple[str, str]]) -> str:
    lines = []
    for kind, text in blocks:
        if kind.startswith("h"):
            lines.append("#" * int(kind[1]) + " " + text)
        elif kind == "li":
            lines.append("- " + text)
        elif kind == "pre":
            lines.append("```\n" + text + "\n```")
        else:
            lines.append(text)
        lines.append("")
    return "\n".join(lines)


def to_docx(blocks: list[tuple[str, str]], dst: Path) -> None:
    d = docx.Document()
    for kind, text in blocks:
        if kind.startswith("h"):
            level = int(kind[1])
            if level == 2 and len(d.paragraphs) > 3:
                d.add_page_break()  # each section on its own page: page provenance is testable
            d.add_heading(text, level=level)
        elif kind == "li":
            d.add_paragraph(text, style="List Bullet")
        else:
            d.add_paragraph(text)
    d.save(str(dst))


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    faq_en = src / "usr/share/doc/debian/FAQ"
    faq_zh = faq_en / "zh-cn"
    pdf_pages(faq_en / "debian-faq.en.pdf.gz", out / "debian-faq-en-chapters-1-2.pdf", 1, 16)
    pdf_pages(src / "usr/share/doc/maint-guide-zh-cn/maint-guide.zh-cn.pdf", out / "maint-guide-zh-cn-chapter-1-2.pdf", 1, 14)
    shutil.copy(faq_en / "software.en.html", out / "debian-faq-software.en.html")
    shutil.copy(faq_zh / "pkg-basics.zh-cn.html", out / "debian-faq-pkg-basics.zh-cn.html")
    (out / "debian-faq-getting-debian.en.md").write_text(to_markdown(chapter_blocks(faq_en / "getting-debian.en.html")))
    to_docx(chapter_blocks(faq_zh / "support.zh-cn.html"), out / "debian-faq-support.zh-cn.docx")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
