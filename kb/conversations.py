"""Conversations: each user's chats and their turns, kept in the catalogue, and the ratings of answers.

A conversation belongs to one user; only its owner reads, renames or deletes it (anyone else is told
it does not exist). Administrators see how many conversations and turns each user has, never their
text, and the rated answers (`rated`: what `kb feedback list|export` shows)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from kb.access import Identity
from kb.catalogue import Catalogue, Conversation, ConversationTurn, User, iso, utcnow
from kb.errors import ConfigError, NotFoundError

TITLE_CHARS = 60  # a new conversation's title: the start of its first question
MAX_TURNS = 20  # earlier turns read back for a follow-up (recent() then keeps what fits)
RATINGS = {"up": 1, "down": -1, 1: 1, -1: -1}


@dataclass(frozen=True)
class Turn:
    """One earlier question of a conversation and what kb answered (history for a follow-up)."""

    question: str
    answer: str = ""
    standalone: str | None = None  # what was searched for it, when not the question itself
    chunk_ids: tuple[int, ...] = ()  # the passages its answer came from (the prompt's contexts)

    @property
    def searched(self) -> str:
        return self.standalone or self.question

    @classmethod
    def of(cls, d: dict) -> Turn:
        """From the API's / CLI's JSON: {"question", "answer"?, "standalone"?, "chunk_ids"?}."""
        if not isinstance(d, dict) or not isinstance(d.get("question"), str) or not d["question"].strip():
            raise ConfigError('each earlier turn is {"question": TEXT, "answer": TEXT}')
        try:
            ids = tuple(int(i) for i in d.get("chunk_ids") or ())
        except (TypeError, ValueError):
            raise ConfigError("an earlier turn's chunk_ids are whole numbers") from None
        return cls(d["question"].strip(), str(d.get("answer") or ""), d.get("standalone") or None, ids)


def title_of(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


class Conversations:
    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def _user_id(self, s, who: Identity) -> int:  # noqa: ANN001 - Session
        uid = s.scalar(select(User.id).where(User.name == who.name))
        if uid is None:
            raise NotFoundError(f"no user {who.name!r}")
        return uid

    def _own(self, s, who: Identity, conversation_id: int) -> Conversation:  # noqa: ANN001
        c = s.get(Conversation, conversation_id)
        if c is None or c.user_id != self._user_id(s, who):  # another's is answered like a missing one
            raise NotFoundError(f"no conversation {conversation_id}")
        return c

    def start(self, who: Identity, collection: str | None, question: str) -> int:
        with self.catalogue.session() as s:
            c = Conversation(user_id=self._user_id(s, who), collection=collection, title=title_of(question))
            s.add(c)
            s.commit()
            return c.id

    def list(self, who: Identity) -> list[dict]:
        """The caller's conversations, the latest active first."""
        with self.catalogue.session() as s:
            uid = self._user_id(s, who)
            turns = (select(ConversationTurn.conversation_id, func.count().label("n"))
                     .join(Conversation, Conversation.id == ConversationTurn.conversation_id)
                     .where(Conversation.user_id == uid)
                     .group_by(ConversationTurn.conversation_id).subquery())
            rows = s.execute(select(Conversation, func.coalesce(turns.c.n, 0))
                             .outerjoin(turns, turns.c.conversation_id == Conversation.id)
                             .where(Conversation.user_id == uid)
                             .order_by(Conversation.updated_at.desc(), Conversation.id.desc())).all()
            return [_summary(c, n) for c, n in rows]

    def get(self, who: Identity, conversation_id: int) -> dict:
        """The conversation with every turn, oldest first."""
        with self.catalogue.session() as s:
            c = self._own(s, who, conversation_id)
            turns = s.scalars(select(ConversationTurn).where(ConversationTurn.conversation_id == c.id)
                              .order_by(ConversationTurn.id)).all()
            return {**_summary(c, len(turns)), "turns": [_turn(t) for t in turns]}

    def history(self, who: Identity, conversation_id: int, before: int | None = None) -> tuple[str | None, list[Turn]]:
        """The conversation's collection and its latest turns (those before turn `before`), oldest first."""
        with self.catalogue.session() as s:
            c = self._own(s, who, conversation_id)
            q = select(ConversationTurn).where(ConversationTurn.conversation_id == c.id)
            if before is not None:
                q = q.where(ConversationTurn.id < before)
            rows = s.scalars(q.order_by(ConversationTurn.id.desc()).limit(MAX_TURNS)).all()
            return c.collection, [Turn(t.question, t.answer, t.standalone,
                                       tuple(r["chunk_id"] for r in t.retrieved[:3]))
                                  for t in reversed(rows)]

    def rename(self, who: Identity, conversation_id: int, title: str) -> dict:
        title = " ".join(title.split())
        if not title:
            raise ConfigError("a conversation's title cannot be empty")
        with self.catalogue.session() as s:
            c = self._own(s, who, conversation_id)
            c.title = title[:200]
            s.commit()
            return _summary(c, None)

    def delete(self, who: Identity, conversation_id: int) -> None:
        with self.catalogue.session() as s:
            c = self._own(s, who, conversation_id)
            s.execute(delete(ConversationTurn).where(ConversationTurn.conversation_id == c.id))
            s.delete(c)
            s.commit()

    def add_turn(self, who: Identity, conversation_id: int, row: dict, replacing: int | None = None) -> int:
        """Record an answered question (`row`: the turn's columns) and move the conversation to the top;
        `replacing`: a regenerated answer takes the place (and the rating) of that earlier turn."""
        with self.catalogue.session() as s:
            c = self._own(s, who, conversation_id)
            if replacing is not None:
                s.execute(delete(ConversationTurn).where(ConversationTurn.id == replacing,
                                                         ConversationTurn.conversation_id == c.id))
            t = ConversationTurn(conversation_id=c.id, **row)
            s.add(t)
            c.updated_at = utcnow()
            s.commit()
            return t.id

    def rate(self, who: Identity, turn_id: int, rating: str | int, comment: str | None = None) -> dict:
        """👍 ("up", 1) or 👎 ("down", -1) on one of the caller's answers, with an optional comment; a
        second rating replaces the first."""
        if rating not in RATINGS:
            raise ConfigError("a rating is 'up' or 'down'")
        with self.catalogue.session() as s:
            t = s.get(ConversationTurn, turn_id)
            if t is None:
                raise NotFoundError(f"no answer {turn_id}")
            self._own(s, who, t.conversation_id)
            s.execute(update(ConversationTurn).where(ConversationTurn.id == turn_id).values(
                rating=RATINGS[rating], comment=(comment or "").strip()[:4000] or None, rated_at=utcnow()))
            s.commit()
            return {"turn": turn_id, "rating": "up" if RATINGS[rating] > 0 else "down", "comment": comment or None}

    # -- administrators ------------------------------------------------------------------------------
    def counts(self) -> list[dict]:
        """Per user: conversations and turns (no text)."""
        with self.catalogue.session() as s:
            rows = s.execute(select(User.name, func.count(func.distinct(Conversation.id)), func.count(ConversationTurn.id))
                             .join(Conversation, Conversation.user_id == User.id)
                             .outerjoin(ConversationTurn, ConversationTurn.conversation_id == Conversation.id)
                             .group_by(User.name).order_by(User.name)).all()
            return [{"user": u, "conversations": c, "turns": t} for u, c, t in rows]

    def rated(self, rating: int | None = None, limit: int | None = 1000) -> list[dict]:
        """Rated answers, the latest first (`rating` 1 or -1: only those): question, answer, citations,
        retrieved chunks, comment, who and where, and the questions asked before it in its conversation
        (a follow-up needs them to be replayed; their answers are not shown: nobody rated those)."""
        with self.catalogue.session() as s:
            q = (select(ConversationTurn, User.name, Conversation.collection)
                 .join(Conversation, Conversation.id == ConversationTurn.conversation_id)
                 .join(User, User.id == Conversation.user_id)
                 .where(ConversationTurn.rating.is_not(None)))
            if rating is not None:
                q = q.where(ConversationTurn.rating == rating)
            rows = s.execute(q.order_by(ConversationTurn.rated_at.desc(), ConversationTurn.id.desc()).limit(limit)).all()
            earlier: dict[int, list[tuple[int, str]]] = {}
            ids = sorted({t.conversation_id for t, _, _ in rows})
            for start in range(0, len(ids), 500):  # one query per 500 conversations, not one per answer
                for cid, tid, question in s.execute(
                        select(ConversationTurn.conversation_id, ConversationTurn.id, ConversationTurn.question)
                        .where(ConversationTurn.conversation_id.in_(ids[start:start + 500]))
                        .order_by(ConversationTurn.id)):
                    earlier.setdefault(cid, []).append((tid, question))
            return [{**_turn(t), "user": u, "collection": c,
                     "history": [{"question": q} for tid, q in earlier.get(t.conversation_id, []) if tid < t.id][-3:]}
                    for t, u, c in rows]

    def count_rated(self, rating: int) -> int:
        with self.catalogue.session() as s:
            return s.scalar(select(func.count()).select_from(ConversationTurn).where(ConversationTurn.rating == rating))


def _summary(c: Conversation, turns: int | None) -> dict:
    return {"id": c.id, "title": c.title, "collection": c.collection, "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at), **({"turns": turns} if turns is not None else {})}


def _turn(t: ConversationTurn) -> dict:
    return {"id": t.id, "asked_at": iso(t.asked_at), "question": t.question, "standalone": t.standalone,
            "answer": t.answer, "found": t.found, "citations": t.citations, "retrieved": t.retrieved,
            "backend": t.backend, "model": t.model, "timings": t.timings,
            "rating": {1: "up", -1: "down"}.get(t.rating), "comment": t.comment, "rated_at": iso(t.rated_at)}
