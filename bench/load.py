"""Load on `kb serve`: N concurrent HTTP clients (loopback only, bounded in time) asking for search and
extractive answers, at 10k and 100k chunks.

    python bench/load.py [--sizes 10000 100000] [--clients 1 8 16 32] [--seconds 10] [--model all-MiniLM-L6-v2]

The collection is built like bench/scale.py's (synthetic Zipf text, half Chinese, half English,
through kb's real write path), but embedded with the real model named by --model, which then also
embeds every question inside the server (concurrent questions share one model call). The server is
`kb serve` in its own process group on a free port, with no job worker, stopped at the end. Reports
req/s and p50/p95/p99 latency per endpoint and client count; writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import build, questions, vocabularies  # noqa: E402
from kb.knowledge_base import KnowledgeBase  # noqa: E402
from kb.settings import EmbeddingSettings, IngestSettings, Settings  # noqa: E402

TOKEN: list[str] = []
ENDPOINTS = {"search": ("/v1/search", {}), "ask": ("/v1/ask", {"backend": "extractive"})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def home_for(n: int, model: str, workdir: Path) -> Path:
    """A built collection of n chunks (kept in workdir and reused by later runs)."""
    home = workdir / f"load-{n}-{model.replace('/', '_')}"
    settings = Settings(home=home, embedding=EmbeddingSettings(model=model), ingest=IngestSettings(write_batch_chunks=2000))
    if (home / "built").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    print(f"building {n:,} chunks with {model} in {home}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    build(KnowledgeBase(settings=settings), n, vocabularies(np.random.default_rng(0)), np.random.default_rng(n))
    print(f"  built in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    (home / "built").touch()
    return home


def bench_token(home: Path, model: str) -> str:
    """An API token for a reader of every collection (kb serve requires one)."""
    access = KnowledgeBase(settings=Settings(home=home, embedding=EmbeddingSettings(model=model))).access
    if "bench" not in [u["name"] for u in access.users()]:
        access.add_user("bench", None)
        access.grant("bench", "*", "read")
    return access.create_token("bench")


def drive(url: str, path: str, extra: dict, qs: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN[0]}"}) as c:
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = c.post(path, json={"question": qs[i % len(qs)], **extra})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors += 1
                i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "req_per_s": round(len(latencies) / wall, 1),
            **{f"p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}}


def serve(home: Path, model: str, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "KB_EMBEDDING__MODEL": model}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--home", str(home), "serve", "--port", str(port),
                             "--workers", str(workers), "--no-jobs"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("kb serve did not start: " + log.read_text()[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=list(ENDPOINTS))
    ap.add_argument("--seconds", type=float, default=10.0, help="per endpoint and client count")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--workers", type=int, default=1, help="kb serve --workers")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kb-bench-load")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    qs = questions(400, vocabularies(np.random.default_rng(0)), np.random.default_rng(1))
    rows = []
    for n in args.sizes:
        home = home_for(n, args.model, args.workdir)
        TOKEN[:] = [bench_token(home, args.model)]
        proc, url = serve(home, args.model, args.workers, args.workdir / f"serve-{n}.log")
        try:
            for name in args.endpoints:
                path, extra = ENDPOINTS[name]
                drive(url, path, extra, qs[:8], 2, 2.0)  # warm: index loaded, searcher open
                for clients in args.clients:
                    row = {"chunks": n, "endpoint": name, **drive(url, path, extra, qs, clients, args.seconds)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print("\n| chunks | endpoint | clients | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunks']:,} | {r['endpoint']} | {r['clients']} | {r['req_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "model": args.model,
                                    "workers": args.workers, "seconds": args.seconds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
