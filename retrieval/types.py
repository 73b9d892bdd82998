"""What retrieval hands to answers, the CLI and the UI: ranked contexts and the retrieval around them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Context:
    chunk_id: int
    score: float  # the final ranking score (fused, or reranker's)
    text: str
    page: int | None
    heading: str | None
    source: str  # document path
    document_id: int
    signals: dict[str, float] = field(default_factory=dict)  # fused, dense cosine, bm25, english cosine, rerank
    ocr: bool = False  # read by OCR from a scanned page: may hold misread characters

    def to_dict(self) -> dict:
        """The one JSON shape of a context (CLI, API, batch search)."""
        return {"document": self.source.rsplit("/", 1)[-1], "path": self.source, "page": self.page,
                "heading": self.heading, "score": round(self.score, 5), "chunk_id": self.chunk_id,
                "text": self.text, "ocr": self.ocr}


@dataclass
class Retrieval:
    question: str
    contexts: list[Context]
    relevant: bool  # False: nothing in the collection passed the relevance floor
    timings: dict[str, float]  # seconds per stage
    notes: list[str] = field(default_factory=list)  # what limited this search (a part left out, and why)
    orphans: int = 0  # candidates left out because the catalogue has no row for them (an index ahead)
    standalone: str | None = None  # what was searched for a follow-up, when not the question itself
