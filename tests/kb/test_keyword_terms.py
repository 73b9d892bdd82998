"""kb's keyword terms: Chinese through jieba's dictionary (rjieba), English folded; the index text holds
exactly the terms a question is matched with."""

from collections import Counter

from kb.keyword_index import index_text, terms


def test_terms_for_chinese_and_english():
    got = terms("Debian 的软件包是如何维护的？apt-get packages 和 dpkg。the libraries 2.6.32")
    assert got == ["debian", "软件", "软件包", "维护", "apt-get", "package", "dpkg", "library", "2.6.32"]


def test_index_text_holds_the_same_terms():
    texts = ["Debian 的软件包是如何维护的？apt-get packages 和 dpkg。\n中华人民共和国 the libraries",
             "Plain English: the packages of Debian are maintained by volunteers.",
             "纯中文：软件包由志愿者维护。", ""]
    for text in texts:
        assert Counter(index_text(text).split()) == Counter(terms(text))
