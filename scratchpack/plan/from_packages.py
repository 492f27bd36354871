"""``build --package``: what of an unpacked package root goes into the image, and how it runs.

The root (:mod:`scratchpack.packages.root`) holds every resolved package; the
image holds, as ``build --root`` would:

- the programs (``BINARY`` inside the root, ``--entrypoint``'s program, or the
  single program the named packages put on ``PATH``) and their closures;
- the data of the named packages and of their installed siblings from the
  same source package (nginx-light brings nginx-common), as shrink's static
  mode keeps it: every file and link they list but docs, man pages and
  translations, and the directories they own exclusively (``/var/lib/nginx``);
- ``/run`` and the ``/var/run`` link; the package records every image gets
  (:mod:`scratchpack.plan.records`: ``status.d/PKG`` and ``PKG.md5sums`` for every
  package the image holds a file of, os-release, ``/etc/debian_version``);
- the accounts the kept packages' scripts create, homes owned by their users;
- ``--user``'s home when a package created the account and ships the home
  (postgresql-common's ``/var/lib/postgresql``, whatever the named package),
  empty; and the runtime directories (``/run/postgresql``) that the tmpfiles.d
  files and ``install -d`` lines of the packages the image holds make;
- tzdata's zone files when a kept package depends on tzdata, as ``--tzdata``.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.packages.deb import paragraph_fields, source_name
from scratchpack.packages.owners import SYSTEM_DIRS, USERS_GROUP, MadeDir
from scratchpack.packages.root import PackageRoot, UnpackedPackage
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.essentials import NOBODY_UID, ZONEINFO, Essentials
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.users import PlannedAccounts

PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
NOGROUP = "nogroup"  # base-passwd's name for gid 65534 (distroless's, in essentials: nobody)
NOBODY_GID = NOBODY_UID
_SUPPORT = ("-doc", "-dbg", "-dbgsym", "-dev", "-tests")
NOT_NEEDED = (
    "/usr/share/doc/", "/usr/share/doc-base/", "/usr/share/man/", "/usr/share/info/",
    "/usr/share/locale/", "/usr/share/lintian/", "/usr/share/bug/", "/usr/share/menu/",
)  # fmt: skip


def kept_of_package(path: str) -> bool:
    """Whether an image keeps this path of a package's list: not its docs, man pages,
    translations (what --package and --layers packages both leave out)."""
    return (
        path not in ("/", "/.") and not path.startswith(NOT_NEEDED) and path + "/" not in NOT_NEEDED
    )


@dataclass(frozen=True)
class PackageSelection:
    """The packages whose data the image keeps, and the paths that are theirs."""

    packages: tuple[UnpackedPackage, ...]
    paths: tuple[str, ...]  # in-root paths: files, links, and directories only they list


def select(root: PackageRoot, named: Iterable[str]) -> PackageSelection:
    """The named packages and their same-source siblings; their paths, docs left out.

    Siblings are what the archive says (:func:`archive_source`): a dependency
    whose control file claims ``Source: curl`` is not one of curl's.

    A directory among the paths is planned as a directory only (``/usr`` adds
    no files); the files and links listed under it are planned one by one.
    """
    named = list(named)
    chosen = root.named(named)
    missing = sorted(set(named) - {package.ref.name for package in chosen})
    if missing:
        raise InputError(f"--package {', '.join(missing)}: not among the resolved packages")
    sources = {archive_source(package) for package in chosen}
    for package in root.packages:
        sibling = archive_source(package) in sources and not package.ref.name.endswith(_SUPPORT)
        if package not in chosen and sibling:
            chosen.append(package)
    paths = [path for package in chosen for path in package.paths if kept_of_package(path)]
    return PackageSelection(tuple(chosen), tuple(dict.fromkeys(paths)))


def programs_on_path(selection: PackageSelection, named: Iterable[str]) -> list[str]:
    """The executables the named packages put in a ``PATH`` directory.

    A metapackage (nginx-light) puts none: then its same-source siblings' count
    (nginx's ``/usr/sbin/nginx``). A sibling's program named like a named
    package counts too: python3's ``/usr/bin/python3`` is python3-minimal's.
    """
    wanted = set(named)
    own = _on_path(package for package in selection.packages if package.ref.name in wanted)
    siblings = _on_path(package for package in selection.packages if package.ref.name not in wanted)
    if not own:
        return siblings
    return own + [path for path in siblings if posixpath.basename(path) in wanted]


def _on_path(packages: Iterable[UnpackedPackage]) -> list[str]:
    return [
        path
        for package in packages
        for path in package.paths
        if posixpath.dirname(path) in PATH_DIRS
    ]


def distinct_programs(
    root: PackageRoot, paths: Iterable[str], preferred: Iterable[str] = ()
) -> list[str]:
    """``paths`` less the duplicates PATH would not reach, in their order.

    haproxy ships the same ``halog`` in ``/usr/sbin`` and ``/usr/bin``: a
    program of the same name that is the same file, or has the same bytes, as
    one earlier in PATH is the same program. Names that resolve through links
    to one file (nodejs's ``/usr/bin/nodejs -> node``) are one program too,
    under the name in ``preferred`` if one has it, else the first in PATH.
    """
    fs = RootFS(str(root.top))
    paths, preferred = list(paths), set(preferred)
    kept: dict[str, str] = {}  # basename, or the real file -> the path that stands for it
    for path in sorted(paths, key=lambda path: (posixpath.basename(path) not in preferred,
                                                _path_rank(path))):  # fmt: skip
        real = fs.host_path(path) or path
        if real in kept:
            continue  # another name of a program kept already
        first = kept.setdefault(posixpath.basename(path), path)
        if first == path or not _same_program(fs, first, path):
            kept[path] = kept[real] = path  # a different program of the same name: both count
    chosen = set(kept.values())
    return [path for path in paths if path in chosen]


def _path_rank(path: str) -> int:
    directory = posixpath.dirname(path)
    return PATH_DIRS.index(directory) if directory in PATH_DIRS else len(PATH_DIRS)


def _same_program(fs: RootFS, first: str, other: str) -> bool:
    """The same file through links, or files of the same bytes."""
    hosts = fs.host_path(first), fs.host_path(other)
    if hosts[0] is None or hosts[1] is None:
        return False
    try:
        return hosts[0] == hosts[1] or filecmp.cmp(hosts[0], hosts[1], shallow=False)
    except OSError:
        return False


def entry_program(
    root: PackageRoot, selection: PackageSelection, named: Iterable[str], entrypoint: str | None
) -> str:
    """``--entrypoint``'s program, the single program the named packages put on PATH, or
    the one of them named like a named package (haproxy's ``/usr/sbin/haproxy``)."""
    if entrypoint:
        return entrypoint
    named = list(named)
    found = distinct_programs(root, programs_on_path(selection, named), named)
    if len(found) == 1:
        return found[0]
    obvious = [path for path in found if posixpath.basename(path) in named]
    if len(obvious) == 1:
        others = [path for path in found if path != obvious[0]]
        warn(
            f"--package {posixpath.basename(obvious[0])}: {obvious[0]} is the entrypoint "
            f"(named like the package); --entrypoint or BINARY picks another of "
            f"{_listed(others)}"
        )
        return obvious[0]
    if found:
        what = f"put {len(found)} programs on PATH ({_listed(found)})"
    else:
        elsewhere = programs_elsewhere(root, selection, named)
        what = "put no program on PATH" + (
            f"; their programs elsewhere: {_listed(elsewhere)}" if elsewhere else ""
        )
    raise InputError(
        f"--package {', '.join(named)}: {what}; choose one with --entrypoint or BINARY"
    )


def programs_elsewhere(
    root: PackageRoot, selection: PackageSelection, named: Iterable[str]
) -> list[str]:
    """The named packages' programs outside PATH (postgresql-15's ``/usr/lib/postgresql/15/bin``):
    regular files with an x bit that are ELF files or scripts, links left out."""
    wanted = set(named)
    fs = RootFS(str(root.top))
    found = [
        path
        for package in selection.packages
        if package.ref.name in wanted
        for path in package.paths
        if posixpath.dirname(path) not in PATH_DIRS and _is_program_file(fs, path)
    ]
    # The program named like a package first (postgres of postgresql-15), then by path.
    return sorted(dict.fromkeys(found), key=lambda path: (not _named_like(path, wanted), path))


def _named_like(path: str, names: Iterable[str]) -> bool:
    return any(name.startswith(posixpath.basename(path)) for name in names)


def _is_program_file(fs: RootFS, path: str) -> bool:
    host = fs.host_path(path)
    if host is None or fs.realpath(path) != path:
        return False  # absent, or a link: its target is the program
    try:
        info = os.lstat(host)
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
            return False
    except OSError:
        return False
    head = fs.read_bytes(path, limit=4) or b""
    return head.startswith((b"\x7fELF", b"#!"))


def _listed(paths: list[str]) -> str:
    return ", ".join(paths[:8]) + (", …" if len(paths) > 8 else "")


def add_system_files(plan: RootPlan) -> None:
    """The /var/run link (/run is an essential) and, beside an essential /tmp, /var/tmp
    1777 (lighttpd's upload directory): what base-files gives. os-release and
    debian_version are records (:mod:`scratchpack.plan.records`)."""
    if plan.through_links("/var/run") not in plan.entries:
        plan.add(
            Entry("/var/run", EntryKind.SYMLINK, 0o777, Reason.ESSENTIAL, "run", target="/run")
        )
    tmp = plan.entries.get("/tmp")
    if (
        tmp is not None
        and tmp.kind is EntryKind.DIR
        and plan.through_links("/var/tmp") not in plan.entries
    ):
        plan.add_dir("/var/tmp", 0o1777, Reason.ESSENTIAL, "tmp")


def archive_source(package: UnpackedPackage) -> str:
    """The source package the archive's index names; the package's own name without one.

    Debian's Packages files omit Source when it equals the package name. A ref
    without an index paragraph (made by hand) is its own source: the .deb's
    word about itself never makes siblings.
    """
    if not package.ref.index:
        return package.ref.name
    return source_name(paragraph_fields(package.ref.index)) or package.ref.name


def own_homes(plan: RootPlan, root: PackageRoot) -> None:
    """Owners and modes as dpkg and the maintainer scripts leave them, homes included.

    What :mod:`scratchpack.packages.owners` found for the root's paths (tar
    headers, created users' own homes, the scripts' chown/chmod/statoverride
    lines) is given to the planned entries of those paths; links keep root.
    The scripts' lines that were not understood are warned about for the
    packages whose files the image holds.
    """
    top = str(root.top)
    files = {entry.source for entry in plan.files if entry.source}
    for package in root.packages:
        notes = [note for name, note in root.owner_notes if name == package.ref.name]
        if notes and any(top + path in files for path in package.paths):
            for note in notes:
                warn(note)
    for path, owner in root.owners.items():
        entry = plan.entries.get(path)
        if entry is None or entry.kind is EntryKind.SYMLINK:
            continue
        mode = entry.mode if owner.mode is None else owner.mode
        plan.entries[path] = dataclasses.replace(entry, uid=owner.uid, gid=owner.gid, mode=mode)


def created_accounts(root: PackageRoot, packages: Iterable[UnpackedPackage]) -> set[str]:
    """Names of the users and groups the scripts of ``packages`` create."""
    names = {package.ref.name for package in packages}
    return {account.name for account in root.accounts if account.package in names}


def add_package_dirs(plan: RootPlan, root: PackageRoot, user: str | None) -> None:
    """``--user``'s home, and the runtime directories of the packages the image holds.

    Held: a package whose file or link the image has, or whose created account
    its ``/etc/passwd`` names (postgresql-common made ``postgres``). Each is
    planned as an empty directory unless the plan has the path already, owned
    by names of the image's own accounts; a line naming an account the image
    lacks, or a path reached through a link of the plan (but ``/var/run``,
    the image's link to ``/run``), is warned about and not made.
    """
    _add_nogroup(plan, root)
    accounts = PlannedAccounts.of(plan)
    _add_user_home(plan, root, accounts, user)
    held = _held_names(plan, root, accounts)
    for made in root.made_dirs:
        if made.package in held:
            reason = _make_dir(plan, made, accounts)
            if reason:
                warn(f"package {made.package}: {made.where}: {made.path}: {reason}; not made")


def _add_nogroup(plan: RootPlan, root: PackageRoot) -> None:
    """Debian's name for gid 65534, ``nogroup``, before the image's ``nobody`` group, when
    a package's directory or created user names it (dnsmasq: ``d /run/dnsmasq 755
    dnsmasq nogroup``, and its user's primary group)."""
    accounts = PlannedAccounts.of(plan)
    if NOGROUP in accounts.groups or accounts.groups.get("nobody") != NOBODY_GID:
        return
    created = {account.name for account in root.accounts if account.is_user}
    named = any(made.group == NOGROUP for made in root.made_dirs) or any(
        gid == NOBODY_GID for name, (_, gid) in accounts.users.items() if name in created
    )
    entry = plan.entries.get("/etc/group")
    if not named or entry is None or entry.data is None:
        return
    lines = entry.data.decode("utf-8", "replace").splitlines(keepends=True)
    nobody = (i for i, line in enumerate(lines) if line.startswith(f"nobody:x:{NOBODY_GID}:"))
    at = next(nobody, len(lines))
    lines.insert(at, f"{NOGROUP}:x:{NOBODY_GID}:\n")
    plan.add_generated(
        "/etc/group", "".join(lines).encode(), entry.reason, entry.detail, entry.mode
    )


def _held_names(plan: RootPlan, root: PackageRoot, accounts: PlannedAccounts) -> set[str]:
    top = str(root.top)
    files = {entry.source for entry in plan.files if entry.source}
    links = {path for path, entry in plan.entries.items() if entry.kind is EntryKind.SYMLINK}
    held = {
        package.ref.name
        for package in root.packages
        if any(top + path in files or path in links for path in package.paths)
    }
    return held | {a.package for a in root.accounts if a.is_user and a.name in accounts.users}


def _add_user_home(
    plan: RootPlan, root: PackageRoot, accounts: PlannedAccounts, user: str | None
) -> None:
    """The home of a package-created ``--user`` that the root holds as a real directory."""
    name = (user or "").partition(":")[0]
    created = [a for a in root.accounts if a.is_user and a.name == name]
    if not created or name not in accounts.users:
        return
    home = created[0].home
    if home in SYSTEM_DIRS or not _real_dir(str(root.top), home):
        return
    existing = plan.entries.get(home)
    if existing is not None and not existing.implied:
        return  # planned already (an --include, a kept package's own): its owner stands
    recorded = root.owners.get(home)
    mode = recorded.mode if recorded is not None and recorded.mode is not None else None
    if mode is None:
        mode = stat.S_IMODE(os.lstat(f"{root.top}{home}").st_mode)
    uid, gid = accounts.users[name]
    plan.add_dir(home, mode, Reason.PACKAGE, f"home of {name}", uid, gid)


def _real_dir(top: str, path: str) -> bool:
    """Whether ``path`` is a directory of the root reached through no link."""
    walked = ""
    for part in path.strip("/").split("/"):
        walked += "/" + part
        try:
            info = os.lstat(top + walked)
        except OSError:
            return False
        if stat.S_ISLNK(info.st_mode):
            return False
    return bool(walked) and stat.S_ISDIR(info.st_mode)


def _make_dir(plan: RootPlan, made: MadeDir, accounts: PlannedAccounts) -> str | None:
    """Plan ``made``; why not, when it is not planned (None when it is, or stands already)."""
    expected = (
        "/run" + made.path[len("/var/run") :] if made.path.startswith("/var/run/") else made.path
    )
    run_link = plan.entries.get("/var/run")
    if made.path != expected and (run_link is None or run_link.target not in ("/run", "../run")):
        return "/var/run is not the image's link to /run"
    path = plan.through_links(made.path)
    if path != expected:
        return f"reached through a link ({path})"
    uid = accounts.uid(made.user)
    if made.group == USERS_GROUP:
        gid = accounts.users.get(made.user, (None, None))[1] if uid is not None else None
    else:
        gid = accounts.gid(made.group)
    if uid is None or gid is None:
        missing = made.user if uid is None else made.group
        return f"no account {missing!r} in the image"
    existing = plan.entries.get(path)
    if existing is not None and not existing.implied:
        return None if existing.kind is EntryKind.DIR else f"already a {existing.kind.value}"
    plan.add_dir(path, made.mode, Reason.PACKAGE, made.where, uid, gid)
    return None


def package_essentials(
    essentials: Essentials, root: PackageRoot, selection: PackageSelection
) -> Essentials:
    """``essentials``, with ``--tzdata`` when a kept package depends on tzdata directly
    (postgresql-15: initdb looks for ``/usr/share/zoneinfo``); a note says so."""
    if essentials.tzdata or not RootFS(str(root.top)).is_dir(ZONEINFO):
        return essentials
    wanting = [package.ref.name for package in selection.packages if _depends_on(package, "tzdata")]
    if not wanting:
        return essentials
    warn(
        f"--package {wanting[0]}: depends on tzdata, so its zone files ({ZONEINFO}) are kept "
        f"as --tzdata keeps them; --exclude {ZONEINFO} leaves them out"
    )
    return dataclasses.replace(essentials, tzdata=True)


def _depends_on(package: UnpackedPackage, name: str) -> bool:
    """Whether ``Depends``/``Pre-Depends`` name ``name`` itself, not as an alternative."""
    fields = paragraph_fields(package.ref.index) if package.ref.index else package.control.fields
    for key in ("Depends", "Pre-Depends"):
        for clause in fields.get(key, "").split(","):
            words = clause.strip().split()
            if words and "|" not in clause and words[0].partition(":")[0] == name:
                return True
    return False
