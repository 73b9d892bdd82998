"""A collection's documents and jobs: list, upload (streamed, checked before the body is read),
delete, re-index, and the jobs that do the work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.service import MAX_ID, ForbiddenCollection, ReindexRequest, Service, error
from app.upload_stream import BadUpload, MultipartUpload
from ingest.uploads import UploadTooLarge
from kb.access import Identity
from kb.errors import PermissionDeniedError
from kb.knowledge_base import KnowledgeBase


def router(svc: Service) -> APIRouter:
    routes = APIRouter()
    home, settings, caller, reply, kb_for, queued = svc.home, svc.settings, svc.caller, svc.reply, svc.kb_for, svc.queued

    @routes.get("/v1/documents")
    def list_documents(collection: str | None = None, who: Identity = Depends(caller)) -> list[dict]:
        return reply(who, [dataclasses.asdict(d) | {"name": Path(d.path).name}
                           for d in kb_for(who, collection).documents()])

    @routes.post("/v1/documents", status_code=202, response_model=None)
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

    @routes.delete("/v1/documents/{ref:path}", response_model=None)
    def delete_document(ref: str, collection: str | None = None, who: Identity = Depends(caller)) -> dict | JSONResponse:
        """200 with what was removed; 202 with a job when the collection has a job running (an upload):
        the removal then runs after it, and the request does not wait."""
        paths, job = kb_for(who, collection).remove_or_queue(ref)
        if job is None:
            return reply(who, {"removed": paths})
        return JSONResponse(reply(who, {"removed": [], "queued": paths, "job": queued(job)}), status_code=202)

    @routes.post("/v1/reindex", status_code=202)
    def reindex(req: ReindexRequest, who: Identity = Depends(caller)) -> dict:
        kb = kb_for(who, req.collection, must_exist=False)
        if req.paths and not who.admin:  # before looking at the paths: nothing about the server is revealed
            raise PermissionDeniedError(f"{who.name} may not index folders of the server (administrators only)")
        missing = [p for p in req.paths if not Path(p).exists()]
        if missing:
            raise HTTPException(400, f"no such file or folder on the server: {', '.join(missing)}")
        return reply(who, {"job": queued(kb.submit_reindex(req.paths, req.full))})

    @routes.get("/v1/jobs/{job_id}")
    def job(job_id: int = PathParam(ge=1, le=MAX_ID), who: Identity = Depends(caller)) -> dict:
        found = home.jobs.get(job_id)
        if not who.may(found.collection, "read"):  # another collection's job does not exist for this caller
            raise ForbiddenCollection(f"no job {job_id}")
        return reply(who, found.to_dict())

    @routes.get("/v1/jobs")
    def jobs(collection: str | None = None, limit: int = Query(20, ge=1, le=1000),
             who: Identity = Depends(caller)) -> list[dict]:
        return reply(who, [j.to_dict() for j in home.jobs.recent(collection, limit) if who.may(j.collection, "read")])

    return routes
