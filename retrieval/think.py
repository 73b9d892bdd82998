"""Keeping R1-style <think>…</think> reasoning apart from the answer, also while it streams."""

from __future__ import annotations


class ThinkSplitter:
    """Splits streamed text into ('reasoning', …) and ('answer', …) pieces at <think> / </think>,
    even when a tag arrives cut across two pieces."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, in_think: bool = False):
        self.in_think = in_think
        self.buffer = ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.buffer += piece
        out: list[tuple[str, str]] = []
        while True:
            tag = self.CLOSE if self.in_think else self.OPEN
            i = self.buffer.find(tag)
            if i >= 0:
                self._emit(out, self.buffer[:i])
                self.buffer = self.buffer[i + len(tag):]
                self.in_think = not self.in_think
                continue
            # keep a possible partial tag at the end for the next piece
            keep = next((n for n in range(min(len(tag) - 1, len(self.buffer)), 0, -1)
                         if tag.startswith(self.buffer[-n:])), 0)
            self._emit(out, self.buffer[: len(self.buffer) - keep])
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self.buffer)
        self.buffer = ""
        return out

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if text:
            out.append(("reasoning" if self.in_think else "answer", text))
