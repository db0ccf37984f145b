"""A one-line progress bar on stderr for bulk commands; silent when stderr is not a terminal
(logs and CI get only the final summary)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label [#####-----] 50/100  ok 49  failed 1``, redrawn at most ten times a second;
    with no total known yet (``None``), ``label 50  ok 49  failed 1``."""

    WIDTH = 30

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.ok = 0
        self.failed = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self._drawn_at = 0.0

    def advance(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        now = time.monotonic()
        if now - self._drawn_at >= 0.1 or self.ok + self.failed == self.total:
            self._drawn_at = now
            self._draw()

    def update(self, ok: int) -> None:
        """Set the count of successes (for work counted elsewhere) and redraw if due."""
        self.ok = ok
        now = time.monotonic()
        if now - self._drawn_at >= 0.1:
            self._drawn_at = now
            self._draw()

    def _draw(self) -> None:
        if not self._enabled:
            return
        done = self.ok + self.failed
        if self.total is None:
            self._stream.write(f"\r{self.label} {done}  ok {self.ok}  failed {self.failed}")
            self._stream.flush()
            return
        filled = self.WIDTH * done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total}  ok {self.ok}  failed {self.failed}"
        )
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line so what follows starts on a fresh one."""
        if self._enabled and self.ok + self.failed:
            self._stream.write("\n")
            self._stream.flush()
