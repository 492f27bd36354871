"""Progress for long steps: a line that updates on a terminal, nothing in pipes."""

from __future__ import annotations

import sys
import time


class ByteProgress:
    """``writing layers  12.3 / 19.2 MB`` on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.done_bytes = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def advance(self, count: int) -> None:
        self.done_bytes += count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        done, total = self.done_bytes / 1e6, self.total / 1e6
        sys.stderr.write(f"\r{self.label} {done:6.1f} / {total:.1f} MB")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()


def terminal_progress(line: str) -> None:
    """A line of progress for people: shown on a terminal, silent in pipes."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr)
