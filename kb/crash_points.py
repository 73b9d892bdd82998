"""Named points in the write path where a test can make this process SIGKILL itself.

Used by the crash-consistency tests (settings.crash_at = "step" or "step:N" for the N-th time).
"""

import os
import signal

_hits: dict[str, int] = {}


def crash_point(name: str, crash_at: str) -> None:
    if not crash_at:
        return
    step, _, nth = crash_at.partition(":")
    if step != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
