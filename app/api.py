"""`kb serve`: the HTTP API (FastAPI). REST under /v1 (search, ask with SSE streaming, documents, jobs,
status), an OpenAI-compatible chat endpoint (a collection is a "model"), /healthz and Prometheus
/metrics. Every route is one KnowledgeBase call; errors are JSON with the status
code that says what went wrong (400 bad input, 404 unknown, 409 writer busy, 413 too large, 503 a
model, the catalogue or the disk is out of reach, with Retry-After). The error shape is OpenAI's, {"error": {"message", "type"}}, so OpenAI
clients show kb's message too."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError

from app.reader_paths import ReaderPaths
from app.upload_stream import BadUpload, MultipartUpload
from app.worker import Worker
from ingest.uploads import UploadTooLarge
from kb.access import Identity
from kb.errors import (AuthError, CatalogueError, ConfigError, GeneratorError, KBError, LockedError,
                       MissingDependencyError, NotFoundError, PermissionDeniedError, Unavailable)
from kb.home import Home
from kb.knowledge_base import KnowledgeBase
from kb.document_lookup import collection_names
from kb.settings import Settings
from retrieval.answer import Answer, AnswerStream
from retrieval.types import Context

log = logging.getLogger(__name__)
MAX_ID = 2 ** 63 - 1  # ids are 64-bit in the catalogue: a larger one is a bad request, not a server error
ALL_COLLECTIONS = "kb:all"  # the chat "model" that answers from every collection the caller may read
STATUS_OF = [(AuthError, 401), (PermissionDeniedError, 403), (NotFoundError, 404), (LockedError, 409), (MissingDependencyError, 503), (ConfigError, 400),
             (GeneratorError, 503), (CatalogueError, 503), (Unavailable, 503), (KBError, 500)]
RETRY_AFTER_S = 5  # what a 503 for an outage tells clients


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


class ForbiddenCollection(NotFoundError):
    """A collection the caller may not read: answered exactly like a missing one, and audited."""


class SearchRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    collection: str | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    documents: list[str] | None = Field(None, description="Limit to these documents (ids, paths or file names).")


class AskRequest(SearchRequest):
    backend: str | None = None
    stream: bool = Field(False, description="Server-sent events: `token` pieces, then one `answer` event.")


class ReindexRequest(BaseModel):
    collection: str | None = None
    paths: list[str] = Field(default_factory=list, description="Folders/files; none: the previous ones and uploads.")
    full: bool = False


class ChatRequest(BaseModel, extra="allow"):
    model: str
    messages: list[dict] = Field(min_length=1)
    stream: bool = False


def context_json(c: Context, n: int | None = None) -> dict:
    return {**({"n": n} if n else {}), "document": Path(c.source).name, "path": c.source, "page": c.page,
            "heading": c.heading, "score": round(c.score, 5), "chunk_id": c.chunk_id, "text": c.text, "ocr": c.ocr}


def answer_json(a: Answer) -> dict:
    return {"question": a.question, "answer": a.text, "found": a.found, "backend": a.backend, "model": a.model,
            "label": a.label,
            "citations": [{"n": c.n, "document": Path(c.source).name, "path": c.source, "page": c.page,
                           "heading": c.heading, "chunk_id": c.chunk_id, "text": c.text, "sentences": c.sentences,
                           "ocr": c.ocr}
                          for c in a.citations],
            "unsupported": a.unsupported, "timings_ms": {k: round(v * 1000, 2) for k, v in a.timings.items()},
            "usage": a.usage, "notes": a.notes}


def error(message: str, status: int, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def sse(event: str, data: dict | str) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


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


def create_app(settings: Settings | None = None, run_worker: bool = True) -> FastAPI:
    """The API over one data home. `run_worker`: also run queued jobs in this process."""
    settings = settings or Settings()
    home = Home(settings)  # every route, collection and caller shares its parts
    telemetry = Telemetry()
    worker = Worker(home).start() if run_worker else None
    app = FastAPI(title="kb", version="1", description=__doc__)

    def caller(request: Request, authorization: str | None = Header(None)) -> Identity:
        """Every /v1 route: `Authorization: Bearer <token>` (the OpenAI clients' api_key), checked before
        the request's body is read."""
        scheme, _, token = (authorization or "").partition(" ")
        who = home.access.from_token(token.strip() if scheme.lower() == "bearer" else None)
        request.state.who = who
        return who

    def reply(who: Identity, data):  # noqa: ANN001, ANN202 - a JSON value
        """What the caller may see of it: administrators everything, others no server paths or settings."""
        return data if who.admin else ReaderPaths(home.catalogue, settings.home, readable(who)).scrub(data)

    def readable(who: Identity) -> list[str]:
        return who.readable(sorted(set(collection_names(home.catalogue)) | {settings.collection}))

    def kb_for(who: Identity, collection: str | None, must_exist: bool = True) -> KnowledgeBase:
        """The collection's KnowledgeBase acting for the caller (its checks raise 403)."""
        name = collection or settings.collection
        exists = name == settings.collection or name in collection_names(home.catalogue)
        if not who.may(name, "read"):  # a forbidden one does not exist for them
            raise (ForbiddenCollection if exists else NotFoundError)(f"no collection {name!r}")
        if must_exist and not exists:
            raise NotFoundError(f"no collection {name!r}")
        return home.collection(name).for_caller(who)

    def reader(who: Identity, collection: str | None) -> KnowledgeBase:
        """The named collection, or every collection the caller may read, searched as one."""
        if collection:
            return kb_for(who, collection)
        names = readable(who)
        if not names:
            raise PermissionDeniedError(f"{who.name} may not read any collection")
        return home.collection(names[0]).for_caller(who).reading(names)

    def queued(job) -> dict:  # noqa: ANN001 - kb.jobs.Job
        if worker is not None:
            worker.wake.set()
        return job.to_dict()

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
            message = str(exc) if who is None or code == 401 else await run_in_threadpool(reply, who, str(exc))
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

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/v1/search")
    def search(req: SearchRequest, who: Identity = Depends(caller)) -> dict:
        r = reader(who, req.collection).retrieve(req.question, req.top_k, req.documents, record=True)
        telemetry.observe_stages(r.timings)
        return reply(who, {"question": req.question, "relevant": r.relevant, "notes": r.notes,
                           "contexts": [context_json(c, n) for n, c in enumerate(r.contexts, 1)],
                           "timings_ms": {k: round(v * 1000, 2) for k, v in r.timings.items()}})

    @app.post("/v1/ask", response_model=None)
    def ask(req: AskRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        stream = answer_stream(who, req)
        if not req.stream:
            answer = stream.result()
            telemetry.observe_stages(answer.timings)
            return reply(who, answer_json(answer))

        def events() -> Iterator[str]:
            try:
                for piece in stream:
                    yield sse("token", {"text": piece})
            except KBError as exc:
                yield sse("error", {"error": {"message": reply(who, str(exc)), "type": type(exc).__name__}})
                return
            telemetry.observe_stages(stream.answer.timings)
            yield sse("answer", reply(who, answer_json(stream.answer)))

        return streamed(events(), stream)

    def answer_stream(who: Identity, req: AskRequest):  # noqa: ANN202 - AnswerStream
        return reader(who, req.collection).ask_stream(req.question, req.backend, req.top_k, req.documents)

    @app.get("/v1/documents")
    def list_documents(collection: str | None = None, who: Identity = Depends(caller)) -> list[dict]:
        return reply(who, [dataclasses.asdict(d) | {"name": Path(d.path).name}
                           for d in kb_for(who, collection).documents()])

    @app.post("/v1/documents", status_code=202, response_model=None)
    async def upload(request: Request, collection: str | None = None,
                     who: Identity = Depends(caller)) -> dict | JSONResponse:
        """multipart/form-data: files in fields named `files`; the collection in ?collection= or in a
        `collection` field before the files. The token and a write grant are checked before the body is
        read; the body is read as it arrives and cut off (413, nothing kept) once a file passes
        max_file_mb or the whole passes max_upload_mb; a file of a type kb cannot read is never written."""
        if not any(who.may(c, "write") for c in [settings.collection, *who.grants]):  # denies count too
            raise PermissionDeniedError(f"{who.name} may not add documents to any collection")
        limit = settings.ingest.max_upload_mb * 1e6 + 1e6  # room for the multipart framing
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit():
            raise HTTPException(400, "bad Content-Length")
        too_large = f"the upload is too large: more than {settings.ingest.max_upload_mb:g} MB in all"
        if int(declared) > limit:
            raise HTTPException(413, too_large)
        views: list[KnowledgeBase] = []

        def sink_for(field: str | None):  # noqa: ANN202 - the chosen collection's UploadSink
            views.append(kb_for(who, field or collection, must_exist=False))
            return views[0].upload_sink()  # raises 403 without write on it, before a byte is stored

        chosen = await run_in_threadpool(sink_for, None) if collection else None  # checked before the body
        try:
            receiver = MultipartUpload(request.headers.get("content-type"), sink_for, chosen)
        except BadUpload as exc:
            raise HTTPException(400, str(exc)) from None
        received = 0
        try:
            async for piece in request.stream():
                received += len(piece)  # every byte counts, refused parts and fields too
                if received > limit:
                    raise UploadTooLarge(too_large)
                await run_in_threadpool(receiver.feed, piece)  # disk and catalogue work off the event loop
            sink = receiver.finish()
            job, refused = await run_in_threadpool(views[0].queue_uploads, sink)
        except UploadTooLarge as exc:  # stop reading, the client is cut off; nothing of it is kept
            if receiver.sink is not None:
                receiver.sink.abort()
            return error(str(exc), 413)
        except BadUpload as exc:
            if receiver.sink is not None:
                receiver.sink.abort()
            raise HTTPException(400, str(exc)) from None
        except BaseException:  # the client went away, or anything else: nothing half-received is kept
            if receiver.sink is not None:
                receiver.sink.abort()
            raise
        if job is None:
            raise HTTPException(413 if any("too large" in r for _, r in refused) else 400,
                                "; ".join(f"{Path(p).name}: {r}" for p, r in refused) or "no file")
        body = {"job": queued(job), "refused": [{"file": Path(p).name, "reason": r} for p, r in refused]}
        return await run_in_threadpool(reply, who, body)

    @app.delete("/v1/documents/{ref:path}", response_model=None)
    def delete_document(ref: str, collection: str | None = None, who: Identity = Depends(caller)) -> dict | JSONResponse:
        """200 with what was removed; 202 with a job when the collection has a job running (an upload):
        the removal then runs after it, and the request does not wait."""
        paths, job = kb_for(who, collection).remove_or_queue(ref)
        if job is None:
            return reply(who, {"removed": paths})
        return JSONResponse(reply(who, {"removed": [], "queued": paths, "job": queued(job)}), status_code=202)

    @app.post("/v1/reindex", status_code=202)
    def reindex(req: ReindexRequest, who: Identity = Depends(caller)) -> dict:
        kb = kb_for(who, req.collection, must_exist=False)
        if req.paths and not who.admin:  # before looking at the paths: nothing about the server is revealed
            raise PermissionDeniedError(f"{who.name} may not index folders of the server (administrators only)")
        missing = [p for p in req.paths if not Path(p).exists()]
        if missing:
            raise HTTPException(400, f"no such file or folder on the server: {', '.join(missing)}")
        return reply(who, {"job": queued(kb.submit_reindex(req.paths, req.full))})

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: int = PathParam(ge=1, le=MAX_ID), who: Identity = Depends(caller)) -> dict:
        found = home.jobs.get(job_id)
        if not who.may(found.collection, "read"):  # another collection's job does not exist for this caller
            raise ForbiddenCollection(f"no job {job_id}")
        return reply(who, found.to_dict())

    @app.get("/v1/jobs")
    def jobs(collection: str | None = None, limit: int = Query(20, ge=1, le=1000),
             who: Identity = Depends(caller)) -> list[dict]:
        return reply(who, [j.to_dict() for j in home.jobs.recent(collection, limit) if who.may(j.collection, "read")])

    @app.get("/v1/status")
    def status(collection: str | None = None, who: Identity = Depends(caller)) -> dict:
        st = kb_for(who, collection).status()
        st.collections = readable(who)
        return reply(who, st.to_dict())

    @app.get("/v1/audit", response_model=None)
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

    @app.get("/metrics", response_class=PlainTextResponse)
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

    # -- OpenAI-compatible: a collection is a model -----------------------------------------------
    @app.get("/v1/models")
    def models(who: Identity = Depends(caller)) -> dict:
        names = readable(who) + [ALL_COLLECTIONS]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "kb"} for n in names]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        question = _last_user_text(req.messages)
        named = None if req.model == ALL_COLLECTIONS else req.model
        stream = answer_stream(who, AskRequest(question=question, collection=named))
        cid, created = f"chatcmpl-kb-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": cid, "created": created, "model": req.model}
        if not req.stream:
            a = stream.result()
            telemetry.observe_stages(a.timings)
            return {**head, "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text},
                                 "finish_reason": "stop"}],
                    "usage": _usage(a), "citations": reply(who, answer_json(a)["citations"])}

        def chunks() -> Iterator[str]:
            def chunk(delta: dict, finish: str | None = None, **extra) -> str:  # noqa: ANN003
                body = {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
                return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            try:
                for piece in stream:
                    yield chunk({"content": piece})
            except KBError as exc:
                problem = {"error": {"message": reply(who, str(exc)), "type": type(exc).__name__}}
                yield f"data: {json.dumps(problem)}\n\n"
                return
            a = stream.answer
            telemetry.observe_stages(a.timings)
            yield chunk({}, "stop", usage=_usage(a), citations=reply(who, answer_json(a)["citations"]))
            yield "data: [DONE]\n\n"

        return streamed(chunks(), stream)

    app.state.worker = worker
    return app


def app_from_environment() -> FastAPI:
    """`kb serve`'s app in each server process (settings from KB_* variables and kb.toml)."""
    import os

    return create_app(Settings(), run_worker=os.environ.get("KB_SERVE_JOBS", "1") == "1")


def streamed(pieces: Iterator[str], stream: AnswerStream) -> StreamingResponse:
    """Server-sent events from a generator run in a thread; when the client goes away (the response is
    cancelled) the answer's generation is told to stop, instead of running on to max_new_tokens."""
    async def body():  # noqa: ANN202
        try:
            async for piece in iterate_in_threadpool(pieces):
                yield piece
        finally:
            stream.close()

    return StreamingResponse(body(), media_type="text/event-stream")


def _last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if not isinstance(m, dict):
            raise HTTPException(400, "each message must be an object with `role` and `content`")
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
                if not all(isinstance(t, str) for t in texts):
                    raise HTTPException(400, "a text part of a message must be {\"type\": \"text\", \"text\": STRING}")
                content = " ".join(texts)
            if isinstance(content, str) and content.strip():
                if len(content) > 4000:
                    raise HTTPException(400, "the last user message is longer than 4000 characters")
                return content.strip()
    raise HTTPException(400, "no user message with text in `messages`")


def _usage(a: Answer) -> dict:
    p, c = a.usage.get("prompt_tokens") or 0, a.usage.get("completion_tokens") or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
