"""Debian packages unpacked into a root the rest of the pipeline reads like ``build --root``.

Every package's file tar is applied in apt's order through the safe unpacker.
Nothing runs, so what dpkg and the maintainer scripts would have done is done
here, as data:

- a dpkg database (``var/lib/dpkg/status``, ``info/PKG.list``,
  ``info/PKG.conffiles``), so owners, sources and versions are known to the
  planner and the SBOM (:mod:`scratchpack.plan.dpkg`);
- ``etc/passwd`` and ``etc/group``: Debian's static accounts from base-passwd's
  ``passwd.master`` and ``group.master``, and the system users and groups the
  packages' ``preinst``/``postinst`` create with ``adduser --system``,
  ``addgroup --system``, ``useradd -r`` or ``groupadd -r``, or their
  ``sysusers.d`` files declare — given ids from 100 up in the order found, as
  adduser would on a fresh system (a script that computes the name is not
  understood: ``--user`` then needs a number).
"""

from __future__ import annotations

import re
import shlex
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scratchpack.image.unpack import unpack_tars
from scratchpack.ld.rootfs import RootFS
from scratchpack.packages.apt import PackageError, PackageRef
from scratchpack.packages.deb import DebControl, data_tar, read_control

# Packages every Debian system has; resolved beside the named ones for what they
# say about the system (os-release, the static accounts), not copied whole.
SYSTEM_PACKAGES = ("base-files", "base-passwd")
PASSWD_MASTER = "usr/share/base-passwd/passwd.master"
GROUP_MASTER = "usr/share/base-passwd/group.master"
FIRST_SYSTEM_ID, LAST_SYSTEM_ID = 100, 999
_ASSIGNMENT = re.compile(
    r"^[ \t]*([A-Za-z_]\w*)=[\"']?([A-Za-z0-9_.-]+)[\"']?[ \t]*$", re.MULTILINE
)
_SYSUSERS = re.compile(r"^usr/lib/sysusers\.d/[^/]+\.conf$")


@dataclass(frozen=True)
class UnpackedPackage:
    ref: PackageRef
    control: DebControl
    paths: tuple[str, ...]  # in-root absolute paths its data tar holds, in its order


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
    accounts: tuple[SystemAccount, ...]

    def named(self, names: Iterable[str]) -> list[UnpackedPackage]:
        wanted = set(names)
        return [package for package in self.packages if package.ref.name in wanted]


def unpack_packages(
    debs: list[tuple[PackageRef, Path]], destination: Path, max_bytes: int | None = None
) -> PackageRoot:
    """Apply each package's files into the empty ``destination``; write what dpkg would."""
    controls = {ref.name: read_control(path) for ref, path in debs}
    paths: dict[str, list[str]] = {ref.name: [] for ref, _ in debs}
    where_to_name = {f"package {ref.name} {ref.version}": ref.name for ref, _ in debs}

    def seen(where: str, member: tarfile.TarInfo) -> None:
        name = "/" + member.name.removeprefix("./").strip("/")
        paths[where_to_name[where]].append("/." if name == "/" else name)

    unpack_tars(
        ((f"package {ref.name} {ref.version}", data_tar(path)) for ref, path in debs),
        destination,
        max_bytes,
        seen,
    )
    packages = tuple(
        UnpackedPackage(ref, controls[ref.name], tuple(paths[ref.name])) for ref, _ in debs
    )
    _write_dpkg_database(destination, packages)
    accounts = tuple(_accounts(destination, packages))
    _write_accounts(destination, accounts)
    return PackageRoot(destination, packages, accounts)


def _directory(top: Path, relative: str) -> Path:
    """``top/relative`` as real directories: a package's link there would lead our writes out."""
    current = top
    for part in relative.split("/"):
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise PackageError(f"a package makes /{relative} something other than directories")
        current.mkdir(exist_ok=True)
    return current


def _write_dpkg_database(top: Path, packages: Iterable[UnpackedPackage]) -> None:
    info = _directory(top, "var/lib/dpkg/info")
    paragraphs = []
    for package in packages:
        lines = package.control.paragraph.rstrip("\n").splitlines()
        lines.insert(1, "Status: install ok installed")
        paragraphs.append("\n".join(lines) + "\n")
        key = f"{package.ref.name}:{package.ref.architecture}"
        listed = [path for path in package.paths if path != "/."]
        (info / f"{key}.list").write_text("/.\n" + "".join(f"{path}\n" for path in listed))
        if package.control.conffiles:
            (info / f"{key}.conffiles").write_text(
                "".join(f"{path}\n" for path in package.control.conffiles)
            )
    (top / "var/lib/dpkg/status").write_text("\n".join(paragraphs))


def _accounts(top: Path, packages: Iterable[UnpackedPackage]) -> list[SystemAccount]:
    found: dict[tuple[str, bool], SystemAccount] = {}
    for package in packages:
        name = package.ref.name
        for script in ("preinst", "postinst"):
            for account in script_accounts(package.control.scripts.get(script, ""), name):
                found.setdefault((account.name, account.is_user), account)
        for path in package.paths:
            if _SYSUSERS.match(path.lstrip("/")):
                text = RootFS(str(top)).read_text(path) or ""
                for account in sysusers_accounts(text, name):
                    found.setdefault((account.name, account.is_user), account)
    return list(found.values())


def script_accounts(script: str, package: str) -> list[SystemAccount]:
    """The system users and groups a maintainer script creates, read as text.

    Plain assignments of a literal (``USER="redis"``) are substituted; any other
    variable is dropped (``$quiet`` is a flag), and a name that stays a
    variable is not understood.
    """
    text = re.sub(r"\\\n", " ", script)
    for name, value in _ASSIGNMENT.findall(text):
        text = re.sub(r"\$(?:\{" + name + r"\}|" + name + r"\b)", value, text)
    accounts = []
    for line in text.splitlines():
        for command in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(command, comments=True)
            except ValueError:
                continue
            while words and ("=" in words[0] or words[0] in ("then", "do", "else", "exec")):
                words.pop(0)
            if not words:
                continue
            tool = words[0].rsplit("/", 1)[-1]
            account = _account(tool, words[1:], package)
            if account is not None:
                accounts.append(account)
    return accounts


def _account(tool: str, args: list[str], package: str) -> SystemAccount | None:
    flags: dict[str, str | None] = {}
    operands: list[str] = []
    with_value = {
        "--home", "--shell", "--ingroup", "--gecos", "--uid", "--gid", "--firstuid",
        "--lastuid", "--comment", "-d", "-s", "-g", "-c", "-u", "-G", "--groups",
    }  # fmt: skip
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word.startswith("-"):
            key, sep, value = word.partition("=")
            if not sep and key in with_value and rest:
                value = rest.pop(0)
            flags[key] = value
        else:
            operands.append(word)
    operands = [word for word in operands if not any(char in word for char in "$`")]
    if not operands:
        return None
    name = operands[-1] if tool in ("adduser", "useradd") else operands[0]
    system = "--system" in flags or "-r" in flags
    if tool == "adduser" and system and len(operands) == 1:
        return SystemAccount(
            name,
            package,
            True,
            flags.get("--home") or "/nonexistent",
            flags.get("--shell") or "/usr/sbin/nologin",
            flags.get("--ingroup"),
            "--group" in flags,
        )
    if tool == "adduser" and system and len(operands) == 2:
        return None  # adduser --system USER GROUP: adds a user to a group
    if tool == "useradd" and system:
        return SystemAccount(
            name,
            package,
            True,
            flags.get("--home-dir") or flags.get("-d") or "/nonexistent",
            flags.get("--shell") or flags.get("-s") or "/usr/sbin/nologin",
            flags.get("--gid") or flags.get("-g"),
            "-U" in flags or "--user-group" in flags,
        )
    if tool in ("addgroup", "groupadd") and system:
        return SystemAccount(name, package, False)
    return None


def sysusers_accounts(text: str, package: str) -> list[SystemAccount]:
    """``u NAME ID "GECOS" HOME SHELL`` and ``g NAME ID`` lines of a sysusers.d file."""
    accounts = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) < 2 or words[0] not in ("u", "g"):
            continue
        if words[0] == "u":
            home = words[4] if len(words) > 4 and words[4] != "-" else "/nonexistent"
            shell = words[5] if len(words) > 5 and words[5] != "-" else "/usr/sbin/nologin"
            accounts.append(SystemAccount(words[1], package, True, home, shell, None, True))
        else:
            accounts.append(SystemAccount(words[1], package, False))
    return accounts


def _write_accounts(top: Path, accounts: Iterable[SystemAccount]) -> None:
    """``etc/passwd`` and ``etc/group``: base-passwd's masters, then the packages' accounts."""
    root = RootFS(str(top))  # a package's links resolve inside the root
    passwd = _lines(root.read_text("/" + PASSWD_MASTER))
    group = _lines(root.read_text("/" + GROUP_MASTER))
    used_uids = {int(line.split(":")[2]) for line in passwd if _valid(line, 7)}
    used_gids = {int(line.split(":")[2]) for line in group if _valid(line, 4)}
    users = {line.split(":")[0] for line in passwd}
    groups = {line.split(":")[0]: line.split(":")[2] for line in group if _valid(line, 4)}

    def free(used: set[int]) -> int:
        number = next(n for n in range(FIRST_SYSTEM_ID, LAST_SYSTEM_ID + 1) if n not in used)
        used.add(number)
        return number

    accounts = list(accounts)
    for account in accounts:  # groups first: a user's group may be one of them
        wanted = not account.is_user or account.own_group
        if wanted and account.name not in groups:
            gid = free(used_gids)
            groups[account.name] = str(gid)
            group.append(f"{account.name}:x:{gid}:")
    for account in accounts:
        if not account.is_user or account.name in users:
            continue
        uid = free(used_uids)
        primary = account.group or (account.name if account.own_group else "nogroup")
        gid = groups.get(primary, groups.get("nogroup", "65534"))
        passwd.append(f"{account.name}:x:{uid}:{gid}::{account.home}:{account.shell}")
        users.add(account.name)
    etc = _directory(top, "etc")
    for name, lines in (("passwd", passwd), ("group", group)):
        target = etc / name
        if target.is_symlink() or target.exists():
            target.unlink()  # a link would be written through, maybe out of the root
        target.write_text("".join(f"{line}\n" for line in lines))


def _lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()]


def _valid(line: str, fields: int) -> bool:
    parts = line.split(":")
    return len(parts) >= fields and parts[2].isdigit()


def host_architecture() -> str:
    """dpkg's name for this machine's architecture (amd64, arm64, ...)."""
    import platform

    from scratchpack.image.media import Platform

    host = Platform.host()
    return host.architecture if host is not None else platform.machine()
