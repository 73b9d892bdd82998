"""Extraction per format keeps provenance; bad files fail with a clear reason."""

from pathlib import Path

import pytest

from ingest.extract import CORRUPT, EMPTY, ENCRYPTED, UNSUPPORTED, Limits, extract
from kb.errors import ExtractionError
from tests.conftest import SAMPLES, pdf_excerpt, ruled_table_pdf


def test_pdf_keeps_physical_page_numbers_and_outline_headings(docs):
    ex = extract(docs["pdf"])
    assert ex.pages == 3
    assert sorted({b.page for b in ex.blocks}) == [1, 2, 3]  # pages 9-11 of the original, renumbered
    first_page = "\n".join(b.text for b in ex.blocks if b.page == 1)
    assert "Debian" in first_page
    assert " the " in first_page  # words keep their spaces (pypdf alone glues them on this PDF)


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


# -- short lines and empty headings: unstructured labels them Title, their text must stay searchable --

def _searchable(ex) -> list[str]:
    """What each chunk is embedded and keyword-indexed with: heading path + "\\n" + text."""
    return [f"{b.heading}\n{b.text}" if b.heading else b.text for b in ex.blocks]


def _text_box(slide, lines: list[str]) -> None:
    from pptx.util import Inches

    frame = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(3)).text_frame
    frame.text = lines[0]
    for line in lines[1:]:
        frame.add_paragraph().text = line


def test_pptx_deck_of_short_lines_keeps_all_its_text(tmp_path: Path):
    from pptx import Presentation

    prs = Presentation()
    first = prs.slides.add_slide(prs.slide_layouts[5])  # title only, plus a text box
    first.shapes.title.text = "Project Falcon"
    _text_box(first, ["Owner: Alice Martin", "Deadline 30 June"])
    second = prs.slides.add_slide(prs.slide_layouts[6])  # blank: a text box of short lines, no title
    _text_box(second, ["Risk: supplier delay", "Mitigation plan B", "Budget 40k"])
    path = tmp_path / "falcon.pptx"
    prs.save(str(path))

    ex = extract(path)  # was ExtractionError("no extractable text"): every line came out as a Title
    assert ex.pages == 2
    by_text = {b.text: b for b in ex.blocks}
    for line in ["Owner: Alice Martin", "Deadline 30 June"]:
        assert (by_text[line].page, by_text[line].heading) == (1, "Project Falcon")
    for line in ["Risk: supplier delay", "Mitigation plan B", "Budget 40k"]:
        assert by_text[line].page == 2
        assert by_text[line].heading is None  # slide 1's title does not run on into slide 2
    assert any("Project Falcon" in s and "Alice Martin" in s for s in _searchable(ex))
    assert "Project Falcon" not in by_text  # its lines carry it in their heading path: no duplicate


def test_pptx_title_only_slide_keeps_its_title_on_its_slide(tmp_path: Path):
    from pptx import Presentation

    prs = Presentation()
    for title, body in [("Packages", "A Debian package is an archive with a control file."),
                        ("Questions", None),
                        ("Upgrades", "Use apt full-upgrade to move to a new stable release.")]:
        slide = prs.slides.add_slide(prs.slide_layouts[1] if body else prs.slide_layouts[5])
        slide.shapes.title.text = title
        if body:
            slide.placeholders[1].text = body
    path = tmp_path / "deck.pptx"
    prs.save(str(path))

    ex = extract(path)
    questions = [b for b in ex.blocks if "Questions" in b.text]
    assert [(b.text, b.page, b.heading) for b in questions] == [("Questions", 2, None)]
    upgrade = next(b for b in ex.blocks if "full-upgrade" in b.text)
    assert (upgrade.page, upgrade.heading) == (3, "Upgrades")
    assert not any(b.text in ("Packages", "Upgrades") for b in ex.blocks)  # titles with a body: not repeated


def _assert_empty_headings_kept(ex) -> None:
    rollback = next(b for b in ex.blocks if "previous release" in b.text)
    assert rollback.heading == "Deployment > Rollback"  # heading then subheading: both in the path
    monitoring = [b for b in ex.blocks if "Monitoring" in b.text]
    assert [(b.text, b.heading) for b in monitoring] == [("Monitoring", "Deployment")]  # not "...> Monitoring"
    appendix = [b for b in ex.blocks if "Appendix" in b.text]
    assert [(b.text, b.heading) for b in appendix] == [("Appendix", None)]  # last line of the document
    costs = next(b for b in ex.blocks if "per month" in b.text)
    assert costs.heading == "Costs"
    assert not any(b.text in ("Deployment", "Rollback", "Costs") for b in ex.blocks)  # no "X\nX" duplicates
    searchable = _searchable(ex)
    assert any("Monitoring" in s for s in searchable) and any("Deployment" in s for s in searchable)


def test_docx_consecutive_and_empty_headings(tmp_path: Path):
    import docx

    d = docx.Document()
    d.add_heading("Deployment", level=1)
    d.add_heading("Rollback", level=2)
    d.add_paragraph("Roll back by reinstalling the previous release from the archive.")
    d.add_heading("Monitoring", level=2)
    d.add_heading("Costs", level=1)
    d.add_paragraph("Hosting costs about forty euros per month for the whole team.")
    d.add_heading("Appendix", level=1)
    path = tmp_path / "ops.docx"
    d.save(str(path))
    _assert_empty_headings_kept(extract(path))


def test_markdown_consecutive_and_empty_headings(tmp_path: Path):
    path = tmp_path / "ops.md"
    path.write_text(
        "# Deployment\n\n## Rollback\n\nRoll back by reinstalling the previous release from the archive.\n\n"
        "## Monitoring\n\n# Costs\n\nHosting costs about forty euros per month for the whole team.\n\n# Appendix\n",
        encoding="utf-8")
    _assert_empty_headings_kept(extract(path))


def _docx_bomb(tmp_path: Path) -> Path:
    """A valid DOCX carrying one extra part of 60 MB of zeros (about 60 KB compressed, ~1000:1)."""
    import shutil
    import zipfile

    from tests.conftest import make_docx

    bomb = tmp_path / "bomb.docx"
    shutil.copy(make_docx(tmp_path / "good.docx"), bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("word/media/filler.bin", "w") as part:
            chunk = bytes(1 << 20)
            for _ in range(60):
                part.write(chunk)
    return bomb


def test_zip_bombs_are_refused_from_the_zip_directory_before_parsing(tmp_path, settings):
    from kb.knowledge_base import KnowledgeBase

    bomb = _docx_bomb(tmp_path)
    with pytest.raises(ExtractionError, match=r"too large when unpacked: word/media/filler.bin unpacks [\d,]+:1"):
        extract(bomb)
    good = tmp_path / "good.docx"
    assert extract(good, limits=Limits(max_unpacked_bytes=10_000_000)).blocks  # a real document passes
    with pytest.raises(ExtractionError, match=r"too large when unpacked: .* MB unpacked > limit 0 MB"):
        extract(good, limits=Limits(max_unpacked_bytes=1000))
    folder = tmp_path / "batch"
    folder.mkdir()
    bomb.rename(folder / "bomb.docx")
    (folder / "note.md").write_text("# Note\n\nThe batch goes on after a zip bomb.\n", encoding="utf-8")
    report = KnowledgeBase(settings=settings).sync([folder])
    assert [Path(p).name for p in report.added] == ["note.md"]
    assert [(Path(p).name, r.split(":")[0]) for p, r in report.failed] == [("bomb.docx", "too large when unpacked")]


def test_tables_become_one_line_per_row_under_their_heading(tmp_path: Path):
    import docx

    d = docx.Document()
    d.add_heading("Releases", level=1)
    table = d.add_table(rows=3, cols=2)
    for r, (name, version) in enumerate([("codename", "version"), ("bookworm", "12"), ("trixie", "13")]):
        table.cell(r, 0).text, table.cell(r, 1).text = name, version
    d.save(str(tmp_path / "releases.docx"))
    (tmp_path / "releases.html").write_text(
        "<h1>Releases</h1><table><tr><th>codename</th><th>version</th></tr><tr><td>bookworm</td><td>12</td></tr>"
        "<tr><td>trixie</td><td>13</td></tr></table><h1>Numbers</h1><table><tr><td>1</td><td>2</td></tr></table>",
        encoding="utf-8")
    for name in ("releases.docx", "releases.html"):
        rows = next(b for b in extract(tmp_path / name).blocks if "bookworm" in b.text)
        assert rows.text == "codename: bookworm | version: 12\ncodename: trixie | version: 13", name
        assert rows.heading == "Releases"
    numbers = next(b for b in extract(tmp_path / "releases.html").blocks if b.heading == "Numbers")
    assert numbers.text == "1 | 2"  # no header row: values only


def test_pdf_tables_become_rows_where_they_stood_and_framed_text_stays_text(tmp_path: Path):
    pdf = ruled_table_pdf(tmp_path / "travel.pdf", ["Travel policy", "Hotel limits per night depend on the city."],
                          [["City", "Hotel limit", "Approver"], ["Berlin", "140 EUR", "Team lead"],
                           ["Shanghai", "900 CNY", "Office manager"]], ["Receipts are kept for ten years."])
    doc = extract(pdf)
    assert "".join(b.text for b in doc.blocks) == (
        "Travel policy\nHotel limits per night depend on the city.\n\n"
        "City: Berlin | Hotel limit: 140 EUR | Approver: Team lead\n"
        "City: Shanghai | Hotel limit: 900 CNY | Approver: Office manager\n\n"
        "Receipts are kept for ten years.")
    # text beside the table whose first letter touches the table's rule keeps that letter
    pdf = ruled_table_pdf(tmp_path / "aside.pdf", ["Travel policy"], [["City", "Hotel limit"], ["Berlin", "140 EUR"]],
                          ["Done."], aside="Note: limits include breakfast.")
    text = "".join(b.text for b in extract(pdf).blocks)
    assert "City: Berlin | Hotel limit: 140 EUR" in text and "Note: limits include breakfast." in text, text
    # a one-column box (a framed code listing) is no table: its lines stay as they were
    boxed = ruled_table_pdf(tmp_path / "boxed.pdf", ["Run this:"], [["apt-get update"], ["apt-get upgrade"]], ["Done."])
    assert "".join(b.text for b in extract(boxed).blocks) == "Run this:\napt-get update\napt-get upgrade\nDone."


@pytest.mark.parametrize("style", ["boxes", "one path"])
def test_a_pdf_table_drawn_as_cell_boxes_becomes_rows_and_stacked_boxes_stay_text(tmp_path: Path, style: str):
    """Browsers print bordered cells as one box each (no thin rules, cells side by side); some makers
    draw the whole grid as one path."""
    pdf = ruled_table_pdf(tmp_path / "boxes.pdf", ["Travel policy"], [["City", "Hotel limit"], ["Berlin", "140 EUR"],
                                                                     ["Shanghai", "900 CNY"]], ["Done."], style=style)
    assert "".join(b.text for b in extract(pdf).blocks) == (
        "Travel policy\n\nCity: Berlin | Hotel limit: 140 EUR\nCity: Shanghai | Hotel limit: 900 CNY\n\nDone.")
    # a listing framed line by line (boxes in one column, as LaTeX draws them) is not even looked at
    from ingest.pdf_tables import ruled_pages

    listing = ruled_table_pdf(tmp_path / "listing.pdf", ["Run this:"], [["apt-get update"], ["apt-get upgrade"]],
                              ["Done."], style="boxes")
    assert ruled_pages(listing, None, ["Run this: apt-get update"], float("inf")) == []
    assert ruled_pages(pdf, None, ["Travel policy"], float("inf")) == [0]
    long_table = ruled_table_pdf(tmp_path / "long.pdf", ["Rooms"], [["Room", "Floor", "Seats"]] +
                                 [[f"R{i}", str(i % 5), str(10 + i)] for i in range(30)], [], style=style)
    assert ruled_pages(long_table, None, ["Rooms"], float("inf")) == [0]  # 30 rows: ~100 segments in one path


def test_pdf_tables_side_by_side_are_each_read_once_and_a_spent_budget_keeps_the_text(tmp_path: Path):
    from ingest.pdf_tables import TableBudgetSpent, tables_into_pages

    pdf = ruled_table_pdf(tmp_path / "prices.pdf", ["Prices"], [["Fruit", "Price"], ["Apple", "1"], ["Pear", "2"]],
                          ["End."], beside=[["Drink", "Price"], ["Tea", "3"], ["Milk", "4"], ["Juice", "5"]])
    text = "".join(b.text for b in extract(pdf).blocks)
    assert text == ("Prices\n\nFruit: Apple | Price: 1\nFruit: Pear | Price: 2\n\n"
                    "Drink: Tea | Price: 3\nDrink: Milk | Price: 4\nDrink: Juice | Price: 5\n\nEnd."), text
    texts = ["Prices Fruit Price Apple 1"]
    with pytest.raises(TableBudgetSpent):  # out of time: the page keeps the text it had
        tables_into_pages(pdf, None, texts, budget_s=-1)
    assert texts == ["Prices Fruit Price Apple 1"]


def test_a_real_pdf_table_keeps_its_title_and_names_its_columns():
    """The Chinese guide's collaborators table: a title row, a header row, a merged cell over five rows."""
    page = next(b.text for b in extract(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf").blocks if b.page == 3)
    lines = page.splitlines()
    assert "TITLE : Debian 新维护者手册" in lines  # the title row is the table's caption, not its header
    assert any(ln.startswith("ACTION: WRITTEN BY | NAME: Josip Rodin") and "DATE: October 8, 2022" in ln for ln in lines)
