"""Questions: `POST /v1/search`, `POST /v1/ask` (server-sent events when streaming), and the
OpenAI-compatible `GET /v1/models` and `POST /v1/chat/completions` (a collection is a model)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse

from app.api.service import (ALL_COLLECTIONS, AskRequest, ChatRequest, SearchRequest, Service, answer_json,
                             context_json, sse, streamed)
from kb.access import Identity
from kb.conversations import Turn
from kb.errors import KBError
from retrieval.answer import Answer, AnswerStream


def router(svc: Service) -> APIRouter:
    routes = APIRouter()
    telemetry, caller, reply, readable, reader = svc.telemetry, svc.caller, svc.reply, svc.readable, svc.reader

    @routes.post("/v1/search")
    def search(req: SearchRequest, who: Identity = Depends(caller)) -> dict:
        r = reader(who, req.collection).retrieve(req.question, req.top_k, req.documents, record=True,
                                                 history=req.turns())
        telemetry.observe_stages(r.timings)
        return reply(who, {"question": req.question, "standalone": r.standalone, "relevant": r.relevant,
                           "notes": r.notes,
                           "contexts": [context_json(c, n) for n, c in enumerate(r.contexts, 1)],
                           "timings_ms": {k: round(v * 1000, 2) for k, v in r.timings.items()}})

    @routes.post("/v1/ask", response_model=None)
    def ask(req: AskRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        return answered(svc, who, svc.answer_stream(who, req), req.stream)

    # -- OpenAI-compatible: a collection is a model -----------------------------------------------
    @routes.get("/v1/models")
    def models(who: Identity = Depends(caller)) -> dict:
        names = readable(who) + [ALL_COLLECTIONS]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "kb"} for n in names]}

    @routes.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        question, history = _conversation(req.messages)
        named = None if req.model == ALL_COLLECTIONS else req.model
        stream = svc.reader(who, named).ask_stream(question, history=history)
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

    return routes


def _text(m: dict) -> str:
    if not isinstance(m, dict):
        raise HTTPException(400, "each message must be an object with `role` and `content`")
    content = m.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise HTTPException(400, "a text part of a message must be {\"type\": \"text\", \"text\": STRING}")
        content = " ".join(texts)
    return content.strip() if isinstance(content, str) else ""


def _conversation(messages: list[dict]) -> tuple[str, list[Turn]]:
    """The last user message, and the earlier user/assistant exchanges as the conversation's history
    (an OpenAI client sends the whole chat every time)."""
    texts = [(m.get("role") if isinstance(m, dict) else None, _text(m)) for m in messages]
    last = next((i for i in range(len(texts) - 1, -1, -1) if texts[i][0] == "user" and texts[i][1]), None)
    if last is None:
        raise HTTPException(400, "no user message with text in `messages`")
    if len(texts[last][1]) > 4000:
        raise HTTPException(400, "the last user message is longer than 4000 characters")
    history: list[Turn] = []
    for i, (role, text) in enumerate(texts[:last]):
        if role == "user" and text:
            following = texts[i + 1]
            history.append(Turn(text[:4000], following[1][:20000] if following[0] == "assistant" else ""))
    return texts[last][1], history


def answered(svc: Service, who: Identity, stream: AnswerStream, streaming: bool) -> dict | StreamingResponse:
    """An answer as JSON, or as server-sent events: (`conversation`,) `token` pieces, then one `answer`
    event; an answer in a conversation carries its `conversation_id` and `turn_id` (for feedback)."""
    def final() -> dict:
        ids = {"conversation_id": stream.conversation_id, "turn_id": stream.turn_id} if stream.conversation_id else {}
        return {**svc.reply(who, answer_json(stream.answer)), **ids}

    if not streaming:
        svc.telemetry.observe_stages(stream.result().timings)
        return final()

    def events() -> Iterator[str]:
        if stream.conversation_id:
            yield sse("conversation", {"conversation_id": stream.conversation_id})
        try:
            for piece in stream:
                yield sse("token", {"text": piece})
        except KBError as exc:
            yield sse("error", {"error": {"message": svc.reply(who, str(exc)), "type": type(exc).__name__}})
            return
        svc.telemetry.observe_stages(stream.answer.timings)
        yield sse("answer", final())

    return streamed(events(), stream)


def _usage(a: Answer) -> dict:
    p, c = a.usage.get("prompt_tokens") or 0, a.usage.get("completion_tokens") or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
