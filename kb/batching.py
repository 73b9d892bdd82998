"""Requests that arrive together share one call: the first thread to find the worker free runs the
call for every request waiting at that moment (up to `max_batch`); the others find their result ready.

Used for question embeddings (one model call for concurrent questions) and exact FAISS searches (one
matrix product scans the vectors once for all of them, instead of once per question).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T, R]):
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: T):
        self.item, self.result, self.error, self.done = item, None, None, False


class Batcher(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], Sequence[R]], max_batch: int = 32, lock: threading.Lock | None = None):
        self.call = call
        self.max_batch = max_batch
        self._running = lock or threading.Lock()  # held while a call runs (shared with other users of the model)
        self._queue_lock = threading.Lock()
        self._waiting: list[_Request[T, R]] = []

    def __call__(self, item: T) -> R:
        req: _Request[T, R] = _Request(item)
        with self._queue_lock:
            self._waiting.append(req)
        with self._running:
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
