"""Small files read whole, but never more than a bound.

An options file, a lock and docker's config are another party's data: a file
named by mistake (a disk image, ``/dev/zero``) must not be read into memory
whole, and one that is not a regular file (a FIFO nobody writes) may have to
be refused rather than waited on. One reader does both, and says why it stopped
in the one line each caller has always said.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from scratchpack.errors import InputError, ScratchpackError


class Refusal(Enum):
    """Why a small file was not read."""

    UNREADABLE = "unreadable"  # the OS refused: its words are the detail
    NOT_REGULAR = "not a regular file"
    TOO_LARGE = "too large"


Words = Callable[[Refusal, str], str]
"""Phrases a refusal (with the OS's words, for UNREADABLE) as the caller's one line."""


def read_bounded(
    path: Path,
    limit: int,
    what: str,
    error: type[ScratchpackError] = InputError,
    *,
    regular_only: bool = False,
    missing_ok: bool = False,
    words: Words | None = None,
) -> bytes:
    """``path``'s bytes, at most ``limit`` of them, or one line (``error``) saying why not.

    By default the line is ``{path}: {the OS's words}`` or ``{path}: more than N MiB:
    not {what}``. ``regular_only`` refuses a FIFO or a device without waiting on it;
    ``missing_ok`` lets :class:`FileNotFoundError` through, for a caller to whom an
    absent file means "nothing there"; ``words`` phrases the refusal its own way.
    """
    say = words or _default_words(path, limit, what)
    try:
        data = _read_at_most(path, limit, regular_only)
    except OSError as err:
        if missing_ok and isinstance(err, FileNotFoundError):
            raise
        raise error(say(Refusal.UNREADABLE, str(err.strerror or err))) from err
    if data is None:
        raise error(say(Refusal.NOT_REGULAR, ""))
    if len(data) > limit:
        raise error(say(Refusal.TOO_LARGE, ""))
    return data


def _read_at_most(path: Path, limit: int, regular_only: bool) -> bytes | None:
    """Up to ``limit + 1`` bytes (one more tells a file over the bound); None: not regular."""
    if not regular_only:
        with open(path, "rb") as stream:
            return stream.read(limit + 1)
    # Opened without blocking: opening a FIFO with no writer would wait forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        return stream.read(limit + 1)


def _default_words(path: Path, limit: int, what: str) -> Words:
    def say(refusal: Refusal, detail: str) -> str:
        if refusal is Refusal.UNREADABLE:
            return f"{path}: {detail}"
        if refusal is Refusal.NOT_REGULAR:
            return f"{path}: not a regular file"
        return f"{path}: more than {_size(limit)}: not {what}"

    return say


def _size(limit: int) -> str:
    """``1 MiB``, ``16 MiB``; bytes when the bound is not whole mebibytes."""
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit} B"
