"""The CPU time of the calling thread, for tests that guard against quadratic work.

Wall time measures the machine: on two cores shared with docker builds a linear step
waited seconds for a core and failed its bound. The thread's CPU time (user and system,
``time.thread_time``) grows only while this thread runs, so another process's load
barely moves it, and a quadratic regression, which is work, still shows. Only for work
done in the calling thread: what a thread or a subprocess it starts does is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class ThreadCpuTime:
    """Seconds of CPU the thread spent in the block; live inside it, fixed after it."""

    def __init__(self) -> None:
        self._started = time.thread_time()
        self._ended: float | None = None

    @property
    def seconds(self) -> float:
        end = time.thread_time() if self._ended is None else self._ended
        return end - self._started

    def stop(self) -> None:
        self._ended = time.thread_time()


@contextmanager
def thread_cpu_time() -> Iterator[ThreadCpuTime]:
    """``with thread_cpu_time() as cpu: work()`` then ``assert cpu.seconds < bound``."""
    measured = ThreadCpuTime()
    try:
        yield measured
    finally:
        measured.stop()
