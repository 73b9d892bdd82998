"""kb's keyword terms: Chinese through jieba's dictionary (rjieba), English folded; the index text holds
exactly the terms a question is matched with; and the index is refilled from the catalogue's text (on SQLite
and PostgreSQL)."""

import shutil
from collections import Counter

import pytest

from kb.keyword_index import KeywordIndex, index_text, terms
from kb.knowledge_base import KnowledgeBase


def test_terms_for_chinese_and_english():
    got = terms("Debian 的软件包是如何维护的？apt-get packages 和 dpkg。the libraries 2.6.32")
    assert got == ["debian", "软件", "软件包", "维护", "apt-get", "package", "dpkg", "library", "2.6.32"]


def test_index_text_holds_the_same_terms():
    texts = ["Debian 的软件包是如何维护的？apt-get packages 和 dpkg。\n中华人民共和国 the libraries",
             "Plain English: the packages of Debian are maintained by volunteers.",
             "纯中文：软件包由志愿者维护。", ""]
    for text in texts:
        assert Counter(index_text(text).split()) == Counter(terms(text))


@pytest.mark.usefixtures("catalogue_backend")
def test_keyword_index_is_refilled_from_the_catalogue_text(settings, tmp_path):
    """The keyword index is a copy of the catalogue's stored text: lost, it comes back from the catalogue
    (on SQLite and PostgreSQL alike) with the same terms, Chinese included, and nothing is re-embedded."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zh.txt").write_text("Debian 的软件包是如何维护的？软件包由志愿者维护。\n\nError XQZ4471 means the pump is blocked.\n")
    (docs / "en.md").write_text("# Pasta\n\nBoil the pasta for ten minutes in salted water, then drain it.\n")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    folder = settings.home / "collections" / settings.collection / "keywords"
    ids = kb.catalogue.chunk_ids(settings.collection)
    before = {q: KeywordIndex.for_reading(folder).search(q, 5).ranking for q in ("软件包 维护", "XQZ4471", "pasta")}
    assert ids and all(before.values())
    assert KeywordIndex.for_reading(folder).ids() == ids

    shutil.rmtree(folder)
    r = kb.sync([docs])
    assert r.repaired["keyword_entries_repaired"] == len(ids) and r.embedded == 0 and len(r.unchanged) == 2
    again = KeywordIndex.for_reading(folder)
    assert again.ids() == ids
    assert {q: again.search(q, 5).ranking for q in before} == before
