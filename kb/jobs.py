"""Background jobs (uploads, re-index requests) recorded in the catalogue, so any process on any
machine sharing it can run them and none is lost when a worker dies.

A job is queued → running → done | failed. A worker claims the oldest queued job of a collection that
has no running job (a partial unique index makes "one running job per collection" hold even when two
workers race), beats a heartbeat while it runs, and records per-file results. A running job whose
heartbeat stopped (its worker was killed) is queued again; indexing is incremental, so the retry
redoes only what the dead worker had not committed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from kb.catalogue import Catalogue, JobRow, iso
from kb.errors import NotFoundError

KINDS = ("upload", "reindex", "reindex_full", "ingest", "delete")
MAX_ATTEMPTS = 3  # a job whose worker died this many times is failed, not retried forever


@dataclass(frozen=True)
class Job:
    id: int
    collection: str
    kind: str
    params: dict
    status: str
    progress: dict
    result: dict | None
    error: str | None
    attempts: int
    worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _job(r: JobRow) -> Job:
    return Job(r.id, r.collection, r.kind, dict(r.params or {}), r.status, dict(r.progress or {}), r.result,
               r.error, r.attempts, r.worker, iso(r.created_at), iso(r.started_at), iso(r.finished_at))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobQueue:
    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def _now(self):  # noqa: ANN202 - an SQL expression
        """The catalogue's clock, in UTC: every worker, on any machine, stamps and judges heartbeats on
        one clock, so a worker whose own clock is behind never looks dead (nor a dead one alive)."""
        if self.catalogue.engine.dialect.name == "postgresql":
            return func.timezone("UTC", func.statement_timestamp())
        return func.strftime("%Y-%m-%d %H:%M:%f", "now")  # SQLite: the one machine's clock, as SQL sees it

    def submit(self, collection: str, kind: str, params: dict | None = None) -> Job:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        with self.catalogue.session() as s:
            row = JobRow(collection=collection, kind=kind, params=params or {}, status="queued", progress={})
            s.add(row)
            s.flush()
            return _job(row)

    def get(self, job_id: int) -> Job:
        with self.catalogue.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"no job {job_id}")
            return _job(row)

    def recent(self, collection: str | None = None, limit: int = 20) -> list[Job]:
        with self.catalogue.session() as s:
            q = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
            if collection:
                q = q.where(JobRow.collection == collection)
            return [_job(r) for r in s.scalars(q)]

    def pending(self, collection: str) -> bool:
        """Whether the collection has a job queued or running."""
        with self.catalogue.session() as s:
            return s.scalar(select(JobRow.id).where(JobRow.collection == collection,
                                                    JobRow.status.in_(("queued", "running"))).limit(1)) is not None

    def requeue_stale(self, stale_after_s: float) -> list[int]:
        """Jobs whose worker stopped beating (killed, machine lost): queued again, or failed after
        MAX_ATTEMPTS. Returns their ids."""
        with self.catalogue.session() as s:
            now = s.scalar(select(self._now()))
            now = dt.datetime.fromisoformat(now) if isinstance(now, str) else now
            limit = now - dt.timedelta(seconds=stale_after_s)
            rows = list(s.scalars(select(JobRow).where(JobRow.status == "running", JobRow.heartbeat_at < limit)))
            for r in rows:
                if r.attempts >= MAX_ATTEMPTS:
                    r.status, r.finished_at = "failed", now
                    r.error = f"its worker stopped {r.attempts} times (killed or out of memory?); not retried"
                else:
                    r.status, r.worker = "queued", None
            return [r.id for r in rows]

    def claim(self, worker: str, stale_after_s: float = 60.0) -> Job | None:
        """The oldest queued job of a collection with no running job, now running for this worker."""
        self.requeue_stale(stale_after_s)
        with self.catalogue.session() as s:
            busy = select(JobRow.collection).where(JobRow.status == "running")
            candidates = list(s.scalars(select(JobRow.id).where(JobRow.status == "queued",
                                                                JobRow.collection.not_in(busy)).order_by(JobRow.id)))
        for job_id in candidates:
            now = self._now()
            try:
                with self.catalogue.session() as s:
                    claimed = s.execute(
                        update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued")
                        .values(status="running", worker=worker, started_at=now, heartbeat_at=now,
                                attempts=JobRow.attempts + 1)).rowcount
            except IntegrityError:  # another worker started a job of this collection meanwhile
                continue
            if claimed:
                return self.get(job_id)
        return None

    def heartbeat(self, job_id: int, worker: str, progress: dict | None = None) -> bool:
        """Record that the job is alive (and its progress). False when it is no longer this worker's."""
        values: dict = {"heartbeat_at": self._now()}
        if progress is not None:
            values["progress"] = progress
        with self.catalogue.session() as s:
            return bool(s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.worker == worker,
                                                       JobRow.status == "running").values(**values)).rowcount)

    def finish(self, job_id: int, worker: str, result: dict | None, error: str | None = None,
               progress: dict | None = None) -> None:
        values = {"status": "failed" if error else "done", "result": result, "error": error, "finished_at": self._now()}
        if progress is not None:
            values["progress"] = progress
        with self.catalogue.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.worker == worker, JobRow.status == "running")
                      .values(**values))  # a worker given up on (requeued, or failed) changes nothing
