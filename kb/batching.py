"""Requests that arrive together share one call: the first thread to find the worker free runs the
call for every request waiting at that moment (up to `max_batch`); the others find their result ready.

Used for question embeddings (one model call for concurrent questions) and exact FAISS searches (one
matrix product scans the vectors once for all of them, instead of once per question).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ModelLock:
    """One model's calls one at a time, questions first: a passage step does not start while a question
    waits, so a question waits for at most the one step already running (a few passages), never for a
    whole upload's batch. Each loaded model has its own: two models never wait for each other."""

    def __init__(self):
        self._turn = threading.Condition()
        self._busy = False
        self._questions = 0  # waiting

    @contextmanager
    def question(self) -> Iterator[None]:
        with self._turn:
            self._questions += 1
            try:
                self._turn.wait_for(lambda: not self._busy)
            finally:
                self._questions -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def passages(self) -> Iterator[None]:
        with self._turn:
            self._turn.wait_for(lambda: not self._busy and not self._questions)
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._turn:
            self._busy = False
            self._turn.notify_all()


class _Request(Generic[T, R]):
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: T):
        self.item, self.result, self.error, self.done = item, None, None, False


class Batcher(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], Sequence[R]], max_batch: int = 32,
                 lock: Callable[[], AbstractContextManager] | None = None):
        self.call = call
        self.max_batch = max_batch
        own = threading.Lock()
        self._running = lock or (lambda: own)  # held while a call runs (shared with other users of the model)
        self._queue_lock = threading.Lock()
        self._waiting: list[_Request[T, R]] = []

    def __call__(self, item: T) -> R:
        req: _Request[T, R] = _Request(item)
        with self._queue_lock:
            self._waiting.append(req)
        with self._running():
            if not req.done:
                with self._queue_lock:
                    batch = self._waiting[: self.max_batch]
                    if req not in batch:  # a long queue: this request goes alone rather than wait again
                        batch = [req]
                    for r in batch:
                        self._waiting.remove(r)
                try:
                    results = self.call([r.item for r in batch])
                    for r, result in zip(batch, results, strict=True):
                        r.result = result
                except BaseException as exc:  # every request of the batch gets the error, even an interrupt
                    for r in batch:
                        r.error = exc
                    raise
                finally:
                    for r in batch:
                        r.done = True
        if req.error is not None:
            raise req.error
        return req.result
