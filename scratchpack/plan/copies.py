"""``--copy SRC[:DEST][,owner=USER[:GROUP]][,mode=OCTAL]``: the user's own files, from this machine.

``--include`` and BINARY name paths of the image's root: this machine for a
plain build, the unpacked packages for ``--package``, DIR for ``--root``. A
configuration, a document root, a start script or one's own binary lives on
this machine whatever the root, as a Dockerfile's ``COPY`` takes it from the
build context after ``apt-get install``. So a copy:

- is planned after what the root brings and replaces what stands at DEST
  (the package's own ``haproxy.cfg``), as a later ``COPY`` does;
- is seen by the root's resolver at DEST (:class:`CopiedRoot`): its ELF files
  get closures from the root (the packages' libraries), and a BINARY may name
  a copied program or script;
- is owned by root unless ``owner=`` names an account of the image's own
  ``/etc/passwd`` (resolved once that is planned: :func:`own_copies`), and
  keeps the host's modes unless ``mode=`` sets every file's and directory's,
  as ``COPY --chmod`` does.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import PathStep, RootFS
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.relocate import APP_PREFIX
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.users import PlannedAccounts

COPY_SETTINGS = ("owner", "mode")
COPY_FORM = "SRC[:DEST][,owner=USER[:GROUP]][,mode=OCTAL]"
_SETTING = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)=(.*)", re.DOTALL)
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_MODE = re.compile(r"(?:0o)?([0-7]{1,4})")
_MAX_ID = 2**32 - 2  # (uid_t) -1 means "no change" to chown


@dataclass(frozen=True)
class Owner:
    """``USER[:GROUP]``: names of the image's accounts, or numbers."""

    user: str
    group: str | None = None

    def __str__(self) -> str:
        return self.user if self.group is None else f"{self.user}:{self.group}"

    @property
    def names(self) -> set[str]:
        return {part for part in (self.user, self.group) if part and not part.isdigit()}


@dataclass(frozen=True)
class Copy:
    """One ``--copy``: ``source`` on this machine, ``dest`` in the image.

    ``dest`` is absolute and normalised; one ending in ``/`` is a directory a
    copied file goes into, under its own name (as COPY reads it).
    """

    source: str
    dest: str
    owner: Owner | None = None
    mode: int | None = None
    spec: str = dataclasses.field(default="", compare=False)  # as given, for messages


@dataclass(frozen=True)
class CopiedItem:
    """A file, directory or symlink of a copy, at its in-image path."""

    path: str
    kind: EntryKind
    mode: int
    host: str | None = None  # the file of this machine (files and directories)
    target: str | None = None  # as written (symlinks)
    size: int = 0


@dataclass(frozen=True)
class Copied:
    """A copy and what it brings, read from this machine once."""

    copy: Copy
    items: tuple[CopiedItem, ...]


def parse_copy(spec: str) -> Copy:
    """``SRC[:DEST][,owner=…][,mode=…]``; settings are split off from the right."""
    rest, settings = _split_settings(spec)
    source, colon, dest = rest.partition(":")
    if not source or (colon and not dest):
        raise InputError(f"--copy {spec}: expected {COPY_FORM}")
    owner = _owner(spec, settings["owner"]) if "owner" in settings else None
    mode = _mode(spec, settings["mode"]) if "mode" in settings else None
    return Copy(
        source, _dest(spec, dest) if colon else _default_dest(spec, source), owner, mode, spec
    )


def parse_copies(specs: Iterable[str]) -> tuple[Copy, ...]:
    return tuple(parse_copy(spec) for spec in specs)


def _split_settings(spec: str) -> tuple[str, dict[str, str]]:
    """The path part and the ``key=value`` settings after its last commas."""
    settings: dict[str, str] = {}
    rest = spec
    while "," in rest:
        head, _, tail = rest.rpartition(",")
        match = _SETTING.fullmatch(tail)
        if match is None:
            break  # a comma of the path itself
        key, value = match.groups()
        if key not in COPY_SETTINGS:
            raise InputError(
                f"--copy {spec}: unknown setting {key!r}; the settings are owner= and mode="
            )
        if key in settings:
            raise InputError(f"--copy {spec}: {key}= is given twice")
        settings[key] = value
        rest = head
    return rest, settings


def _owner(spec: str, value: str) -> Owner:
    user, colon, group = value.partition(":")
    parts = [user, group] if colon else [user]
    for part in parts:
        if part.isdigit():
            if int(part) > _MAX_ID:
                raise InputError(f"--copy {spec}: owner {value}: {part} is not a valid id")
        elif not _ACCOUNT.fullmatch(part):
            raise InputError(
                f"--copy {spec}: owner={value} is not USER[:GROUP] (account names or numbers)"
            )
    return Owner(user, group if colon else None)


def _mode(spec: str, value: str) -> int:
    match = _MODE.fullmatch(value)
    if match is None:
        raise InputError(f"--copy {spec}: mode={value} is not an octal mode such as 0644")
    return int(match.group(1), 8)


def _dest(spec: str, dest: str) -> str:
    """DEST as the image will hold it: absolute, normalised, nothing a Dockerfile cannot write."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in dest):
        raise InputError(f"--copy {spec!r}: DEST has a control character")
    if not dest.startswith("/") or ".." in dest.split("/"):
        raise InputError(f"--copy {spec}: DEST must be an absolute path in the image, without '..'")
    normal = "/" + posixpath.normpath(dest).lstrip("/")
    return normal + "/" if dest.endswith("/") and normal != "/" else normal


def _default_dest(spec: str, source: str) -> str:
    """``/app/NAME``: the user's own files have one stable place (:mod:`.relocate`)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(source)))
    if not name:
        raise InputError(f"--copy {spec}: name a DEST for it ({COPY_FORM})")
    return _dest(spec, f"{APP_PREFIX}/{name}")


def collect(copies: Iterable[Copy]) -> tuple[Copied, ...]:
    """Read each copy's tree from this machine; refuse one that is not here."""
    return tuple(Copied(copy, tuple(_items(copy))) for copy in copies)


def check_sources(copies: Iterable[Copy]) -> None:
    """Refuse a SRC that is not on this machine before anything is resolved."""
    for copy in copies:
        _source(copy)


def _source(copy: Copy) -> tuple[str, os.stat_result]:
    """SRC's absolute path and what it is; a link named as SRC is followed, as COPY does."""
    host = os.path.abspath(copy.source)
    try:
        return host, os.stat(host)
    except OSError:
        where = "" if os.path.isabs(copy.source) else f" (looked for from {os.getcwd()})"
        raise InputError(
            f"--copy {copy.spec}: {copy.source} is not on this machine{where}"
        ) from None


def _items(copy: Copy) -> list[CopiedItem]:
    host, info = _source(copy)
    if stat.S_ISREG(info.st_mode):
        dest = copy.dest + os.path.basename(host) if copy.dest.endswith("/") else copy.dest
        real = os.path.realpath(host)
        return [CopiedItem(dest, EntryKind.FILE, _mode_of(copy, info), real, size=info.st_size)]
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"--copy {copy.spec}: {copy.source} is not a file or a directory")
    top = copy.dest.rstrip("/")
    if not top:
        raise InputError(f"--copy {copy.spec}: a directory needs a DEST below /")
    items = [CopiedItem(top, EntryKind.DIR, _mode_of(copy, info), host)]
    for current, dirs, files in os.walk(host):
        dirs.sort()
        relative = os.path.relpath(current, host)
        image_dir = top if relative == "." else f"{top}/{relative}"
        for name in [*dirs, *sorted(files)]:
            item = _item(copy, os.path.join(current, name), f"{image_dir}/{name}")
            if item is not None:
                items.append(item)
    return items


def _item(copy: Copy, host: str, path: str) -> CopiedItem | None:
    """One entry of a copied tree: symlinks stay links; devices, sockets and fifos stay out."""
    info = os.lstat(host)
    if stat.S_ISLNK(info.st_mode):
        return CopiedItem(path, EntryKind.SYMLINK, 0o777, target=os.readlink(host))
    if stat.S_ISDIR(info.st_mode):
        return CopiedItem(path, EntryKind.DIR, _mode_of(copy, info), host)
    if stat.S_ISREG(info.st_mode):
        return CopiedItem(path, EntryKind.FILE, _mode_of(copy, info), host, size=info.st_size)
    return None


def _mode_of(copy: Copy, info: os.stat_result) -> int:
    return copy.mode if copy.mode is not None else stat.S_IMODE(info.st_mode)


def copied_files(copied: Iterable[Copied]) -> list[str]:
    """The in-image paths of the copied regular files (the ELF files among them get closures)."""
    return [item.path for c in copied for item in c.items if item.kind is EntryKind.FILE]


def owner_names(copies: Iterable[Copy]) -> set[str]:
    """The account names the copies' owners use: the image's passwd and group keep them."""
    return {name for copy in copies if copy.owner for name in copy.owner.names}


def add_copies(plan: RootPlan, copied: Iterable[Copied]) -> None:
    """Plan every copy owned by root, replacing what stands at its paths (see module)."""
    for each in copied:
        for item in each.items:
            if plan.left_out(item.path, Reason.COPY):
                continue
            entry = Entry(
                item.path,
                item.kind,
                item.mode,
                Reason.COPY,
                each.copy.source,
                source=item.host if item.kind is EntryKind.FILE else None,
                target=item.target,
                size_hint=item.size if item.kind is EntryKind.FILE else None,
            )
            plan.add(entry, replace=True)


def own_copies(plan: RootPlan, copied: Iterable[Copied]) -> None:
    """Give the copies their ``owner=``, named in the image's planned passwd and group, and
    root to the others, whatever a package's metadata says of the same paths."""
    accounts = PlannedAccounts.of(plan)
    for each in copied:
        uid, gid = owner_ids(each.copy, accounts) if each.copy.owner else (0, 0)
        for item in each.items:
            path = plan.through_links(item.path)
            entry = plan.entries.get(path)
            if entry is not None and entry.reason is Reason.COPY:
                plan.entries[path] = dataclasses.replace(entry, uid=uid, gid=gid)


def owner_ids(copy: Copy, accounts: PlannedAccounts) -> tuple[int, int]:
    """``owner=``'s uid and gid: a user without a group gets its primary group (a number,
    the same number), as ``chown USER:`` does."""
    owner = copy.owner
    assert owner is not None
    if owner.user.isdigit():
        uid = primary = int(owner.user)
    else:
        user = accounts.user(owner.user)
        if user is None:
            raise _no_account(copy, "user", owner.user, "passwd")
        uid, primary = user
    if owner.group is None:
        return uid, primary
    gid = accounts.gid(owner.group)
    if gid is None:
        raise _no_account(copy, "group", owner.group, "group")
    return uid, gid


def _no_account(copy: Copy, what: str, name: str, database: str) -> InputError:
    return InputError(
        f"--copy {copy.spec}: no {what} {name!r} in the image's /etc/{database} (root, nobody, "
        "nonroot and the accounts of its root and packages); use one of them or a number"
    )


class CopiedRoot(RootFS):
    """The root as the image's loader will see it: ``root``, and the copies at their DESTs.

    The resolver then finds a copied program (a BINARY may name its DEST), a
    copied script's own lines, and the libraries a copied tree carries beside
    its program (``$ORIGIN`` is the DEST's directory). Paths are keyed as the
    root places them: a DEST below a link of the root (``/lib -> usr/lib``) is
    found under the link's target too.
    """

    def __init__(self, root: RootFS, copied: Iterable[Copied]) -> None:
        vars(self).update(vars(root))  # the same root: its caches and lazy files shared
        self.copies: dict[str, tuple[str, CopiedItem]] = {}  # placed path -> (real, item)
        items = {item.path: item for each in copied for item in each.items}
        for path, item in items.items():
            real = _link_target(path, item, items) if item.kind is EntryKind.SYMLINK else item
            if real is not None and real.host is not None:
                self.copies[self._placed(path)] = (self._placed(real.path), real)
        self._names = {posixpath.basename(path) for path in self.copies}

    def _placed(self, path: str) -> str:
        """``path`` with the root's links among its existing parents followed."""
        head, rest = posixpath.split(path)
        while True:
            real = RootFS.realpath(self, head)
            if real is not None:
                return posixpath.normpath(posixpath.join(real, rest)) if rest else real
            if head in ("", "/"):
                return posixpath.normpath(posixpath.join("/", rest))
            head, name = posixpath.split(head)
            rest = posixpath.join(name, rest)

    def _copied(self, path: str) -> tuple[str, CopiedItem] | None:
        if not self.copies or posixpath.basename(path) not in self._names:
            return None
        return self.copies.get(self._placed(path))

    def host_path(self, path: str) -> str | None:
        found = self._copied(path)
        return found[1].host if found else super().host_path(path)

    def realpath(self, path: str) -> str | None:
        found = self._copied(path)
        return found[0] if found else super().realpath(path)

    def trace(self, path: str) -> list[PathStep] | None:
        found = self._copied(path)
        if found is None:
            return super().trace(path)
        real, item = found
        assert item.host is not None
        kind, mode = ("dir", stat.S_IFDIR) if item.kind is EntryKind.DIR else ("file", stat.S_IFREG)
        return [PathStep(real, kind, item.host, mode | item.mode, None, item.size)]


def _link_target(path: str, link: CopiedItem, items: Mapping[str, CopiedItem]) -> CopiedItem | None:
    """The copied item a copied link leads to (SONAME links beside a copied program)."""
    seen = {path}
    current = link
    while current.kind is EntryKind.SYMLINK and current.target is not None:
        pointed = posixpath.normpath(
            posixpath.join(posixpath.dirname(current.path), current.target)
        )
        if pointed in seen or pointed not in items:
            return None
        seen.add(pointed)
        current = items[pointed]
    return current


def host_side_hint(given: str, root: RootFS, packages: bool) -> str | None:
    """Why a path of ``--include`` or BINARY was not found when this machine has it."""
    if root.is_host or not os.path.lexists(given):
        return None
    where = "the package root" if packages else f"the root {root.top}"
    return (
        f"is not in {where} (--include and BINARY name paths inside it); "
        f"a file of this machine goes with --copy {given}:DEST"
    )
