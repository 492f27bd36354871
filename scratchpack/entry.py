"""The ``scratchpack`` command's first moments: no traceback for Ctrl-C, ever.

The console script imports only this module (``sys``, ``signal`` and the
exceptions of :mod:`scratchpack.errors`) before it installs the handlers, so an interrupt while the
rest of the tool is still being imported ends like any other: one line and
exit status 130 (128 + the signal for SIGTERM and SIGHUP).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from scratchpack.errors import Terminated


def _leave(signum: int, _frame: object) -> None:
    raise Terminated(signum)


_LOST: list[int] = []  # a signal whose exception an unraisable context swallowed
_RESEND_DELAY = 0.01  # seconds: the hook has long returned when the alarm comes


def _unraisable(report: sys.UnraisableHookArgs) -> None:
    """An interrupt that landed where Python cannot raise it, raised again where it can.

    A signal's exception raised inside a weakref callback or ``__del__`` (the
    import system's module locks have one) is only printed, as "Exception
    ignored in", and lost. It is raised again a moment later from SIGALRM's
    handler instead, in the command's own flow: raising it here, inside the
    hook, would only be ignored again.
    """
    if isinstance(report.exc_value, KeyboardInterrupt):
        _LOST.append(signal.SIGINT)
    elif isinstance(report.exc_value, Terminated):
        _LOST.append(report.exc_value.signum)
    else:
        sys.__unraisablehook__(report)
        return
    signal.setitimer(signal.ITIMER_REAL, _RESEND_DELAY)


def _raise_lost(_signum: int, frame: Any) -> None:
    """SIGALRM: the lost signal, handled by whatever handles it now (ignored after a commit)."""
    if not _LOST:
        return
    lost = _LOST.pop()
    _LOST.clear()
    handler = signal.getsignal(lost)
    if callable(handler):
        handler(lost, frame)  # default_int_handler raises KeyboardInterrupt


def main() -> None:
    # Ctrl-C raises KeyboardInterrupt from here on, where scratchpack/__init__.py held
    # it; an ignored SIGINT (a background job of a shell) stays ignored.
    import scratchpack

    if signal.getsignal(signal.SIGINT) is scratchpack._interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM and SIGHUP unwind like Ctrl-C does, so staged outputs and temporary
    # roots are removed and no half-built image is left behind; an ignored one
    # (nohup) stays ignored.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _leave)
    signal.signal(signal.SIGALRM, _raise_lost)
    sys.unraisablehook = _unraisable
    try:
        from scratchpack.lifecycle import mark_as_command

        mark_as_command()  # publish's commit ignores a late Ctrl-C in this process only
        from scratchpack.cli import run

        run()
        code = 0
    except KeyboardInterrupt:
        sys.stderr.write("scratchpack: interrupted\n")
        code = 130
    except Terminated as end:  # before the command's own handler was in place
        sys.stderr.write(f"scratchpack: {end}\n")
        code = 128 + end.signum
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
        if isinstance(end.code, str):
            sys.stderr.write(end.code + "\n")
    _leave_now(code)


def _leave_now(code: int) -> None:
    """Exit with ``code`` and nothing after: the work is done or undone.

    Signals are ignored from here, and the interpreter's own shutdown is
    skipped, so a late Ctrl-C can neither change the status nor print a
    traceback (CPython would re-raise it as a death by SIGINT).
    """
    import os

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if code == 0:
                code = 2  # stdout was closed under us: the output did not arrive
    os._exit(code)
