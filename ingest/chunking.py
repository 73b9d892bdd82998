"""Chunking: sections (same page, same heading) split into pieces sized in the embedder's own tokens.

A chunk never crosses a page (its citation keeps one page) and, with its heading line, never exceeds
the model window (text past it would be silently dropped). Separators know Chinese sentence ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import groupby

from ingest.extract import Extracted
from kb.embeddings import Embedder
from kb.settings import ChunkingSettings
from kb.vector_index import embedded_text

# Paragraphs, lines, then sentence ends (Chinese full-width and English), then clauses, words, chars.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "! ", "? ", "; ", "，", "、", ", ", " ", ""]
HEADING_SHARE = 4  # a heading may take at most 1/4 of the window
SAFETY_TOKENS = 4  # joining heading and text can tokenise a little differently


@dataclass
class ChunkDraft:
    text: str
    page: int | None
    heading: str | None
    char_start: int  # offsets in the document text: sections joined by "\n\n"
    char_end: int
    token_count: int  # tokens of embed_text, the exact text given to the model
    ocr: bool = False  # its page had no text layer: the text was read by OCR, and may hold misread characters

    @property
    def embed_text(self) -> str:
        return embedded_text(self.heading, self.text)


def chunker_identity(cfg: ChunkingSettings) -> dict:
    """What the manifest records about chunking: changing it invalidates the index."""
    return {"chunk_tokens": cfg.chunk_tokens, "overlap_tokens": cfg.overlap_tokens, "separators": "zh-en-v1", "skips": "toc-v1"}


_TOC_LINE = re.compile(r"(?:\.\s*){4,}\s*[\dIVXivx]+\s*$|…{2,}\s*\d+\s*$")


def is_table_of_contents(text: str) -> bool:
    """Mostly "Title . . . . . 23" lines: a contents page. It matches every question's words yet
    answers none, and citing it sends the reader to the wrong page, so it is not indexed."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    toc = sum(bool(_TOC_LINE.search(ln)) for ln in lines)  # entries may wrap onto dot-less lines
    return toc >= 2 and toc >= 0.3 * len(lines)


def _fit_heading(heading: str | None, embedder: Embedder) -> str | None:
    if not heading:
        return None
    limit = embedder.max_tokens // HEADING_SHARE
    while embedder.count_tokens(heading) > limit and " > " in heading:
        heading = heading.split(" > ", 1)[1]  # keep the most specific levels
    while embedder.count_tokens(heading) > limit:
        heading = heading[: int(len(heading) * 0.8)]
    return heading


def chunk_document(doc: Extracted, embedder: Embedder, cfg: ChunkingSettings) -> list[ChunkDraft]:
    # Imported here: it brings langchain_core (~1 s), which a `kb` command that only reads never needs.
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    chunks: list[ChunkDraft] = []
    offset = 0
    splitters: dict[int, RecursiveCharacterTextSplitter] = {}  # by token budget
    ocr_pages = set(doc.ocr_pages)
    for (page, heading), group in groupby(doc.blocks, key=lambda b: (b.page, b.heading)):
        section = "\n".join(b.text for b in group)
        fitted = _fit_heading(heading, embedder)
        heading_tokens = embedder.count_tokens(fitted) + 1 if fitted else 0
        budget = max(16, min(cfg.chunk_tokens, embedder.max_tokens - heading_tokens - SAFETY_TOKENS))
        if budget not in splitters:
            splitters[budget] = RecursiveCharacterTextSplitter(
                separators=SEPARATORS,
                keep_separator="end",  # a sentence keeps its own full stop
                chunk_size=budget,
                chunk_overlap=min(cfg.overlap_tokens, budget // 4),
                length_function=embedder.count_tokens,
                strip_whitespace=True,
            )
        cursor = 0
        for piece in splitters[budget].split_text(section):
            start = section.find(piece, cursor)
            if start < 0:  # cannot happen with strip-only splitting; keep offsets sane anyway
                start = cursor
            cursor = start + 1
            if is_table_of_contents(piece):
                continue
            draft = ChunkDraft(piece, page, fitted, offset + start, offset + start + len(piece), 0, page in ocr_pages)
            draft.token_count = embedder.count_tokens(draft.embed_text)
            chunks.append(draft)
        offset += len(section) + 2
    return chunks
