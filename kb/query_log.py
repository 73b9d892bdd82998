"""The query log: every question asked (its timings, what it found), written off the request path, and
the latency percentiles and rates read back from it for status pages, `/metrics` and `kb eval`."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from kb.catalogue import Catalogue, QueryLog, utcnow

log = logging.getLogger(__name__)


def latency_table(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.items():
            stages.setdefault(k, []).append(v * 1000)
        stages.setdefault("total", []).append(sum(v for k, v in t.items() if k != "first_token") * 1000)
    return {k: {"p50_ms": round(float(np.percentile(v, 50)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2)}
            for k, v in stages.items()}


@dataclass(frozen=True)
class QueryMetrics:
    queries: int  # logged questions read (the last `last`)
    not_found: int
    queries_per_minute: float  # over the last hour
    latency: dict[str, dict[str, float]]  # stage -> {"p50_ms", "p95_ms"}


class QueryLogWriter:
    """Questions are logged off the request path: rows wait in memory and a background thread writes them
    in one transaction every `interval_s` (under load, one fsync for many questions instead of one each).
    Readers of the log flush first; a process that exits flushes; a killed one loses at most `interval_s`
    of log rows, never an answer."""

    def __init__(self, catalogue: Catalogue, interval_s: float = 0.25):
        self.catalogue, self.interval_s = catalogue, interval_s
        self._rows: list[tuple[str, dict]] = []
        self._lock = threading.Lock()  # guards _rows
        self._writing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="kb-query-log", daemon=True).start()
        atexit.register(self._flush_at_exit)

    def add(self, collection: str, **row) -> None:  # noqa: ANN003 - QueryLog's columns
        with self._lock:
            self._rows.append((collection, row))
        self._wake.set()

    def flush(self) -> None:
        with self._writing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return
            with self.catalogue.session() as s:
                cols = {name: self.catalogue.collection(s, name, create=False) for name in {c for c, _ in rows}}
                s.add_all([QueryLog(collection_id=cols[c].id, **row) for c, row in rows if cols[c] is not None])

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the database went first: say so in one line
            log.warning("query log not written at exit: %s", exc)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval_s)  # gather what arrives meanwhile
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - a log write must never stop the service
                log.warning("query log not written: %s", exc)


def query_metrics(catalogue: Catalogue, collection: str, last: int = 1000) -> QueryMetrics:
    """From the last `last` logged questions: latency p50/p95 per stage (ms), queries per minute over
    the last hour, how many found nothing."""
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        rows = [] if col is None else s.execute(
            select(QueryLog.asked_at, QueryLog.timings, QueryLog.found).where(QueryLog.collection_id == col.id)
            .order_by(QueryLog.id.desc()).limit(last)).all()
    now = utcnow()
    recent = [r for r in rows if (now - r.asked_at).total_seconds() <= 3600]
    span_min = max(1.0, (now - min(r.asked_at for r in recent)).total_seconds() / 60) if recent else 1.0
    return QueryMetrics(len(rows), sum(1 for r in rows if not r.found), round(len(recent) / span_min, 2),
                        latency_table([r.timings for r in rows if r.timings]))
