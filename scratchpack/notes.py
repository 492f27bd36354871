"""Warnings: one collector per command, which every stage reports to.

A stage that finds something the user should know (a library moved away from
its ``$ORIGIN``, a file capability an engine build drops) calls :func:`warn`;
it does not hand lists through its callers. The command that runs the stages
opens :func:`collecting`, shows each warning as it comes and puts them all in
its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Warnings:
    """The warnings of one command, each once, in the order they came."""

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self.messages: list[str] = []
        self._seen: set[str] = set()
        self.sink = sink

    def add(self, message: str) -> None:
        if message in self._seen:
            return
        self._seen.add(message)
        self.messages.append(message)
        if self.sink is not None:
            self.sink(message)


_current: ContextVar[Warnings | None] = ContextVar("scratchpack_warnings", default=None)
_unclaimed = Warnings()  # where warnings go when no command collects them (a library caller)


def warn(message: str) -> None:
    """Report ``message`` to the command's collector."""
    (_current.get() or _unclaimed).add(message)


def collected() -> list[str]:
    """The warnings the command's collector has so far."""
    return list((_current.get() or _unclaimed).messages)


@contextmanager
def collecting(sink: Callable[[str], None] | None = None) -> Iterator[Warnings]:
    """A fresh collector for the block; ``sink`` sees each new warning at once."""
    collector = Warnings(sink)
    token = _current.set(collector)
    try:
        yield collector
    finally:
        _current.reset(token)
