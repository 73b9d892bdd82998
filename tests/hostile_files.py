"""Hostile files built on the spot (never committed): zip bombs, a sheet of a million rows, a PDF of
thousands of pages, a file over the size limit, awkward names. Used by tests/ingest/test_hostile.py at
CI size and by bench/hostile.py at full size."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>{overrides}</Types>')
_RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
         '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>')
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _docx_parts(z: zipfile.ZipFile) -> None:
    z.writestr("[Content_Types].xml", _CONTENT_TYPES.format(overrides=(
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'wordprocessingml.document.main+xml"/>')))
    z.writestr("_rels/.rels", _RELS.format(rels=f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="word/document.xml"/>'))


def docx_bomb(dst: Path, megabytes: int) -> Path:
    """A valid DOCX whose word/document.xml inflates to `megabytes` MB of paragraphs (~1000:1): the zip
    directory tells the truth, so it is refused before parsing."""
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        _docx_parts(z)
        with z.open("word/document.xml", "w", force_zip64=megabytes >= 2000) as part:
            part.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_W}"><w:body>'.encode())
            para = b"<w:p><w:r><w:t>bomb bomb bomb bomb bomb bomb bomb bomb bomb bomb</w:t></w:r></w:p>" * 1000
            for _ in range(megabytes * (1 << 20) // len(para)):
                part.write(para)
            part.write(b"</w:body></w:document>")
    return dst


def docx_lying_directory(dst: Path, megabytes: int) -> Path:
    """docx_bomb (under 2 GB) with its zip headers rewritten to claim word/document.xml unpacks to 1 KB:
    every check on the directory passes, and only the reader's own defences stop it."""
    docx_bomb(dst, megabytes)
    data = bytearray(dst.read_bytes())
    name = b"word/document.xml"
    # (signature, offset of the unpacked size, of the name's length, of the name): local header, central entry
    for signature, size_at, len_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        i = data.find(signature)
        while i != -1:
            name_len = int.from_bytes(data[i + len_at:i + len_at + 2], "little")
            if data[i + name_at:i + name_at + name_len] == name:
                data[i + size_at:i + size_at + 4] = (1024).to_bytes(4, "little")
            i = data.find(signature, i + 4)
    dst.write_bytes(bytes(data))
    return dst


def docx_large_but_plausible(dst: Path, megabytes: int) -> Path:
    """A DOCX of `megabytes` MB of varied text, compressed like a real document (a few : 1), so every
    check on the zip directory passes; parsing it takes far more memory than the file."""
    import random

    rng = random.Random(7)
    words = [f"w{rng.randrange(1 << 30):x}" for _ in range(50_000)]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        _docx_parts(z)
        with z.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_W}"><w:body>'.encode())
            written = 0
            while written < megabytes * (1 << 20):
                para = ("<w:p><w:r><w:t>" + " ".join(rng.choices(words, k=12)) + "</w:t></w:r></w:p>").encode()
                part.write(para)
                written += len(para)
            part.write(b"</w:body></w:document>")
    return dst


def xlsx_rows(dst: Path, rows: int) -> Path:
    """A real XLSX holding one sheet of `rows` rows (a header and two columns), written as XML directly:
    a million rows take seconds, not the minutes a spreadsheet library needs."""
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        sheet_type = "application/vnd.openxmlformats-officedocument.spreadsheetml"
        z.writestr("[Content_Types].xml", _CONTENT_TYPES.format(overrides=(
            f'<Override PartName="/xl/workbook.xml" ContentType="{sheet_type}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{sheet_type}.worksheet+xml"/>')))
        z.writestr("_rels/.rels", _RELS.format(rels=f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="xl/workbook.xml"/>'))
        z.writestr("xl/workbook.xml", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>'))
        z.writestr("xl/_rels/workbook.xml.rels", _RELS.format(rels=(
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'worksheet" Target="worksheets/sheet1.xml"/>')))
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            part.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                       b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                       + f'<dimension ref="A1:B{rows + 1}"/>'.encode()  # as Excel writes it (without one,
                       # openpyxl scans the whole sheet first: seconds, but bounded by the time limit)
                       + b'<sheetData>'
                       b'<row r="1"><c r="A1" t="inlineStr"><is><t>order</t></is></c>'
                       b'<c r="B1" t="inlineStr"><is><t>customer</t></is></c></row>')
            batch = []
            for r in range(2, rows + 2):
                batch.append(f'<row r="{r}"><c r="A{r}"><v>{r * 7919 % 1000003}</v></c>'
                             f'<c r="B{r}" t="inlineStr"><is><t>customer {r % 9973}</t></is></c></row>')
                if len(batch) == 10_000:
                    part.write("".join(batch).encode())
                    batch = []
            part.write(("".join(batch) + "</sheetData></worksheet>").encode())
    return dst


def pdf_pages(dst: Path, pages: int) -> Path:
    """A real PDF of `pages` pages, each with a line of text (pypdf writes it; content streams shared)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    font_ref = writer._add_object(font)
    for n in range(pages):
        page = writer.add_blank_page(612, 792)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td (Page {n + 1} of a very long report on apt pinning.) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})})
    with open(dst, "wb") as f:
        writer.write(f)
    return dst


def oversized_text(dst: Path, megabytes: int) -> Path:
    """A text file of `megabytes` MB (sparse after its first line: instant to make, refused on its size)."""
    with open(dst, "wb") as f:
        f.write(b"the start of a very large log file\n")
        f.truncate(megabytes * 1_000_000)
    return dst


def awkward_names(folder: Path, good: Path) -> list[Path]:
    """Copies of a good document under names that break naive code: a newline, '..', a path of 250 CJK
    characters (three folders deep: one name holds at most 255 bytes, 85 such characters); plus a
    symbolic-link loop beside them."""
    deep = folder / ("文" * 83) / ("档" * 83)
    deep.mkdir(parents=True)
    made = []
    for target in (folder / "line\nbreak.md", folder / "release..notes...md", deep / ("名" * 84 + ".md")):
        made.append(Path(shutil.copy(good, target)))
    os.symlink(folder / "loop-b", folder / "loop-a")
    os.symlink(folder / "loop-a", folder / "loop-b")
    return made
