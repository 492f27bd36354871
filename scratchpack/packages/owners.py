"""Who owns a package's paths, as dpkg and the maintainer scripts would leave them.

The unpacker runs unprivileged and chowns nothing; owners are data here, given
to the image plan (:func:`scratchpack.plan.from_packages.own_homes`):

1. the data tar's headers: the owner's *name* resolved against the root's
   ``/etc/passwd`` and ``/etc/group``, as dpkg does, the number when the name
   is unknown (lighttpd's ``/var/log/lighttpd`` is ``www-data/www-data``);
2. a created user's home, when the creating package alone ships it and it is
   no system directory (a package does not get ``/usr/sbin`` by naming it);
3. ``chown [-R] USER[:GROUP] PATH``, ``chmod MODE PATH`` and
   ``dpkg-statoverride --update --add USER GROUP MODE PATH`` of its
   ``preinst``/``postinst``, read as text (:mod:`scratchpack.packages.scripts`),
   never run. Only a literal absolute path the package alone ships, reached
   through no link and no system directory, is changed; anything else is a
   note naming the script and the line, shown by the planner for the packages
   the image keeps. A path the root does not hold changes nothing in the image:
   no note (python3.11-minimal's ``chmod … /usr/local/lib/python3.11 || true``).

The empty directories dpkg's world makes at install or boot, beside the
files (:class:`MadeDir`): ``install -d [-m MODE] [-o USER] [-g GROUP] PATH...``
and ``mkdir [-p] [-m MODE] [-Z] PATH...`` lines of the scripts and ``d``/``D``
lines of ``tmpfiles.d`` files, for literal absolute paths under RUNTIME_DIRS
only (``/run/postgresql``, mariadb-server's ``/var/lib/mysql``). A ``mkdir``'d
directory is root's unless it is the home of an account the package creates,
or a later chown/chgrp/chmod/statoverride line (or ``find PATH | xargs chown``)
of the script names it; names stay names, resolved later against the image's
own accounts.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from scratchpack.packages.apt import PackageError
from scratchpack.packages.scripts import MAX_SCRIPT_COMMANDS, Command, commands

# Directories of the system's layout: never one package's to own, whatever a script says.
SYSTEM_DIRS = frozenset(
    {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
     "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
     "/usr", "/usr/bin", "/usr/games", "/usr/include", "/usr/lib", "/usr/lib32",
     "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share", "/usr/src",
     "/var", "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock",
     "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp", "/var/www"}
)  # fmt: skip
_OWNER_TOOLS = re.compile(r"ch(?:own|mod)\b|dpkg-statoverride")
_OCTAL = re.compile(r"0{0,4}[0-7]{1,4}")
_SYMBOLIC = re.compile(r"([ugoa]*)([-+=])([rwxXst]*)")
_NOT_LITERAL = re.compile(r"[$`*?\[\]{}~]")
_DIR_TOOLS = re.compile(r"\b(?:install|mkdir|chown|chgrp|chmod|dpkg-statoverride|xargs)\b")
USERS_GROUP = ""  # a MadeDir's group: its user's primary group, as ``chown USER:`` gives
# Where a package's tmpfiles.d or install -d line may make an empty directory of the image.
RUNTIME_DIRS = ("/run", "/var/run", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/tmp")
_TMPFILES_MODE = re.compile(r"[~:]{0,2}(0{0,4}[0-7]{1,4})")
_QUIET_FLAGS = frozenset({"-f", "-v", "-c", "-h", "--quiet", "--silent", "--verbose",
                          "--changes", "--no-dereference", "--update", "--force"})  # fmt: skip


@dataclass(frozen=True)
class HeaderOwner:
    """A path's owner as its tar header records it: names and numbers."""

    uname: str
    gname: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0
    mode: int | None = None  # permission bits a script set; None: as unpacked


@dataclass(frozen=True)
class Shipped:
    """What one package brings: its name, in-root paths and maintainer scripts."""

    name: str
    paths: frozenset[str]
    scripts: Mapping[str, str]


@dataclass(frozen=True)
class Home:
    user: str
    package: str
    path: str


@dataclass(frozen=True)
class MadeDir:
    """An empty directory a package's tmpfiles.d line or maintainer script makes."""

    package: str
    path: str  # literal, absolute, no '..', under RUNTIME_DIRS
    mode: int
    user: str  # a name or a number, as written; resolved against the image's accounts
    group: str
    where: str  # "postinst line 73", for messages


class _NotUnderstood(Exception):
    """A script's ownership change that is not applied; the message says why."""


class _Absent(_NotUnderstood):
    """A path the root does not hold: nothing of the image to change, nothing to say."""


class _Ids:
    """Names to ids in the root's ``/etc/passwd`` and ``/etc/group`` lines."""

    def __init__(self, passwd: Iterable[str], group: Iterable[str]) -> None:
        self.users = {f[0]: int(f[2]) for f in _fields(passwd, 4)}
        self.primary = {f[0]: int(f[3]) for f in _fields(passwd, 4) if f[3].isdigit()}
        self.groups = {f[0]: int(f[2]) for f in _fields(group, 3)}

    def user(self, spec: str) -> int:
        return _id(spec, self.users, "user")

    def group(self, spec: str) -> int:
        return _id(spec, self.groups, "group")


def _fields(lines: Iterable[str], count: int) -> Iterator[list[str]]:
    for line in lines:
        fields = line.split(":")
        if len(fields) >= count and fields[2].isdigit():
            yield fields


def _id(spec: str, known: Mapping[str, int], kind: str) -> int:
    number = spec.removeprefix("#")  # dpkg-statoverride's #UID
    if number.isdigit() and len(number) < 11:
        return int(number)
    if spec in known:
        return known[spec]
    raise _NotUnderstood(f"no {kind} {spec!r} in the root")


def package_owners(
    top: Path,
    packages: Sequence[Shipped],
    headers: Mapping[str, HeaderOwner],
    accounts: tuple[list[str], list[str]],
    homes: Iterable[Home],
) -> tuple[dict[str, Owner], list[tuple[str, str]]]:
    """The owners of the root's paths that are not root:root as unpacked; (package, note)s."""
    ids = _Ids(*accounts)
    owners: dict[str, Owner] = {}
    for path, header in headers.items():
        uid = ids.users.get(header.uname, header.uid) if header.uname else header.uid
        gid = ids.groups.get(header.gname, header.gid) if header.gname else header.gid
        owners[path] = Owner(uid, gid)
    by_name = {package.name: package for package in packages}
    for home in homes:
        package = by_name.get(home.package)
        if package is not None and home.user in ids.users:
            with contextlib.suppress(_NotUnderstood, OSError):  # not its own: left alone
                path, _ = _own_path(top, home.path, package, packages)
                if stat.S_ISDIR(os.lstat(f"{top}{path}").st_mode):
                    uid = ids.users[home.user]
                    owners[path] = replace(
                        owners.get(path, Owner()), uid=uid, gid=ids.primary.get(home.user, 0)
                    )
    notes = [
        (package.name, note)
        for package in packages
        for script in ("preinst", "postinst")
        for note in _script_changes(top, package, script, packages, ids, owners)
    ]
    return {path: owner for path, owner in owners.items() if owner != Owner()}, notes


def _script_changes(
    top: Path,
    package: Shipped,
    script: str,
    packages: Sequence[Shipped],
    ids: _Ids,
    owners: dict[str, Owner],
) -> Iterator[str]:
    """Apply ``script``'s chown/chmod/statoverride lines to ``owners``; warn for the rest."""
    text = package.scripts.get(script, "")
    for command in commands(text, _OWNER_TOOLS, package.name, "ownership commands"):
        try:
            _apply(top, command, package, packages, ids, owners)
        except _Absent:
            continue
        except _NotUnderstood as reason:
            yield (
                f"package {package.name}: {script} line {command.line}: {command.text!r}: "
                f"{reason}; not applied"
            )


def _apply(
    top: Path,
    command: Command,
    package: Shipped,
    packages: Sequence[Shipped],
    ids: _Ids,
    owners: dict[str, Owner],
) -> None:
    if command.tool == "dpkg-statoverride":
        words = [w for w in command.words[1:] if w not in _QUIET_FLAGS]
        if "--add" not in words:
            return  # --list, --remove: nothing to apply
        words = [w for w in words if w != "--add" and not w.startswith("--force-")]
        if len(words) != 4 or not _OCTAL.fullmatch(words[2]) or words[0].startswith("-"):
            raise _NotUnderstood("not dpkg-statoverride --add USER GROUP MODE PATH")
        if _absent(top, words[3], package, packages):
            return
        uid, gid = ids.user(words[0]), ids.group(words[1])
        path, _ = _own_path(top, words[3], package, packages)
        owners[path] = Owner(uid, gid, int(words[2], 8))
    elif command.tool in ("chown", "chmod"):
        recursive, operands = _operands(command)
        if len(operands) < 2:
            raise _NotUnderstood(f"not {command.tool} [-R] SPEC PATH")
        if all(_absent(top, given, package, packages) for given in operands[1:]):
            return  # nothing of the image to change: its accounts do not matter
        change = _chown_change(operands[0], ids) if command.tool == "chown" else None
        for given in operands[1:]:
            for path, info in _targets(top, given, package, packages, recursive):
                owner = owners.get(path, Owner())
                if change is not None:
                    owners[path] = change(owner)
                else:
                    current = owner.mode if owner.mode is not None else info.st_mode & 0o7777
                    new = _mode(operands[0], current, stat.S_ISDIR(info.st_mode))
                    owners[path] = replace(owner, mode=new)


def _operands(command: Command) -> tuple[bool, list[str]]:
    recursive, operands = False, []
    for word in command.words[1:]:
        if word in ("-R", "--recursive"):
            recursive = True
        elif word in _QUIET_FLAGS or word == "--":
            continue
        elif word.startswith("-") and not (command.tool == "chmod" and _is_mode(word)):
            raise _NotUnderstood(f"the option {word!r}")
        else:
            operands.append(word)
    return recursive, operands


def _chown_change(spec: str, ids: _Ids) -> Callable[[Owner], Owner]:
    """``USER``, ``USER:GROUP``, ``USER:`` (the user's group), ``:GROUP``, ``USER.GROUP``."""
    if _NOT_LITERAL.search(spec):
        raise _NotUnderstood("a variable or a glob")
    user, colon, group = spec.partition(":") if ":" in spec else spec.partition(".")
    uid = ids.user(user) if user else None
    gid = ids.group(group) if group else None
    if colon and not group and user:
        gid = ids.primary.get(user, uid)

    def change(owner: Owner) -> Owner:
        return replace(
            owner,
            uid=owner.uid if uid is None else uid,
            gid=owner.gid if gid is None else gid,
        )

    return change


def _targets(
    top: Path, given: str, package: Shipped, packages: Sequence[Shipped], recursive: bool
) -> Iterator[tuple[str, os.stat_result]]:
    path, info = _own_path(top, given, package, packages)
    yield path, info
    if recursive and stat.S_ISDIR(info.st_mode):
        for below in sorted(p for p in package.paths if p.startswith(path + "/")):
            try:
                found = _own_path(top, below, package, packages)
            except _NotUnderstood:
                continue  # a link or another package's path under it: left as it is
            yield found


def _own_path(
    top: Path, given: str, package: Shipped, packages: Sequence[Shipped]
) -> tuple[str, os.stat_result]:
    """``given`` as the package's own real path in the root, and its lstat; or why not."""
    if _NOT_LITERAL.search(given):
        raise _NotUnderstood("a variable or a glob")
    if not given.startswith("/") or ".." in given.split("/"):
        raise _NotUnderstood(f"{given!r} is not a plain absolute path")
    path = posixpath.normpath(given).replace("//", "/")
    if path in SYSTEM_DIRS:
        raise _NotUnderstood(f"{path} is a system directory")
    walked, info = "", None
    for part in path.strip("/").split("/"):
        walked += "/" + part
        try:
            info = os.lstat(f"{top}{walked}")
        except OSError:
            raise _Absent(f"{path} is not in the root") from None
        if stat.S_ISLNK(info.st_mode):
            raise _NotUnderstood(f"{path} reaches through the link {walked}")
    others = any(path in other.paths for other in packages if other.name != package.name)
    if info is None or path not in package.paths or others:
        raise _NotUnderstood(f"{path} is not a path of package {package.name} alone")
    return path, info


def _absent(top: Path, given: str, package: Shipped, packages: Sequence[Shipped]) -> bool:
    """Whether ``given`` is a plain path the root does not hold."""
    try:
        _own_path(top, given, package, packages)
    except _Absent:
        return True
    except _NotUnderstood:
        return False
    return False


def _is_mode(word: str) -> bool:
    return bool(_OCTAL.fullmatch(word)) or all(
        _SYMBOLIC.fullmatch(clause) for clause in word.split(",")
    )


def _mode(spec: str, current: int, is_dir: bool) -> int:
    """``chmod``'s new permission bits from ``spec`` (octal or ``[ugoa][+-=][rwxXst]``)."""
    if _OCTAL.fullmatch(spec):
        return int(spec, 8)
    if _NOT_LITERAL.search(spec) or not _is_mode(spec):
        raise _NotUnderstood(f"the mode {spec!r}")
    mode = current
    for clause in spec.split(","):
        match = _SYMBOLIC.fullmatch(clause)
        assert match is not None
        who, operator, permissions = match.groups()
        mask = _who_mask(who or "a") & (0o7777 if who else ~0o022)
        bits = 0
        for permission in permissions:
            executable = is_dir or current & 0o111
            bits |= {"r": 0o444, "w": 0o222, "x": 0o111, "X": 0o111 if executable else 0,
                     "s": 0o6000, "t": 0o1000}[permission]  # fmt: skip
        bits &= mask
        if operator == "+":
            mode |= bits
        elif operator == "-":
            mode &= ~bits
        else:
            mode = (mode & ~(mask & 0o777)) | bits
    return mode & 0o7777


def _who_mask(who: str) -> int:
    mask = 0
    for letter in who:
        mask |= {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}[letter]
    return mask


def made_dirs(
    package: Shipped, tmpfiles: Mapping[str, str], homes: Mapping[str, str] | None = None
) -> tuple[list[MadeDir], list[str]]:
    """The directories ``package``'s ``install -d``/``mkdir`` lines and ``tmpfiles``
    (path -> text) make; notes for the lines naming such a path that are not understood.

    ``homes`` (path -> user) are the homes of the accounts the package creates: a
    ``mkdir`` of one is that user's (mariadb-server's ``/var/lib/mysql``), and a later
    ``chown``/``chgrp``/``chmod``/``dpkg-statoverride`` of a made path, or a
    ``find PATH … | xargs … chown USER`` of it, gives it its owner and mode.
    """
    found: list[MadeDir] = []
    notes: list[str] = []
    for script in ("preinst", "postinst"):
        text = package.scripts.get(script, "")
        previous: Command | None = None
        for command in commands(text, _DIR_TOOLS, package.name, "install commands"):
            where = f"{script} line {command.line}"
            try:
                found += _script_dirs(command, package.name, where, homes or {})
            except _NotUnderstood as reason:
                notes.append(
                    f"package {package.name}: {where}: {command.text!r}: {reason}; not made"
                )
            _change_made(found, command, previous)
            previous = command
    for path, text in tmpfiles.items():
        for number, line in enumerate(text.split("\n"), 1):
            where = f"{path} line {number}"
            try:
                found += _tmpfiles_dir(line, package.name, where)
            except _NotUnderstood as reason:
                notes.append(
                    f"package {package.name}: {where}: {line.strip()!r}: {reason}; not made"
                )
    if len(found) > MAX_SCRIPT_COMMANDS:
        raise PackageError(
            f"package {package.name}: more than {MAX_SCRIPT_COMMANDS} directories made by "
            "its scripts and tmpfiles.d files; refused"
        )
    return found, notes


def _script_dirs(
    command: Command, package: str, where: str, homes: Mapping[str, str]
) -> list[MadeDir]:
    if command.tool == "install":
        return _install_dirs(command, package, where)
    if command.tool == "mkdir":
        return _mkdir_dirs(command, package, where, homes)
    return []


def _mkdir_dirs(
    command: Command, package: str, where: str, homes: Mapping[str, str]
) -> list[MadeDir]:
    """``mkdir [-p] [-m MODE] [-Z] PATH...``: root's, or a created user's home its user's."""
    mode, paths, rest = "755", [], list(command.words[1:])
    while rest:
        word = rest.pop(0)
        if word in ("-m", "--mode") and rest:
            mode = rest.pop(0)
        elif word.startswith("--mode=") or re.fullmatch(r"-m[0-7]+", word):
            mode = word.partition("=")[2] if word.startswith("--") else word[2:]
        elif re.fullmatch(r"-[pvZ]+", word) or word in ("--parents", "--verbose", "--"):
            continue
        elif word.startswith("-"):
            raise _NotUnderstood(f"the option {word!r}")
        else:
            paths.append(word)
    if not _OCTAL.fullmatch(mode):
        raise _NotUnderstood(f"the mode {mode!r}")
    made = [path for path in (runtime_path(given) for given in paths) if path is not None]
    return [
        MadeDir(package, path, int(mode, 8), homes.get(path, "root"),
                USERS_GROUP if path in homes else "root", where)
        for path in made
    ]  # fmt: skip


def _change_made(found: list[MadeDir], command: Command, previous: Command | None) -> None:
    """A script's later owner or mode change of a directory it made (silent otherwise)."""
    words = list(command.words)
    if command.tool == "xargs" and previous is not None and previous.line == command.line:
        tool_at = next((at for at, word in enumerate(words) if word in ("chown", "chgrp")), None)
        if previous.tool != "find" or tool_at is None or len(previous.words) < 2:
            return
        words = [*words[tool_at:], previous.words[1]]  # find PATH …: PATH and what is below
    tool = words[0].rsplit("/", 1)[-1]
    words = [word for word in words[1:] if word not in _QUIET_FLAGS and word != "-R"]
    if tool == "dpkg-statoverride" and "--add" in words:
        words = [word for word in words if word != "--add"]
        if len(words) == 4 and _OCTAL.fullmatch(words[2]):
            _update_made(found, words[3], user=words[0], group=words[1], mode=words[2])
    elif tool in ("chown", "chgrp", "chmod") and len(words) >= 2:
        spec = words[0]
        for path in words[1:]:
            if tool == "chmod" and _OCTAL.fullmatch(spec):
                _update_made(found, path, mode=spec)
            elif tool == "chgrp":
                _update_made(found, path, group=spec)
            elif tool == "chown":
                user, colon, group = spec.partition(":") if ":" in spec else spec.partition(".")
                group = USERS_GROUP if colon and not group and user else group
                _update_made(found, path, user=user or None, group=group or None)


def _update_made(
    found: list[MadeDir],
    given: str,
    user: str | None = None,
    group: str | None = None,
    mode: str | None = None,
) -> None:
    if _NOT_LITERAL.search(f"{given}{user or ''}{group or ''}") or not given.startswith("/"):
        return
    path = posixpath.normpath(given)
    for at, made in enumerate(found):
        if made.path == path:
            found[at] = replace(
                made,
                user=made.user if user is None else user,
                group=made.group if group is None else group,
                mode=made.mode if mode is None else int(mode, 8),
            )


def _install_dirs(command: Command, package: str, where: str) -> list[MadeDir]:
    """``install -d [-m MODE] [-o USER] [-g GROUP] PATH...``; another install: none."""
    if command.tool != "install":
        return []
    options = {"-m": "755", "-o": "root", "-g": "root"}
    long_names = {"--mode": "-m", "--owner": "-o", "--group": "-g"}
    directory, paths, rest = False, [], list(command.words[1:])
    while rest:
        word = rest.pop(0)
        key, equals, value = word.partition("=")
        key = long_names.get(key, key)
        if word in ("-d", "--directory"):
            directory = True
        elif word in ("-v", "--verbose"):
            continue
        elif key in options and (equals or rest):
            options[key] = value if equals else rest.pop(0)
        elif word.startswith("-"):
            if directory:
                raise _NotUnderstood(f"the option {word!r}")
            return []  # some other install: a file copied, not a directory made
        else:
            paths.append(word)
    if not directory:
        return []
    if not _OCTAL.fullmatch(options["-m"]):
        raise _NotUnderstood(f"the mode {options['-m']!r}")
    for name in (options["-o"], options["-g"]):
        if _NOT_LITERAL.search(name):
            raise _NotUnderstood("a variable or a glob")
    mode = int(options["-m"], 8)
    return [
        MadeDir(package, made, mode, options["-o"], options["-g"], where)
        for made in (runtime_path(given) for given in paths)
        if made is not None
    ]


def _tmpfiles_dir(line: str, package: str, where: str) -> list[MadeDir]:
    """A tmpfiles.d ``d``/``D`` line: ``TYPE PATH [MODE [USER [GROUP ...]]]``; ``-`` defaults."""
    words = line.split()
    if len(words) < 2 or words[0] not in ("d", "D"):
        return []
    path = runtime_path(words[1])
    if path is None:
        return []
    fields = [*words[2:5], "-", "-", "-"][:3]
    mode_word, user, group = (None if word == "-" else word for word in fields)
    mode = 0o755
    if mode_word is not None:
        match = _TMPFILES_MODE.fullmatch(mode_word)
        if match is None:
            raise _NotUnderstood(f"the mode {mode_word!r}")
        mode = int(match.group(1), 8)
    for name in (user, group):
        if name is not None and ("%" in name or _NOT_LITERAL.search(name)):
            raise _NotUnderstood("a specifier, a variable or a glob")
    return [MadeDir(package, path, mode, user or "root", group or "root", where)]


def runtime_path(given: str) -> str | None:
    """``given`` as a literal absolute path below RUNTIME_DIRS; None for one elsewhere.

    Raises _NotUnderstood for a variable, a glob, a tmpfiles.d specifier (``%t``),
    a relative path or a ``..``: none is a path one can plan.
    """
    if _NOT_LITERAL.search(given) or "%" in given:
        raise _NotUnderstood("a variable, a glob or a specifier")
    if not given.startswith("/") or ".." in given.split("/"):
        raise _NotUnderstood(f"{given!r} is not a plain absolute path")
    path = posixpath.normpath(given).replace("//", "/")
    if path in SYSTEM_DIRS or not any(path.startswith(top + "/") for top in RUNTIME_DIRS):
        return None
    return path
