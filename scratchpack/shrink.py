"""Shrink an existing image: keep only what its program needs, and its configuration.

The source image (in the engine, or an archive) is unpacked safely into a
temporary root; its program is found through the image's own PATH and
resolved inside that root with ``--root`` semantics. What is kept, and why:

- ``closure``: the program(s), their loader and libraries (and what glibc will
  dlopen for them: libgcc_s, NSS modules named in the root's nsswitch.conf);
- ``package``: in static mode, the files of the Debian package that owns the
  program and of its sibling packages from the same source (conffiles, data,
  the empty log and run directories it owns), without docs, man pages or
  translations — and the closures of ELF files among them;
- ``trace``: with ``--trace``, every file the running program touched;
- ``include``: what ``--include`` names;
- ``runtime``: CA certificates when the closure speaks TLS, ``/tmp``,
  ``/var/tmp``, ``/run`` and ``/var/run`` (as the source has them), the
  ``/etc/passwd`` and ``/etc/group`` entries of the users that are needed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import shlex
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from scratchpack.assemble import RootPlan
from scratchpack.build import (
    _TREE_INTERPRETERS,
    DEFAULT_PATH,
    BuildOptions,
    ImagePlan,
    add_include,
    check_complete,
    resolve_for_image,
)
from scratchpack.config import ImageConfig, config_from_summary
from scratchpack.dpkg import DpkgIndex
from scratchpack.errors import InputError
from scratchpack.essentials import Essentials
from scratchpack.ld.resolve import Closure, Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.unpack import ImageSource, UnpackReport

SOURCE_LABEL = "org.scratchpack.source.digest"
# Parts of a package that a running program never reads.
_NOT_NEEDED = re.compile(
    r"^/usr/share/(doc|doc-base|man|info|locale|lintian|bug|menu|help|gtk-doc|reportbug)(/|$)"
)
_TLS_LIBRARIES = ("libssl.so", "libgnutls.so", "libnss3.so", "libmbedtls.so", "libwolfssl.so")
_CA_PATHS = ("/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem")
_SHELLS = {"sh", "bash", "dash", "ash", "busybox"}
# Directories programs write to at run time, kept empty with the source's modes.
_RUNTIME_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run")
# Account databases: never scanned for user names, and replaced by generated ones.
_ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


@dataclass
class Kept:
    """Why each path of the new image is there."""

    reasons: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths
    packages: list[str] = field(default_factory=list)  # static mode: the packages kept

    def add(self, reason: str, path: str) -> None:
        self.reasons.setdefault(reason, []).append(path)

    def forget(self, paths: Iterable[str]) -> None:
        """Drop ``paths`` from every reason (files replaced by generated ones)."""
        gone = set(paths)
        for reason, kept in list(self.reasons.items()):
            self.reasons[reason] = [path for path in kept if path not in gone]
            if not self.reasons[reason]:
                del self.reasons[reason]


@dataclass
class ShrinkPlan:
    image: ImagePlan
    kept: Kept
    programs: list[str]
    warnings: list[str]


def program_argv(summary: dict[str, Any], trace_args: list[str] | None = None) -> list[str]:
    """What docker runs: Entrypoint + Cmd (``trace_args`` replacing Cmd)."""
    entrypoint = list(summary.get("Entrypoint") or [])
    cmd = list(trace_args if trace_args is not None else (summary.get("Cmd") or []))
    argv = entrypoint + cmd
    if not argv:
        raise InputError("the image has neither an Entrypoint nor a Cmd: nothing to keep")
    return argv


def _env(summary: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in summary.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def which(root: RootFS, name: str, search_path: str, workdir: str = "/") -> str | None:
    """The in-root path the image's PATH finds for ``name`` (a path is taken as it is)."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.normpath(f"{workdir}/{name}")
        return path if root.exists(path) else None
    for directory in search_path.split(":"):
        candidate = f"{directory.rstrip('/') or ''}/{name}"
        host = root.host_path(candidate)
        if host is not None and os.path.isfile(host):
            return candidate
    return None


def find_programs(
    root: RootFS,
    argv: list[str],
    env: dict[str, str],
    workdir: str,
    warnings: list[str],
    tracing: bool = False,
) -> list[str]:
    """The in-root files the image runs: its program and, for shells and scripts, theirs.

    A script brings its ``#!`` interpreter (through the image's PATH for
    ``#!/usr/bin/env NAME``); a shell script or ``sh -c`` the commands a static
    scan finds in it. Interpreters that need a library tree (Python, Perl, ...)
    get a warning unless the program is traced.
    """
    search_path = env.get("PATH", DEFAULT_PATH)
    first = which(root, argv[0], search_path, workdir)
    if first is None:
        raise InputError(f"{argv[0]}: not found through the image's PATH ({search_path})")
    programs = [first]
    name = os.path.basename(first)
    if name in _SHELLS and "-c" in argv[1:]:
        script = argv[argv.index("-c", 1) + 1 : argv.index("-c", 1) + 2]
        programs += _commands_of(root, " ".join(script), search_path, workdir, warnings, first)
    elif _is_script(root, first):
        text = root.read_text(first) or ""
        interpreters, name = _interpreters(root, first, text, search_path, workdir)
        programs += interpreters
        if name in _SHELLS:
            programs += _commands_of(root, text, search_path, workdir, warnings, first)
    if _TREE_INTERPRETERS.match(name) and not tracing:
        warnings.append(
            f"{first}: {name} also needs its library tree (standard library, modules); static "
            "mode keeps the files of its Debian packages only: add others (pip, /usr/local, the "
            "application's own) with --include, or use --trace"
        )
    return list(dict.fromkeys(programs))


def _interpreters(
    root: RootFS, script: str, text: str, search_path: str, workdir: str
) -> tuple[list[str], str]:
    """The ``#!`` interpreter of ``script`` (and the program ``env`` runs), and its name."""
    words = text[2:].split("\n", 1)[0].split()
    if not words:
        raise InputError(f"{script}: a script with an empty #! line")
    interpreter, arguments = words[0], words[1:]
    found = which(root, interpreter, search_path, workdir)
    if found is None:
        raise InputError(f"{script}: its interpreter {interpreter} is not in the image")
    programs = [found]
    name = os.path.basename(interpreter)
    if name == "env":
        target = next((w for w in arguments if not w.startswith("-") and "=" not in w), None)
        if target is not None:
            path = which(root, target, search_path, workdir)
            if path is None:
                raise InputError(
                    f"{script}: its interpreter {target} is not on the image's PATH ({search_path})"
                )
            programs.append(path)
            name = os.path.basename(target)
    return programs, name


def _is_script(root: RootFS, path: str) -> bool:
    data = root.read_bytes(path) or b""
    return data.startswith(b"#!")


def _commands_of(
    root: RootFS, text: str, search_path: str, workdir: str, warnings: list[str], where: str
) -> list[str]:
    """Commands a shell snippet or script names, found by a static scan (best effort)."""
    found: list[str] = []
    unresolved: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        for command in re.split(r"&&|\|\||[;|]", line):
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            while words and (words[0] in ("exec", "then", "else", "do", "!", "command")):
                words = words[1:]
            if not words or "=" in words[0] or not re.match(r"^[\w./+-]+$", words[0]):
                continue
            path = which(root, words[0], search_path, workdir)
            if path is not None and _is_executable_file(root, path):
                found.append(path)
            elif words[0] not in _SHELL_WORDS:
                unresolved.append(words[0])
    if unresolved or "$" in text:
        warnings.append(
            f"{where}: a shell script; its commands were found by a static scan, which cannot "
            "follow variables or functions — use --trace to see what really runs"
        )
    return found


_SHELL_WORDS = {
    "if", "fi", "for", "while", "until", "case", "esac", "done", "in", "set", "export", "local",
    "echo", "printf", "test", "[", "[[", "]]", "cd", "shift", "return", "exit", "read", "true",
    "false", "trap", "unset", "eval", "wait", ":", ".", "source", "function", "elif", "{", "}",
}  # fmt: skip


def _is_executable_file(root: RootFS, path: str) -> bool:
    host = root.host_path(path)
    return host is not None and os.path.isfile(host) and os.access(host, os.X_OK)


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
    index: DpkgIndex, root: RootFS, names: Iterable[str], warnings: list[str]
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
        host = root.host_path(directory)
        if root.realpath(directory) != directory or host is None or not os.path.isdir(host):
            continue
        with os.scandir(host) as entries:
            children = sorted(entry.name for entry in entries)
        for name in children:
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
    paths += _named_in(listed, root, configs, warnings)
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


def _named_in(
    listed: _Listed, root: RootFS, configs: Iterable[str], warnings: list[str]
) -> list[str]:
    """Unlisted paths of the root that the /etc files ``configs`` name outside comments."""
    found: list[str] = []
    seen: set[str] = set()
    for config in sorted(set(configs)):
        if config.removesuffix("-") in _ACCOUNT_FILES or not config.startswith("/etc/"):
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
                    warnings.append(
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
    host = root.host_path(path)
    parent, name = posixpath.split(path)
    real_parent = root.realpath(parent)
    paths = [path]
    if host is None or real_parent is None or not os.path.isdir(host):
        return paths
    if os.path.islink(root.top + real_parent.rstrip("/") + "/" + name):
        return paths  # a link to a directory: the link (and its target) only
    for current, dirs, files in os.walk(host):
        dirs.sort()
        relative = os.path.relpath(current, host)
        below = path if relative == "." else f"{path}/{relative}"
        paths += [f"{below}/{name}" for name in sorted(dirs + files)]
    return paths


def _size(root: RootFS, path: str) -> int:
    host = root.host_path(path)
    return os.path.getsize(host) if host is not None and os.path.isfile(host) else 0


def users_needed(
    root: RootFS, plan: RootPlan, user: str | None, owners: dict[str, tuple[int, int]]
) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` holding only the entries the new image needs.

    root, nobody, the image's USER, the owners of every kept file, and any user
    named in a kept file under /etc (nginx's ``user www-data;``).
    """
    passwd = (root.read_text("/etc/passwd") or "").splitlines()
    group = (root.read_text("/etc/group") or "").splitlines()
    uids = {0, 65534}
    gids = {0, 65534}
    names: set[str] = set()
    if user:
        name, _, group_name = user.partition(":")
        (uids if name.isdigit() else names).add(int(name) if name.isdigit() else name)  # type: ignore[arg-type]
        if group_name:
            (gids if group_name.isdigit() else names).add(
                int(group_name) if group_name.isdigit() else group_name  # type: ignore[arg-type]
            )
    for path in plan.entries:
        uid, gid = owners.get(path, (0, 0))
        uids.add(uid)
        gids.add(gid)
    words = _words_in_config(root, plan)
    kept_users = []
    for line in passwd:
        fields = line.split(":")
        if len(fields) >= 4 and (
            fields[0] in names or _int(fields[2]) in uids or fields[0] in words
        ):
            kept_users.append(line)
            gids.add(_int(fields[3]))
    kept_groups = [
        line
        for line in group
        if len(line.split(":")) >= 3
        and (_int(line.split(":")[2]) in gids or line.split(":")[0] in names)
    ]
    return "\n".join(kept_users) + "\n", "\n".join(kept_groups) + "\n"


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _words_in_config(root: RootFS, plan: RootPlan) -> set[str]:
    """Words of the kept /etc files, comment lines and the account databases left out."""
    words: set[str] = set()
    for entry in plan.entries.values():
        if entry.kind != "file" or not entry.path.startswith("/etc/") or not entry.source:
            continue
        if entry.path.removesuffix("-") in _ACCOUNT_FILES:  # passwd- etc. are backups
            continue
        try:
            if os.path.getsize(entry.source) > 1 << 20:
                continue
            with open(entry.source, encoding="utf-8", errors="replace") as stream:
                text = stream.read()
        except OSError:
            continue
        for line in text.splitlines():
            if not line.lstrip().startswith("#"):
                words.update(re.findall(r"[A-Za-z_][\w.-]*", line))
    return words


def plan_shrink(
    root_dir: Path,
    summary: dict[str, Any],
    report: UnpackReport,
    source_digest: str,
    includes: Iterable[str] = (),
    traced: Iterable[str] = (),
    static: bool = True,
    allow_missing: bool = False,
    trace_args: list[str] | None = None,
    tracing: bool = False,
) -> ShrinkPlan:
    """What the shrunk image holds and how it runs; nothing is built yet.

    ``tracing``: ``traced`` comes from a trace (no warning about library trees).
    """
    root = RootFS(root_dir)
    resolver = Resolver(
        root_dir,
        library_path=_env(summary).get("LD_LIBRARY_PATH", ""),
        cwd=summary.get("WorkingDir") or "/",
    )
    options = BuildOptions(binaries=[], root=str(root_dir), essentials=Essentials(nss=True))
    env = _env(summary)
    workdir = summary.get("WorkingDir") or "/"
    warnings: list[str] = list(report.warnings)
    kept = Kept()
    plan = RootPlan()
    argv = program_argv(summary, trace_args)
    programs = find_programs(root, argv, env, workdir, warnings, tracing)

    elf_paths: list[str] = []
    for program in programs:
        plan.add_path(root, program, "closure")
        kept.add("closure", program)
        if root.is_elf(program):
            elf_paths.append(program)
    program_elves = set(elf_paths)
    if static:
        index = DpkgIndex.load(root)
        for program in programs:
            paths, packages = package_files(index, root, program)
            kept.packages.extend(name for name in packages if name not in kept.packages)
            for path in paths:
                _keep(plan, root, path, "package", kept)
                if root.is_elf(path):
                    elf_paths.append(path)
        paths, brought = local_files(index, root, kept.packages, warnings)
        kept.packages.extend(brought)
        for path in paths:
            _keep(plan, root, path, "package", kept)
            if root.is_elf(path):
                elf_paths.append(path)
    for path in traced:
        if root.host_path(path) is None:
            continue
        _keep(plan, root, path, "trace", kept)
        if root.is_elf(path):
            elf_paths.append(path)
    for include in includes:
        for image_path, source in add_include(plan, root, include):
            kept.add("include", image_path)
            if root.is_elf(source):
                elf_paths.append(source)

    closures: list[Closure] = []
    for path in dict.fromkeys(elf_paths):
        try:
            info = resolver.read_input(path)
        except InputError:
            continue
        if info.is_static:
            continue
        # What glibc dlopens (libgcc_s, NSS modules) is added for the programs only.
        if path in program_elves:
            closure = resolve_for_image(resolver, path, options, warnings)
        else:
            closure = resolver.resolve(path)
        check_complete(closure, allow_missing, warnings)
        closures.append(closure)
        missing = {item.soname for item in closure.missing}
        if closure.interpreter and closure.interpreter not in missing:
            _keep(plan, root, closure.interpreter, "closure", kept)
        for library in closure.libraries:
            _keep(plan, root, library.path, "closure", kept)
    if any(lib.soname.startswith(_TLS_LIBRARIES) for c in closures for lib in c.libraries):
        for path in _CA_PATHS:
            if root.exists(path):
                _keep(plan, root, path, "runtime", kept)
    for directory in _RUNTIME_DIRS:
        _keep_runtime_dir(plan, root, directory, kept)
    if root.exists("/etc/nsswitch.conf") and any(c.loader == "glibc" for c in closures):
        _keep(plan, root, "/etc/nsswitch.conf", "runtime", kept)
    plan.apply_owners(report.owners)
    passwd, group = users_needed(root, plan, summary.get("User"), report.owners)
    generated = {"/etc/passwd": passwd, "/etc/group": group}
    kept.forget(
        path for paths in kept.reasons.values() for path in paths
        if plan.through_links(path) in generated or path in generated
    )  # fmt: skip
    for path, text in generated.items():
        plan.add_generated(path, text.encode(), "runtime")
        kept.add("runtime", path)
    plan.apply_xattrs(report.xattrs)  # file capabilities travel with their files

    config = image_config(summary, source_digest)
    first = resolver.read_input(elf_paths[0]) if elf_paths else None
    if first is None:
        raise InputError(f"{programs[0]}: not an ELF program, and no ELF program found to keep")
    image = ImagePlan(plan, config, closures, warnings, first.machine, first.bits)
    return ShrinkPlan(image, kept, programs, warnings)


def _keep(plan: RootPlan, root: RootFS, path: str, reason: str, kept: Kept) -> None:
    """Add ``path`` with the links on its way (the loader opens it by that name).

    It is listed under ``reason`` only if no earlier reason planned it, under
    this name or another one that leads to the same place (``/lib/x`` and
    ``/usr/lib/x`` once ``/lib -> usr/lib`` is planned).
    """
    if not root.trace(path):  # missing, or a device, fifo or socket
        return
    new = plan.through_links(path) not in plan.entries
    plan.add_path(root, path, reason)
    if new:
        kept.add(reason, path)


def _keep_runtime_dir(plan: RootPlan, root: RootFS, path: str, kept: Kept) -> None:
    """Keep the source's directory ``path`` (empty, its mode), and the links on its way."""
    real = root.realpath(path)
    host = root.host_path(path)
    if real is None or host is None or not os.path.isdir(host):
        return
    new = plan.through_links(path) not in plan.entries
    plan.add_path(root, path, "runtime")
    # Its own mode even where it was planned already as the parent of a kept file.
    plan.add_dir(real, stat.S_IMODE(os.stat(host).st_mode), "runtime")
    if new:
        kept.add("runtime", path)


def image_config(summary: dict[str, Any], source_digest: str) -> ImageConfig:
    """The source's run-time settings, unchanged, plus a label naming the source image."""
    config = config_from_summary(summary)
    config.labels = sorted({**dict(config.labels), SOURCE_LABEL: source_digest}.items())
    return config


def kept_sizes(plan: RootPlan, kept: Kept) -> dict[str, dict[str, int]]:
    """Files and bytes per reason (each file counted under the first reason that kept it)."""
    by_reason: dict[str, dict[str, int]] = {}
    for entry in plan.files:
        reason = entry.reason.split(":", 1)[0]
        if reason.startswith("parent"):
            continue
        slot = by_reason.setdefault(reason, {"files": 0, "bytes": 0})
        slot["files"] += 1
        slot["bytes"] += entry.size
    return by_reason


@dataclass
class ShrinkOutcome:
    """What ``shrink`` did: sizes, the new image, and why each file is in it."""

    source: str
    source_digest: str
    size_before: int
    plan: ShrinkPlan
    by_reason: dict[str, dict[str, int]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Any] | None = None  # {"exit_code": int | None, "probes": [...]}

    def to_json(self) -> dict[str, Any]:
        kept = {reason: sorted(set(paths)) for reason, paths in self.plan.kept.reasons.items()}
        return {
            "source": self.source,
            "source_digest": self.source_digest,
            "size_before": self.size_before,
            "size_after": self.result.get("size"),
            "programs": self.plan.programs,
            "packages": sorted(self.plan.kept.packages),
            "kept": kept,
            "by_reason": self.by_reason,
            "trace": self.trace,
            "warnings": self.plan.warnings,
            **self.result,
        }


def render_report(outcome: ShrinkOutcome) -> str:
    """The human-readable report: sizes, then the kept files grouped by reason."""
    data = outcome.to_json()
    before, after = data["size_before"], data["size_after"] or 0
    lines = [
        f"{data['source']} ({before / 1e6:.1f} MB) -> {data.get('tag')} ({after / 1e6:.1f} MB), "
        f"{100 * (1 - after / before) if before else 0:.0f}% smaller",
        f"programs: {', '.join(data['programs'])}",
    ]
    for reason, numbers in sorted(data["by_reason"].items()):
        lines.append(f"  {reason:8} {numbers['files']:5} files {numbers['bytes'] / 1e6:8.2f} MB")
    if data["trace"] is not None:
        code = data["trace"]["exit_code"]
        how = "stopped after its probes" if code is None else f"exited {code}"
        lines.append(f"traced: the program {how}")
        lines.extend(f"  probe {line}" for line in data["trace"]["probes"])
    if data["packages"]:
        lines.append(f"packages: {', '.join(data['packages'])}")
    for reason, paths in sorted(data["kept"].items()):
        lines.append(f"{reason}:")
        lines.extend(f"  {path}" for path in paths)
    return "\n".join(lines) + "\n"


def run_shrink(
    image: str,
    tag: str,
    *,
    includes: Iterable[str] = (),
    trace: bool = False,
    probe_cmd: list[str] | None = None,
    trace_args: list[str] | None = None,
    trace_timeout: float = 60,
    engine_mode: str = "auto",
    output: Path | None = None,
    allow_missing: bool = False,
    show_progress: bool = False,
) -> ShrinkOutcome:
    """Read the source, plan what to keep, build or write the new image.

    Options and the output path are checked before any work. Temporary roots,
    containers and the images a trace loads are removed whatever happens
    (Ctrl-C too); the source image, and every image and tag of the engine, are
    only read.
    """
    from scratchpack.build import context_archive
    from scratchpack.pipeline import choose_engine, write_image
    from scratchpack.progress import terminal_progress
    from scratchpack.reference import check_tag
    from scratchpack.unpack import image_config_summary, unpack_into

    check_tag(tag)
    if not trace:
        for given, option in ((probe_cmd, "--probe-cmd"), (trace_args, "--trace-args")):
            if given is not None:
                raise InputError(f"{option} only applies to a trace: add --trace, or drop it")
    if engine_mode == "docker" and output is not None:
        raise InputError("-o/--output uses the built-in writer: drop --engine docker")
    target = _output_target(tag, output) if engine_mode == "none" or output else None

    in_engine = not os.path.lexists(os.path.expanduser(image))
    engine = None
    if in_engine or trace or engine_mode == "docker":
        from scratchpack.engine import Engine

        engine = Engine()
    builder = None
    if target is None:
        builder = engine or choose_engine("auto", None)
        if builder is None:  # auto, and no engine answers: the built-in writer
            target = _output_target(tag, None)
    with tempfile.TemporaryDirectory(prefix="scratchpack-shrink-") as work:
        workdir = Path(work)
        say = terminal_progress if show_progress else None
        if say:
            say(f"reading {image}")
        source, root_dir, report = unpack_into(
            image, engine.client if engine else None, workdir, show_progress
        )
        summary = image_config_summary(source)
        traced = None
        if trace:
            assert engine is not None
            traced = _trace(engine, image, source, workdir, probe_cmd, trace_args,
                            trace_timeout, say)  # fmt: skip
        plan = plan_shrink(
            root_dir, summary, report, source.digest, includes,
            traced.paths if traced else (), static=not trace, allow_missing=allow_missing,
            trace_args=trace_args if trace else None, tracing=traced is not None,
        )  # fmt: skip
        outcome = ShrinkOutcome(
            image, source.digest, report.bytes, plan, kept_sizes(plan.image.root, plan.kept)
        )
        if traced is not None:
            outcome.trace = {"exit_code": traced.exit_code, "probes": list(traced.probes)}
            if traced.exit_code not in (None, 0):
                plan.warnings.append(
                    f"the traced program exited {traced.exit_code}: it may not have done its "
                    "normal work, so files it needs may be missing (see --trace-args, "
                    "--probe-cmd)"
                )
        if builder is not None:
            for entry in plan.image.root.files:
                if entry.xattrs:  # measured: COPY drops them; the built-in writer keeps them
                    plan.warnings.append(
                        f"{entry.path}: the engine's build drops its extended attributes "
                        f"({', '.join(name for name, _ in entry.xattrs)}); "
                        "--engine none keeps them"
                    )
            with context_archive(plan.image) as context:
                image_id = builder.build(context, tag, say)
            info = builder.image(image_id)
            outcome.result = {"tag": tag, "engine": "docker", "image": info.id, "size": info.size}
        else:
            assert target is not None
            written = write_image(plan.image, tag, target, False, show_progress)
            size = sum(layer.uncompressed_size for layer in written.layers)
            outcome.result = {
                "tag": tag, "engine": "none", "image": written.image_id,
                "output": str(target), "size": size,
            }  # fmt: skip
    return outcome


def _output_target(tag: str, output: Path | None) -> Path:
    """Where the built-in writer writes (``-o``, else build's default name), checked."""
    from scratchpack.pipeline import _check_new_directory, _check_new_file, default_archive

    if output is None:
        target = default_archive(tag)
        _check_new_file(target, "the default output", may_exist=True)
    elif output.suffix == ".tar":
        target = output
        _check_new_file(target, "--output", may_exist=True)
    else:
        target = output
        _check_new_directory(target, "--output")
    return target


def _trace(engine, image, source, workdir, probe_cmd, trace_args, timeout, say):  # type: ignore[no-untyped-def]
    """Run the source under the tracer; returns the :class:`~scratchpack.trace.TraceResult`.

    An archive whose image is already in the engine (same image ID) is traced by
    that ID, nothing loaded. Otherwise a copy naming only a throw-away tag is
    loaded (the archive's own RepoTags could move the user's tags) and that tag
    removed afterwards: no image or tag of the engine is changed.
    """
    from scratchpack.trace import package_tracer, trace_image

    tracer = package_tracer(workdir / "tracer")
    reference = image
    loaded = None
    try:
        if os.path.lexists(os.path.expanduser(image)):
            if engine.has_image(source.digest):
                reference = source.digest
            else:
                loaded = reference = f"scratchpack-trace/{os.getpid()}:{os.urandom(4).hex()}"
                with _docker_loadable(Path(image).expanduser(), source, loaded) as archive:
                    engine.load(archive)
        return trace_image(
            engine, reference, source.config.get("config") or {}, tracer,
            probe_cmd=probe_cmd, trace_args=trace_args, timeout=timeout, progress=say,
        )  # fmt: skip
    finally:
        if loaded:
            engine.remove_image(loaded)


@contextlib.contextmanager
def _docker_loadable(path: Path, source: ImageSource, tag: str) -> Iterator[BinaryIO]:
    """A copy of an image archive or directory for ``docker load``, naming only ``tag``.

    Its files are copied as they are, but ``manifest.json``: the source's own
    (a docker archive) with ``RepoTags`` replaced, or one made from the OCI
    index's config and layers.
    """
    with tempfile.TemporaryFile() as stream:
        manifest: bytes | None = None
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as out:
            if path.is_dir():
                for file in sorted(path.rglob("*")):
                    name = file.relative_to(path).as_posix()
                    if not file.is_file():
                        continue
                    if name == "manifest.json":
                        manifest = file.read_bytes()
                        continue
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = file.stat().st_size, 0o644
                    with open(file, "rb") as data:
                        out.addfile(info, data)
            else:
                with tarfile.open(path, "r:*") as tar:
                    for member in tar:
                        if "/".join(p for p in member.name.split("/") if p not in ("", ".")) == (
                            "manifest.json"
                        ):
                            manifest = tar.extractfile(member).read()  # type: ignore[union-attr]
                            continue
                        out.addfile(member, tar.extractfile(member) if member.isreg() else None)
            data = _load_manifest(manifest, path, source, tag)
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
        stream.seek(0)
        yield stream


def _load_manifest(manifest: bytes | None, path: Path, source: ImageSource, tag: str) -> bytes:
    """``manifest.json`` for ``docker load`` of ``source``, naming only ``tag``."""
    if source.format == "docker-archive" and manifest is not None:
        entry = json.loads(manifest)[0]  # unpack read it: one image, a JSON object
        return json.dumps([{**entry, "RepoTags": [tag]}]).encode()
    algorithm, _, digest = source.digest.partition(":")
    layers = [
        layer.member if layer.member is not None else layer.file.relative_to(path).as_posix()
        for layer in source.layers
    ]
    entry = {"Config": f"blobs/{algorithm}/{digest}", "RepoTags": [tag], "Layers": layers}
    return json.dumps([entry]).encode()
