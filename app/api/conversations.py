"""A signed-in user's conversations: `GET/POST /v1/conversations`, `GET/POST/PATCH/DELETE
/v1/conversations/{id}` (POST asks a question in it: the earlier turns resolve a follow-up), and
`POST /v1/feedback` (👍/👎 on an answer). Only the owner reaches a conversation; another user's is a
404. Administrators get per-user counts (`GET /v1/admin/conversations`) and the rated answers
(`GET /v1/feedback`), never another user's conversation."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app.api.answers import answered
from app.api.service import ConverseRequest, FeedbackRequest, MAX_ID, RenameRequest, Service
from kb.access import Identity
from kb.errors import NotFoundError, PermissionDeniedError


def router(svc: Service) -> APIRouter:
    routes = APIRouter()
    caller, convs = svc.caller, svc.home.conversations

    def own_id(conversation_id: int) -> int:
        if not 1 <= conversation_id <= MAX_ID:
            raise NotFoundError(f"no conversation {conversation_id}")
        return conversation_id

    @routes.get("/v1/conversations")
    def listed(who: Identity = Depends(caller)) -> dict:
        return {"conversations": convs.list(who)}

    @routes.post("/v1/conversations", response_model=None)
    def start(req: ConverseRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        """The first question of a new conversation (titled from it)."""
        view = svc.reader(who, req.collection)
        return answered(svc, who, view.converse(req.question, None, req.backend, req.top_k, req.documents), req.stream)

    @routes.get("/v1/conversations/{conversation_id}")
    def shown(conversation_id: int, who: Identity = Depends(caller)) -> dict:
        return svc.reply(who, convs.get(who, own_id(conversation_id)))

    @routes.post("/v1/conversations/{conversation_id}", response_model=None)
    def follow_up(conversation_id: int, req: ConverseRequest, who: Identity = Depends(caller)) -> dict | StreamingResponse:
        """A question in the conversation, on its collection (or every readable one, as it began)."""
        collection, _ = convs.history(who, own_id(conversation_id))
        view = svc.reader(who, collection)
        return answered(svc, who, view.converse(req.question, conversation_id, req.backend, req.top_k, req.documents),
                        req.stream)

    @routes.patch("/v1/conversations/{conversation_id}")
    def renamed(conversation_id: int, req: RenameRequest, who: Identity = Depends(caller)) -> dict:
        return convs.rename(who, own_id(conversation_id), req.title)

    @routes.delete("/v1/conversations/{conversation_id}")
    def deleted(conversation_id: int, who: Identity = Depends(caller)) -> dict:
        convs.delete(who, own_id(conversation_id))
        return {"deleted": conversation_id}

    @routes.post("/v1/feedback")
    def feedback(req: FeedbackRequest, who: Identity = Depends(caller)) -> dict:
        return convs.rate(who, req.turn_id, req.rating, req.comment)

    def admin_only(who: Identity) -> None:
        if not who.admin:
            raise PermissionDeniedError(f"{who.name} may not read other users' feedback (admins only)")

    @routes.get("/v1/feedback")
    def rated(rating: str | None = Query(None, pattern="^(up|down)$"), limit: int = Query(1000, ge=1, le=100_000),
              who: Identity = Depends(caller)) -> dict:
        """Rated answers with their question, contexts and comment (admins only)."""
        admin_only(who)
        return {"feedback": convs.rated({"up": 1, "down": -1}.get(rating), limit)}

    @routes.get("/v1/admin/conversations")
    def counts(who: Identity = Depends(caller)) -> dict:
        """How many conversations and turns each user has (admins only; no text)."""
        admin_only(who)
        return {"users": convs.counts()}

    return routes
