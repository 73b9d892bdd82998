"""What `kb serve` measures and how it tells an outage: Prometheus series (multiprocess with
`--workers N`), the ASGI middleware that counts and times every request, and the outage log."""

from __future__ import annotations

import logging
import os
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("app.api")


class Outage:
    """The catalogue's database or the disk out of reach: logged once when it starts (not once per
    refused request) and once when a request succeeds again, with how long it lasted and how many
    requests were refused meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.refused = 0

    def refuse(self, exc: Exception) -> None:
        with self._lock:
            self.refused += 1
            if self.since is None:
                self.since = time.monotonic()
                log.warning("outage: %s (answering 503 until it is back)", exc)

    def served(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                log.warning("outage over after %.0fs; %d requests were refused", time.monotonic() - self.since,
                            self.refused)
                self.since, self.refused = None, 0


class Telemetry:
    """Prometheus series. With `kb serve --workers N` every server process writes its counters and
    histograms to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up by the
    CLI) and a scrape adds up every process's, whichever process answers it; the documents, chunks and
    jobs gauges are read from the catalogue at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kb_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("kb_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .15, .25, .35, .5, 1, 2.5, 5, 10, 30))
        self.stages = Histogram("kb_stage_seconds", "Time per retrieval/answer stage", ["stage"],
                                registry=self.registry, buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30))

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stages.labels(stage).observe(seconds)

    def scrape(self, gauges: list[GaugeMetricFamily]) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client.multiprocess import MultiProcessCollector

            every_process = CollectorRegistry()
            MultiProcessCollector(every_process)
            text = generate_latest(every_process)
        else:
            text = generate_latest(self.registry)
        now = CollectorRegistry()
        now.register(_Families(gauges))
        return text + generate_latest(now)


class _Families:
    """Metric families computed at scrape time (plain values: never written to the multiprocess files)."""

    def __init__(self, families: list[GaugeMetricFamily]):
        self.families = families

    def collect(self):  # noqa: ANN201 - an iterator of metric families
        return iter(self.families)


class Measured:
    """Counts and times every request (plain ASGI: a streamed answer still learns that its client left,
    which Starlette's BaseHTTPMiddleware would hide from it)."""

    def __init__(self, app, telemetry: Telemetry, outage: Outage):  # noqa: ANN001 - an ASGI app
        self.app, self.telemetry, self.outage = app, telemetry, outage

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if status[0] < 500 and route != "/healthz":
                self.outage.served()
            self.telemetry.requests.labels(route, scope["method"], str(status[0])).inc()
            self.telemetry.latency.labels(route).observe(time.perf_counter() - t0)
