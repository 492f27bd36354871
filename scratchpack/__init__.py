"""scratchpack: turn a Linux binary into the smallest container image that still runs it."""

import sys as _sys

__version__ = "0.1.0"


def _interrupted_while_starting(_signum: int, _frame: object) -> None:
    """Ctrl-C before the command's handlers exist: nothing was done yet, so just end."""
    import os

    os.write(2, b"scratchpack: interrupted\n")
    os._exit(130)


# The command's first moments (`python -m scratchpack`, or the console script):
# importing even `signal` builds enums for milliseconds, and a Ctrl-C then would
# print a traceback. `_signal` is the C module; entry.main() replaces this handler.
# When scratchpack is imported as a library (argv[0] is the importer's), nothing changes.
if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].endswith("/scratchpack")):
    import _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)
