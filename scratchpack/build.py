"""From binaries to an image plan, and from a plan to a build context.

:func:`plan_image` resolves every program, assembles the minimal root and the
image configuration, without writing anything. :func:`write_context` lays the
plan out as a Docker build context (``rootfs/`` plus a rendered Dockerfile),
atomically: a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from scratchpack.assemble import Entry, RootPlan, write_tree
from scratchpack.config import ImageConfig
from scratchpack.errors import EXIT_MISSING, InputError, ScratchpackError
from scratchpack.essentials import (
    CA_BUNDLE,
    LIBGCC_S,
    NSSWITCH,
    NSSWITCH_DEFAULT,
    ZONEINFO,
    Essentials,
    add_users,
    gconv_directory,
    locale_directory,
    needs_libgcc_s,
    nss_services,
    user_known,
)
from scratchpack.ld.ldcache_write import CacheRecord, render_cache
from scratchpack.ld.loaders import HwcapsChoice, LoaderRules
from scratchpack.ld.resolve import Closure, Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.oci import (
    add_entry,
)
from scratchpack.render import OwnedTree, render_dockerfile

if TYPE_CHECKING:
    pass

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Interpreters whose programs also need a library tree (stdlib, modules).
_TREE_INTERPRETERS = re.compile(r"^(python|perl|ruby|node|nodejs|php|lua|tclsh|Rscript|java)")
_SHEBANG_LIMIT = 256


class MissingLibraryError(ScratchpackError):
    exit_code = EXIT_MISSING


@dataclass
class BuildOptions:
    """What to put in the image, beyond its configuration."""

    binaries: list[str]
    root: str | None = None
    includes: list[str] = field(default_factory=list)  # "SRC[:DEST]"
    essentials: Essentials = field(default_factory=Essentials)
    allow_missing: bool = False
    hwcaps: HwcapsChoice = field(default_factory=lambda: HwcapsChoice("none"))


@dataclass
class ImagePlan:
    """Everything an image will hold and how it runs; nothing written yet."""

    root: RootPlan
    config: ImageConfig
    closures: list[Closure]
    warnings: list[str]
    machine: int  # e_machine and class of the first program: the image's platform
    bits: int


@dataclass(frozen=True)
class Program:
    """A BINARY argument: an ELF file, or a script and the ELF files that run it."""

    path: str  # in-image path, absolute
    elf_targets: tuple[str, ...]  # the ELF files to resolve (the path itself, or interpreters)


def plan_image(options: BuildOptions, config: ImageConfig) -> ImagePlan:
    """Resolve, assemble and configure; raise on what would make a broken image."""
    env = dict(config.env)
    env.setdefault("PATH", DEFAULT_PATH)  # as Docker's builder sets it for FROM scratch
    # The image's loader sees the image's LD_LIBRARY_PATH, not the one of this shell.
    resolver = Resolver(
        options.root,
        library_path=env.get("LD_LIBRARY_PATH", ""),
        hwcaps=options.hwcaps,
        cwd=config.workdir or "/",  # the image's loader starts in WORKDIR
    )
    root = resolver.root
    plan = RootPlan()
    warnings: list[str] = []
    programs = [_program(resolver, binary, env, warnings) for binary in options.binaries]

    closures: list[Closure] = []
    included: set[int] = set()
    for program in programs:
        plan.add_path(root, program.path, "binary")
        for target in program.elf_targets:
            closures.append(resolve_for_image(resolver, target, options, warnings))
    for include in options.includes:
        for image_path, source in add_include(plan, root, include):
            if not root.is_elf(source):
                continue
            closure = resolve_for_image(resolver, source, options, warnings)
            if image_path != source:
                _warn_if_origin_relative(closure, image_path, warnings)
            included.add(id(closure))  # the include placed the file; its libraries follow
            closures.append(closure)
    cache_records: list[CacheRecord] = []
    for closure in closures:
        check_complete(closure, options.allow_missing, warnings)
        if id(closure) not in included:
            plan.add_path(root, closure.path, "binary")
        if closure.static:
            continue
        if closure.interpreter and not any(
            m.soname == closure.interpreter for m in closure.missing
        ):
            plan.add_path(root, closure.interpreter, "interpreter")
        rules = closure.rules
        assert rules is not None
        for library in closure.libraries:
            plan.add_path(root, library.path, f"library:{library.soname}")
            if library.via == "cache" and not _in_default_dirs(library.path, rules):
                for flags in sorted(rules.cache_flags or {0x0003}):
                    cache_records.append(CacheRecord(library.soname, library.path, flags))

    if cache_records:
        # A scratch image has no ld.so.cache: libraries the host found only through
        # it would not load. A cache of our own maps them to the same paths.
        plan.add_generated("/etc/ld.so.cache", render_cache(cache_records), "essential:ld.so.cache")
    _add_essentials(plan, resolver, closures, options.essentials, env, warnings)
    config.env = sorted(env.items(), key=lambda item: item[0] != "PATH")
    if config.user and not user_known(config.user) and "/etc/passwd" not in _included(plan):
        raise InputError(
            f"--user {config.user}: not in the image's /etc/passwd (root, nobody, nonroot); "
            "use a numeric uid[:gid] or --include your own /etc/passwd"
        )
    if not config.entrypoint:
        config.entrypoint = [programs[0].path]
    first = resolver.read_input(programs[0].elf_targets[0])
    warnings.extend(plan.warnings)
    return ImagePlan(plan, config, closures, warnings, first.machine, first.bits)


def _program(resolver: Resolver, binary: str, env: dict[str, str], warnings: list[str]) -> Program:
    root = resolver.root
    path = binary if not root.is_host else os.path.abspath(binary)
    if not root.is_host and not path.startswith("/"):
        path = "/" + path
    host = root.host_path(path)
    if host is None or not os.path.isfile(host):
        where = f" inside {root.top}" if not root.is_host else ""
        raise InputError(f"{binary}: no such file{where}")
    with open(host, "rb") as stream:
        head = stream.read(_SHEBANG_LIMIT)
    if not head.startswith(b"#!"):
        resolver.read_input(path)  # a clear error for anything that is not an ELF file
        return Program(path, (path,))
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        raise InputError(f"{binary}: a script with an empty #! line")
    interpreter, arguments = words[0], words[1:]
    targets = [interpreter]
    program_name = os.path.basename(interpreter)
    if program_name == "env" and arguments:
        name = next((word for word in arguments if not word.startswith("-")), None)
        if name is not None:
            found = _which(resolver, name, env.get("PATH", DEFAULT_PATH))
            if found is None:
                raise InputError(f"{binary}: its interpreter {name} is not on PATH in {root.top}")
            targets.append(found)
            program_name = name
    if _TREE_INTERPRETERS.match(program_name):
        warnings.append(
            f"{binary}: {program_name} also needs its library tree (standard library, modules); "
            "add it with --include, or use shrink --trace"
        )
    return Program(path, tuple(targets))


def _which(resolver: Resolver, name: str, search_path: str) -> str | None:
    for directory in search_path.split(":"):
        candidate = f"{directory.rstrip('/')}/{name}"
        host = resolver.root.host_path(candidate)
        if host is not None and os.path.isfile(host) and os.access(host, os.X_OK):
            return candidate
    return None


def resolve_for_image(
    resolver: Resolver, path: str, options: BuildOptions, warnings: list[str]
) -> Closure:
    """The closure plus what glibc will dlopen: libgcc_s for unwinding, NSS modules."""
    closure = resolver.resolve(path)
    if closure.static or closure.loader != "glibc":
        return closure
    dlopen: list[tuple[str, str | None]] = []
    sonames = {library.soname for library in closure.libraries}
    if options.essentials.libgcc and LIBGCC_S not in sonames:
        callers = [resolver.root.host_path(path)] + [
            resolver.root.host_path(library.path)
            for library in closure.libraries
            if not library.soname.startswith(("libc.so", "ld-linux"))
        ]
        if needs_libgcc_s(host for host in callers if host is not None):
            dlopen.append((LIBGCC_S, "libc.so.6"))
    if options.essentials.nss:
        text = resolver.root.read_text(NSSWITCH) or ""
        dlopen.extend((f"libnss_{service}.so.2", "libc.so.6") for service in nss_services(text))
    if not dlopen:
        return closure
    closure = resolver.resolve(path, dlopen=dlopen)
    for missing in closure.dlopen_missing:
        # glibc skips NSS modules it cannot load; a missing libgcc_s aborts the program.
        if not missing.soname.startswith("libnss_"):
            warnings.append(f"{path}: {missing.soname} is not in {resolver.root.top}; not added")
    return closure


def check_complete(closure: Closure, allow_missing: bool, warnings: list[str]) -> None:
    if not closure.missing:
        return
    names = ", ".join(
        item.soname + (f" ({item.reason})" if item.reason else "") for item in closure.missing
    )
    noun = "library" if len(closure.missing) == 1 else "libraries"
    message = f"{closure.path}: missing {noun} {names}"
    if not allow_missing:
        raise MissingLibraryError(message + " (--allow-missing builds anyway)")
    warnings.append(message)


def _in_default_dirs(path: str, rules: LoaderRules) -> bool:
    return os.path.dirname(path) in rules.default_dirs


def _warn_if_origin_relative(closure: Closure, image_path: str, warnings: list[str]) -> None:
    """An ELF moved by --include keeps its libraries' paths, not their place beside it."""
    relative = [lib.soname for lib in closure.libraries if lib.via in ("rpath", "runpath")]
    if relative:
        warnings.append(
            f"{image_path}: moved from {closure.path}, but {', '.join(relative)} came through its "
            "RPATH/RUNPATH; if that uses $ORIGIN, include the file at its own path"
        )


def add_include(plan: RootPlan, root_fs: RootFS, spec: str) -> list[tuple[str, str]]:
    """``--include SRC[:DEST]``: returns (in-image path, in-root source) of the files added."""
    source, _, dest = spec.partition(":")
    if not source:
        raise InputError(f"--include {spec}: expected SRC[:DEST]")
    if dest:
        if not dest.startswith("/") or ".." in dest.split("/") or posixpath.normpath(dest) == "/":
            raise InputError(
                f"--include {spec}: DEST must be an absolute path in the image, below / "
                "and without '..'"
            )
        dest = posixpath.normpath(dest)
    if root_fs.is_host:
        source = os.path.abspath(source)
    elif not source.startswith("/"):
        source = "/" + source
    if root_fs.host_path(source) is None:
        raise InputError(f"--include {spec}: {source} does not exist")
    return plan.add_tree(root_fs, source, "include", dest or None)


def _included(plan: RootPlan) -> set[str]:
    return {entry.path for entry in plan.entries.values() if entry.reason == "include"}


def _add_essentials(
    plan: RootPlan,
    resolver: Resolver,
    closures: list[Closure],
    essentials: Essentials,
    env: dict[str, str],
    warnings: list[str],
) -> None:
    root = resolver.root
    included = _included(plan)
    glibc = any(closure.loader == "glibc" for closure in closures)
    if essentials.tmp and "/tmp" not in included:
        plan.add_dir("/tmp", 0o1777, "essential:tmp")
    if essentials.users and not {"/etc/passwd", "/etc/group"} & included:
        add_users(plan)
    if glibc and "/etc/nsswitch.conf" not in included:
        if essentials.nss and root.exists(NSSWITCH):
            plan.add_path(root, NSSWITCH, "essential:nss")
        elif essentials.nsswitch:
            plan.add_generated(NSSWITCH, NSSWITCH_DEFAULT.encode(), "essential:nsswitch")
    if essentials.ca_certs:
        if not root.exists(CA_BUNDLE):
            raise InputError(f"--ca-certs: no {CA_BUNDLE} in {root.top} (ca-certificates)")
        plan.add_path(root, CA_BUNDLE, "essential:ca-certs")
        env.setdefault("SSL_CERT_FILE", CA_BUNDLE)
    if essentials.tzdata:
        if not root.is_dir(ZONEINFO):
            raise InputError(f"--tzdata: no {ZONEINFO} in {root.top} (tzdata)")
        plan.add_tree(root, ZONEINFO, "essential:tzdata")
    if essentials.locale:
        plan.add_tree(root, locale_directory(root, essentials.locale), "essential:locale")
        env.setdefault("LANG", essentials.locale)
    if essentials.gconv:
        libc = next(
            (
                library.path
                for closure in closures
                for library in closure.libraries
                if library.soname == "libc.so.6"
            ),
            None,
        )
        if libc is None:
            raise InputError("--gconv: no glibc in the image")
        directory = gconv_directory(root, libc)
        for module, source in plan.add_tree(root, directory, "essential:gconv"):
            if module.endswith(".so"):
                closure = resolver.resolve(source)
                for missing in closure.missing:
                    warnings.append(f"--gconv: {module} needs {missing.soname}, not found")
                for library in closure.libraries:
                    plan.add_path(root, library.path, f"essential:gconv:{library.soname}")


# -- the build context -------------------------------------------------------------------------


def owned_trees(entries: list[Entry]) -> list[OwnedTree]:
    """Entries owned by someone other than root, copied with ``COPY --chown``.

    The parent directory is what gets copied: COPY creates its destination
    itself (0755), so copying an entry's parent is what keeps the entry's mode.
    """
    trees: dict[tuple[int, int, str], OwnedTree] = {}
    for entry in entries:
        if entry.uid or entry.gid:
            parent = entry.path.rsplit("/", 1)[0] + "/"
            source = f"owned/{entry.uid}.{entry.gid}{parent}"
            trees.setdefault(
                (entry.uid, entry.gid, parent), OwnedTree(entry.uid, entry.gid, source, parent)
            )
    return list(trees.values())


def context_archive(
    plan: ImagePlan, template: Path | None = None, base: str = "scratch"
) -> BinaryIO:
    """The build context as one uncompressed tar, straight from the plan.

    Sent to the engine as is: no copy of the root on disk for the SDK to walk
    and tar again, which was a third of scratchpack's own time in a build.
    """
    entries = plan.root.sorted_entries()
    dockerfile = render_dockerfile(plan.config, owned_trees(entries), template, base).encode()
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_entry(tar, Entry("/Dockerfile", "file", 0o644, "context", data=dockerfile), 0)
        for entry in entries:
            prefix = f"owned/{entry.uid}.{entry.gid}/" if entry.uid or entry.gid else "rootfs/"
            add_entry(tar, entry, 0, prefix)
    archive.seek(0)
    return archive


def write_context(plan: ImagePlan, directory: str, template: Path | None = None) -> None:
    """Lay out ``rootfs/``, ``owned/`` and the Dockerfile in the empty ``directory``."""
    entries = plan.root.sorted_entries()
    owned = owned_trees(entries)
    dockerfile = render_dockerfile(plan.config, owned, template)
    write_tree([entry for entry in entries if not (entry.uid or entry.gid)], f"{directory}/rootfs")
    for entry in entries:
        if entry.uid or entry.gid:
            write_tree([entry], f"{directory}/owned/{entry.uid}.{entry.gid}")
    with open(f"{directory}/Dockerfile", "w", encoding="utf-8") as stream:
        stream.write(dockerfile)


def split_args(text: str, option: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise InputError(f"{option} {text!r}: {err}") from err


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def split_layers(plan: RootPlan, split: bool) -> list[list[Entry]]:
    """One layer, or shared libraries (with the loader) apart from the application.

    The library layer holds the loader, the libraries and the directories and
    symlinks on their paths, so two images with the same libraries share it.
    """
    entries = plan.sorted_entries()
    if not split:
        return [entries]
    library_reasons = ("library:", "interpreter")
    wanted: set[str] = set()
    for entry in entries:
        if entry.reason.startswith(library_reasons):
            wanted.add(entry.path)
    # The symlinks and directories the library paths go through come along.
    for entry in entries:
        if entry.kind in ("dir", "symlink") and any(
            path.startswith(entry.path.rstrip("/") + "/") for path in wanted
        ):
            wanted.add(entry.path)
    libraries = [entry for entry in entries if entry.path in wanted]
    application = [entry for entry in entries if entry.path not in wanted]
    # Each layer names the directories its own entries sit in, as layers should.
    parents = {
        parent
        for entry in application
        for parent in _ancestors(entry.path)
        if parent in plan.entries and plan.entries[parent].kind == "dir"
    }
    application = sorted(
        [*application, *(plan.entries[p] for p in parents if p in wanted)], key=lambda e: e.path
    )
    return [libraries, application] if libraries and application else [entries]
