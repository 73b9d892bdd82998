"""PDF structure (issue 13): running headers/footers out of the text, sections cut at their headings
inside a page."""

from __future__ import annotations

import re

from ingest.extract import extract
from ingest.pdf_structure import outline_sections, strip_running_lines
from tests.conftest import SAMPLES


def test_running_headers_footers_and_page_numbers_are_removed_body_lines_are_not():
    bodies = ["Install it with apt.", "Remove it with apt purge.", "Pin a release.", "Upgrade safely.", "Read the logs."]
    pages = [f"Debian 新维护者手册 {n} / 57\n{body}\nThe same closing line\n{n}" for n, body in enumerate(bodies, 1)]
    pages[2] = "CHAPTER 3. PACKAGES 3.1 WHAT IS A PACKAGE\n" + pages[2]
    cleaned, removed = strip_running_lines(pages)
    assert cleaned[0] == "Install it with apt."  # header, page number and the repeated last line go
    assert removed == 5 * 3
    assert cleaned[2].startswith("CHAPTER 3.")  # one chapter header is not a running header...
    words = "apt dpkg aptitude synaptic tasksel debconf reportbug popcon".split()
    many = [f"CHAPTER {n}. TOPIC {n} SECTION TITLE {n * 7}\nUse {w} here.\nThen {w} again, on page {n}." for n, w in enumerate(words)]
    assert [p.split("\n")[0] for p in strip_running_lines(many)[0]] == [f"Use {w} here." for w in words]  # ...eight are
    lone = ["Only line 1", "Only line 2", "Only line 3"]
    assert strip_running_lines(lone)[0] == lone  # a page's only line is its content
    twice = ["Repeated opening\nAlpha", "Repeated opening\nBeta", "Other\nGamma"]
    assert strip_running_lines(twice)[0] == twice  # two pages are not a pattern


def test_a_section_starts_at_its_heading_inside_the_page():
    page = "end of the previous answer.\n2.3 Where can I get it?\nFrom the website.\n2.4 How do I install it?\nBoot it."
    marks = [(0, 0, "Getting Debian"), (0, 1, "Where can I get it?"), (0, 1, "How do I install it?")]
    (starts,) = outline_sections(marks, [page])
    assert [(page[a:a + 8], h) for a, h in starts] == [
        ("end of t", "Getting Debian"),
        ("2.3 Wher", "Getting Debian > Where can I get it?"),
        ("2.4 How ", "Getting Debian > How do I install it?")]


def test_sample_pdfs_keep_no_running_header_and_cut_sections_at_headings():
    faq = extract(SAMPLES / "debian-faq-en-chapters-1-2.pdf")
    guide = extract(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf")
    for doc in (faq, guide):
        for b in doc.blocks:
            assert "CHAPTER 1. DEFINITIONS" not in b.text and not re.search(r"新维护者手册 \d+ / 57", b.text)
            assert not any(line.strip().isdigit() for line in b.text.splitlines()[-1:]), b.text[-40:]
    # Section 1.3 starts in the middle of page 10: its heading opens a block with its own heading path,
    # and the block before it (section 1.2, same page) does not end with 1.3's title.
    on_10 = [b for b in faq.blocks if b.page == 10]
    i = next(i for i, b in enumerate(on_10) if b.text.startswith("1.3 OK, now I know what Debian is"))
    assert on_10[i].heading.endswith("OK, now I know what Debian is... what is Linux?!")
    assert on_10[i - 1].heading.endswith("What is Debian GNU/Linux?") and "1.3" not in on_10[i - 1].text[-200:]
    # the Chinese guide: section 1.3 starts mid-page 10, under its own heading
    assert any(b.page == 10 and b.text.startswith("1.3 需要的开发文档") and b.heading.endswith("需要的开发文档")
               for b in guide.blocks)


def test_numbered_headings_stand_in_for_a_missing_outline():
    from ingest.pdf_structure import numbered_marks

    pages = ["2.1 What is a package?\nA package is an archive.\n1. Download it.\n2. Install it.",
             "2.2 How do I pin a release?\nA 2.6 GHz machine is fine.\n2.3.1 Pin priorities\nUse 990.",
             "Contents\n2.4 Upgrades . . . . . . 17\n2.4 How do I upgrade?\nRun apt full-upgrade.\n3 Tools\n3.1 dpkg"]
    assert numbered_marks(pages) == [
        (0, 1, "What is a package?"), (1, 1, "How do I pin a release?"), (1, 2, "Pin priorities"),
        (2, 1, "How do I upgrade?"), (2, 0, "Tools"), (2, 1, "dpkg")]  # not the list, the GHz, the contents line
    assert numbered_marks(["1. Download it.\nNothing else."]) == []


def test_a_chapter_s_own_contents_list_is_not_taken_for_its_headings():
    """A printed web page (the Chinese FAQ through Chromium) opens each chapter with the list of its
    questions; they were taken for headings, so every answer fell under the last listed title."""
    from ingest.pdf_structure import numbered_marks

    page = ("第 1 章 定义和概览\n目录\n1.1. 本 FAQ 文档是什么？\n1.2. 什么是 Debian GNU/Linux？\n"
            "1.3. Debian GNU/Linux 与其他 Linux 发行版的区别是什么？为什么我应该选择 Debian，而不是\n其他发行版？\n"
            "1.4. Debian 一词如何发音？\n1.1. 本 FAQ 文档是什么？\n本文档提供了关于 Debian 的常见问题。\n"
            "1.2. 什么是 Debian GNU/Linux？\nDebian GNU/Linux 是一个发行版。")
    nxt = "1.3. Debian GNU/Linux 与其他 Linux 发行版的区别是什么？\n自由。\n1.4. Debian 一词如何发音？\n读作 Deb-ian。"
    assert numbered_marks([page, nxt]) == [
        (0, 1, "本 FAQ 文档是什么？"), (0, 1, "什么是 Debian GNU/Linux？"),
        (1, 1, "Debian GNU/Linux 与其他 Linux 发行版的区别是什么？"), (1, 1, "Debian 一词如何发音？")]
    # a number that comes again with another title is a numbered list, not a contents line
    steps = ["1 Introduction\nWhy.\n2 Installation\nHow:\n1 Open the settings page\n2 Click install now\n3 Configuration\nSet."]
    assert [t for _, _, t in numbered_marks(steps)] == ["Introduction", "Installation", "Configuration"]
    # a whole document that is a contents list (no section follows it) holds no headings either
    listing = "\n".join(f"{i}.{j}. Question {i}.{j}?" for i in (1, 2) for j in (1, 2, 3, 4))
    assert numbered_marks([listing]) == []


def test_radical_code_points_read_as_the_ideographs_they_stand_for():
    """Some PDF makers map glyphs to Kangxi radicals: "⽂档" looks like "文档" but matches no typed question."""
    from kb.text import unify_radicals

    assert unify_radicals("本 FAQ ⽂档是什么？发⾏版，⼀般") == "本 FAQ 文档是什么？发行版，一般"  # punctuation kept
    assert unify_radicals("Debian 新维护者手册 ½ ﬁ") == "Debian 新维护者手册 ½ ﬁ"  # nothing else is normalised


def test_a_pdf_without_outline_is_cut_at_its_numbered_headings(tmp_path):
    from tests.conftest import pdf_excerpt

    excerpt = pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", tmp_path / "no-outline.pdf", range(8, 12))
    blocks = extract(excerpt).blocks
    third = next(b for b in blocks if b.text.startswith("1.3 OK, now I know what Debian is"))
    assert third.page == 2 and third.heading == "OK, now I know what Debian is... what is Linux?!"
    before = blocks[blocks.index(third) - 1]
    assert before.page == 2 and before.heading == "What is Debian GNU/Linux?" and "1.3 OK" not in before.text


def test_body_text_that_merely_looks_like_a_header_or_a_page_number_stays():
    words = ("apt dpkg aptitude synaptic tasksel debconf reportbug popcon grub systemd udev cron ssh nftables "
             "lvm mdadm rsync sudo locales tzdata").split()
    bodies = [f"This page explains {w}.\n\nUse {w} with care." for w in words]
    pages = [f"Manual {n + 1}\n{b}\n{n + 1}" for n, b in enumerate(bodies)]  # header and page numbers go...
    pages[4] = pages[4].replace(f"Use {words[4]} with care.", "Total\n1250")  # ...a total at the bottom does not
    pages[5] = "xml\n" + pages[5]  # a word made of Roman-numeral letters
    for n in (7, 8, 9):  # three of twenty pages open alike: not a running header
        pages[n] = f"Question {n}\n" + pages[n]
    pages[10] = "2024"  # a page holding only a year
    cleaned, _ = strip_running_lines(pages)
    assert cleaned[0] == "This page explains apt.\n\nUse apt with care."  # the paragraph break is kept
    assert cleaned[4].endswith("Total\n1250") and cleaned[5].startswith("xml\n")
    assert all(cleaned[n].startswith(f"Question {n}\n") for n in (7, 8, 9))
    assert cleaned[10] == "2024"


def test_a_title_is_found_where_its_heading_line_stands_not_in_a_sentence_before_it():
    page = "Debian is great; see Installation below for details.\nMore about Debian.\nInstallation\nRun the installer."
    (starts,) = outline_sections([(0, 0, "Debian"), (0, 1, "Installation")], [page])
    assert [(page[a:a + 12], h) for a, h in starts] == [
        ("Debian is gr", "Debian"), ("Installation", "Debian > Installation")]
