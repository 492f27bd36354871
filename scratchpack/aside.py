"""Work done in a thread beside the command's own, on the ground floor.

A build waits on the engine while it sends the context, and the engine waits
on nothing of the plan's last stage: running that stage in a thread overlaps
the two. What the stage warns about is told when its result is asked for, in
the asking thread, as if the stage had run there: in the command's order, and
never after a failure the command already reported. What it raises is raised
by :meth:`Aside.result` too. A command that fails before asking does not wait:
the thread is a daemon, and ends with it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from scratchpack.notes import collecting, warn

T = TypeVar("T")


class Aside(Generic[T]):
    """``function(*args)`` started in a thread now; :meth:`result` waits for its value."""

    def __init__(self, name: str, function: Callable[..., T], *args: object) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._warnings: list[str] = []
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run, function, *args), name=f"scratchpack-{name}"
        )
        self._thread.daemon = True
        self._thread.start()

    def _run(self, function: Callable[..., T], *args: object) -> None:
        with collecting() as warnings:
            try:
                self._value = function(*args)
            except BaseException as err:  # raised in the thread that asks for the result
                self._error = err
        self._warnings = warnings.messages

    def result(self) -> T:
        """The function's value, once it returned, and its warnings told; what it raised,
        raised here."""
        self._thread.join()
        for message in self._warnings:
            warn(message)
        self._warnings = []
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # T may itself allow None
