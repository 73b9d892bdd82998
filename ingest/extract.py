"""Extraction: a file becomes text blocks that keep their provenance (page, heading path).

PDF through pypdf (pages, outline, encryption); DOCX, PPTX, XLSX, HTML, Markdown and text through
unstructured, offline. Every failure is an ExtractionError with a short reason a person can act on.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kb.errors import ExtractionError

ENCRYPTED = "encrypted"
CORRUPT = "corrupt"
EMPTY = "empty file"
NO_TEXT = "no extractable text"
UNSUPPORTED = "unsupported file type"
TOO_LARGE = "too large"  # also "too large when unpacked" (zip bombs)
MAX_ZIP_RATIO = 200  # real OOXML parts compress 5-30:1; a zip bomb's, 1000:1 and more
MAX_ZIP_ENTRIES = 20_000


@dataclass
class Block:
    text: str
    page: int | None = None  # 1-based page (PDF, DOCX page breaks), slide (PPTX) or sheet (XLSX)
    heading: str | None = None  # "Chapter > Section"


@dataclass
class Extracted:
    blocks: list[Block]
    mime: str
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)


# -- PDF -----------------------------------------------------------------------------------------

_GLUED = re.compile(r"[A-Za-z’'\-,.()]{25,}")


def _looks_glued(text: str) -> bool:
    """pypdf drops inter-word spaces on many LaTeX PDFs ("Thisdocumentgives..."): detect that."""
    letters = sum(c.isascii() and c.isalpha() for c in text)
    if letters < 200:
        return False
    glued = sum(len(m) for m in _GLUED.findall(text))
    return glued > 0.2 * letters


def _pdfium_pages(path: Path, password: str | None) -> list[str] | None:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        return None
    doc = pdfium.PdfDocument(str(path), password=password)
    try:
        out = []
        for page in doc:
            text = page.get_textpage().get_text_range()
            out.append(text.replace("\ufffe\r\n", "").replace("\ufffe", "").replace("\r\n", "\n").replace("\r", "\n"))
        return out
    finally:
        doc.close()


def _outline_headings(reader, n_pages: int) -> list[str | None]:
    """Heading path in force at the start of each page, from the PDF outline (bookmarks)."""
    marks: list[tuple[int, int, str]] = []

    def walk(items, depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - a broken bookmark only loses a heading
                continue
            if page is not None and page >= 0:
                marks.append((page, depth, str(item.title).strip()))

    try:
        walk(reader.outline, 0)
    except Exception:  # noqa: BLE001
        return [None] * n_pages
    marks.sort(key=lambda m: m[0])  # stable: keeps outline order within a page
    headings: list[str | None] = []
    stack: list[str] = []
    i = 0
    for page in range(n_pages):
        at_start = list(stack)  # the section still running when the page begins
        while i < len(marks) and marks[i][0] <= page:
            _, depth, title = marks[i]
            stack = stack[:depth] + [title]
            if not at_start:
                at_start = list(stack)  # nothing ran before: the page opens with this section
            i += 1
        headings.append(" > ".join(at_start) or None)
    return headings


def extract_pdf(path: Path, password: str | None = None) -> Extracted:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(str(path))
        used_password = None
        if reader.is_encrypted:
            for candidate in ("", password):
                if candidate is not None and reader.decrypt(candidate) != pypdf.PasswordType.NOT_DECRYPTED:
                    used_password = candidate
                    break
            else:
                detail = "wrong password" if password else "set KB_INGEST__PDF_PASSWORD to open it"
                raise ExtractionError(ENCRYPTED, detail)
        n_pages = len(reader.pages)
        texts = []
        for page in reader.pages:
            try:
                texts.append(page.extract_text() or "")
            except Exception:  # noqa: BLE001 - one unreadable page must not lose the others
                texts.append("")
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise ExtractionError(CORRUPT, f"not a readable PDF ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on hostile input
        if "crypt" in type(exc).__name__.lower() or "AES" in str(exc):
            raise ExtractionError(ENCRYPTED, str(exc)) from exc
        raise ExtractionError(CORRUPT, f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
    warnings = []
    if any(_looks_glued(t) for t in texts):
        better = _pdfium_pages(path, used_password or None)
        if better and len(better) == n_pages:
            texts = better
            warnings.append("pypdf lost word spacing; text taken from pdfium")
    headings = _outline_headings(reader, n_pages)
    blocks = [Block(t.strip(), i + 1, headings[i]) for i, t in enumerate(texts) if t.strip()]
    return Extracted(blocks, "application/pdf", n_pages, warnings)


# -- formats handled by unstructured -------------------------------------------------------------

def _partition(kind: str) -> Callable:
    """unstructured's partitioner for a kind (imported on first use: unstructured is slow to import)."""
    import importlib

    from ingest.unstructured_offline import prepare_unstructured

    prepare_unstructured()
    module = "text" if kind == "text" else kind
    return getattr(importlib.import_module(f"unstructured.partition.{module}"), f"partition_{module}")


@dataclass
class _OpenHeading:
    depth: int
    text: str
    page: int | None
    sheet: str | None
    covered: bool = False  # some block already carries it in its heading path


def _heading_path(headings: list[_OpenHeading], sheet: str | None) -> str | None:
    parts = [h.text for h in headings]
    if sheet:
        parts = [sheet] + parts
    return " > ".join(parts) or None


def _elements_to_blocks(elements, kind: str) -> tuple[list[Block], int | None]:
    """Elements become blocks under the heading path in force; a heading is also searchable text.

    unstructured labels short lines as Title (a deck of short lines is all "headings"). A heading with
    body text below it is searchable through the heading path its chunks are embedded with; one that
    gets no block before it is closed (next heading at its depth or above, end of its slide or sheet,
    end of document) becomes a block itself, under its parent's path, on the page where it appeared.
    """
    blocks: list[Block] = []
    stack: list[_OpenHeading] = []
    max_page = None
    per_unit = kind in ("pptx", "xlsx")  # a page is a slide or sheet: its headings end with it

    def add(text: str, page: int | None, sheet: str | None, under: list[_OpenHeading]) -> None:
        for h in under:
            h.covered = True
        blocks.append(Block(text, page, _heading_path(under, sheet)))

    def close_from(i: int) -> None:
        """Close stack[i:], innermost first; a heading no block carries becomes a block."""
        while len(stack) > i:
            top = stack.pop()
            if not top.covered:
                add(top.text, top.page, top.sheet, stack)

    for el in elements:
        text = (el.text or "").strip()
        if not text:
            continue
        md = el.metadata
        page = getattr(md, "page_number", None)
        sheet = getattr(md, "page_name", None) if kind == "xlsx" else None
        if page is not None:
            max_page = max(max_page or 0, page)
        if per_unit and stack and page != stack[-1].page:
            close_from(0)  # a new slide or sheet; on a DOCX page break the section simply runs on
        if el.category == "Title" and md.category_depth is not None:  # a real heading (h1-h6, Word style)
            depth = md.category_depth
            close_from(next((i for i, h in enumerate(stack) if h.depth >= depth), len(stack)))
            stack.append(_OpenHeading(depth, text, page, sheet))
            continue
        add(text, page, sheet, stack)
    close_from(0)
    return blocks, max_page


def _docx_hard_page_numbers(path: Path, blocks: list[Block]) -> int | None:
    """unstructured numbers DOCX pages only from Word's rendered breaks; count explicit page breaks too."""
    import docx

    w = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
    page, para_pages = 1, []
    for para in docx.Document(str(path)).paragraphs:
        el = para._p
        if el.find(f"{w}pPr/{w}pageBreakBefore") is not None:
            page += 1
        text = " ".join(para.text.split())
        if text:
            para_pages.append((text, page))
        page += sum(1 for br in el.iter(f"{w}br") if br.get(f"{w}type") == "page")
    if page == 1:
        return None
    i = 0
    for b in blocks:  # blocks come in document order: walk both lists together
        key = " ".join(b.text.split())[:40]
        j = i
        while j < len(para_pages) and key not in para_pages[j][0]:
            j += 1
        if j < len(para_pages):
            b.page, i = para_pages[j][1], j
    return page


@dataclass(frozen=True)
class Format:
    """One supported file type: its MIME type, how it is read, and (for ZIP containers) the part a real
    file of this type must hold."""
    mime: str
    extract: Callable[[Path, str | None], Extracted]  # (path, PDF password) -> Extracted
    container_part: str | None = None


def _unstructured(kind: str, mime: str) -> Callable[[Path, str | None], Extracted]:
    def extract_with_unstructured(path: Path, password: str | None) -> Extracted:
        try:
            elements = _partition(kind)(filename=str(path))
        except ExtractionError:
            raise
        except Exception as exc:  # noqa: BLE001 - parsers raise many types on hostile input
            raise ExtractionError(CORRUPT, f"{type(exc).__name__}: {exc}") from exc
        blocks, pages = _elements_to_blocks(elements, kind)
        if kind == "docx" and pages is None:
            pages = _docx_hard_page_numbers(path, blocks)
        return Extracted(blocks, mime, pages)
    return extract_with_unstructured


def _read_by_unstructured(kind: str, mime: str, container_part: str | None = None) -> Format:
    return Format(mime, _unstructured(kind, mime), container_part)


_OOXML = "application/vnd.openxmlformats-officedocument."
# Every supported suffix: adding a format is one entry here (the web page's file types follow).
FORMATS: dict[str, Format] = {
    ".pdf": Format("application/pdf", extract_pdf),
    ".docx": _read_by_unstructured("docx", _OOXML + "wordprocessingml.document", "word/document.xml"),
    ".pptx": _read_by_unstructured("pptx", _OOXML + "presentationml.presentation", "ppt/presentation.xml"),
    ".xlsx": _read_by_unstructured("xlsx", _OOXML + "spreadsheetml.sheet", "xl/workbook.xml"),
    ".html": _read_by_unstructured("html", "text/html"),
    ".htm": _read_by_unstructured("html", "text/html"),
    ".md": _read_by_unstructured("md", "text/markdown"),
    ".markdown": _read_by_unstructured("md", "text/markdown"),
    ".txt": _read_by_unstructured("text", "text/plain"),
}
MIME = {suffix: f.mime for suffix, f in FORMATS.items()}


def supported_suffixes() -> list[str]:
    return sorted(MIME)


def _check_zip(z: zipfile.ZipFile, kind: str, max_unpacked: int | None) -> None:
    """Refuse a zip bomb from its directory, before a parser inflates anything: the total unpacked size,
    the compression ratio of each part, the number of parts. (The directory can lie; the per-file time
    and memory limits of the extraction worker are the next guard — issue 15, not built yet.)"""
    infos = z.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ExtractionError(TOO_LARGE + " when unpacked", f"{len(infos):,} parts in the {kind} (limit {MAX_ZIP_ENTRIES:,})")
    total = sum(i.file_size for i in infos)
    if max_unpacked is not None and total > max_unpacked:
        raise ExtractionError(TOO_LARGE + " when unpacked",
                              f"{total / 1e6:,.0f} MB unpacked > limit {max_unpacked / 1e6:,.0f} MB")
    worst = max(infos, key=lambda i: i.file_size / max(1, i.compress_size), default=None)
    if worst is not None and worst.file_size > 1_000_000 and worst.file_size / max(1, worst.compress_size) > MAX_ZIP_RATIO:
        raise ExtractionError(TOO_LARGE + " when unpacked",
                              f"{worst.filename} unpacks {worst.file_size / max(1, worst.compress_size):,.0f}:1 to "
                              f"{worst.file_size / 1e6:,.0f} MB (a zip bomb? limit {MAX_ZIP_RATIO}:1)")


def _check_content(path: Path, suffix: str, max_unpacked: int | None = None) -> None:
    """The bytes must be what the extension claims: a renamed or truncated file is 'corrupt'."""
    with open(path, "rb") as f:
        head = f.read(1024)
    part = FORMATS[suffix].container_part
    if suffix == ".pdf":
        if b"%PDF-" not in head:
            raise ExtractionError(CORRUPT, "not a PDF (no %PDF header)")
    elif part:
        kind = suffix.lstrip(".").upper()
        if not zipfile.is_zipfile(path):
            if head.startswith(b"\xd0\xcf\x11\xe0"):
                raise ExtractionError(ENCRYPTED, "password-protected Office file (or legacy .doc format)")
            raise ExtractionError(CORRUPT, f"not a {kind} file (not a ZIP container)")
        with zipfile.ZipFile(path) as z:
            if part not in z.namelist():
                raise ExtractionError(CORRUPT, f"not a {kind} file (no {part})")
            _check_zip(z, kind, max_unpacked)
    elif b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ExtractionError(CORRUPT, "binary content in a text file")


def extract(path: Path, pdf_password: str | None = None, max_bytes: int | None = None,
            max_unpacked_bytes: int | None = None) -> Extracted:
    """Extract one file or raise ExtractionError(reason, detail)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ExtractionError(UNSUPPORTED, f"{suffix or 'no extension'} (supported: {', '.join(supported_suffixes())})")
    size = path.stat().st_size
    if size == 0:
        raise ExtractionError(EMPTY, "0 bytes")
    if max_bytes is not None and size > max_bytes:
        raise ExtractionError(TOO_LARGE, f"{size / 1e6:.1f} MB > limit {max_bytes / 1e6:.1f} MB")
    _check_content(path, suffix, max_unpacked_bytes)
    result = FORMATS[suffix].extract(path, pdf_password)
    if not result.blocks:
        raise ExtractionError(NO_TEXT, "no text found (a scanned PDF needs OCR)" if suffix == ".pdf" else "no text found")
    return result
