"""The SQL catalogue (SQLAlchemy 2.x): collections, documents, chunks, embedding cache, ingest runs.

Chunk ids are the FAISS ids: the index holds only ids and vectors, the text lives here.
Works on SQLite (default, WAL) and on any SQLAlchemy URL such as PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,

    func,
    select,
    text as sql_text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from kb import migrations
from kb.errors import CatalogueError, CatalogueUnavailable, DiskFull

# SQLite only autoincrements an INTEGER PRIMARY KEY; elsewhere use 64-bit ids like FAISS.
ChunkId = BigInteger().with_variant(Integer(), "sqlite")
# Held while a PostgreSQL catalogue's tables are created: two processes doing it at once collide.
log = logging.getLogger(__name__)
_SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"kb-catalogue-schema").digest()[:8], "big", signed=True)


class FreeText(TypeDecorator):
    """Text from documents and users. PostgreSQL refuses NUL in text (SQLite keeps it): there a NUL becomes
    U+FFFD, one character for one, so offsets into the text stay right."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:  # noqa: ANN001
        if value is not None and dialect.name == "postgresql" and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(t: dt.datetime | None) -> str | None:
    """A catalogue timestamp (naive UTC) as ISO 8601 with its Z, to the second; None stays None."""
    return None if t is None else t.isoformat(timespec="seconds") + "Z"


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("collection_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(2000))  # identity within the collection
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mime: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # indexed | failed
    error: Mapped[str | None] = mapped_column(FreeText)  # the failure in words
    error_code: Mapped[str | None] = mapped_column(String(40))  # the failure's reason (ingest/extract.py)
    limit_setting: Mapped[str | None] = mapped_column(String(40))  # the ingest setting it hit, and its value then
    limit_value: Mapped[float | None] = mapped_column(Float)
    pages: Mapped[int | None] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class Chunk(Base):
    __tablename__ = "chunks"
    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)  # = FAISS id
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(FreeText)
    page: Mapped[int | None] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(FreeText)  # "Chapter > Section > Subsection"
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    embed_sha256: Mapped[str] = mapped_column(String(64))  # hash of the exact text embedded
    ocr: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # text read by OCR
    document: Mapped[Document] = relationship(back_populates="chunks")


class CachedEmbedding(Base):
    __tablename__ = "embedding_cache"
    model: Mapped[str] = mapped_column(String(500), primary_key=True)
    text_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class IngestRun(Base):
    __tablename__ = "ingest_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    command: Mapped[str] = mapped_column(String(50))
    roots: Mapped[list] = mapped_column(JSON, default=list)  # the files/folders it synced
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    seconds: Mapped[float | None] = mapped_column(Float)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    errors: Mapped[list] = mapped_column(JSON, default=list)


class QueryLog(Base):
    """Every search and answer: what was asked, what was retrieved, how long each stage took."""

    __tablename__ = "queries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    asked_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(20))  # search | ask | eval
    question: Mapped[str] = mapped_column(FreeText)
    retrieved: Mapped[list] = mapped_column(JSON, default=list)  # [{"chunk_id", "score"}]
    found: Mapped[bool] = mapped_column(default=True)
    backend: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(500))
    timings: Mapped[dict] = mapped_column(JSON, default=dict)  # seconds per stage
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[str | None] = mapped_column(FreeText)
    citations: Mapped[list] = mapped_column(JSON, default=list)  # [{"n", "chunk_id", "page"}]


class Conversation(Base):
    """A user's chat with one collection (None: every collection the user may read), newest first."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_updated", "user_id", "updated_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    collection: Mapped[str | None] = mapped_column(String(200))  # by name, like a grant
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ConversationTurn(Base):
    """One question of a conversation: what was typed, what was searched for it, what kb answered from
    which chunks, and what the user thought of it."""

    __tablename__ = "conversation_turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    asked_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    question: Mapped[str] = mapped_column(FreeText)
    standalone: Mapped[str | None] = mapped_column(FreeText)  # the question searched, when not the one typed
    answer: Mapped[str] = mapped_column(FreeText, default="")
    found: Mapped[bool] = mapped_column(Boolean, default=True)
    citations: Mapped[list] = mapped_column(JSON, default=list)  # answer_json's citations
    retrieved: Mapped[list] = mapped_column(JSON, default=list)  # [{"chunk_id", "score"}]
    backend: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(500))
    timings: Mapped[dict] = mapped_column(JSON, default=dict)  # seconds per stage
    rating: Mapped[int | None] = mapped_column(Integer, index=True)  # 1: 👍, -1: 👎, None: not rated
    comment: Mapped[str | None] = mapped_column(FreeText)
    rated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Evaluation(Base):
    """A `kb eval` run: what was measured and the metrics, shown on the UI's status page."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    qa_file: Mapped[str] = mapped_column(String(2000))
    corpus: Mapped[str | None] = mapped_column(String(2000))
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers (UI) never block the writer
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


DEADLINE_GRACE_S = 2.0  # past the server's own statement_timeout, before this side gives up on it


class _Deadlines:
    """A server that stops answering mid-statement (a frozen process, a network that drops packets
    silently) cannot enforce its own statement_timeout, and its kernel still answers keepalives: one
    thread per process shuts the socket of any statement running past its deadline, so the statement
    fails as a lost connection (CatalogueUnavailable: a 503, exit 3) and the pool drops it, instead of
    holding the request until the server wakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, object]] = {}  # id(DBAPI connection) -> (deadline, connection)
        self._thread: threading.Thread | None = None

    def start(self, dbapi_connection: object, seconds: float) -> None:
        with self._lock:
            self._running[id(dbapi_connection)] = (time.monotonic() + seconds, dbapi_connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="kb-db-deadlines", daemon=True)
                self._thread.start()

    def stop(self, dbapi_connection: object) -> None:
        with self._lock:
            self._running.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                late = [c for deadline, c in self._running.values() if deadline <= now]
                for c in late:
                    self._running.pop(id(c), None)
            for c in late:
                _shut(c)


def _shut(dbapi_connection: object) -> None:
    """Shut the connection's socket from this side (the blocked read then ends at once)."""
    try:
        fd = dbapi_connection.pgconn.socket  # psycopg 3
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
        log.warning("a catalogue statement ran past its deadline; its connection was closed")
    except Exception as exc:  # noqa: BLE001 - another driver, or the connection already gone
        log.debug("could not close a late connection: %s", exc)


DEADLINES = _Deadlines()


def _deadline_per_statement(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        DEADLINES.start(conn.connection.dbapi_connection, seconds)

    @event.listens_for(engine, "after_cursor_execute")
    def _ended(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        DEADLINES.stop(conn.connection.dbapi_connection)

    @event.listens_for(engine, "handle_error")
    def _failed(context) -> None:  # noqa: ANN001
        if context.connection is not None and context.connection.connection.dbapi_connection is not None:
            DEADLINES.stop(context.connection.connection.dbapi_connection)


# SQLite's words for a damaged file (header overwritten, pages zeroed, truncated).
_DAMAGE = ("not a database", "malformed", "corrupt", "disk image", "file is encrypted")


# -- who may see what (kb/access.py) ----------------------------------------------------------------------
class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(500))  # argon2id; None: token-only account
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)  # consecutive, for the back-off
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class Grant(Base):
    """A user's or a group's level on a collection (by name: a grant may precede the collection)."""
    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("user_id", "group_id", "collection"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    collection: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(10))  # read | write | admin


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # the token itself is never stored
    prefix: Mapped[str] = mapped_column(String(20))  # shown in lists, to tell tokens apart
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class AuditEntry(Base):
    """Who asked what, who uploaded, deleted, re-indexed or changed access, and when."""
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(50))
    collection: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class ChunkChange(Base):
    """The catalogue's change sequence: every chunk id added or removed, in commit order (one writer at a
    time). Serving nodes keep their indexes as local copies and catch up from their last `seq`."""
    __tablename__ = "chunk_changes"
    seq: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(Integer, index=True)  # no foreign key: outlives a collection
    chunk_id: Mapped[int] = mapped_column(BigInteger)
    added: Mapped[bool] = mapped_column(Boolean)


class JobRow(Base):
    """A background job (kb/jobs.py). A partial unique index: at most one running job per collection."""
    __tablename__ = "jobs"
    __table_args__ = (
        Index("one_running_job_per_collection", "collection", unique=True,
              sqlite_where=sql_text("status = 'running'"), postgresql_where=sql_text("status = 'running'")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # {"paths": [...]}
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued | running | done | failed
    progress: Mapped[dict] = mapped_column(JSON, default=dict)  # {"total", "done", "current"}
    result: Mapped[dict | None] = mapped_column(JSON)  # the sync report: counts, failures, files
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Catalogue:
    """Owns the engine and sessions; small query helpers used by ingestion, retrieval and status."""

    def __init__(self, url: str, connect_timeout_s: float = 10, statement_timeout_s: float = 120):
        """On PostgreSQL a connection attempt gives up after `connect_timeout_s`, a statement after
        `statement_timeout_s`, and TCP keepalives notice a vanished server; SQLite waits 30 s for a lock."""
        args = {}
        if make_url(url).get_backend_name() == "postgresql":
            args = {"connect_timeout": max(1, round(connect_timeout_s)), "keepalives": 1, "keepalives_idle": 30,
                    "keepalives_interval": 10, "keepalives_count": 3,
                    "options": f"-c statement_timeout={round(statement_timeout_s * 1000)}"}
        self.engine = create_engine(url, connect_args=args)
        if args:  # no pre-ping: its query bypasses the deadlines and would hang on a frozen server
            _deadline_per_statement(self.engine, statement_timeout_s + DEADLINE_GRACE_S)
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
                migrations.upgrade(conn)  # any older catalogue to this kb's schema (kb/migrations)
        except DatabaseError as exc:
            damaged = self._damaged(exc)
            if damaged is exc:
                raise
            raise damaged from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _damaged(self, exc: DatabaseError) -> Exception:
        """A damaged catalogue becomes a CatalogueError saying what to do, a full disk DiskFull, an
        unreachable or silent server CatalogueUnavailable (one line each, no SQL); other errors pass."""
        text = str(exc.orig if getattr(exc, "orig", None) is not None else exc).lower()
        where = self.engine.url.render_as_string(hide_password=True)
        if "database or disk is full" in text or "no space left" in text:
            return DiskFull(f"the disk holding the catalogue {where} is full; nothing of this change was kept. "
                            "Free some space and try again")
        if self.engine.dialect.name != "sqlite" and isinstance(exc, OperationalError):
            reason = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
            return CatalogueUnavailable(
                f"the catalogue database {self.engine.url.host or 'localhost'}/{self.engine.url.database} cannot be "
                f"used now ({reason}); check that it is running and reachable, then try again")
        if not any(word in text for word in _DAMAGE):
            return exc
        return CatalogueError(
            f"the catalogue {where} is damaged ({text.strip()}). Restore it from a backup, or rebuild it "
            "from the indexed files with `kb rebuild-catalogue` (the damaged file is kept beside it)")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except DatabaseError as exc:
                try:
                    s.rollback()
                except DatabaseError:
                    pass
                damaged = self._damaged(exc)
                if damaged is exc:
                    raise
                raise damaged from exc
            except BaseException:
                s.rollback()
                raise

    def check(self) -> list[str]:
        """Problems found by the database's own integrity check (SQLite `PRAGMA quick_check`); [] = healthy."""
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name != "sqlite":
                    conn.exec_driver_sql("SELECT 1")
                    return []
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").all()]
        except DatabaseError as exc:
            return [str(exc.orig if getattr(exc, "orig", None) is not None else exc)]
        return [] if rows == ["ok"] else rows

    def garbled_chunks(self, collection: str, intact: Callable[[str | None, str, str | None], bool]) -> list[tuple[int, str]]:
        """(chunk id, document path) of every chunk whose text fails `intact(heading, text, stored hash)`:
        a page of the catalogue damaged under a check that only reads its structure. Read in batches."""
        out, after = [], 0
        with self.session() as s:
            while True:
                rows = s.execute(select(Chunk.id, Chunk.heading, Chunk.text, Chunk.embed_sha256, Document.path)
                                 .join(Document, Chunk.document_id == Document.id)
                                 .join(Collection, Document.collection_id == Collection.id)
                                 .where(Collection.name == collection, Chunk.id > after)
                                 .order_by(Chunk.id).limit(5000)).all()
                if not rows:
                    return out
                out += [(r.id, r.path) for r in rows if not intact(r.heading, r.text, r.embed_sha256)]
                after = rows[-1].id

    def collection(self, s: Session, name: str, create: bool = True) -> Collection | None:
        col = s.scalar(select(Collection).where(Collection.name == name))
        if col is None and create:
            col = Collection(name=name)
            s.add(col)
            s.flush()
        return col

    def last_change(self, collection: str) -> int:
        """The newest change sequence number of a collection (0 when none)."""
        with self.session() as s:
            col = self.collection(s, collection, create=False)
            return 0 if col is None else int(s.scalar(
                select(func.max(ChunkChange.seq)).where(ChunkChange.collection_id == col.id)) or 0)

    def changes_since(self, collection: str, seq: int) -> list[tuple[int, int, bool]]:
        """(seq, chunk id, added) of a collection after `seq`, oldest first."""
        with self.session() as s:
            col = self.collection(s, collection, create=False)
            if col is None:
                return []
            return [tuple(r) for r in s.execute(
                select(ChunkChange.seq, ChunkChange.chunk_id, ChunkChange.added)
                .where(ChunkChange.collection_id == col.id, ChunkChange.seq > seq).order_by(ChunkChange.seq))]

    def chunk_ids(self, collection: str) -> set[int]:
        with self.session() as s:
            q = (
                select(Chunk.id)
                .join(Document)
                .join(Collection)
                .where(Collection.name == collection)
            )
            return set(s.scalars(q))

    def chunks_by_ids(self, ids: Iterable[int], collections: str | list[str] | None = None) -> dict[int, Chunk]:
        """Chunks by id, with their document loaded; with `collections`, only those collections' (an index
        left ahead of the catalogue by a crash may hold ids that another collection has since taken)."""
        ids = list(ids)
        names = [collections] if isinstance(collections, str) else collections
        with self.session() as s:
            q = select(Chunk).where(Chunk.id.in_(ids))
            if names is not None:
                q = q.join(Document).join(Collection).where(Collection.name.in_(names))
            rows = s.scalars(q).all()
            for r in rows:
                _ = r.document  # load before the session closes
            return {r.id: r for r in rows}

    def chunk_collections(self, ids: Iterable[int]) -> dict[int, str]:
        """Which collection each chunk belongs to (ids the catalogue lacks are left out)."""
        ids, out = list(ids), {}
        with self.session() as s:
            for i in range(0, len(ids), 500):  # stay under SQL parameter limits
                q = (select(Chunk.id, Collection.name).join(Document, Chunk.document_id == Document.id)
                     .join(Collection, Document.collection_id == Collection.id).where(Chunk.id.in_(ids[i : i + 500])))
                out.update(dict(s.execute(q).all()))
        return out

    def cached_vectors(self, s: Session, model: str, hashes: Iterable[str]) -> dict[str, bytes]:
        hashes = list(set(hashes))
        out: dict[str, bytes] = {}
        for i in range(0, len(hashes), 500):  # stay under SQL parameter limits
            q = select(CachedEmbedding.text_sha256, CachedEmbedding.vector).where(
                CachedEmbedding.model == model, CachedEmbedding.text_sha256.in_(hashes[i : i + 500])
            )
            out.update({h: v for h, v in s.execute(q)})
        return out

    def chunk_vectors(self, model: str, ids: Iterable[int],
                      only: Callable[[str], bool] | None = None) -> dict[int, bytes]:
        """`model`'s cached vectors of these chunks (by the hash of their embedded text), where cached;
        with `only`, of the chunks whose embedded text it accepts."""
        from kb.vector_index import embedded_text

        ids = list(ids)
        out: dict[int, bytes] = {}
        with self.session() as s:
            for i in range(0, len(ids), 500):
                q = (select(Chunk.id, Chunk.heading, Chunk.text, CachedEmbedding.vector)
                     .join(CachedEmbedding, CachedEmbedding.text_sha256 == Chunk.embed_sha256)
                     .where(CachedEmbedding.model == model, Chunk.id.in_(ids[i : i + 500])))
                out.update({r.id: r.vector for r in s.execute(q)
                            if only is None or only(embedded_text(r.heading, r.text))})
        return out

    def counts(self, collection: str) -> dict[str, int]:
        with self.session() as s:
            col = self.collection(s, collection, create=False)
            if col is None:
                return {"documents": 0, "indexed": 0, "failed": 0, "chunks": 0}
            docs = dict(
                s.execute(
                    select(Document.status, func.count()).where(Document.collection_id == col.id).group_by(
                        Document.status
                    )
                ).all()
            )
            # The documents' own chunk counts: one row per document, not a scan of every chunk (1M chunks).
            chunks = s.scalar(select(func.sum(Document.chunk_count)).where(Document.collection_id == col.id))
            return {
                "documents": sum(docs.values()),
                "indexed": docs.get("indexed", 0),
                "failed": docs.get("failed", 0),
                "chunks": int(chunks or 0),
            }
