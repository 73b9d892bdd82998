"""`kb serve`: the HTTP API (FastAPI). REST under /v1 (search, ask with SSE streaming, documents, jobs,
status), an OpenAI-compatible chat endpoint (a collection is a "model"), /healthz and Prometheus
/metrics. Every route is one KnowledgeBase call; errors are JSON with the status
code that says what went wrong (400 bad input, 404 unknown, 409 writer busy, 413 too large, 503 a
model, the catalogue or the disk is out of reach, with Retry-After). The error shape is OpenAI's, {"error": {"message", "type"}}, so OpenAI
clients show kb's message too."""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from app.api import admin, answers, conversations, documents
from app.api.service import ForbiddenCollection, Service, error
from app.api.telemetry import Measured, Outage, Telemetry
from app.worker import Worker
from kb.errors import (AuthError, CatalogueError, ConfigError, GeneratorError, KBError, LockedError,
                       MissingDependencyError, NotFoundError, PermissionDeniedError, Unavailable)
from kb.home import Home
from kb.settings import Settings

log = logging.getLogger(__name__)
STATUS_OF = [(AuthError, 401), (PermissionDeniedError, 403), (NotFoundError, 404), (LockedError, 409), (MissingDependencyError, 503), (ConfigError, 400),
             (GeneratorError, 503), (CatalogueError, 503), (Unavailable, 503), (KBError, 500)]
RETRY_AFTER_S = 5  # what a 503 for an outage tells clients


def create_app(settings: Settings | None = None, run_worker: bool = True) -> FastAPI:
    """The API over one data home. `run_worker`: also run queued jobs in this process."""
    home = Home(settings or Settings())  # every route, collection and caller shares its parts
    telemetry = Telemetry()
    worker = Worker(home).start() if run_worker else None
    svc = Service(home, telemetry, worker)
    app = FastAPI(title="kb", version="1", description=__doc__)

    outage = Outage()
    app.add_middleware(Measured, telemetry=telemetry, outage=outage)

    @app.exception_handler(KBError)
    async def kb_error(request: Request, exc: KBError) -> JSONResponse:
        code = next(c for t, c in STATUS_OF if isinstance(exc, t))
        if isinstance(exc, Unavailable):
            return unavailable(request, exc)
        if code in (401, 403) or isinstance(exc, ForbiddenCollection):  # refusals are audited (bounded)
            who = getattr(request.state, "who", None)
            try:
                await run_in_threadpool(home.access.audit_failure, who.name if who else "(no valid token)",
                                        "refused", None, status=code, route=f"{request.method} {request.url.path}",
                                        client=request.client.host if request.client else None, reason=str(exc)[:300])
            except Exception as audit_exc:  # noqa: BLE001 - the refusal is answered even when the audit cannot be written
                log.warning("could not audit a refused request: %s", audit_exc)
        who = getattr(request.state, "who", None)
        try:  # a reader sees no server path in an error either
            message = str(exc) if who is None or code == 401 else await run_in_threadpool(svc.reply, who, str(exc))
        except Exception:  # noqa: BLE001 - e.g. the catalogue is down: say what failed, not where
            message = f"{type(exc).__name__} (the server's log has the details)"
        response = error(message, 404 if isinstance(exc, ForbiddenCollection) else code,
                         "NotFoundError" if isinstance(exc, ForbiddenCollection) else type(exc).__name__)
        if code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """503 with Retry-After; administrators read what is out of reach, others only that it is."""
        outage.refuse(exc)
        who = getattr(request.state, "who", None)
        message = str(exc) if who is not None and who.admin else \
            "kb cannot reach its catalogue or its disk right now; try again in a few seconds"
        response = error(message, 503, type(exc).__name__ if isinstance(exc, Unavailable) else "Unavailable")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or \
                (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
            return unavailable(request, exc)  # the database gone, or the disk full, met outside a catalogue session
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error("internal error (the server's log has the details)", 500, "server_error")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(f"bad request: {problems}", 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(str(exc.detail), exc.status_code)

    for feature in (answers, conversations, documents, admin):
        app.include_router(feature.router(svc))
    app.state.worker = worker
    return app


def app_from_environment() -> FastAPI:
    """`kb serve`'s app in each server process (settings from KB_* variables and kb.toml)."""
    import os

    return create_app(Settings(), run_worker=os.environ.get("KB_SERVE_JOBS", "1") == "1")
