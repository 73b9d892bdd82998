"""Extraction in a worker process, with a wall-clock and a memory limit per file (issue 15).

Parsers run on untrusted bytes, and some inputs make them run for hours or inflate to gigabytes inside
C code (lxml on a zip bomb, pandas on a million-row sheet) where no Python-level check can stop them. So
files are read by a separate process that the writer watches: past the time limit, or past the memory
limit (its resident size, sampled every 20 ms; stopped when the next sample would cross it at the
rate it grows), the process group is killed and the file is recorded as
"timed out" or "too large when unpacked" with its numbers; the next file gets a fresh worker. The
clock starts once the worker has imported the file's parser (unstructured takes ~5 s to import, which
is no file's fault). A worker that finishes a file is reused, so workers are kept in a small
process-wide pool; a file costs no start-up.

The worker answers in length-prefixed JSON, never pickle: a parser exploited by a hostile file must not
be able to run code in the writer. Its log records (pypdf's warnings on a broken PDF) travel with the
answer and are logged by the writer, so they land in HOME/kb.log like the writer's own. It dies with its parent (PR_SET_PDEATHSIG on Linux; EOF on stdin
elsewhere), so a killed writer never leaves one running.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from ingest.extract import CORRUPT, READER_STOPPED, TIMED_OUT, TOO_LARGE, Block, Extracted, Limits, extract, load_reader
from kb.errors import ExtractionError

POLL_S = 0.02  # how often the worker's memory is sampled
MAX_LOG_RECORDS = 1000  # per file: pypdf can warn thousands of times on one broken PDF
LOAD_TIMEOUT_S = 600  # importing a parser; only a broken installation takes this long
_HEADER = struct.Struct(">Q")


@dataclass(frozen=True)
class WorkerLimits:
    seconds: float = 120.0
    memory_bytes: int = 2_000_000_000
    ocr_page_seconds: float = 60.0  # added to `seconds` for each page the worker reads by OCR


# -- the protocol: 8-byte length, then UTF-8 JSON -----------------------------------------------------

def _send(fd: int, message: dict) -> None:
    # "replace": broken PDF font maps give pypdf lone surrogates, which UTF-8 cannot carry
    data = json.dumps(message, ensure_ascii=False).encode("utf-8", "replace")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _to_message(doc: Extracted) -> dict:
    return {"blocks": [[b.text, b.page, b.heading] for b in doc.blocks], "mime": doc.mime, "pages": doc.pages,
            "warnings": doc.warnings, "ocr_pages": doc.ocr_pages}


def _from_message(m: dict) -> Extracted:
    """The worker's answer, checked: it parsed a hostile file, so its output is data of the expected
    shape or a protocol error (ValueError), never anything else."""
    def text(v: object) -> str:
        if not isinstance(v, str):
            raise ValueError("a text that is not a string")
        return v

    def number(v: object) -> int | None:
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError("a page that is not a number")
        return v

    blocks = [Block(text(t), number(p), None if h is None else text(h)) for t, p, h in m["blocks"]]
    ocr_pages = [number(p) for p in m["ocr_pages"]]
    if None in ocr_pages:
        raise ValueError("an OCR page that is not a number")
    return Extracted(blocks, text(m["mime"]), number(m["pages"]), [text(w) for w in m["warnings"]], ocr_pages)


# -- the worker process ---------------------------------------------------------------------------

def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _serve() -> None:
    """The worker's loop: one request in, one answer out, until stdin closes."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the writer died before the line above took effect
        return
    out = os.dup(1)
    os.dup2(2, 1)  # a parser that prints cannot corrupt the answers
    records: list[list] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if len(records) < MAX_LOG_RECORDS:  # pypdf can warn thousands of times on one broken PDF
                records.append([record.name, record.levelno, record.getMessage()])
            else:
                records[-1] = ["kb", logging.INFO, "more log lines were left out"]

    root = logging.getLogger()
    root.handlers[:] = [Collect()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    from ingest import ocr

    ocr.on_page = lambda: _send(out, {"progress": "ocr page"})  # the writer extends the file's time limit
    inp = sys.stdin.fileno()
    while True:
        header = _read_exactly(inp, _HEADER.size)
        if header is None:
            return
        request = json.loads(_read_exactly(inp, _HEADER.unpack(header)[0]))
        try:
            load_reader(Path(request["path"]))
        except Exception:  # noqa: BLE001 - reading the file will raise it again, as that file's failure
            pass
        _send(out, {"started": True})  # the file's clock starts now
        try:
            doc = extract(Path(request["path"]), request["password"], Limits(**request["limits"]))
            answer = {"ok": _to_message(doc)}
        except ExtractionError as exc:
            answer = {"error": [exc.reason, exc.detail, exc.limit]}
        except MemoryError:  # the machine's memory, not kb's limit: worth another try
            answer = {"error": [READER_STOPPED, "the machine ran out of memory while reading it", None]}
        except Exception as exc:  # noqa: BLE001 - a parser bug on hostile input is this file's failure
            answer = {"error": [CORRUPT, f"{type(exc).__name__}: {exc}", None]}
        answer["log"] = records[:]
        records.clear()
        _send(out, answer)


# -- the writer's side ----------------------------------------------------------------------------

class _NotStarted(Exception):
    """The worker died or hung before it began the file: not the file's fault (the pool retries once)."""


class _Worker:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        # -P: the working directory (maybe the folder being indexed) is not put on sys.path, so a
        # planted psutil.py there is never imported
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "ingest.extraction_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, start_new_session=True, cwd=root)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self._last_rss = 0

    def read(self, path: Path, password: str | None, limits: Limits, wl: WorkerLimits) -> Extracted:
        """Extract one file in this worker; ExtractionError for the file's own failure. After a limit or
        a crash the worker is dead (`alive` is False) and the error says which limit and by how much."""
        try:
            _send(self.proc.stdin.fileno(), {"path": str(path), "password": password, "limits": limits.__dict__})
            self._wait(time.monotonic() + LOAD_TIMEOUT_S, None, time.monotonic(), f"limit {LOAD_TIMEOUT_S} s",
                       LOAD_TIMEOUT_S)
            self._answer()  # {"started": true}: the parser is imported
        except (OSError, ExtractionError) as exc:
            self.kill()
            raise _NotStarted(str(exc)) from exc
        t0 = time.monotonic()
        deadline, ocr_pages = t0 + wl.seconds, 0
        try:
            while True:
                self._wait(deadline, wl.memory_bytes, t0, f"limit {wl.seconds:,g} s" + (
                    f" + {wl.ocr_page_seconds:,g} s for each of {ocr_pages} OCR pages" if ocr_pages else ""),
                    wl.seconds)
                answer = self._answer(max_bytes=max(limits.max_bytes or 0, 50_000_000) * 8, deadline=deadline)
                if answer.get("progress") != "ocr page" or ocr_pages >= limits.max_ocr_pages:
                    break
                ocr_pages += 1
                deadline += wl.ocr_page_seconds
            for name, level, message in answer.get("log", [])[:MAX_LOG_RECORDS]:
                logging.getLogger(str(name)).handle(logging.makeLogRecord(
                    {"name": str(name), "levelno": int(level), "levelname": logging.getLevelName(int(level)),
                     "msg": str(message)}))
            if "error" in answer:
                reason, detail, limit = answer["error"]
                if limit is not None:  # checked: the worker read a hostile file
                    limit = (str(limit[0]), float(limit[1]))
                raise ExtractionError(str(reason), str(detail), limit)
            return _from_message(answer["ok"])
        except ExtractionError:
            raise
        except (ValueError, TypeError, KeyError, RecursionError, AttributeError) as exc:
            self.kill()
            raise ExtractionError(READER_STOPPED, f"the reader process gave an unreadable answer ({exc})") from exc

    def _wait(self, deadline: float, memory_bytes: int | None, t0: float, limit: str, limit_s: float) -> None:
        """Until the worker answers; past `deadline` or `memory_bytes` it is killed and the file fails
        (`limit`: the time limit in words; `limit_s`: the file_timeout_s it came from)."""
        last = self._rss()
        while not select.select([self.proc.stdout], [], [], POLL_S)[0]:
            waited = time.monotonic() - t0
            rss = self._rss()
            self.peak_rss = max(self.peak_rss, rss)
            growth, last = max(0, rss - last), rss
            if memory_bytes is not None and rss + growth > memory_bytes:  # stopped before it crosses the limit
                self.kill()
                raise ExtractionError(TOO_LARGE + " when unpacked",
                                      f"needed more than {memory_bytes / 1e6:,g} MB of memory while being read "
                                      f"(at {rss / 1e6:,.0f} MB and growing {growth / 1e6:,.0f} MB every "
                                      f"{POLL_S * 1000:.0f} ms, after {waited:.1f} s; limit {memory_bytes / 1e6:,g} MB)",
                                      ("max_memory_mb", memory_bytes / 1e6))
            if time.monotonic() > deadline:
                self.kill()
                raise ExtractionError(TIMED_OUT, f"still reading after {waited:,.0f} s ({limit})",
                                      ("file_timeout_s", limit_s))

    def _answer(self, max_bytes: int = 1 << 20, deadline: float | None = None) -> dict:
        fd = self.proc.stdout.fileno()
        header = _read_exactly(fd, _HEADER.size)
        size = _HEADER.unpack(header)[0] if header else 0
        if header and size > max_bytes:
            raise ValueError(f"an answer of {size:,} bytes")
        body = _read_exactly(fd, size) if header else None
        if body is None:  # the worker died: a crash in C code, or a kill from outside
            self.kill()
            code = self.proc.returncode
            try:
                how = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"
            except ValueError:
                how = f"killed by signal {-code}"
            raise ExtractionError(READER_STOPPED, f"the reader process ended while reading it ({how}); "
                                  "the next run reads it again")
        if deadline is not None and time.monotonic() > deadline + 60:
            raise ValueError("an answer that took minutes to arrive")
        answer = json.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("an answer that is not an object")
        return answer

    def _rss(self) -> int:
        try:
            total = self.ps.memory_info().rss
        except psutil.Error:
            return self._last_rss  # gone: the answer (or its absence) says what happened
        for child in self.ps.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass  # a child that just ended
        self._last_rss = total
        return total

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # stuck in the kernel (a dead network mount): leave it
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


class Extractor(Protocol):
    """What a writer reads files with (injected: `WorkerPool` by default, `InProcess` in unit tests)."""

    def extract(self, path: Path, password: str | None = None, limits: Limits = Limits(),
                worker_limits: WorkerLimits = WorkerLimits()) -> Extracted: ...


class InProcess:
    """Reads files in the writer's own process: no time or memory limit, no isolation from a hostile
    parser. Only for trusted files where start-up matters more than protection (fast unit tests)."""

    def extract(self, path: Path, password: str | None = None, limits: Limits = Limits(),
                worker_limits: WorkerLimits = WorkerLimits()) -> Extracted:
        return extract(path, password, limits)


class WorkerPool:
    """Idle workers, shared by every writer in this process (one file per worker at a time)."""

    def __init__(self, keep_idle: int = 2) -> None:
        self.keep_idle = keep_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.started = 0  # workers started (a replacement after every kill)
        self.peak_rss = 0  # the largest worker resident size seen, bytes
        self.busy: dict[int, str] = {}  # worker pid -> the file it is reading

    def extract(self, path: Path, password: str | None = None, limits: Limits = Limits(),
                worker_limits: WorkerLimits = WorkerLimits()) -> Extracted:
        for attempt in (1, 2):
            worker = self._take()
            self.busy[worker.proc.pid] = str(path)
            interrupted = True  # until read() returns or raises a file's failure
            try:
                doc = worker.read(path, password, limits, worker_limits)
                interrupted = False
                return doc
            except ExtractionError:
                interrupted = False
                raise
            except _NotStarted as exc:  # an idle worker that died since: once more on a fresh one
                interrupted = False
                if attempt == 2:
                    raise ExtractionError(READER_STOPPED, f"the reader process did not start ({exc})") from exc
            finally:
                self._give_back(worker, worker_limits, interrupted)
        raise AssertionError("unreachable")

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.kill()  # closes its pipes
            self.started += 1
        return _Worker()

    def _give_back(self, worker: _Worker, limits: WorkerLimits, interrupted: bool) -> None:
        """Back to the idle list, unless it died, was interrupted mid-answer, or kept much of the memory
        its last file took (allocators rarely give it back: the next file would start near the limit)."""
        self.busy.pop(worker.proc.pid, None)
        self.peak_rss = max(self.peak_rss, worker.peak_rss)
        if worker.alive and not interrupted and worker._rss() < limits.memory_bytes / 2:
            with self._lock:
                if len(self._idle) < self.keep_idle:
                    self._idle.append(worker)
                    return
        if worker.alive:
            worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


POOL = WorkerPool()
atexit.register(POOL.close)

if __name__ == "__main__":
    _serve()
