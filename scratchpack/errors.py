"""Errors that end a command with one clear line instead of a traceback."""

from __future__ import annotations

# Exit statuses, documented in the README.
EXIT_OK = 0
EXIT_MISSING = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_VERIFY = 4
EXIT_PUSH = 5
EXIT_TRACE = 6
EXIT_OUTDATED = 7  # outdated: an update exists for a package (a CI gate fails on it)
EXIT_ATTESTATION = 8  # attestations: an attached artifact or statement is about another image
EXIT_INTERNAL = 70  # a bug of ours (sysexits' EX_SOFTWARE)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP asked the run to end: it unwinds like Ctrl-C, then exits 128+N."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        import signal

        return f"ended by {signal.Signals(self.signum).name}"


class ScratchpackError(Exception):
    """A failure the user can act on; the CLI prints ``str(self)`` and exits with ``exit_code``.

    ``details``: lines that show the cause (the end of a failed program's
    output), printed indented under the error's line.
    """

    exit_code = EXIT_USAGE
    details: tuple[str, ...] = ()


class InputError(ScratchpackError):
    """An argument that cannot be analysed: missing, unreadable, not an ELF, corrupt."""

    exit_code = EXIT_USAGE


class VerifyError(ScratchpackError):
    """The built image ran and failed its --verify command."""

    exit_code = EXIT_VERIFY

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class EngineError(ScratchpackError):
    """The engine is unreachable, or refused or failed what we asked."""

    exit_code = EXIT_ENGINE


class EngineUnreachable(EngineError):
    """No engine answers where DOCKER_HOST (or the default socket) says one is."""


class EngineLost(EngineError):
    """The engine answered, then went away in the middle of something."""


class EngineTimeout(EngineError):
    """The engine did not answer, or a container did not finish, in the time given."""


class BuildRaced(EngineError):
    """The engine's legacy builder lost an image that another client removed while the
    build looked among the engine's images for a cached layer (moby's
    ``getLocalCachedImage`` lists every image, then reads each: one removed between
    the two fails the build). The build itself was sound: a second one can succeed."""


class ContainerTimeout(EngineError):
    """A container did not finish in the time given, while the engine still answers."""


class NoSuchImage(EngineError):
    """The engine has no image of that name (and scratchpack never pulls one)."""


_CHAIN_LIMIT = 16  # exceptions looked at in what one failure wraps


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: causes, contexts, exceptions among its arguments, ``reason``.

    requests wraps urllib3's error, which wraps the socket's in a tuple: the
    words are at the bottom, the reprs on top.
    """
    found: list[BaseException] = []
    pending = [err]
    while pending and len(found) < _CHAIN_LIMIT:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        wrapped = [*current.args, getattr(current, "reason", None)]
        wrapped += [current.__cause__, current.__context__]
        pending += [item for item in wrapped if isinstance(item, BaseException)]
    return found


OUTPUT_TAIL_LINES = 20  # of a failed program's output, shown under its error
_SHOWN_LINE = 400  # characters of one such line


def output_tail(output: str, count: int = OUTPUT_TAIL_LINES) -> tuple[str, ...]:
    """The last ``count`` lines of a program's output, fit to print under an error.

    The output is the program's, so hostile: an escape sequence could clear the
    screen or retitle the terminal. Every character that does not print is
    shown as its escape (``\\x1b``), tabs as spaces, and a long line is cut.
    """
    lines = output.rstrip().splitlines()[-count:] if count > 0 else []
    return tuple(printable(line.expandtabs()) for line in lines)


def printable(line: str) -> str:
    """``line`` with what does not print escaped (``\\x1b``, ``\\n``), cut if long."""
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in line[: _SHOWN_LINE + 1]  # a megabyte of one line is not all read
    )
    return escaped if len(escaped) <= _SHOWN_LINE else escaped[:_SHOWN_LINE] + "…"
