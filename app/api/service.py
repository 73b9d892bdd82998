"""What every route of `kb serve` shares: the Home, the caller behind a request (the auth dependency),
what a caller may see of a reply, the views a route acts through, and the JSON shapes of kb's types."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import Header, Request
from fastapi.concurrency import iterate_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from typing import Literal

from pydantic import BaseModel, Field

from app.api.telemetry import Telemetry
from app.reader_paths import ReaderPaths
from app.worker import Worker
from kb.access import Identity
from kb.conversations import Turn
from kb.document_lookup import collection_names
from kb.errors import NotFoundError, PermissionDeniedError
from kb.home import Home
from kb.knowledge_base import KnowledgeBase
from kb.settings import Settings
from retrieval.answer import Answer, AnswerStream, citation_json
from retrieval.types import Context

MAX_ID = 2 ** 63 - 1  # ids are 64-bit in the catalogue: a larger one is a bad request, not a server error
ALL_COLLECTIONS = "kb:all"  # the chat "model" that answers from every collection the caller may read


class ForbiddenCollection(NotFoundError):
    """A collection the caller may not read: answered exactly like a missing one, and audited."""


class EarlierTurn(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    answer: str = Field("", max_length=20000)


class SearchRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    collection: str | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    documents: list[str] | None = Field(None, description="Limit to these documents (ids, paths or file names).")
    history: list[EarlierTurn] = Field(default_factory=list, max_length=50,
                                       description="Earlier turns, oldest first: a follow-up is resolved with them.")

    def turns(self) -> list[Turn]:
        return [Turn(t.question, t.answer) for t in self.history]


class AskRequest(SearchRequest):
    backend: str | None = None
    stream: bool = Field(False, description="Server-sent events: `token` pieces, then one `answer` event.")


class ConverseRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    collection: str | None = Field(None, description="A new conversation's collection (none: every readable one).")
    backend: str | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    documents: list[str] | None = None
    stream: bool = False


class RenameRequest(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class FeedbackRequest(BaseModel):
    turn_id: int = Field(ge=1, le=2 ** 31 - 1)
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=4000)


class ReindexRequest(BaseModel):
    collection: str | None = None
    paths: list[str] = Field(default_factory=list, description="Folders/files; none: the previous ones and uploads.")
    full: bool = False


class ChatRequest(BaseModel, extra="allow"):
    model: str
    messages: list[dict] = Field(min_length=1)
    stream: bool = False


class Service:
    """One per app: the data home's parts, and the helpers every route calls."""

    def __init__(self, home: Home, telemetry: Telemetry, worker: Worker | None):
        self.home, self.settings, self.telemetry, self.worker = home, home.settings, telemetry, worker

    def caller(self, request: Request, authorization: str | None = Header(None)) -> Identity:
        """The auth dependency of every /v1 route: `Authorization: Bearer <token>` (the OpenAI clients'
        api_key), checked before the request's body is read."""
        scheme, _, token = (authorization or "").partition(" ")
        who = self.home.access.from_token(token.strip() if scheme.lower() == "bearer" else None)
        request.state.who = who
        return who

    def reply(self, who: Identity, data):  # noqa: ANN001, ANN201 - a JSON value
        """What the caller may see of it: administrators everything, others no server paths or settings."""
        return data if who.admin else ReaderPaths(self.home.catalogue, self.settings.home, self.readable(who)).scrub(data)

    def readable(self, who: Identity) -> list[str]:
        return who.readable(sorted(set(collection_names(self.home.catalogue)) | {self.settings.collection}))

    def kb_for(self, who: Identity, collection: str | None, must_exist: bool = True) -> KnowledgeBase:
        """The collection's KnowledgeBase acting for the caller (its checks raise 403)."""
        name = collection or self.settings.collection
        exists = name == self.settings.collection or name in collection_names(self.home.catalogue)
        if not who.may(name, "read"):  # a forbidden one does not exist for them
            raise (ForbiddenCollection if exists else NotFoundError)(f"no collection {name!r}")
        if must_exist and not exists:
            raise NotFoundError(f"no collection {name!r}")
        return self.home.collection(name).for_caller(who)

    def reader(self, who: Identity, collection: str | None) -> KnowledgeBase:
        """The named collection, or every collection the caller may read, searched as one."""
        if collection:
            return self.kb_for(who, collection)
        names = self.readable(who)
        if not names:
            raise PermissionDeniedError(f"{who.name} may not read any collection")
        return self.home.collection(names[0]).for_caller(who).reading(names)

    def answer_stream(self, who: Identity, req: AskRequest) -> AnswerStream:
        return self.reader(who, req.collection).ask_stream(req.question, req.backend, req.top_k, req.documents,
                                                           req.turns())

    def queued(self, job) -> dict:  # noqa: ANN001 - kb.jobs.Job
        if self.worker is not None:
            self.worker.wake.set()
        return job.to_dict()


def context_json(c: Context, n: int | None = None) -> dict:
    return {**({"n": n} if n else {}), **c.to_dict()}


def answer_json(a: Answer) -> dict:
    return {"question": a.question, "answer": a.text, "found": a.found, "backend": a.backend, "model": a.model,
            "label": a.label,
            "standalone": a.standalone, "citations": [citation_json(c) for c in a.citations],
            "unsupported": a.unsupported, "timings_ms": {k: round(v * 1000, 2) for k, v in a.timings.items()},
            "usage": a.usage, "notes": a.notes}


def error(message: str, status: int, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def sse(event: str, data: dict | str) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


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
