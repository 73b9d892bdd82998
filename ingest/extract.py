"""Extraction: a file becomes text blocks that keep their provenance (page, heading path).

PDF through pypdf (pages, outline, encryption); XLSX row by row through openpyxl (streamed, with a
row limit); DOCX, PPTX, HTML, Markdown and text through unstructured, offline. Every failure is an ExtractionError with a short reason a person can act on.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ingest.pdf_structure import numbered_marks, outline_sections, strip_running_lines
from ingest.pdf_tables import TableBudgetSpent, tables_into_pages
from ingest.tables import html_table_lines, is_header, row_line
from kb.errors import ExtractionError
from kb.text import unify_radicals

ENCRYPTED = "encrypted"
CORRUPT = "corrupt"
EMPTY = "empty file"
NO_TEXT = "no extractable text"
UNSUPPORTED = "unsupported file type"
TOO_LARGE = "too large"  # also "too large when unpacked" (zip bombs, the worker's memory limit)
TIMED_OUT = "timed out"  # the worker's time limit (ingest/extraction_worker.py)
READER_STOPPED = "reader stopped"  # the worker died mid-file (a crash in C code, a kill from outside)
MAX_ZIP_RATIO = 200  # real OOXML parts compress 5-30:1; a zip bomb's, 1000:1 and more
MAX_ZIP_ENTRIES = 20_000


@dataclass(frozen=True)
class Limits:
    """What one file may cost before it is refused or cut (settings `ingest.*`)."""
    max_bytes: int | None = None  # the file itself
    max_unpacked_bytes: int | None = None  # the parts of a ZIP container, from its directory
    max_sheet_rows: int | None = None  # rows read per spreadsheet sheet; the rest is cut (and said so)
    ocr: bool = True  # PDF pages without a text layer are read by OCR (ingest/ocr.py)
    max_ocr_pages: int = 300  # per file


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
    ocr_pages: list[int] = field(default_factory=list)  # pages whose text was read by OCR (no text layer)


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


def _ocr_blank_pages(path: Path, password: str | None, texts: list[str], most: int) -> list[int]:
    """Read by OCR the pages with no text layer that hold an image (a scan), `most` of them at most;
    returns their numbers."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    from ingest.ocr import read_page

    done = []
    doc = pdfium.PdfDocument(str(path), password=password)
    try:
        for i, text in enumerate(texts):
            if text.strip():
                continue
            page = doc[i]
            if len(done) < most and any(o.type == pdfium_c.FPDF_PAGEOBJ_IMAGE for o in page.get_objects(max_depth=2)):
                texts[i] = read_page(page)
                done.append(i + 1)
    finally:
        doc.close()
    return done


def _outline_marks(reader) -> list[tuple[int, int, str]]:  # noqa: ANN001 - a pypdf PdfReader
    """The outline (bookmarks) as (page index, depth, title), in outline order."""
    marks: list[tuple[int, int, str]] = []

    def walk(items, depth: int) -> None:  # noqa: ANN001
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
        return []
    return marks


def extract_pdf(path: Path, password: str | None = None, limits: Limits = Limits()) -> Extracted:
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
    scanned: list[int] = []
    if limits.ocr and any(not t.strip() for t in texts):
        if scanned := _ocr_blank_pages(path, used_password or None, texts, limits.max_ocr_pages):
            warnings.append(f"OCR read {len(scanned)} page(s) without a text layer: {scanned[:20]}")
            if len(scanned) == limits.max_ocr_pages:
                warnings.append(f"OCR stopped at {limits.max_ocr_pages} pages (KB_INGEST__MAX_OCR_PAGES)")
    try:
        if tabled := tables_into_pages(path, used_password or None, texts):
            warnings.append(f"{tabled} page(s) with tables read as rows")
    except TableBudgetSpent as exc:
        warnings.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - pdfplumber on a broken file: keep pypdf's text of those pages
        warnings.append(f"tables not read ({type(exc).__name__}: {exc})")
    texts = [unify_radicals(t) for t in texts]  # "⽂档" -> "文档": radicals some PDF makers map glyphs to
    texts, removed = strip_running_lines(texts)
    if removed:
        warnings.append(f"{removed} running header/footer lines removed")
    blocks = []
    marks = _outline_marks(reader) or numbered_marks(texts)
    for page, (text, starts) in enumerate(zip(texts, outline_sections(marks, texts), strict=True), 1):
        for (at, heading), (end, _) in zip(starts, [*starts[1:], (len(text), None)], strict=True):
            if part := text[at:end].strip():
                blocks.append(Block(part, page, heading))
    return Extracted(blocks, "application/pdf", n_pages, warnings, scanned)


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
    covered: bool = False  # some block already carries it in its heading path


def _heading_path(headings: list[_OpenHeading]) -> str | None:
    return " > ".join(h.text for h in headings) or None


def _elements_to_blocks(elements, kind: str) -> tuple[list[Block], int | None]:
    """Elements become blocks under the heading path in force; a heading is also searchable text.

    unstructured labels short lines as Title (a deck of short lines is all "headings"). A heading with
    body text below it is searchable through the heading path its chunks are embedded with; one that
    gets no block before it is closed (next heading at its depth or above, end of its slide,
    end of document) becomes a block itself, under its parent's path, on the page where it appeared.
    """
    blocks: list[Block] = []
    stack: list[_OpenHeading] = []
    max_page = None
    per_unit = kind == "pptx"  # a page is a slide: its headings end with it

    def add(text: str, page: int | None, under: list[_OpenHeading]) -> None:
        for h in under:
            h.covered = True
        blocks.append(Block(text, page, _heading_path(under)))

    def close_from(i: int) -> None:
        """Close stack[i:], innermost first; a heading no block carries becomes a block."""
        while len(stack) > i:
            top = stack.pop()
            if not top.covered:
                add(top.text, top.page, stack)

    for el in elements:
        text = (el.text or "").strip()
        if not text:
            continue
        md = el.metadata
        page = getattr(md, "page_number", None)
        if page is not None:
            max_page = max(max_page or 0, page)
        if per_unit and stack and page != stack[-1].page:
            close_from(0)  # a new slide; on a DOCX page break the section simply runs on
        if el.category == "Title" and md.category_depth is not None:  # a real heading (h1-h6, Word style)
            depth = md.category_depth
            close_from(next((i for i, h in enumerate(stack) if h.depth >= depth), len(stack)))
            stack.append(_OpenHeading(depth, text, page))
            continue
        if el.category == "Table" and getattr(md, "text_as_html", None):  # rows, not loose words
            text = "\n".join(html_table_lines(md.text_as_html)) or text
        add(text, page, stack)
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
    extract: Callable[[Path, str | None, Limits], Extracted]  # (path, PDF password, limits) -> Extracted
    container_part: str | None = None
    load: Callable[[], object] | None = None  # imports its parser (seconds for unstructured), not timed per file


def _unstructured(kind: str, mime: str) -> Callable[[Path, str | None, Limits], Extracted]:
    def extract_with_unstructured(path: Path, password: str | None, limits: Limits) -> Extracted:
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
    return Format(mime, _unstructured(kind, mime), container_part, lambda: _load_unstructured(kind))


@lru_cache(maxsize=None)  # once per worker and kind: it is called before every file
def _load_unstructured(kind: str) -> None:
    partition = _partition(kind)
    if kind in ("md", "html", "text"):  # the first call imports more (~1 s for Markdown)
        partition(text="<p>kb</p>" if kind == "html" else "kb")


# -- spreadsheets -----------------------------------------------------------------------------------

def _cell(value) -> str:  # noqa: ANN001 - whatever a cell holds
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return " ".join(str(value).split())


def extract_xlsx(path: Path, password: str | None = None, limits: Limits = Limits()) -> Extracted:
    """Each sheet row becomes one line (ingest/tables.py), "column: value | column: value" under a
    header row (a first row of text cells), else "value | value". Read as a stream (openpyxl read-only): a sheet of a million
    rows costs no more memory than a short one, and reading stops at `max_sheet_rows` per sheet, the cut
    said in the warnings. (unstructured reads a whole sheet into pandas first, with no way to stop.)"""
    from openpyxl import load_workbook

    try:
        wb = load_workbook(str(path), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types on hostile input
        raise ExtractionError(CORRUPT, f"not a readable XLSX ({type(exc).__name__}: {exc})") from exc
    blocks: list[Block] = []
    warnings: list[str] = []
    try:
        for number, ws in enumerate(wb.worksheets, 1):
            header: list[str] | None = None
            read = scanned = 0
            ws.reset_dimensions()  # rows as stored: a declared A1:XFD1048576 must not pad every row to 16k cells
            for row in ws.iter_rows(values_only=True):
                scanned += 1
                if limits.max_sheet_rows is not None and scanned > 10 * limits.max_sheet_rows:
                    warnings.append(f"sheet {ws.title!r} cut after {scanned - 1:,} rows, most of them empty")
                    break
                if all(v is None for v in row):
                    continue
                cells = [_cell(v) for v in row]
                if not any(cells):
                    continue
                if limits.max_sheet_rows is not None and read >= limits.max_sheet_rows:
                    warnings.append(f"sheet {ws.title!r} cut after {read:,} rows (limit {limits.max_sheet_rows:,}: "
                                    "KB_INGEST__MAX_SHEET_ROWS)")
                    break
                read += 1
                if read == 1 and is_header(cells) and all(isinstance(v, str) for v in row if v is not None):
                    header = cells
                    continue
                blocks.append(Block(row_line(cells, header), number, ws.title))
            if header and read == 1:  # a sheet holding only its header row
                blocks.append(Block(row_line(header, None), number, ws.title))
        return Extracted(blocks, FORMATS[".xlsx"].mime, len(wb.worksheets), warnings)
    except ExtractionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExtractionError(CORRUPT, f"not a readable XLSX ({type(exc).__name__}: {exc})") from exc
    finally:
        wb.close()


_OOXML = "application/vnd.openxmlformats-officedocument."
# Every supported suffix: adding a format is one entry here (the web page's file types follow).
FORMATS: dict[str, Format] = {
    ".pdf": Format("application/pdf", extract_pdf),
    ".docx": _read_by_unstructured("docx", _OOXML + "wordprocessingml.document", "word/document.xml"),
    ".pptx": _read_by_unstructured("pptx", _OOXML + "presentationml.presentation", "ppt/presentation.xml"),
    ".xlsx": Format(_OOXML + "spreadsheetml.sheet", extract_xlsx, "xl/workbook.xml"),
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
    the compression ratio of each part, the number of parts. (The directory can lie: the extraction
    worker's time and memory limits are the next guard.)"""
    infos = z.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ExtractionError(TOO_LARGE + " when unpacked", f"{len(infos):,} parts in the {kind} (limit {MAX_ZIP_ENTRIES:,})")
    total = sum(i.file_size for i in infos)
    if max_unpacked is not None and total > max_unpacked:
        raise ExtractionError(TOO_LARGE + " when unpacked",
                              f"{total / 1e6:,.0f} MB unpacked > limit {max_unpacked / 1e6:,.0f} MB",
                              ("max_unpacked_mb", max_unpacked / 1e6))
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


def load_reader(path: Path) -> None:
    """Import the parser a file needs: the extraction worker does this before its clock starts."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is not None and fmt.load is not None:
        fmt.load()


def extract(path: Path, pdf_password: str | None = None, limits: Limits = Limits()) -> Extracted:
    """Extract one file in this process or raise ExtractionError(reason, detail). Untrusted files go
    through ingest/extraction_worker.py, which runs this under a time and a memory limit."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ExtractionError(UNSUPPORTED, f"{suffix or 'no extension'} (supported: {', '.join(supported_suffixes())})")
    size = path.stat().st_size
    if size == 0:
        raise ExtractionError(EMPTY, "0 bytes")
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise ExtractionError(TOO_LARGE, f"{size / 1e6:.1f} MB > limit {limits.max_bytes / 1e6:.1f} MB",
                              ("max_file_mb", limits.max_bytes / 1e6))
    _check_content(path, suffix, limits.max_unpacked_bytes)
    result = FORMATS[suffix].extract(path, pdf_password, limits)
    if not result.blocks:
        raise ExtractionError(NO_TEXT, "no text found (OCR is off: KB_INGEST__OCR)" if suffix == ".pdf" and not limits.ocr
                              else "no text found")
    return result
