"""``shrink``'s plan: what to keep of an unpacked image, and why.

The source's program is found through the image's own PATH and resolved
inside the unpacked root with ``--root`` semantics. What is kept, and why
(:class:`~scratchpack.plan.entries.Reason`):

- the program(s), their loader and libraries (and what glibc will dlopen for
  them: libgcc_s, NSS modules named in the root's nsswitch.conf) — shown as
  ``closure``;
- ``package``: in static mode, the files of the Debian package that owns the
  program and of its sibling packages from the same source (conffiles, data,
  the empty log and run directories it owns), without docs, man pages or
  translations — and the closures of ELF files among them;
- ``trace``: with ``--trace``, every file the running program touched;
- ``include``: what ``--include`` names;
- ``record``: the package records (``status.d``, os-release, debian_version) of
  the source's packages whose files are kept (:mod:`scratchpack.plan.records`);
- ``runtime``: CA certificates when the closure speaks TLS, ``/tmp``,
  ``/var/tmp``, ``/run`` and ``/var/run`` (as the source has them), the
  ``/etc/passwd`` and ``/etc/group`` entries of the users that are needed
  (:func:`wanted_accounts`; an account file ``--include`` names is kept as is).

The new image keeps the source's configuration exactly, plus one label.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from scratchpack.errors import InputError
from scratchpack.image.config import RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.lazyroot import LazyRoot
from scratchpack.ld.resolve import Closure, Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.plan.dpkg import DpkgIndex
from scratchpack.plan.entries import EntryKind, Reason
from scratchpack.plan.essentials import Essentials
from scratchpack.plan.excludes import Excludes
from scratchpack.plan.image_plan import (
    LoadedFirst,
    add_include,
    check_complete,
    planned_interpreter,
    resolve_for_image,
    satisfy_from_image,
    warn_unused_excludes,
)
from scratchpack.plan.programs import DEFAULT_PATH, SHELLS, program, shell_commands, which
from scratchpack.plan.records import Records, add_records
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.users import (
    ACCOUNT_FILES,
    Wanted,
    config_words,
    primary_gids,
    root_accounts,
    select_accounts,
)

SOURCE_LABEL = "org.scratchpack.source.digest"
# Parts of a package that a running program never reads.
_NOT_NEEDED = re.compile(
    r"^/usr/share/(doc|doc-base|man|info|locale|lintian|bug|menu|help|gtk-doc|reportbug)(/|$)"
)
_TLS_LIBRARIES = ("libssl.so", "libgnutls.so", "libnss3.so", "libmbedtls.so", "libwolfssl.so")
_CA_PATHS = ("/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem")
# Directories programs write to at run time, kept empty with the source's modes.
_RUNTIME_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run")
# Where a service keeps its state: the USER's directories here are kept (empty).
_STATE_DIRS = ("/var/lib", "/var/log", "/var/cache", "/var/spool", "/run", "/var/run")
_ACCOUNT_DATABASES = ("/etc/passwd", "/etc/group")  # what shrink generates


@dataclass
class Kept:
    """Why each path of the new image is there: the paths each reason asked for."""

    reasons: dict[str, list[str]] = field(default_factory=dict)  # reason group -> paths
    packages: list[str] = field(default_factory=list)  # static mode: the packages kept

    def add(self, reason: Reason, path: str) -> None:
        self.reasons.setdefault(reason.group, []).append(path)

    def forget(self, paths: Iterable[str]) -> None:
        """Drop ``paths`` from every reason (files replaced by generated ones)."""
        gone = set(paths)
        for reason, kept in list(self.reasons.items()):
            self.reasons[reason] = [path for path in kept if path not in gone]
            if not self.reasons[reason]:
                del self.reasons[reason]


@dataclass(frozen=True)
class PartlyKept:
    """A tree of data a program picks from at run time, of which only some files are kept.

    A trace keeps the time zone, locale or dictionary the run used; another
    configuration picks another one, and it is not there.
    """

    kind: str  # "time zones"
    path: str  # the tree: /usr/share/zoneinfo
    kept: int  # files of it in the image
    total: int  # files of it in the source

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "kept": self.kept, "total": self.total}


# Trees of data a program chooses from by configuration: (kind, in-image path patterns).
_DATA_TREES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("time zones", ("/usr/share/zoneinfo",)),
    ("locales", ("/usr/lib/locale", "/usr/share/i18n/locales", "/usr/share/i18n/charmaps")),
    ("character sets (gconv)", ("/usr/lib/*/gconv", "/usr/lib/gconv", "/usr/lib64/gconv")),
    ("text-search dictionaries", ("/usr/share/postgresql/*/tsearch_data",)),
    ("dictionaries", ("/usr/share/dict", "/usr/share/hunspell", "/usr/share/myspell")),
    ("terminal descriptions", ("/usr/share/terminfo", "/usr/lib/terminfo", "/etc/terminfo")),
    ("Python codecs", ("/usr/lib/python3*/encodings", "/usr/local/lib/python3*/encodings")),
)
_DATA_TREE_FILES = 100_000  # a tree is not counted past this many files


def partly_kept(root: RootFS, plan: RootPlan) -> list[PartlyKept]:
    """The data trees of :data:`_DATA_TREES` the image holds some, not all, files of."""
    kept: dict[tuple[str, str], int] = {}
    for entry in plan.files:
        for kind, patterns in _DATA_TREES:
            tree = _data_tree(entry.path, patterns)
            if tree is not None:
                kept[(kind, tree)] = kept.get((kind, tree), 0) + 1
                break
    found = []
    for (kind, tree), count in sorted(kept.items(), key=lambda item: item[0][1]):
        total = _count_files(root, tree)
        if total > count:
            found.append(PartlyKept(kind, tree, count, total))
    return found


def _data_tree(path: str, patterns: Iterable[str]) -> str | None:
    parts = path.split("/")
    for pattern in patterns:
        depth = pattern.count("/") + 1
        head = "/".join(parts[:depth])
        if len(parts) > depth and fnmatchcase(head, pattern):
            return head
    return None


def _count_files(root: RootFS, tree: str) -> int:
    total = 0
    for _current, _dirs, files in root.walk(tree):
        total += len(files)
        if total >= _DATA_TREE_FILES:
            break
    return total


@dataclass(frozen=True)
class ShrinkPlan:
    """The kept root, the configuration to copy, and why each file is there."""

    root: RootPlan
    runtime: dict[str, object]  # the source's config object, copied, plus the source label
    platform: Platform
    kept: Kept
    programs: tuple[str, ...]
    loaded_first: tuple[LoadedFirst, ...] = ()  # sonames a library of the image carries
    partly_kept: tuple[PartlyKept, ...] = ()  # data trees the program picks from
    records: Records = field(default_factory=Records)  # the packages status.d declares


@dataclass(frozen=True)
class ShrinkInputs:
    """What the planner reads: the unpacked source and what the unpacker recorded."""

    root_dir: Path | LazyRoot  # LazyRoot: files are created as the plan looks them up
    runtime: RuntimeConfig
    platform: Platform
    source_digest: str
    owners: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    xattrs: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)


def program_argv(runtime: RuntimeConfig, trace_args: list[str] | None = None) -> list[str]:
    """What docker runs: Entrypoint + Cmd (``trace_args`` replacing Cmd)."""
    argv = runtime.argv(trace_args)
    if not argv:
        raise InputError("the image has neither an Entrypoint nor a Cmd: nothing to keep")
    return argv


def find_programs(
    root: RootFS, argv: list[str], env: dict[str, str], workdir: str, tracing: bool = False
) -> list[str]:
    """The in-root files the image runs: its program and, for shells and scripts, theirs.

    A script brings its ``#!`` interpreter (through the image's PATH for
    ``#!/usr/bin/env NAME``); a shell script or ``sh -c`` the commands a static
    scan finds in it. Interpreters that need a library tree (Python, Perl, ...)
    get a warning unless the program is traced.
    """
    search_path = env.get("PATH", DEFAULT_PATH)
    first = which(root, argv[0], search_path, workdir, executable=False)
    if first is None:
        raise InputError(f"{argv[0]}: not found through the image's PATH ({search_path})")
    programs = [first]
    found = program(root, first, search_path, workdir)
    name = found.name
    if found.script is None and name in SHELLS and "-c" in argv[1:]:
        at = argv.index("-c", 1)
        script = " ".join(argv[at + 1 : at + 2])
        programs += shell_commands(root, script, search_path, workdir, first, tracing)
    elif found.script is not None:
        programs += found.runs
        if name in SHELLS:
            programs += shell_commands(root, found.script, search_path, workdir, first, tracing)
    if found.needs_tree and not tracing:
        warn(
            f"{first}: {name} also needs its library tree (standard library, modules); static "
            "mode keeps the files of its Debian packages only: add others (pip, /usr/local, the "
            "application's own) with --include, or use --trace"
        )
    return list(dict.fromkeys(programs))


def package_files(index: DpkgIndex, root: RootFS, program: str) -> tuple[list[str], list[str]]:
    """Static mode: the owning packages' files and their source siblings', and their names.

    Both the path's owner and its real file's count: ``/usr/bin/python3`` is a link of
    python3-minimal (source python3-defaults), ``/usr/bin/python3.11`` a file of
    python3.11-minimal, whose source python3.11 also gives libpython3.11-stdlib.
    """
    owners = [index.owner(path) for path in (program, root.realpath(program)) if path]
    names = {owner.name for owner in owners if owner is not None}
    if not names:
        return [], []
    sources = {owner.source or owner.name for owner in owners if owner is not None}
    keys = [
        key
        for key, package in index.packages.items()
        if package.name in names
        or ((package.source or package.name) in sources and not _support_package(package.name))
    ]
    names = sorted({index.packages[key].name for key in keys})
    return _package_paths(index, root, keys), names


def _package_paths(index: DpkgIndex, root: RootFS, keys: Iterable[str]) -> list[str]:
    """The paths of packages ``keys`` that the root holds, but for docs and the like."""
    paths: list[str] = []
    for key in sorted(keys):
        for path in index.files(key):
            if path in ("/.", "/") or _NOT_NEEDED.match(path):
                continue
            if root.host_path(path) is not None and os.path.lexists(root.host_path(path) or ""):
                paths.append(path)
    return paths


def _support_package(name: str) -> bool:
    return name.endswith(("-doc", "-dbg", "-dbgsym", "-dev", "-tests"))


def local_files(
    index: DpkgIndex, root: RootFS, names: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Static mode: what no package lists but the kept packages' configuration needs.

    Maintainer scripts and image authors add files dpkg does not list: nginx's
    ``sites-enabled/default`` link, ``modules-enabled/*.conf`` links into module
    packages, ``/var/www/html``. Kept, with the names of the packages they bring:

    - what lies, unlisted, in a directory under /etc that only the kept
      packages list (and a link there brings the package that owns its target);
    - an unlisted path that the kept /etc files name (not in comment lines),
      outside /proc, /sys, /dev, /run and the temporary directories; a
      directory up to :data:`_LOCAL_TREE_LIMIT` bytes.
    """
    names = set(names)
    mine: set[str] = set()
    others: set[str] = set()
    for key, package in index.packages.items():
        (mine if package.name in names else others).update(index.files(key))
    listed = _Listed(root, mine | others)
    paths: list[str] = []
    for directory in sorted(path for path in mine - others if path.startswith("/etc/")):
        children = root.listdir(directory) if root.realpath(directory) == directory else None
        for name in children or ():
            path = f"{directory}/{name}"
            if path not in listed:
                paths += _tree(root, path)
    brought = []
    for path in list(paths):
        real = root.realpath(path)
        owner = index.owner(real) if real and real != path else None
        if owner is not None and owner.name not in names and not _support_package(owner.name):
            names.add(owner.name)
            brought.append(owner.name)
            keys = [key for key, package in index.packages.items() if package.name == owner.name]
            paths += _package_paths(index, root, keys)
    configs = [path for path in mine if path.startswith("/etc/")] + paths
    paths += _named_in(listed, root, configs)
    return list(dict.fromkeys(paths)), brought


class _Listed:
    """Whether a package lists a path itself (its last component not followed)."""

    def __init__(self, root: RootFS, paths: set[str]) -> None:
        self.root = root
        self.paths = paths

    def __contains__(self, path: object) -> bool:
        assert isinstance(path, str)
        parent, name = posixpath.split(path)
        real_parent = self.root.realpath(parent) or parent
        for spelling in {path, posixpath.join(real_parent, name)}:
            twin = spelling[4:] if spelling.startswith("/usr/") else "/usr" + spelling
            if spelling in self.paths or twin in self.paths:
                return True
        return False


_LOCAL_TREE_LIMIT = 64 << 20
_CONFIG_PATH = re.compile(r"(?<![\w/.:~$@-])/(?:[\w.+@-]+/)*[\w.+@-]+")
_NOT_LOCAL = ("/proc", "/sys", "/dev", "/run", "/var/run", "/tmp", "/var/tmp")


def _named_in(listed: _Listed, root: RootFS, configs: Iterable[str]) -> list[str]:
    """Unlisted paths of the root that the /etc files ``configs`` name outside comments."""
    found: list[str] = []
    seen: set[str] = set()
    for config in sorted(set(configs)):
        if config.removesuffix("-") in ACCOUNT_FILES or not config.startswith("/etc/"):
            continue
        host = root.host_path(config)
        if host is None or not os.path.isfile(host) or os.path.getsize(host) > 1 << 20:
            continue
        if os.stat(host).st_mode & 0o111:
            continue  # a script (/etc/init.d/...): what it names is not the program's
        for line in (root.read_text(config) or "").splitlines():
            if line.lstrip().startswith("#"):
                continue
            for path in _CONFIG_PATH.findall(line):
                path = posixpath.normpath(path)
                if path in seen or path == "/" or _under(path, _NOT_LOCAL):
                    continue
                seen.add(path)
                if not root.trace(path) or path in listed:
                    continue
                tree = _tree(root, path)
                size = sum(_size(root, item) for item in tree)
                if size > _LOCAL_TREE_LIMIT:
                    warn(
                        f"{path}, named in {config}, holds {size / 1e6:.0f} MB: not kept; "
                        "add it with --include if the program needs it"
                    )
                    continue
                found += tree
    return found


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


def _tree(root: RootFS, path: str) -> list[str]:
    """``path`` and, for a directory (not a link to one), everything below it."""
    paths = [path]
    if not root.is_dir(path):
        return paths
    if root.is_link(path):
        return paths  # a link to a directory: the link (and its target) only
    host = None
    for current, dirs, files in root.walk(path):
        dirs.sort()
        host = host or current
        relative = os.path.relpath(current, host)
        below = path if relative == "." else f"{path}/{relative}"
        paths += [f"{below}/{name}" for name in sorted(dirs + files)]
    return paths


def _size(root: RootFS, path: str) -> int:
    host = root.host_path(path)
    return os.path.getsize(host) if host is not None and os.path.isfile(host) else 0


# Directories Debian's built-in accounts (bin, sys, daemon, games) have for a home only to
# have one: keeping such a directory says nothing about the account.
_SHARED_HOMES = frozenset(
    ("/", "/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/usr/games", "/usr/lib", "/lib",
     "/dev", "/etc", "/var", "/tmp", "/run", "/var/run", "/nonexistent")
)  # fmt: skip


def wanted_accounts(
    root: RootFS,
    plan: RootPlan,
    inputs: ShrinkInputs,
    argv: Iterable[str],
    traced: Iterable[str],
    static: bool,
) -> Wanted:
    """Who the new image's ``/etc/passwd`` and ``/etc/group`` must name.

    root, nobody, the image's USER, the owners of every kept file, any user
    named in a kept file under /etc (nginx's ``user www-data;``), and the
    accounts the command line names (``memcached -u memcache``). In static
    mode also the users whose home is kept for itself. When a traced run read
    the account files it may have looked up any name it read elsewhere: the
    words of every text file it read count as names too.
    """
    wanted = Wanted(uids={0, 65534}, gids={0, 65534}, words=config_words(plan.entries.values()))
    wanted.add_user_spec(inputs.runtime.user)
    wanted.add_arguments(list(argv))
    for path in plan.entries:
        uid, gid = inputs.owners.get(path, (0, 0))
        wanted.uids.add(uid)
        wanted.gids.add(gid)
    if static:
        wanted.homes = {
            path
            for path, entry in plan.entries.items()
            if entry.kind is EntryKind.DIR and not entry.implied and path not in _SHARED_HOMES
        }
    read = {root.realpath(path) or path for path in traced}
    if read & set(_ACCOUNT_DATABASES):
        entries = (plan.entries[path] for path in sorted(read) if path in plan.entries)
        wanted.words |= config_words(entries, everywhere=True)
    return wanted


def users_needed(root: RootFS, plan: RootPlan, wanted: Wanted) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` holding only the entries ``wanted`` names."""
    users, groups = select_accounts(*root_accounts(root), wanted)
    return "\n".join(users) + "\n", "\n".join(groups) + "\n"


def plan_shrink(
    inputs: ShrinkInputs,
    includes: Iterable[str] = (),
    traced: Iterable[str] = (),
    excludes: Iterable[str] = (),
    static: bool = True,
    allow_missing: bool = False,
    trace_args: list[str] | None = None,
    tracing: bool = False,
    verified: Iterable[str] = (),
) -> ShrinkPlan:
    """What the shrunk image holds and how it runs; nothing is built yet.

    ``tracing``: ``traced`` comes from a trace (no warning about library trees).
    ``verified``: paths ``--verify --fix`` found missing (reason ``verify``).
    """
    root = RootFS(inputs.root_dir)
    traced = tuple(traced)
    env = inputs.runtime.env_map
    workdir = inputs.runtime.working_dir or "/"
    resolver = Resolver(inputs.root_dir, library_path=env.get("LD_LIBRARY_PATH", ""), cwd=workdir)
    kept = Kept()
    plan = RootPlan(excludes=Excludes(excludes))
    argv = program_argv(inputs.runtime, trace_args)
    programs = find_programs(root, argv, env, workdir, tracing)

    elf_paths: list[str] = []
    for path in programs:
        _keep(plan, root, path, Reason.PROGRAM, kept)
        if root.is_elf(path):
            elf_paths.append(path)
    program_elves = set(elf_paths)
    if static:
        elf_paths += _keep_packages(plan, root, programs, kept)
    # The account files are generated (or --include'd), never the traced source's.
    run_files = [path for path in traced if path not in _ACCOUNT_DATABASES]
    elf_paths += _keep_all(plan, root, _in_root(root, run_files), Reason.TRACE, kept)
    elf_paths += _keep_all(plan, root, _in_root(root, verified), Reason.VERIFY, kept)
    included = _keep_includes(plan, root, includes, kept)
    elf_paths += [source for _image_path, source in included if root.is_elf(source)]

    closures = _closures(resolver, elf_paths, program_elves)
    loaded_first = satisfy_from_image(resolver, closures)
    _keep_closures(plan, root, closures, allow_missing, kept)
    _keep_runtime_files(plan, root, closures, inputs, kept)
    plan.apply_owners(inputs.owners)
    run = [*inputs.runtime.argv(), *(trace_args or ())]
    wanted = wanted_accounts(root, plan, inputs, run, traced, static)
    _generate_accounts(plan, root, wanted, [image_path for image_path, _ in included], kept)
    records = _keep_records(plan, root, kept)
    plan.apply_xattrs(inputs.xattrs)  # file capabilities travel with their files
    warn_unused_excludes(plan.excludes)
    if not elf_paths:
        raise InputError(f"{programs[0]}: not an ELF program, and no ELF program found to keep")
    return ShrinkPlan(
        plan,
        _labelled_runtime(inputs),
        _image_platform(inputs.platform, resolver, elf_paths[0]),
        kept,
        tuple(programs),
        tuple(loaded_first),
        tuple(partly_kept(root, plan)),
        records,
    )


def _keep_records(plan: RootPlan, root: RootFS, kept: Kept) -> Records:
    """The records of the source's packages whose files are kept, and only theirs: from
    its ``/var/lib/dpkg/status`` or its ``status.d`` (:mod:`.records`)."""
    records = add_records(plan, root, DpkgIndex.load_any(root))
    for path, entry in plan.entries.items():
        if entry.reason is Reason.RECORD and not entry.implied:
            kept.add(Reason.RECORD, path)
    return records


def _keep_packages(plan: RootPlan, root: RootFS, programs: list[str], kept: Kept) -> list[str]:
    """Static mode: keep the programs' packages and the local files they need; their ELFs."""
    index = DpkgIndex.load(root)
    elf_paths: list[str] = []
    for path in programs:
        paths, packages = package_files(index, root, path)
        kept.packages.extend(name for name in packages if name not in kept.packages)
        elf_paths += _keep_all(plan, root, paths, Reason.PACKAGE, kept)
    paths, brought = local_files(index, root, kept.packages)
    kept.packages.extend(brought)
    return elf_paths + _keep_all(plan, root, paths, Reason.PACKAGE, kept)


def _in_root(root: RootFS, paths: Iterable[str]) -> list[str]:
    """The paths that exist in the root; the others are passed over without a word."""
    return [path for path in paths if root.host_path(path) is not None]


def _keep_includes(
    plan: RootPlan, root: RootFS, includes: Iterable[str], kept: Kept
) -> list[tuple[str, str]]:
    """``--include``: keep each tree; (in-image path, in-root source) of its files."""
    added: list[tuple[str, str]] = []
    for include in includes:
        for image_path, source in add_include(plan, root, include):
            kept.add(Reason.INCLUDE, image_path)
            added.append((image_path, source))
    return added


def _closures(resolver: Resolver, elf_paths: list[str], programs: set[str]) -> list[Closure]:
    """The closure of each dynamic ELF file, once; what glibc dlopens for ``programs`` only."""
    essentials = Essentials(nss=True)
    closures: list[Closure] = []
    for path in dict.fromkeys(elf_paths):
        try:
            info = resolver.read_input(path)
        except InputError:
            continue
        if info.is_static:
            continue
        # What glibc dlopens (libgcc_s, NSS modules) is added for the programs only.
        if path in programs:
            closure = resolve_for_image(resolver, path, essentials)
        else:
            closure = resolver.resolve(path)
        closures.append(closure)
    return closures


def _keep_closures(
    plan: RootPlan, root: RootFS, closures: list[Closure], allow_missing: bool, kept: Kept
) -> None:
    """Each closure's loader and libraries, refused when one is incomplete."""
    for closure in closures:
        check_complete(closure, allow_missing)
        interpreter = planned_interpreter(closure)
        if interpreter is not None:
            _keep(plan, root, interpreter, Reason.INTERPRETER, kept)
        for library in closure.libraries:
            _keep(plan, root, library.path, Reason.LIBRARY, kept)


def _keep_runtime_files(
    plan: RootPlan, root: RootFS, closures: list[Closure], inputs: ShrinkInputs, kept: Kept
) -> None:
    """CA certificates for TLS, the run-time and USER directories, nsswitch.conf for glibc."""
    if any(lib.soname.startswith(_TLS_LIBRARIES) for c in closures for lib in c.libraries):
        for path in _CA_PATHS:
            if root.exists(path):
                _keep(plan, root, path, Reason.RUNTIME, kept)
    for directory in _RUNTIME_DIRS:
        _keep_runtime_dir(plan, root, directory, kept)
    for directory in user_directories(root, inputs.runtime.user, inputs.owners):
        _keep_runtime_dir(plan, root, directory, kept)
    if root.exists("/etc/nsswitch.conf") and any(c.loader == "glibc" for c in closures):
        _keep(plan, root, "/etc/nsswitch.conf", Reason.RUNTIME, kept)


def _generate_accounts(
    plan: RootPlan, root: RootFS, wanted: Wanted, included: Iterable[str], kept: Kept
) -> None:
    """``/etc/passwd`` and ``/etc/group`` of the needed users, in place of the source's.

    An account file ``--include`` names is the user's word: kept as it is, and
    the users it lists keep their groups in the generated ``/etc/group``.
    """
    mine = {plan.through_links(path) for path in included} & set(_ACCOUNT_DATABASES)
    if "/etc/passwd" in mine:
        source = plan.entries["/etc/passwd"].source
        text = Path(source).read_text(errors="replace") if source else ""
        wanted.gids |= primary_gids(text)
    passwd, group = users_needed(root, plan, wanted)
    generated = {
        path: text
        for path, text in zip(_ACCOUNT_DATABASES, (passwd, group), strict=True)
        if path not in mine
    }
    kept.forget(
        path for paths in kept.reasons.values() for path in paths
        if plan.through_links(path) in generated or path in generated
    )  # fmt: skip
    for path, text in generated.items():
        plan.add_generated(path, text.encode(), Reason.RUNTIME)
        kept.add(Reason.RUNTIME, path)


def _image_platform(platform: Platform, resolver: Resolver, first_elf: str) -> Platform:
    """The source config's platform; for a config that names none, the program's own."""
    if platform.architecture:
        return platform
    first = resolver.read_input(first_elf)
    return Platform.from_elf(first.machine, first.bits)


def _labelled_runtime(inputs: ShrinkInputs) -> dict[str, object]:
    """The source's configuration, copied, with the label naming the source's digest."""
    runtime = inputs.runtime.copy_json()
    labels = dict(runtime.get("Labels") or {})
    labels[SOURCE_LABEL] = inputs.source_digest
    runtime["Labels"] = labels
    return runtime


def _keep_all(
    plan: RootPlan, root: RootFS, paths: Iterable[str], reason: Reason, kept: Kept
) -> list[str]:
    """Keep each path; the ELF files among them (whose closures follow)."""
    elves = []
    for path in paths:
        if _keep(plan, root, path, reason, kept) and root.is_elf(path):
            elves.append(path)
    return elves


def _keep(plan: RootPlan, root: RootFS, path: str, reason: Reason, kept: Kept) -> bool:
    """Add ``path`` with the links on its way (the loader opens it by that name).

    It is listed under ``reason`` only if no earlier reason planned it, under
    this name or another one that leads to the same place (``/lib/x`` and
    ``/usr/lib/x`` once ``/lib -> usr/lib`` is planned). False when it is not
    kept: missing, not a file, directory or link, or left out by ``--exclude``.
    """
    if not root.trace(path):  # missing, or a device, fifo or socket
        return False
    new = plan.through_links(path) not in plan.entries
    if plan.add_path(root, path, reason) is None:
        return False
    if new:
        kept.add(reason, path)
    return True


def user_directories(
    root: RootFS, user: str | None, owners: Mapping[str, tuple[int, int]]
) -> list[str]:
    """The USER's home and its state directories: kept empty, with their owners and modes.

    A PostgreSQL image with ``USER postgres`` runs initdb in
    ``/var/lib/postgresql``; without it initdb tries to create ``/var/lib`` and is
    refused. Kept: the home of USER in the image's passwd, and the directories
    right under ``/var/lib``, ``/var/log``, ``/var/cache``, ``/var/spool`` and
    ``/run`` that USER owns. Their files are the program's data, not the program:
    ``--include`` keeps those.
    """
    if not user:
        return []
    name = user.partition(":")[0]
    uid = int(name) if name.isdigit() else None
    home = None
    for line in (root.read_text("/etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and (fields[0] == name or (uid is not None and fields[2] == name)):
            uid = int(fields[2]) if fields[2].isdigit() else uid
            home = fields[5]
            break
    if not uid:  # root owns everything; an unknown name, nothing
        return []
    found = []
    if home and home.startswith("/") and posixpath.normpath(home) != "/" and root.is_dir(home):
        found.append(posixpath.normpath(home))
    for path, (owner, _group) in sorted(owners.items()):
        if owner == uid and posixpath.dirname(path) in _STATE_DIRS and root.is_dir(path):
            found.append(path)
    return list(dict.fromkeys(found))


def _keep_runtime_dir(plan: RootPlan, root: RootFS, path: str, kept: Kept) -> None:
    """Keep the source's directory ``path`` (empty, its mode), and the links on its way."""
    real = root.realpath(path)
    host = root.host_path(path)
    if real is None or host is None or not os.path.isdir(host):
        return
    new = plan.through_links(path) not in plan.entries
    plan.add_path(root, path, Reason.RUNTIME)
    # Its own mode even where it was planned already as the parent of a kept file.
    plan.add_dir(real, root.image_mode(real, os.stat(host).st_mode), Reason.RUNTIME)
    if new:
        kept.add(Reason.RUNTIME, path)


def kept_sizes(plan: RootPlan) -> dict[str, dict[str, int]]:
    """Files and bytes per reason (each file counted under the first reason that kept it)."""
    by_reason: dict[str, dict[str, int]] = {}
    for entry in plan.files:
        slot = by_reason.setdefault(entry.reason.group, {"files": 0, "bytes": 0})
        slot["files"] += 1
        slot["bytes"] += entry.size
    return by_reason
