"""The accounts an image needs in ``/etc/passwd`` and ``/etc/group``, for build and shrink.

A program looks its users up by name (nginx's ``user www-data;``, PostgreSQL's
``USER postgres``), Docker resolves ``--user NAME`` through the image's passwd,
and files are owned by uids that should have names. Both commands take the
entries from the root they read — the host's or the image's — and keep only
those named: by ``--user``/``USER``, by words of the configuration files the
image holds under ``/etc`` (comments left out), or by the owners of kept files.
``shrink`` also takes the names the image's command line gives its program
(``memcached -u memcache``) and, when a traced run read the account files, the
words of every text file that run read.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.entries import Entry, EntryKind
from scratchpack.plan.rootplan import RootPlan

# Account databases: never scanned for user names (and replaced by generated ones).
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")
_WORD = re.compile(r"[A-Za-z_][\w.-]*")
_MAX_CONFIG = 1 << 20  # bytes of one configuration file read for names
# What an account name can look like (useradd's rule, loosened as glibc allows; 32 at most).
# Command lines are the image's data: anything else names nobody.
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?")
_USER_OPTIONS = ("-u", "--user")  # memcached -u, redis-like --user, su-exec style
_GROUP_OPTIONS = ("-g", "--group")


@dataclass
class Wanted:
    """Who the image's accounts must name: users and groups by name, uid or gid."""

    names: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    gids: set[int] = field(default_factory=set)
    words: set[str] = field(default_factory=set)  # names, if an account has one of them
    groups: set[str] = field(default_factory=set)  # group names only (``-g NAME``)
    homes: set[str] = field(default_factory=set)  # users whose home is one of these

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

    def add_arguments(self, argv: Sequence[str], nested: bool = False) -> None:
        """Accounts a command line names: ``-u NAME``, ``--user[=]NAME``, ``-uNAME``, ``-g``...

        An argument with blanks (a ``sh -c`` script) is also read, once, as a
        command line of its own, split into shell words; nothing is run. Values
        that are not account-shaped are passed over.
        """
        for at, word in enumerate(argv):
            following = argv[at + 1] if at + 1 < len(argv) else ""
            for options, is_user in ((_USER_OPTIONS, True), (_GROUP_OPTIONS, False)):
                value = _option_value(word, following, options)
                if value is not None:
                    self._add_named(value, is_user)
            if not nested and any(blank in word for blank in " \t\n"):
                self.add_arguments(_shell_words(word), nested=True)

    def _add_named(self, value: str, is_user: bool) -> None:
        """``NAME`` or ``ID``, for users also ``NAME:GROUP``; nothing when a part is malformed."""
        user, _, group = value.partition(":") if is_user else ("", "", value)
        parts = [part for part in (user, group) if part]
        if not parts or not all(part.isdigit() or _ACCOUNT_NAME.fullmatch(part) for part in parts):
            return
        _add_id_or_name(user, self.uids, self.names)
        _add_id_or_name(group, self.gids, self.groups)


def _add_id_or_name(part: str, numbers: set[int], names: set[str]) -> None:
    if part.isdigit():
        numbers.add(int(part))
    elif part:
        names.add(part)


def _shell_words(argument: str) -> list[str]:
    try:
        return shlex.split(argument, comments=True)
    except ValueError:  # an unbalanced quote: plain blanks will do
        return argument.split()


def _option_value(word: str, following: str, options: tuple[str, str]) -> str | None:
    """The value ``word`` gives option ``-x``/``--long``: ``-x V``, ``-xV``, ``--long[=]V``."""
    short, long = options
    if word in options:
        return following
    if word.startswith(long + "="):
        return word[len(long) + 1 :]
    if word.startswith(short) and not word.startswith("--") and len(word) > len(short):
        return word[len(short) :]
    return None


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
        home = os.path.normpath(fields[5]) if len(fields) > 5 and fields[5] else None
        named = name in wanted.names or name in wanted.words
        if named or uid in wanted.uids or home in wanted.homes:
            users.append(line)
            gids.add(_number(fields[3]))
    groups = []
    for line in group.splitlines():
        fields = line.split(":")
        named = fields[0] in wanted.names or fields[0] in wanted.groups
        if len(fields) >= 3 and (_number(fields[2]) in gids or named):
            groups.append(line)
    return users, groups


def primary_gids(passwd: str) -> set[int]:
    """The primary group of each user of ``passwd`` text."""
    fields = (line.split(":") for line in passwd.splitlines())
    return {int(f[3]) for f in fields if len(f) >= 4 and f[3].isdigit()}


def names_of(lines: Iterable[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines}


def config_words(entries: Iterable[Entry], everywhere: bool = False) -> set[str]:
    """Words of the image's files under ``/etc``, comment lines and account databases left out.

    ``everywhere``: of every text file among ``entries`` (binary files, ELF
    among them, left out) — what a traced run read, wherever it lies.
    """
    words: set[str] = set()
    top = "/" if everywhere else "/etc/"
    for entry in entries:
        if entry.kind is not EntryKind.FILE or not entry.path.startswith(top):
            continue
        if not entry.source or entry.path.removesuffix("-") in ACCOUNT_FILES:  # passwd- too
            continue
        text = _small_text(entry.source, skip_binary=everywhere)
        for line in (text or "").splitlines():
            if not line.lstrip().startswith("#"):
                words.update(_WORD.findall(line))
    return words


def _small_text(path: str, skip_binary: bool) -> str | None:
    """The text of a file up to :data:`_MAX_CONFIG` bytes; None if larger, unreadable or binary."""
    try:
        if os.path.getsize(path) > _MAX_CONFIG:
            return None
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    if skip_binary and b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def root_accounts(root: RootFS) -> tuple[str, str]:
    """The root's ``/etc/passwd`` and ``/etc/group`` text ('' where there is none)."""
    return root.read_text("/etc/passwd") or "", root.read_text("/etc/group") or ""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else -1


@dataclass(frozen=True)
class PlannedAccounts:
    """The image's planned ``/etc/passwd`` and ``/etc/group``: name -> ids, read once for
    whatever a plan stage must name by account (a made directory, a ``--copy`` owner)."""

    users: dict[str, tuple[int, int]]
    groups: dict[str, int]

    @classmethod
    def of(cls, plan: RootPlan) -> PlannedAccounts:
        users = {
            fields[0]: (int(fields[2]), int(fields[3]))
            for fields in _account_fields(plan, "/etc/passwd", 4)
            if fields[3].isdigit()
        }
        groups = {fields[0]: int(fields[2]) for fields in _account_fields(plan, "/etc/group", 3)}
        return cls(users, groups)

    def user(self, name: str) -> tuple[int, int] | None:
        """A user's uid and primary gid, None when the image has no such user."""
        return self.users.get(name)

    def uid(self, name: str) -> int | None:
        return int(name) if name.isdigit() else self.users.get(name, (None, None))[0]

    def gid(self, name: str) -> int | None:
        return int(name) if name.isdigit() else self.groups.get(name)


def _account_fields(plan: RootPlan, path: str, count: int) -> list[list[str]]:
    entry = plan.entries.get(plan.through_links(path))
    if entry is None or entry.kind is not EntryKind.FILE:
        return []
    data = entry.data
    if data is None and entry.source:
        try:
            with open(entry.source, "rb") as stream:
                data = stream.read(1 << 20)
        except OSError:
            return []
    lines = (data or b"").decode("utf-8", "replace").splitlines()
    fields = [line.split(":") for line in lines]
    return [f for f in fields if len(f) >= count and f[2].isdigit() and len(f[2]) < 11]
