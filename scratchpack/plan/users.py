"""The accounts an image needs in ``/etc/passwd`` and ``/etc/group``, for build and shrink.

A program looks its users up by name (nginx's ``user www-data;``, PostgreSQL's
``USER postgres``), Docker resolves ``--user NAME`` through the image's passwd,
and files are owned by uids that should have names. Both commands take the
entries from the root they read — the host's or the image's — and keep only
those named: by ``--user``/``USER``, by words of the configuration files the
image holds under ``/etc`` (comments left out), or by the owners of kept files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.entries import Entry, EntryKind

# Account databases: never scanned for user names (and replaced by generated ones).
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")
_WORD = re.compile(r"[A-Za-z_][\w.-]*")
_MAX_CONFIG = 1 << 20  # bytes of one configuration file read for names


@dataclass
class Wanted:
    """Who the image's accounts must name: users and groups by name, uid or gid."""

    names: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    gids: set[int] = field(default_factory=set)
    words: set[str] = field(default_factory=set)  # names, if an account has one of them

    def add_user_spec(self, spec: str | None) -> None:
        """``USER``/``--user``: ``name``, ``uid``, ``name:group``, ``uid:gid``."""
        if not spec:
            return
        user, _, group = spec.partition(":")
        for part, numbers in ((user, self.uids), (group, self.gids)):
            if part.isdigit():
                numbers.add(int(part))
            elif part:
                self.names.add(part)


def select_accounts(passwd: str, group: str, wanted: Wanted) -> tuple[list[str], list[str]]:
    """The lines of ``passwd`` and ``group`` that ``wanted`` names, in their order.

    A kept user brings its primary group.
    """
    users: list[str] = []
    gids = set(wanted.gids)
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 4:
            continue
        name, uid = fields[0], _number(fields[2])
        if name in wanted.names or name in wanted.words or uid in wanted.uids:
            users.append(line)
            gids.add(_number(fields[3]))
    groups = []
    for line in group.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and (_number(fields[2]) in gids or fields[0] in wanted.names):
            groups.append(line)
    return users, groups


def names_of(lines: Iterable[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines}


def config_words(entries: Iterable[Entry]) -> set[str]:
    """Words of the image's files under ``/etc``, comment lines and account databases left out."""
    words: set[str] = set()
    for entry in entries:
        if entry.kind is not EntryKind.FILE or not entry.path.startswith("/etc/"):
            continue
        if not entry.source or entry.path.removesuffix("-") in ACCOUNT_FILES:  # passwd- too
            continue
        try:
            if os.path.getsize(entry.source) > _MAX_CONFIG:
                continue
            with open(entry.source, encoding="utf-8", errors="replace") as stream:
                text = stream.read()
        except OSError:
            continue
        for line in text.splitlines():
            if not line.lstrip().startswith("#"):
                words.update(_WORD.findall(line))
    return words


def root_accounts(root: RootFS) -> tuple[str, str]:
    """The root's ``/etc/passwd`` and ``/etc/group`` text ('' where there is none)."""
    return root.read_text("/etc/passwd") or "", root.read_text("/etc/group") or ""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else -1
