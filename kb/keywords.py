"""Keyword terms for the BM25 index: jieba words for Chinese, lower-cased word tokens for English.

Shared by ingestion (which writes postings) and retrieval (which tokenises questions), so both
always split text the same way. `TOKENIZER_ID` goes into the index manifest: changing the rules
makes old postings stale, and the manifest check then says "run `kb reindex --full`".
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from functools import cache

TOKENIZER_ID = "jieba-search+en-words-v1"

# Runs of CJK ideographs, or ASCII words with inner dots/dashes/apostrophes (apt-get, 2.6.32, don't).
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9_]+(?:[.\-'][a-z0-9_]+)*")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Words so common they only add noise to BM25 (small on purpose: recall matters more than size).
STOP_EN = frozenset(
    "a an and are as at be by can do does for from how i if in is it its of on or that the this to was what "
    "when where which who why will with you your my me we our not no".split()
)
STOP_ZH = frozenset("的 了 是 在 和 与 或 及 吗 呢 吧 啊 么 什么 怎么 怎样 如何 哪些 哪个 为什么 是否 一个 我 你 他 她 它 我们 您 这 那 有 也 就 都 把 被 让 给 中 上 下".split())


@cache
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it prints its dictionary loading to stderr otherwise
    jieba.initialize()
    return jieba


def _stem(word: str) -> str:
    """A light English plural/verb-ending fold (packages -> package), enough for BM25 matching."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The keyword terms of a text, in order (repeats kept: term frequency matters)."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if _CJK.match(tok):
            out += [w for w in _jieba().lcut_for_search(tok) if w not in STOP_ZH]
        elif tok not in STOP_EN:
            out.append(_stem(tok))
    return out


def term_counts(text: str) -> Counter[str]:
    return Counter(terms(text))
