"""Processes a test starts: on a free port, in their own process group, stopped with every child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group PGID, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(pgrp) == pgid and state != "Z":
                pids.append(int(entry.name))
    return pids


def stop_group(proc: subprocess.Popen) -> None:
    """End the whole process group (a server's children too) and wait until every member is gone
    (SIGTERM, then SIGKILL)."""
    for sig, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace_s
        while (proc.poll() is None or group_members(proc.pid)) and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None and not group_members(proc.pid):
            return
    raise AssertionError(f"{proc.args[:3]} left processes behind: {group_members(proc.pid)}")


@contextmanager
def running(cmd: list[str], health_url: str, log_path: Path, env: dict | None = None, cwd: Path | None = None,
            timeout_s: float = 120) -> Iterator[subprocess.Popen]:
    """Start CMD in its own process group, wait until HEALTH_URL answers 200, stop the group afterwards."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True)
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{cmd[:3]} did not start: " + log_path.read_text()[-3000:])
                time.sleep(0.3)
            yield proc
        finally:
            stop_group(proc)
