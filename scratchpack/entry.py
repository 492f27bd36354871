"""The ``scratchpack`` command's first moments: no traceback for Ctrl-C, ever.

The console script imports only this module (the standard library's ``sys``
and ``signal``) before it installs the handlers, so an interrupt while the
rest of the tool is still being imported ends like any other: one line and
exit status 130 (128 + the signal for SIGTERM and SIGHUP).
"""

from __future__ import annotations

import signal
import sys


def _leave(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    # SIGTERM and SIGHUP unwind like Ctrl-C does, so staged outputs and temporary
    # roots are removed and no half-built image is left behind; an ignored one
    # (nohup) stays ignored.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _leave)
    try:
        from scratchpack.cli import run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("scratchpack: interrupted\n")
        sys.exit(130)
