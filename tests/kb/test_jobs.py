"""Background jobs in the catalogue: one running job per collection even when workers race, a dead
worker's job queued again (and failed after MAX_ATTEMPTS), and a real `kb worker` SIGKILLed mid-job
whose job another worker finishes, leaving the collection consistent."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time

import pytest

from app.worker import Worker, wait_for
from kb.catalogue import Catalogue
from kb.errors import NotFoundError
from kb.jobs import MAX_ATTEMPTS, JobQueue
from kb.knowledge_base import KnowledgeBase
from tests.conftest import FAST_MODEL, ROOT, SAMPLES, consistent


@pytest.fixture
def queue(catalogue_backend, tmp_path) -> JobQueue:
    """On SQLite and on a real PostgreSQL."""
    return JobQueue(Catalogue(catalogue_backend or f"sqlite:///{tmp_path / 'c.sqlite3'}"))


def test_one_running_job_per_collection_and_oldest_first(queue):
    a1, a2 = queue.submit("a", "reindex"), queue.submit("a", "upload", {"paths": ["/x"]})
    b1 = queue.submit("b", "reindex")
    first = queue.claim("w1")
    assert first.id == a1.id and first.status == "running" and first.worker == "w1" and first.attempts == 1
    second = queue.claim("w2")
    assert second.id == b1.id  # a's next job waits while a1 runs; b is free
    assert queue.claim("w3") is None
    queue.finish(a1.id, "w1", {"ok": 1})
    assert queue.get(a1.id).status == "done" and queue.get(a1.id).result == {"ok": 1}
    assert queue.claim("w3").id == a2.id and queue.get(a2.id).params == {"paths": ["/x"]}


def test_the_database_refuses_a_second_running_job_of_a_collection(queue):
    """Two workers that both saw no running job cannot both start one: the partial unique index says no."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from kb.jobs import JobRow

    j1, j2 = queue.submit("a", "reindex"), queue.submit("a", "reindex")
    assert queue.claim("w1").id == j1.id
    with pytest.raises(IntegrityError), queue.catalogue.session() as s:
        s.execute(update(JobRow).where(JobRow.id == j2.id).values(status="running"))
    assert queue.get(j2.id).status == "queued"


def test_a_dead_workers_job_is_queued_again_then_failed_after_max_attempts(queue):
    job = queue.submit("a", "reindex")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = queue.claim(f"w{attempt}", stale_after_s=60)
        assert claimed.id == job.id and claimed.attempts == attempt
        assert queue.claim("other", stale_after_s=60) is None  # beating recently: not stale
        assert not queue.heartbeat(job.id, "someone-else")  # only its worker may beat
        time.sleep(0.05)
        queue.requeue_stale(stale_after_s=0.01)  # the worker stopped beating
    final = queue.get(job.id)
    assert final.status == "failed" and f"stopped {MAX_ATTEMPTS} times" in final.error
    queue.finish(job.id, f"w{MAX_ATTEMPTS}", {"late": True})  # a worker that comes back late changes nothing
    assert (queue.get(job.id).status, queue.get(job.id).result) == ("failed", None)


@pytest.mark.slow
@pytest.mark.usefixtures("catalogue_backend")
def test_a_killed_worker_process_leaves_a_job_another_worker_finishes(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for f in SAMPLES.iterdir():
        if f.suffix in (".md", ".html", ".pdf"):
            shutil.copy(f, docs / f.name)
    kb = KnowledgeBase(settings=settings)
    job = kb.submit_reindex([docs])
    env = {**os.environ, "KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120",
           "KB_CHUNKING__OVERLAP_TOKENS": "20", "KB_INGEST__WRITE_BATCH_CHUNKS": "5",
           "KB_CRASH_AT": "after_commit:1"}
    run = subprocess.run([sys.executable, "-m", "app.cli", "--home", str(settings.home), "worker", "--once"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert run.returncode == -9, run.stderr[-2000:]  # killed itself at the crash point, mid-job
    dead = kb.jobs.get(job.id)
    assert dead.status == "running" and dead.attempts == 1
    partial = kb.catalogue.counts(kb.collection)["documents"]
    assert 0 < partial < 5
    rescuer = Worker(settings, name="rescuer", stale_after_s=0.5)
    time.sleep(0.6)
    done = rescuer.run_once()
    assert (done.id, done.status, done.attempts, done.worker) == (job.id, "done", 2, "rescuer")
    assert done.result["unchanged"] == partial and done.result["added"] == 5 - partial
    assert consistent(kb)[0] == 5
    assert wait_for(kb.jobs, job.id, timeout_s=1).status == "done"


def test_heartbeats_use_the_catalogues_clock_not_the_workers(queue, monkeypatch):
    """A worker whose clock is 120 s behind (another machine) claims a job: a rescuer with a correct clock
    must not take it over as stale, and the job's times stay in order (issue 30, item 7)."""
    import kb.jobs

    job = queue.submit("default", "reindex")
    behind = lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=120)  # noqa: E731
    with monkeypatch.context() as m:  # a FAKE slow clock in the claiming worker's Python
        m.setattr(kb.jobs, "utcnow", behind, raising=False)
        assert queue.claim("behind", stale_after_s=60).id == job.id
        assert queue.heartbeat(job.id, "behind", {"done": 1})
    assert queue.requeue_stale(60) == []  # the healthy job keeps its worker
    assert queue.get(job.id).worker == "behind"
    queue.finish(job.id, "behind", {"ok": True})
    done = queue.get(job.id)
    assert done.status == "done" and done.finished_at >= done.started_at


def test_a_delete_while_a_job_runs_is_queued_not_waited_for(tmp_path):
    """DELETE /v1/documents during an upload used to wait for the writer lock (up to lock_timeout_s,
    then 409); it is queued behind the running job and done by the worker (issue 30, item 8)."""
    from kb.home import Home
    from kb.settings import EmbeddingSettings, IngestSettings, Settings

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.md", "b.md"):
        (docs / name).write_text(f"# {name}\n\nSome text of {name}.\n")
    home = Home(Settings(home=tmp_path / "home", embedding=EmbeddingSettings(model="hash-384"),
                         ingest=IngestSettings(lock_timeout_s=600)))
    kb = home.collection()
    kb.sync([docs])
    running = home.jobs.submit("default", "reindex")
    assert home.jobs.claim("busy-worker").id == running.id  # an upload is being indexed
    t0 = time.monotonic()
    paths, job = kb.remove_or_queue("a.md")
    assert job is not None and job.kind == "delete" and time.monotonic() - t0 < 5  # answered at once
    assert paths[0].endswith("a.md") and len(kb.documents()) == 2  # not removed yet
    with pytest.raises(NotFoundError):
        kb.remove_or_queue("no-such-file.md")  # an unknown document is still refused at once
    home.jobs.finish(running.id, "busy-worker", {"ok": True})
    done = Worker(home).run_once()
    assert done.id == job.id and done.status == "done", done.error
    assert [d.path.rsplit("/", 1)[-1] for d in kb.documents()] == ["b.md"]
    paths, job = kb.remove_or_queue("b.md")  # nothing running: removed at once
    assert job is None and paths[0].endswith("b.md") and kb.documents() == []
