"""Upkeep: the repairs and catch-ups that readers find are needed, done by one background thread of the
process, as a writer (under the home's writer lock), never by the reader itself.

A reader that meets indexes left ahead of the catalogue by a failed write, a damaged keyword index, or
a catalogue changed by another node asks for upkeep and answers at once from what is consistent: the
orphans of a failed write have no catalogue row and are left out, a damaged keyword index leaves the
question to the dense search (both with a note), a node behind answers from its last position. Only a
reader with nothing consistent to answer from (no index yet on a fresh node, a vector index that cannot
be read) waits for the upkeep, a bounded time. So a question never waits for another writer's lock.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable

from ingest.writing import Writes

log = logging.getLogger(__name__)
RETRY_S = 5.0  # after a failed repair, the next request for that collection waits this long
IDLE_S = 30.0  # the thread ends after this long with nothing asked


class Upkeep:
    every: weakref.WeakSet[Upkeep] = weakref.WeakSet()  # this process's, for `finish_all`

    def __init__(self, writes: Callable[[], Writes]):
        self._writes = writes  # made on first use: a reader that never needs upkeep loads no writer
        self._cv = threading.Condition()
        self._wanted: dict[str, str] = {}  # collection -> "repair" | "catch_up" (a repair covers a catch-up)
        self._failed: dict[str, float] = {}  # collection -> when its last upkeep failed
        self._running: str | None = None
        self._running_kind = ""
        self._thread: threading.Thread | None = None
        Upkeep.every.add(self)

    def request(self, collection: str, kind: str) -> None:
        """Ask for a collection's upkeep ("repair" or "catch_up"); returns at once."""
        with self._cv:
            if time.monotonic() - self._failed.get(collection, -RETRY_S) < RETRY_S:
                return
            if self._running == collection and (kind == "catch_up" or self._running_kind == kind):
                return  # what the reader saw is what the running upkeep is settling
            if self._wanted.get(collection) != "repair":
                self._wanted[collection] = kind
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="kb-upkeep", daemon=True)
                thread.start()  # first: a thread that could not start must not count as running
                self._thread = thread
            self._cv.notify_all()

    def pending(self, collection: str) -> bool:
        """A repair of this collection is asked for or running."""
        with self._cv:
            return self._wanted.get(collection) == "repair" or self._running == collection

    def failed(self, collection: str) -> bool:
        """Its last upkeep failed a moment ago (not asked again before RETRY_S): nothing to wait for."""
        with self._cv:
            return time.monotonic() - self._failed.get(collection, -RETRY_S) < RETRY_S

    def _run(self) -> None:
        while True:
            with self._cv:
                self._running = None
                self._cv.notify_all()
                if not self._cv.wait_for(lambda: self._wanted, IDLE_S):
                    self._thread = None
                    return
                collection, kind = next(iter(self._wanted.items()))
                del self._wanted[collection]
                self._running, self._running_kind = collection, kind
            try:
                writes = self._writes()
                done = writes.repair(collection) if kind == "repair" else writes.catch_up(collection)
                with self._cv:
                    self._failed.pop(collection, None)
                if kind == "repair":
                    log.info("%s: indexes repaired from the catalogue: %s", collection, done)
            except Exception as exc:  # noqa: BLE001 - logged; readers go on answering from what is consistent
                log.warning("%s: index %s failed (tried again on a later question): %s", collection,
                            kind.replace("_", "-"), exc)
                with self._cv:
                    self._failed[collection] = time.monotonic()

    def wait(self, timeout: float | None = None, collections: list[str] | None = None) -> bool:
        """Until nothing (for these collections; None: any) is asked for or running (True), or the
        timeout passed (False)."""
        def settled() -> bool:
            if collections is None:
                return not self._wanted and self._running is None
            return not any(c in self._wanted for c in collections) and self._running not in collections

        with self._cv:
            return self._cv.wait_for(settled, timeout)

    @classmethod
    def finish_all(cls, timeout: float = 600) -> None:
        """Let what this process's upkeeps were asked for end: at exit (a repair cut short would be redone
        by the next process) and at the end of a one-shot `kb` command."""
        for upkeep in list(cls.every):
            if upkeep._thread is not None:
                upkeep.wait(timeout)


atexit.register(Upkeep.finish_all)
