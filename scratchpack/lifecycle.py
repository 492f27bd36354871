"""The run's lifecycle, on the ground floor: held signals, leftovers, the command flag.

Every floor cleans up — the engine removes its containers, ``publish`` rolls
back staged outputs, ``shrink`` untags its throw-away images — so what they
share lives here and imports nothing of scratchpack:

- :func:`deferred_signals` holds SIGINT, SIGTERM and SIGHUP while a cleanup
  or a commit runs, so neither is cut in half;
- :func:`leftover` runs a cleanup step whose own failure must not replace the
  error already on its way out, and remembers what it left (:class:`Leftover`),
  with the command that removes it;
- :func:`running_as_command` says whether this process is the ``scratchpack``
  command (set once by :func:`scratchpack.entry.main`), not a library user.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from scratchpack.errors import EngineError, Terminated
from scratchpack.notes import warn

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# -- the command's own process ---------------------------------------------------------------

_command = False  # True in the scratchpack command's own process, not when imported


def mark_as_command() -> None:
    """This process is the ``scratchpack`` command: its outcome is the exit status."""
    global _command
    _command = True


def running_as_command() -> bool:
    """Whether this process is the ``scratchpack`` command (its outcome is the exit status)."""
    return _command


# -- signals --------------------------------------------------------------------------------

_deferring: ContextVar[bool] = ContextVar("scratchpack_deferring", default=False)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP during the block; act on the first one afterwards.

    Cleanup and publishing run to their end whatever arrives meanwhile; then
    the held signal ends the command as it would have (Ctrl-C: status 130).
    Outside the main thread, or nested, it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _deferring.get():
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, _frame: object) -> None:
        received.append(signum)

    for signum in HELD_SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, hold)
    token = _deferring.set(True)
    try:
        yield
    finally:
        _deferring.reset(token)
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if received:
        first = received[0]
        if first == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(first)


# -- what a failed cleanup leaves behind --------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    what: str  # "the image scratchpack-staging/12-ab:0"
    remedy: str  # "docker rmi scratchpack-staging/12-ab:0"

    def __str__(self) -> str:
        return f"left {self.what}; remove it with: {self.remedy}"


_leftovers: ContextVar[list[Leftover] | None] = ContextVar("scratchpack_leftovers", default=None)
_unclaimed: list[Leftover] = []


def leftovers() -> list[Leftover]:
    """What cleanups of this command could not remove (shown with its error)."""
    found = _leftovers.get()
    return list(found if found is not None else _unclaimed)


@contextlib.contextmanager
def collecting_leftovers() -> Iterator[list[Leftover]]:
    found: list[Leftover] = []
    token = _leftovers.set(found)
    try:
        yield found
    finally:
        _leftovers.reset(token)


@contextlib.contextmanager
def leftover(what: str, remedy: str) -> Iterator[None]:
    """Run a cleanup step; if the engine or the disk fails it, remember what is left.

    Used where another error is already on its way out: the cleanup's own
    failure must not replace it.
    """
    with deferred_signals():
        try:
            yield
        except (EngineError, OSError):
            found = _leftovers.get()
            (found if found is not None else _unclaimed).append(Leftover(what, remedy))


def report_removed(removed: list[str]) -> None:
    """Say what ended runs left and this run removed (one warning, or nothing)."""
    if removed:
        warn(f"removed what an ended run of scratchpack left: {', '.join(removed)}")
