"""Debian's small formats, checked, with nothing heavy imported: a package name, md5sums.

Every build reads the host's dpkg database for its records; the modules that
fetch and take packages apart (apt, dpkg-deb, tar) load only when packages are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # a Debian package name (Policy 5.6.1)
# One md5sums line as dpkg writes it: 32 hex digits, two spaces (or md5sum's " *"), the
# path relative to the root. The path is checked apart (:func:`md5sums_path`).
_MD5SUMS_LINE = re.compile(r"([0-9a-f]{32}) [ *](.+)")
MAX_MD5SUMS_PATH = 4096  # PATH_MAX
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a C0 control character, or DEL


@dataclass(frozen=True)
class Md5sums:
    """A package's md5sums, checked: (digest, relative path) pairs, and how many lines
    were not taken (malformed, or a path that is not a plain relative one)."""

    lines: tuple[tuple[str, str], ...] = ()
    skipped: int = 0


def parse_md5sums(text: str) -> Md5sums:
    """The well-formed lines of an md5sums file; the others counted, never taken.

    A path must be relative, below the root (no ``..``, no ``.`` component) and
    free of control characters: it is written into an image's record and read by
    scanners, so nothing else passes.
    """
    lines: list[tuple[str, str]] = []
    skipped = 0
    for line in text.split("\n"):
        if not line:
            continue
        match = _MD5SUMS_LINE.fullmatch(line)
        path = md5sums_path(match.group(2)) if match else None
        if match is None or path is None:
            skipped += 1
            continue
        lines.append((match.group(1), path))
    return Md5sums(tuple(lines), skipped)


def md5sums_path(path: str) -> str | None:
    """``path`` as an md5sums line names it (``usr/bin/curl``), or None when it is not one."""
    path = path.removeprefix("./")
    parts = path.split("/")
    plain = all(part not in ("", ".", "..") for part in parts)
    printable = _CONTROL.search(path) is None
    if not plain or not printable or len(path) > MAX_MD5SUMS_PATH:
        return None
    return path
