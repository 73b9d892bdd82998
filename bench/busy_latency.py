"""Question latency while a 40-page PDF is being indexed in the same process, against idle (issue 24).

    python bench/busy_latency.py [--questions 40] [--label now] [--out bench/results/busy_latency.json]

A web page or `kb serve` embeds questions and an upload's passages with one loaded model. Here the
bundled e5 answers `--questions` questions of debian_faq_en over sample_docs/'s small files, first
idle, then over and over while another collection indexes a 40-page PDF (the two sample PDFs and two
FAQ pages printed by Chromium: new text, so every passage is embedded). Uses only the KnowledgeBase
API, so the same script measures an older checkout (`--label before`). Prints p50/p95/max in ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pypdf import PdfWriter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_sets import _print_to_pdf  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import Settings  # noqa: E402


def forty_pages(out: Path, eval_dir: Path) -> int:
    writer = PdfWriter()
    for pdf in sorted((ROOT / "sample_docs").glob("*.pdf")):
        writer.append(str(pdf))
    for page in ("pkgtools.en.html", "customizing.en.html", "kernel.en.html"):
        printed = out.parent.parent / (page + ".pdf")  # beside the upload folder, not in it
        _print_to_pdf(eval_dir / "debian_faq_en" / "corpus" / page, printed)
        writer.append(str(printed))
        if len(writer.pages) >= 40:
            break
    while len(writer.pages) > 40:
        writer.remove_page(len(writer.pages) - 1)
    writer.write(str(out))
    return len(writer.pages)


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(max(ms), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--label", default="now")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "busy_latency.json")
    args = ap.parse_args()
    qa = [json.loads(line) for line in (args.eval_dir / "debian_faq_en" / "qa.jsonl").read_text().splitlines()]
    questions = [q["question"] for q in qa[: args.questions]]
    with tempfile.TemporaryDirectory(prefix="kb-busy-") as tmp:
        work = Path(tmp)
        docs = work / "docs"
        docs.mkdir()
        for f in (ROOT / "sample_docs").iterdir():
            if f.suffix != ".pdf" and f.name != "NOTICE":
                (docs / f.name).write_bytes(f.read_bytes())
        (work / "upload").mkdir()
        pages = forty_pages(work / "upload" / "manual.pdf", args.eval_dir)
        settings = Settings(home=work / "home")
        kb = KnowledgeBase(home=work / "home", settings=settings)
        kb.sync([docs])
        for q in questions[:3]:
            kb.search(q, log=False)  # warm

        def ask_all() -> list[float]:
            out = []
            for q in questions:
                t0 = time.perf_counter()
                kb.search(q, log=False)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        idle = ask_all()
        upload = KnowledgeBase(home=work / "home", settings=settings, collection="upload")
        done, indexed = threading.Event(), {}

        def index() -> None:
            t0 = time.perf_counter()
            report = upload.sync([work / "upload"])
            indexed.update(seconds=time.perf_counter() - t0, chunks=upload.catalogue.counts("upload")["chunks"],
                           added=len(report.added))
            done.set()

        threading.Thread(target=index, daemon=True).start()
        time.sleep(1.0)  # into the embedding
        busy: list[float] = []
        while not done.is_set():
            busy += ask_all()
        result = {"label": args.label, "machine": platform.processor() or platform.machine(), "pdf_pages": pages,
                  "indexing": {k: round(v, 1) if isinstance(v, float) else v for k, v in indexed.items()},
                  "idle": summary(idle), "while_indexing": summary(busy)}
    print(json.dumps(result, indent=2))
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.label] = result
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
