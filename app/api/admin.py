"""Running the service: `/healthz`, a collection's status, the audit log and Prometheus `/metrics`
(the last two for administrators)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from app.api.service import Service
from kb.access import Identity
from kb.document_lookup import collection_names
from kb.errors import PermissionDeniedError


def router(svc: Service) -> APIRouter:
    routes = APIRouter()
    home, telemetry, caller, reply, readable, kb_for = svc.home, svc.telemetry, svc.caller, svc.reply, svc.readable, svc.kb_for

    @routes.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @routes.get("/v1/status")
    def status(collection: str | None = None, who: Identity = Depends(caller)) -> dict:
        st = kb_for(who, collection).status()
        st.collections = readable(who)
        return reply(who, st.to_dict())

    @routes.get("/v1/audit", response_model=None)
    def audit(limit: int = Query(1000, ge=1, le=100_000), format: str = "json",
              who: Identity = Depends(caller)) -> list[dict] | PlainTextResponse:
        """Who asked, uploaded, deleted or re-indexed what, and when (admins only); `format=jsonl` exports."""
        if not who.admin:
            raise PermissionDeniedError(f"{who.name} may not read the audit log (admins only)")
        rows = home.access.audit_log(limit)
        if format == "jsonl":
            return PlainTextResponse("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                     media_type="application/jsonl")
        return rows

    @routes.get("/metrics", response_class=PlainTextResponse)
    def metrics(who: Identity = Depends(caller)) -> PlainTextResponse:
        """Prometheus text; collection names and counts, so for administrators (a scrape token)."""
        if not who.admin:
            raise PermissionDeniedError(f"{who.name} may not read the metrics (administrators only)")
        documents = GaugeMetricFamily("kb_documents", "Documents", labels=["collection", "status"])
        chunks = GaugeMetricFamily("kb_chunks", "Chunks", labels=["collection"])
        for name in collection_names(home.catalogue):
            counts = home.catalogue.counts(name)
            chunks.add_metric([name], counts["chunks"])
            for st in ("indexed", "failed"):
                documents.add_metric([name, st], counts[st])
        by_status = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        for j in home.jobs.recent(limit=1000):
            by_status[j.status] = by_status.get(j.status, 0) + 1
        jobs = GaugeMetricFamily("kb_jobs", "Jobs among the last 1000", labels=["status"])
        for st, n in by_status.items():
            jobs.add_metric([st], n)
        return PlainTextResponse(telemetry.scrape([documents, chunks, jobs]), media_type=CONTENT_TYPE_LATEST)

    return routes
