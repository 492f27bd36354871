"""Debian packages unpacked into a root the rest of the pipeline reads like ``build --root``.

Every package's file tar is applied in apt's order through the safe unpacker.
Nothing runs, so what dpkg and the maintainer scripts would have done is done
here, as data:

- a dpkg database (``var/lib/dpkg/status``, ``info/PKG.list``,
  ``info/PKG.conffiles``, ``info/PKG.md5sums`` of the well-formed lines of the
  package's own ``md5sums``), so owners, sources and versions are known to the
  planner and the SBOM (:mod:`scratchpack.plan.dpkg`). A package's status
  paragraph is the archive's index entry for what apt resolved, one paragraph,
  never the package's word about itself (its control file stands in only for
  a ref made without an index);
- ``etc/passwd`` and ``etc/group``: Debian's static accounts from base-passwd's
  ``passwd.master`` and ``group.master``, and the system users and groups the
  packages' ``preinst``/``postinst`` create with ``adduser --system``,
  ``addgroup --system``, ``useradd -r`` or ``groupadd -r``, or their
  ``sysusers.d`` files declare — given ids from 100 to 999 (adduser's system
  range) in the order found, as adduser would on a fresh system (a script that
  computes the name is not understood: ``--user`` then needs a number). An
  account Debian already has (``adduser --system daemon``) is not created
  again; a name, home or shell that is not a plain account name or path is
  skipped; a script over MAX_CONTROL_MEMBER is not read (a warning says so);
- the owners and modes dpkg and the scripts leave (:mod:`scratchpack.packages.owners`):
  the data tar's owners by name, created users' own homes, the scripts'
  ``chown``/``chmod``/``dpkg-statoverride`` lines, as data for the plan;
- the empty runtime directories the scripts' ``install -d`` lines and the
  packages' ``tmpfiles.d`` files make (``/run/postgresql``), as data too:
  the planner makes those of the packages the image holds.

Packages are hostile: every file written here is created from directory
descriptors opened inside the root, no link followed — a package's link at a
file's place is replaced, a link among its parents is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchpack.image.unpack import UnpackTooLarge, unpack_tars
from scratchpack.ld.rootfs import RootFS
from scratchpack.packages.apt import ARCHITECTURES, NAME, PackageError, PackageRef
from scratchpack.packages.deb import (
    MAX_CONTROL_MEMBER,
    MAX_MD5SUMS_MEMBER,
    DebControl,
    data_tar,
    paragraph_fields,
    read_control,
)
from scratchpack.packages.owners import (
    HeaderOwner,
    Home,
    MadeDir,
    Owner,
    Shipped,
    made_dirs,
    package_owners,
)
from scratchpack.packages.scripts import commands

# Packages every Debian system has; resolved beside the named ones for what they
# say about the system (os-release, the static accounts), not copied whole.
SYSTEM_PACKAGES = ("base-files", "base-passwd")
PASSWD_MASTER = "usr/share/base-passwd/passwd.master"
GROUP_MASTER = "usr/share/base-passwd/group.master"
FIRST_SYSTEM_ID, LAST_SYSTEM_ID = 100, 999  # adduser.conf's FIRST_/LAST_SYSTEM_UID and GID
MAX_ACCOUNTS = 200  # system users and groups the packages of one root may create
# base-passwd's masters: Debian's static accounts, known even when the root has no masters.
STATIC_USERS = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody",
})  # fmt: skip
STATIC_GROUPS = frozenset({
    "root", "daemon", "bin", "sys", "adm", "tty", "disk", "lp", "mail", "news", "uucp", "man",
    "proxy", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio",
    "dip", "www-data", "backup", "operator", "list", "irc", "src", "gnats", "shadow", "utmp",
    "video", "sasl", "plugdev", "staff", "games", "users", "nogroup",
})  # fmt: skip
_ACCOUNT_TOOL = re.compile(r"add(?:user|group)|(?:user|group)add")
# adduser's SYS_NAME_REGEX widened as --force-badname allows (Debian-exim, Debian-snmp):
# never a ':', a space, a newline or a leading '-'.
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][-.A-Za-z0-9_]*\$?")
MAX_ACCOUNT_NAME = 32
# Homes and shells: plain absolute paths. They land in /etc/passwd and a home in the plan.
_ACCOUNT_PATH = re.compile(r"/[A-Za-z0-9._+@,=~/-]{0,4095}")
_NUMBER = re.compile(r"[0-9]+")
_SYSUSERS = re.compile(r"^usr/lib/sysusers\.d/[^/]+\.conf$")
_TMPFILES = re.compile(r"^(?:usr/lib|etc)/tmpfiles\.d/[^/]+\.conf$")
# The archive's download bookkeeping in an index entry: not what dpkg's status says.
_ARCHIVE_ONLY = frozenset(
    {"Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5", "Tag"}
)
_FIELD_NAME = re.compile(r"[A-Za-z0-9][!-9;-~]*")  # deb822: printable ASCII, no ':'
DPKG, INFO = "var/lib/dpkg", "var/lib/dpkg/info"


@dataclass(frozen=True)
class UnpackedPackage:
    ref: PackageRef
    control: DebControl
    paths: tuple[str, ...]  # in-root absolute paths its data tar holds, in its order
    status: str = ""  # its one dpkg status paragraph (Status included): what status.d says


@dataclass(frozen=True)
class SystemAccount:
    """A user or group a package would create."""

    name: str
    package: str
    is_user: bool
    home: str = "/nonexistent"
    shell: str = "/usr/sbin/nologin"
    group: str | None = None  # the user's primary group, when the script names one
    own_group: bool = False  # adduser --group: a group of the same name


@dataclass(frozen=True)
class PackageRoot:
    top: Path
    packages: tuple[UnpackedPackage, ...]
    accounts: tuple[SystemAccount, ...]  # created by the packages; never a static account
    # What the unpacker refused or skipped, each naming its package: a file that is
    # missing later has its reason here.
    warnings: tuple[str, ...] = ()
    # In-root path -> the owner (and mode) dpkg and the scripts leave it with; root:root
    # paths as unpacked are not listed (:mod:`scratchpack.packages.owners`).
    owners: dict[str, Owner] = field(default_factory=dict)
    # (package, note): a script's ownership change that was not applied, and why.
    owner_notes: tuple[tuple[str, str], ...] = ()
    # The empty directories the packages' install -d and tmpfiles.d lines make.
    made_dirs: tuple[MadeDir, ...] = ()

    def named(self, names: Iterable[str]) -> list[UnpackedPackage]:
        wanted = set(names)
        return [package for package in self.packages if package.ref.name in wanted]


def unpack_packages(
    debs: list[tuple[PackageRef, Path]], destination: Path, max_bytes: int | None = None
) -> PackageRoot:
    """Apply each package's files into the empty ``destination``; write what dpkg would."""
    controls = {ref.name: read_control(path) for ref, path in debs}
    headers: dict[str, HeaderOwner] = {}
    paths, warnings = _unpack_files(debs, destination, max_bytes, headers)
    packages = tuple(
        UnpackedPackage(
            ref,
            controls[ref.name],
            tuple(paths[ref.name]),
            status_paragraph(ref, controls[ref.name]),
        )
        for ref, _ in debs
    )
    warnings.extend(_control_warnings(packages))
    _write_dpkg_database(destination, packages)
    passwd, group = _masters(destination)
    accounts = _created_accounts(
        destination, packages, STATIC_USERS | _names(passwd), STATIC_GROUPS | _names(group)
    )
    passwd, group = _write_accounts(destination, (passwd, group), accounts, packages)
    shipped = _shipped(packages)
    owners, notes = package_owners(destination, shipped, headers, (passwd, group), _homes(accounts))
    made: list[MadeDir] = []
    for package in shipped:
        homes = {a.home: a.name for a in accounts if a.is_user and a.package == package.name}
        dirs, dir_notes = made_dirs(package, _tmpfiles(destination, package.paths), homes)
        made += dirs
        notes += [(package.name, note) for note in dir_notes]
    return PackageRoot(
        destination, packages, accounts, tuple(warnings), owners, tuple(notes), tuple(made)
    )


def _control_warnings(packages: Iterable[UnpackedPackage]) -> Iterator[str]:
    """Control members over their bound, md5sums lines not taken: one line each."""
    for package in packages:
        where = _where(package.ref)
        for member in package.control.oversized:
            bound = MAX_MD5SUMS_MEMBER if member == "md5sums" else MAX_CONTROL_MEMBER
            yield f"{where}: its {member} is over {bound >> 20} MiB and was not read"
        skipped = package.control.md5sums.skipped
        if skipped:
            yield (
                f"{where}: {skipped} line{'s' if skipped != 1 else ''} of its md5sums not "
                "taken (not a digest and a path below the root)"
            )


def _tmpfiles(top: Path, paths: Iterable[str]) -> dict[str, str]:
    """A package's tmpfiles.d files: in-root path -> text, read inside the root."""
    root = RootFS(str(top))
    found = {}
    for path in sorted(paths):
        if _TMPFILES.match(path.lstrip("/")):
            data = root.read_bytes(path, limit=MAX_CONTROL_MEMBER) or b""
            found[path] = data.decode("utf-8", "replace")
    return found


def _shipped(packages: Iterable[UnpackedPackage]) -> list[Shipped]:
    """What owners.py reads of each package; the system packages' scripts are not applied
    (they are resolved for what they say about the system, not installed)."""
    return [
        Shipped(
            package.ref.name,
            frozenset(package.paths),
            {} if package.ref.name in SYSTEM_PACKAGES else package.control.scripts,
        )
        for package in packages
    ]


def _homes(accounts: Iterable[SystemAccount]) -> list[Home]:
    return [Home(user.name, user.package, user.home) for user in accounts if user.is_user]


def _where(ref: PackageRef) -> str:
    return f"package {ref.name} {ref.version}"


def _unpack_files(
    debs: list[tuple[PackageRef, Path]],
    destination: Path,
    max_bytes: int | None,
    headers: dict[str, HeaderOwner],
) -> tuple[dict[str, list[str]], list[str]]:
    """Each package's in-root paths, and the unpacker's warnings; a bomb is one line.

    ``headers`` gets each path's owner as its tar header records it, the last
    package's word winning as the last one's file does.
    """
    paths: dict[str, list[str]] = {ref.name: [] for ref, _ in debs}
    where_to_name = {_where(ref): ref.name for ref, _ in debs}
    warnings: list[str] = []
    current = [""]

    def seen(where: str, member: tarfile.TarInfo) -> None:
        current[0] = where
        if member.ischr() or member.isblk() or member.isfifo():
            warnings.append(f"{where}: skipped {member.name!r}: devices and fifos are not made")
            return
        parts = [part for part in member.name.split("/") if part not in ("", ".")]
        if ".." in parts:
            return  # refused by the unpacker (its warning says so): not the package's path
        path = "/" + "/".join(parts) if parts else "/."
        paths[where_to_name[where]].append(path)
        headers[path] = HeaderOwner(member.uname, member.gname, member.uid, member.gid)

    try:
        report = unpack_tars(
            ((_where(ref), data_tar(path)) for ref, path in debs), destination, max_bytes, seen
        )
    except UnpackTooLarge:
        bound = f"the free space of {destination.parent}"
        if max_bytes is not None:
            bound = f"{max_bytes} bytes or {bound}"
        raise PackageError(
            f"{current[0]}: the package expands past {bound}, the bound for unpacking "
            "packages; it is refused (TMPDIR sets where packages are unpacked)"
        ) from None
    return paths, [*report.warnings, *warnings]


def status_paragraph(ref: PackageRef, control: DebControl) -> str:
    """The package's one dpkg status paragraph: the archive's index entry, as apt resolved it.

    The control file's first paragraph stands in only for a ref without an
    index (made by hand). Either way the name, version and architecture are
    the ref's, the archive's download fields are left out and ``Status`` is
    dpkg's for an installed package.
    """
    fields = paragraph_fields(ref.index if ref.index.strip() else control.paragraph)
    if "Description" not in fields and "Description-en" in fields:
        fields["Description"] = fields.pop("Description-en")
    fields.update(Version=ref.version, Architecture=ref.architecture)
    lines = [f"Package: {ref.name}", "Status: install ok installed"]
    for key, value in fields.items():
        if key in ("Package", "Status") or key in _ARCHIVE_ONLY or not value:
            continue
        if _FIELD_NAME.fullmatch(key):
            lines.append(f"{key}:{value}" if value.startswith("\n") else f"{key}: {value}")
    return "".join(f"{line}\n" for line in lines)


def _write_dpkg_database(top: Path, packages: tuple[UnpackedPackage, ...]) -> None:
    with _directory(top, INFO, packages) as info:
        for package in packages:
            key = f"{package.ref.name}:{package.ref.architecture}"
            if not (NAME.fullmatch(package.ref.name) and package.ref.architecture in ARCHITECTURES):
                raise PackageError(
                    "a package name or architecture outside Debian's grammar (a-z, 0-9, + . -)"
                )
            listed = [path for path in package.paths if path != "/." and "\n" not in path]
            text = "/.\n" + "".join(f"{path}\n" for path in listed)
            _replace(info, f"{key}.list", text, f"/{INFO}/{key}.list", packages)
            if package.control.conffiles:
                text = "".join(f"{path}\n" for path in package.control.conffiles)
                _replace(info, f"{key}.conffiles", text, f"/{INFO}/{key}.conffiles", packages)
            if package.control.md5sums.lines:  # checked lines only (deb.parse_md5sums)
                text = "".join(f"{md5}  {path}\n" for md5, path in package.control.md5sums.lines)
                _replace(info, f"{key}.md5sums", text, f"/{INFO}/{key}.md5sums", packages)
    with _directory(top, DPKG, packages) as dpkg:
        status = "\n".join(package.status for package in packages)
        _replace(dpkg, "status", status, f"/{DPKG}/status", packages)


def _shipper(packages: Iterable[UnpackedPackage], path: str) -> str:
    """Which package put ``path`` in the root, for messages."""
    for package in packages:
        if path in package.paths:
            return f"package {package.ref.name}"
    return "a package"


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _directory(top: Path, relative: str, packages: Iterable[UnpackedPackage]) -> Iterator[int]:
    """A descriptor of the real directory ``top/relative``, made where missing.

    Each component is opened from its parent's descriptor without following a
    link, so a package's link on the way (``var/lib/dpkg -> /etc``) is refused
    rather than written through.
    """
    descriptor = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = ""
        for part in relative.split("/"):
            walked += "/" + part
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=descriptor)
                child = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PackageError(
                        f"{_shipper(packages, walked)} makes {walked} a link or a file, "
                        "where dpkg's and the accounts' data need a directory; refused"
                    ) from None
                raise PackageError(f"cannot make {walked} in {top}: {err.strerror}") from None
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def _replace(
    directory: int, name: str, text: str, shown: str, packages: Iterable[UnpackedPackage]
) -> None:
    """``name`` in ``directory`` as a new file holding ``text``: what was there is removed."""
    try:
        os.unlink(name, dir_fd=directory)  # a link is removed, never written through
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno not in (errno.EISDIR, errno.EPERM):
            raise
        raise PackageError(
            f"{_shipper(packages, shown)} makes {shown} a directory, where dpkg writes a file"
        ) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(name, flags, 0o644, dir_fd=directory)
    with os.fdopen(descriptor, "w", encoding="utf-8", errors="surrogateescape") as stream:
        stream.write(text)


def _masters(top: Path) -> tuple[list[str], list[str]]:
    """base-passwd's ``passwd.master`` and ``group.master`` lines, if the root has them."""
    root = RootFS(str(top))  # a package's links resolve inside the root
    passwd = root.read_bytes("/" + PASSWD_MASTER, limit=MAX_CONTROL_MEMBER)
    group = root.read_bytes("/" + GROUP_MASTER, limit=MAX_CONTROL_MEMBER)
    return _lines(passwd), _lines(group)


def _names(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines}


def _created_accounts(
    top: Path, packages: Iterable[UnpackedPackage], users: set[str], groups: set[str]
) -> tuple[SystemAccount, ...]:
    """The accounts the packages create that the system does not have yet, at most MAX_ACCOUNTS.

    ``users`` and ``groups``: the names that exist already (the static ones).
    """
    found: dict[tuple[str, bool], SystemAccount] = {}
    for account in _found_accounts(top, packages):
        key = (account.name, account.is_user)
        if account.name in (users if account.is_user else groups) or key in found:
            continue
        if len(found) == MAX_ACCOUNTS:
            raise PackageError(
                f"package {account.package}: the packages' scripts create more than "
                f"{MAX_ACCOUNTS} system users and groups; refused"
            )
        found[key] = account
    return tuple(found.values())


def _found_accounts(top: Path, packages: Iterable[UnpackedPackage]) -> Iterator[SystemAccount]:
    root = RootFS(str(top))
    for package in packages:
        name = package.ref.name
        for script in ("preinst", "postinst"):
            yield from _script_accounts(package.control.scripts.get(script, ""), name)
        for path in package.paths:
            if _SYSUSERS.match(path.lstrip("/")):
                data = root.read_bytes(path, limit=MAX_CONTROL_MEMBER) or b""
                yield from sysusers_accounts(data.decode("utf-8", "replace"), name)


def script_accounts(script: str, package: str) -> list[SystemAccount]:
    """The system users and groups a maintainer script creates, read as text.

    Plain assignments of a literal (``USER="redis"``) are substituted, the
    first one of a name wins; any other variable is dropped (``$quiet`` is a
    flag), and a name that stays a variable is not understood. Linear in the
    script's size: one substitution pass, and only the lines naming an
    account tool are split into shell words (:mod:`scratchpack.packages.scripts`),
    at most MAX_SCRIPT_COMMANDS of them (more is a PackageError).
    """
    return list(_script_accounts(script, package))


def _script_accounts(script: str, package: str) -> Iterator[SystemAccount]:
    for command in commands(script, _ACCOUNT_TOOL, package, "account commands"):
        account = _account(command.tool, list(command.words[1:]), package)
        if account is not None:
            yield account


_WITH_VALUE = frozenset(
    {
        "--home", "--shell", "--ingroup", "--gecos", "--uid", "--gid", "--firstuid",
        "--lastuid", "--comment", "-d", "-s", "-g", "-c", "-u", "-G", "--groups",
        "--home-dir",
    }
)  # fmt: skip


def _account(tool: str, args: list[str], package: str) -> SystemAccount | None:
    flags: dict[str, str | None] = {}
    operands: list[str] = []
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word.startswith("-"):
            key, sep, value = word.partition("=")
            if not sep and key in _WITH_VALUE and rest:
                value = rest.pop(0)
            flags[key] = value
        else:
            operands.append(word)
    operands = [word for word in operands if not any(char in word for char in "$`")]
    if not operands:
        return None
    name = operands[-1] if tool in ("adduser", "useradd") else operands[0]
    system = "--system" in flags or "-r" in flags
    account = None
    if tool == "adduser" and system and len(operands) == 1:
        account = SystemAccount(
            name,
            package,
            True,
            flags.get("--home") or "/nonexistent",
            flags.get("--shell") or "/usr/sbin/nologin",
            flags.get("--ingroup"),
            "--group" in flags,
        )
    # adduser --system USER GROUP (two operands) adds a user to a group: nothing created.
    elif tool == "useradd" and system:
        account = SystemAccount(
            name,
            package,
            True,
            flags.get("--home-dir") or flags.get("-d") or "/nonexistent",
            flags.get("--shell") or flags.get("-s") or "/usr/sbin/nologin",
            flags.get("--gid") or flags.get("-g"),
            "-U" in flags or "--user-group" in flags,
        )
    elif tool in ("addgroup", "groupadd") and system:
        account = SystemAccount(name, package, False)
    return _acceptable(account)


def _acceptable(account: SystemAccount | None) -> SystemAccount | None:
    """``account`` if its name, home and shell may stand in /etc/passwd as they are; else None.

    A package's words reach /etc/passwd and the image plan (a home is a
    directory the image keeps): a newline, a ``:`` or a relative path there
    would be someone else's line.
    """
    if account is None:
        return None
    if len(account.name) > MAX_ACCOUNT_NAME or not _ACCOUNT_NAME.fullmatch(account.name):
        return None
    for path in (account.home, account.shell):
        if not _ACCOUNT_PATH.fullmatch(path) or ".." in path.split("/"):
            return None
    group = account.group
    if group is not None and not (_NUMBER.fullmatch(group) or _ACCOUNT_NAME.fullmatch(group)):
        return None
    return account


def sysusers_accounts(text: str, package: str) -> list[SystemAccount]:
    """``u NAME ID "GECOS" HOME SHELL`` and ``g NAME ID`` lines of a sysusers.d file."""
    accounts = []
    for line in text.split("\n"):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) < 2 or words[0] not in ("u", "g"):
            continue
        if words[0] == "u":
            home = words[4] if len(words) > 4 and words[4] != "-" else "/nonexistent"
            shell = words[5] if len(words) > 5 and words[5] != "-" else "/usr/sbin/nologin"
            account = SystemAccount(words[1], package, True, home, shell, None, True)
        else:
            account = SystemAccount(words[1], package, False)
        if _acceptable(account) is not None:
            accounts.append(account)
    return accounts


def _write_accounts(
    top: Path,
    masters: tuple[list[str], list[str]],
    accounts: Iterable[SystemAccount],
    packages: Iterable[UnpackedPackage],
) -> tuple[list[str], list[str]]:
    """``etc/passwd`` and ``etc/group``: base-passwd's masters, then the packages' accounts.

    Returns their lines, as written.
    """
    passwd, group = list(masters[0]), list(masters[1])
    used_uids = {int(line.split(":")[2]) for line in passwd if _valid(line, 7)}
    used_gids = {int(line.split(":")[2]) for line in group if _valid(line, 4)}
    users = _names(passwd)
    groups = {line.split(":")[0]: line.split(":")[2] for line in group if _valid(line, 4)}
    accounts = list(accounts)
    for account in accounts:  # groups first: a user's group may be one of them
        wanted = not account.is_user or account.own_group
        if wanted and account.name not in groups:
            gid = _free_id(used_gids, account, "group")
            groups[account.name] = str(gid)
            group.append(f"{account.name}:x:{gid}:")
    for account in accounts:
        if not account.is_user or account.name in users:
            continue
        uid = _free_id(used_uids, account, "user")
        primary = account.group or (account.name if account.own_group else "nogroup")
        gid = groups.get(primary, groups.get("nogroup", "65534"))
        passwd.append(f"{account.name}:x:{uid}:{gid}::{account.home}:{account.shell}")
        users.add(account.name)
    with _directory(top, "etc", packages) as etc:
        for name, lines in (("passwd", passwd), ("group", group)):
            text = "".join(f"{line}\n" for line in lines)
            _replace(etc, name, text, f"/etc/{name}", packages)
    return passwd, group


def _free_id(used: set[int], account: SystemAccount, kind: str) -> int:
    """The lowest system id not in ``used`` (now in it), as adduser gives them."""
    for number in range(FIRST_SYSTEM_ID, LAST_SYSTEM_ID + 1):
        if number not in used:
            used.add(number)
            return number
    raise PackageError(
        f"no free system {kind} id ({FIRST_SYSTEM_ID}..{LAST_SYSTEM_ID}) for the account "
        f"{account.name} of package {account.package}"
    )


def _lines(data: bytes | None) -> list[str]:
    text = (data or b"").decode("utf-8", "replace")
    return [line for line in text.split("\n") if line.strip()]


def _valid(line: str, fields: int) -> bool:
    parts = line.split(":")
    return len(parts) >= fields and _NUMBER.fullmatch(parts[2]) is not None


def host_architecture() -> str:
    """dpkg's name for this machine's architecture (amd64, arm64, ...)."""
    import platform

    from scratchpack.image.media import Platform

    host = Platform.host()
    return host.architecture if host is not None else platform.machine()
