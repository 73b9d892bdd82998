"""The job worker: runs queued uploads and re-index requests (kb/jobs.py) through the KnowledgeBase.

In-process for the embedded default (a daemon thread beside the web page or `kb serve`), or its own
process (`kb worker`) for deployments. While a job runs, a ticker beats its heartbeat, so a long file
never looks like a dead worker, and a killed worker's job is queued again after `stale_after_s`.
"""

from __future__ import annotations

import logging
import threading
import time

from ingest.pipeline import SyncReport
from kb.errors import KBError
from kb.home import Home
from kb.jobs import Job, JobQueue, worker_name
from kb.knowledge_base import KnowledgeBase
from kb.settings import Settings

log = logging.getLogger(__name__)
LOCK_WAIT_S = 6 * 3600  # a job waits its turn for the writer lock (a long re-index ahead of it), beating meanwhile


class Worker:
    def __init__(self, home: Home | Settings, name: str | None = None, poll_s: float = 0.5,
                 heartbeat_s: float = 5.0, stale_after_s: float = 60.0):
        self.home = home if isinstance(home, Home) else Home(home)  # the process's Home, or one of its own
        self.settings = self.home.settings
        self.name = name or worker_name()
        self.poll_s, self.heartbeat_s, self.stale_after_s = poll_s, heartbeat_s, stale_after_s
        self.stop = threading.Event()
        self.wake = threading.Event()  # set by a submitter in this process: no poll delay
        self.queue = self.home.jobs

    def kb(self, collection: str) -> KnowledgeBase:
        """A job waits its turn for the writer lock (a long re-index ahead of it), beating meanwhile."""
        return self.home.collection(collection).patient(max(self.settings.ingest.lock_timeout_s, LOCK_WAIT_S))

    def run_once(self) -> Job | None:
        """Claim and run one job; the finished job, or None when nothing was waiting."""
        job = self.queue.claim(self.name, self.stale_after_s)
        if job is None:
            return None
        progress = {"total": None, "done": 0, "current": None}
        lock = threading.Lock()

        def on_event(action: str, path: str, detail: str) -> None:
            with lock:
                if action == "discovered":
                    progress["total"] = int(detail)
                else:
                    progress["done"] += action != "removed"
                    progress["current"] = path
                    progress.pop("waiting", None)

        def on_wait(message: str) -> None:
            with lock:
                progress["waiting"] = message
            self.queue.heartbeat(job.id, self.name, dict(progress))

        beating = threading.Event()

        def beat() -> None:
            while not beating.wait(self.heartbeat_s):
                with lock:
                    snapshot = dict(progress)
                try:
                    if not self.queue.heartbeat(job.id, self.name, snapshot):
                        log.warning("job %s is no longer this worker's (requeued after a stall?)", job.id)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                    log.warning("job %s: heartbeat not recorded: %s", job.id, exc)

        ticker = threading.Thread(target=beat, name=f"kb-job-{job.id}-heartbeat", daemon=True)
        ticker.start()
        try:
            report = self._run(job, on_event, on_wait)
        except KBError as exc:
            self.queue.finish(job.id, self.name, None, str(exc), progress)
        except Exception as exc:  # noqa: BLE001 - a job's bug must not kill the worker
            log.exception("job %s failed", job.id)
            self.queue.finish(job.id, self.name, None, f"{type(exc).__name__}: {exc}", progress)
        else:
            self.queue.finish(job.id, self.name, {**report.to_dict(), "seconds": round(report.seconds, 2),
                                                  "files": _files(report)}, None, progress)
        finally:
            beating.set()
            ticker.join()
        return self.queue.get(job.id)

    def _run(self, job: Job, on_event, on_wait):  # noqa: ANN001, ANN202 - ingest.pipeline.Event -> SyncReport
        kb = self.kb(job.collection)
        paths = job.params.get("paths") or []
        if job.kind == "delete":  # queued behind a running job of the collection (remove_or_queue)
            report = SyncReport()
            report.removed = kb.remove(job.params["document"], on_wait=on_wait)
            return report
        if job.kind == "reindex_full":
            return kb.sync(paths, full=True, on_event=on_event, on_wait=on_wait)
        if job.kind == "reindex" and not paths:
            return kb.reindex_all(on_event=on_event, on_wait=on_wait)
        if job.kind == "reindex":
            return kb.sync(paths, on_event=on_event, on_wait=on_wait)
        return kb.ingest(paths, on_event=on_event, on_wait=on_wait)  # upload (already stored) | ingest

    def run_forever(self) -> None:
        log.info("worker %s started", self.name)
        while not self.stop.is_set():
            try:
                ran = self.run_once()
            except Exception as exc:  # noqa: BLE001 - catalogue unreachable, locked, damaged: say so, keep trying
                log.warning("worker %s: %s", self.name, exc)
                ran = None
            if ran is None:
                self.wake.wait(self.poll_s)
                self.wake.clear()

    def start(self) -> Worker:
        """Run in a daemon thread of this process (the embedded default)."""
        threading.Thread(target=self.run_forever, name="kb-worker", daemon=True).start()
        return self


def _files(report) -> list[dict]:  # noqa: ANN001 - SyncReport
    """One row per file, for the job's result: what happened to it and why."""
    rows = [{"path": p, "result": action} for action in ("added", "updated", "unchanged", "removed")
            for p in getattr(report, action)]
    rows += [{"path": p, "result": "failed", "reason": r} for p, r in report.failed]
    rows += [{"path": p, "result": "skipped", "reason": r} for p, r in report.skipped]
    return rows


def wait_for(queue: JobQueue, job_id: int, timeout_s: float = 600.0, poll_s: float = 0.2) -> Job:
    """Block until the job has finished (used by the CLI's `--wait` and tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = queue.get(job_id)
        if job.finished or time.monotonic() > deadline:
            return job
        time.sleep(poll_s)
