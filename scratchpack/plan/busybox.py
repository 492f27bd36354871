"""Debian's static busybox: the shell scratchpack adds to debug images and tools."""

from __future__ import annotations

import os
import re
from pathlib import Path

from scratchpack.errors import InputError

_APPLET_TABLE = b"[\0[[\0"
_APPLET_NAME = re.compile(rb"[A-Za-z0-9_.+\[\]-]{1,64}")


def busybox_applets(path: str | os.PathLike[str]) -> list[str]:
    """The applet names compiled into a static busybox, read without running it.

    busybox keeps its applet names as one NUL-separated, sorted run that starts
    with ``[``, ``[[``; that run, where it is longest, is the list ``busybox
    --list`` prints.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    best: list[bytes] = []
    start = data.find(_APPLET_TABLE)
    while start != -1:
        names: list[bytes] = []
        for name in data[start : start + 64 * 1024].split(b"\0"):
            if not _APPLET_NAME.fullmatch(name) or (names and name <= names[-1]):
                break
            names.append(name)
        if len(names) > len(best):
            best = names
        start = data.find(_APPLET_TABLE, start + 1)
    if len(best) < 3:
        raise InputError(f"{path}: no busybox applet table (is it Debian's static busybox?)")
    return [name.decode("ascii") for name in best]
