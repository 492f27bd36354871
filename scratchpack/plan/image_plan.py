"""``build``'s plan: from binaries to the files of an image and its configuration.

:func:`plan_image` resolves every program, assembles the minimal root and the
image configuration, and writes nothing. What it returns, an
:class:`ImagePlan`, is what the Dockerfile renderer and the built-in writer
both take. The helpers that add a program's closure, what glibc will dlopen
for it and ``--include`` trees are shared with ``shrink``'s planner.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scratchpack.errors import EXIT_MISSING, InputError, ScratchpackError
from scratchpack.image.config import ImageConfig
from scratchpack.image.media import Platform
from scratchpack.ld.elf import ET_EXEC
from scratchpack.ld.ldcache_write import CacheRecord, render_cache
from scratchpack.ld.loaders import HwcapsChoice, LoaderRules
from scratchpack.ld.resolve import Closure, Library, Missing, Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.plan.copies import (
    Copied,
    CopiedRoot,
    Copy,
    add_copies,
    collect,
    copied_files,
    host_side_hint,
    own_copies,
    owner_names,
)
from scratchpack.plan.dpkg import DpkgIndex
from scratchpack.plan.entries import EntryKind, Reason
from scratchpack.plan.essentials import (
    CA_BUNDLE,
    LIBGCC_S,
    NSSWITCH,
    NSSWITCH_DEFAULT,
    SHELL,
    ZONEINFO,
    Essentials,
    add_shell,
    add_users,
    gconv_directory,
    image_platform,
    locale_directory,
    needs_libgcc_s,
    nss_services,
    shell_calls,
    user_known,
)
from scratchpack.plan.excludes import Excludes
from scratchpack.plan.programs import DEFAULT_PATH, Program, program
from scratchpack.plan.records import Records, add_records
from scratchpack.plan.relocate import Relocation, kept_paths, mapped, relocate
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.runtimes import Runtime, RuntimeFiles, runtime_files, runtime_paths

if TYPE_CHECKING:  # imported where used: only a --package build needs the package floor
    from scratchpack.packages.root import PackageRoot
    from scratchpack.plan.from_packages import PackageSelection


class MissingLibraryError(ScratchpackError):
    exit_code = EXIT_MISSING


@dataclass(frozen=True)
class BuildOptions:
    """What to put in the image, beyond its configuration."""

    binaries: tuple[str, ...]
    root: str | None = None
    includes: tuple[str, ...] = ()  # "SRC[:DEST]"
    copies: tuple[Copy, ...] = ()  # --copy: files of this machine, whatever the root
    excludes: tuple[str, ...] = ()  # --exclude GLOB (scratchpack.plan.excludes)
    essentials: Essentials = field(default_factory=Essentials)
    allow_missing: bool = False
    hwcaps: HwcapsChoice = field(default_factory=lambda: HwcapsChoice("none"))
    packages: tuple[str, ...] = ()  # --package NAME[=VERSION]
    suite: str | None = None  # --suite: the Debian suite of --package (default the host's)
    package_root: PackageRoot | None = None  # where they were unpacked (then the root)

    @property
    def package_names(self) -> tuple[str, ...]:
        return tuple(request.partition("=")[0] for request in self.packages)


@dataclass(frozen=True)
class LoadedFirst:
    """A soname no search finds, satisfied by a library of the image that carries it.

    glibc matches a needed name against the objects already loaded (their
    paths and DT_SONAMEs) before it searches. A plugin host loads the provider
    by path first (the JDK's launcher dlopens ``lib/server/libjvm.so``), so the
    libraries it then opens, which need ``libjvm.so``, find it loaded.
    """

    soname: str
    needed_by: str  # the library that names it
    path: str  # the library of the image whose DT_SONAME it is


def loaded_first_json(items: Iterable[LoadedFirst]) -> list[dict[str, Any]]:
    """One object per provider: ``{"soname", "path", "needed_by": [...]}`` (reports)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for item in items:
        needers = grouped.setdefault((item.soname, item.path), [])
        if item.needed_by not in needers:
            needers.append(item.needed_by)
    return [
        {"soname": soname, "path": path, "needed_by": sorted(needers)}
        for (soname, path), needers in sorted(grouped.items())
    ]


def loaded_first_lines(groups: Iterable[dict[str, Any]]) -> list[str]:
    """``loaded first: libjvm.so => …/server/libjvm.so (named by 27 libraries …)``.

    ``groups``: what :func:`loaded_first_json` made (reports render their JSON).
    """
    return [
        f"loaded first: {group['soname']} => {group['path']} (named by "
        f"{len(group['needed_by'])} {'library' if len(group['needed_by']) == 1 else 'libraries'}"
        " the program opens after it)"
        for group in groups
    ]


@dataclass(frozen=True)
class ImagePlan:
    """Everything an image will hold and how it runs; nothing written yet."""

    root: RootPlan
    config: ImageConfig
    platform: Platform  # the first program's: the image's platform
    closures: tuple[Closure, ...] = ()  # at their host paths, as resolved
    loaded_first: tuple[LoadedFirst, ...] = ()
    moves: tuple[tuple[str, str], ...] = ()  # (host path, image path): the user's files moved
    records: Records = field(
        default_factory=Records
    )  # the packages declared in status.d; unpackaged files


def plan_image(options: BuildOptions, config: ImageConfig) -> ImagePlan:
    """Resolve, assemble and configure; raise on what would make a broken image."""
    return with_records(plan_files(options, config), options.root)


def plan_files(options: BuildOptions, config: ImageConfig) -> ImagePlan:
    """:func:`plan_image` but its last stage, the package records (:func:`with_records`).

    The records read the root's dpkg database, a tenth of a second on a desktop
    machine; an engine build sends the files planned here meanwhile.
    """
    env = dict(config.env)
    env.setdefault("PATH", DEFAULT_PATH)  # as Docker's builder sets it for FROM scratch
    copied = collect(options.copies)
    # The image's loader sees the image's LD_LIBRARY_PATH, not the one of this shell.
    resolver = Resolver(
        options.root,
        library_path=env.get("LD_LIBRARY_PATH", ""),
        hwcaps=options.hwcaps,
        cwd=config.workdir or "/",  # the image's loader starts in WORKDIR
    )
    if copied:  # every lookup below sees the copies where the image will have them
        resolver.root = CopiedRoot(resolver.root, copied)
    root = resolver.root
    # The host's directory modes are not the image's.
    plan = RootPlan(source_parent_modes=False, excludes=Excludes(options.excludes))
    packages = options.package_root is not None
    selection = _selection(options) if packages else None
    named = [
        (binary, _binary(root, binary, env["PATH"], options.essentials.shell, packages))
        for binary in _binaries(options, config, selection)
    ]
    programs = [found for _, found in named]
    if options.package_root is not None and selection is not None:  # a program, then notes
        options = _package_essentials(options, selection)
    closures = _program_closures(plan, resolver, programs, options.essentials)
    if selection is not None:
        closures += _package_closures(plan, resolver, selection.paths, options.essentials)
    closures += _include_closures(plan, resolver, options)
    closures += _copy_closures(resolver, copied, options.essentials)
    kept = keep_runtimes(plan, resolver, programs, closures, options.essentials)
    closures += kept.closures
    if not (options.includes or options.copies or selection):  # the trees may be among them
        _warn_about_library_trees(named, kept.runtimes)
    loaded_first = satisfy_from_image(resolver, closures)
    _add_closures(plan, root, closures, options.allow_missing)
    add_copies(plan, copied)  # after the root's files: a copy replaces what stands at DEST
    accounts = owner_names(options.copies) | _created_accounts(options, selection)
    _add_essentials(plan, resolver, closures, options.essentials, env, config.user, accounts)
    if options.package_root is not None:
        _add_package_files(plan, options.package_root, config.user)
    own_copies(plan, copied)  # owners are names of the passwd just planned; theirs win
    _warn_about_closed_directories(plan, config.user)
    _check_user_named(plan, options.essentials, config.user)
    platform = image_platform(resolver, programs, options.essentials.shell)
    if options.essentials.shell:
        add_shell(plan, options.essentials.shell, platform)
    elif plan.through_links(SHELL) not in plan.entries:
        _warn_about_shell_calls(root, programs)
    ordered_env = tuple(sorted(env.items(), key=lambda item: item[0] != "PATH"))
    ordered = dataclasses.replace(config, env=ordered_env)
    placed = _place_own_files(options, resolver, plan, ordered, closures)
    # The default entrypoint follows its program silently: the report lists the moves.
    entrypoint = placed.config.entrypoint or (_image_path(programs[0].path, placed.moves),)
    return ImagePlan(
        placed.root,
        dataclasses.replace(placed.config, entrypoint=entrypoint),
        platform,
        tuple(closures),
        tuple(_moved_loaded_first(loaded_first, placed.moves)),
        placed.moves,
    )


def with_records(plan: ImagePlan, root_dir: str | None) -> ImagePlan:
    """``plan`` with the package records of what it holds: the last stage of a plan.

    Made on a copy of the plan's root, so ``plan`` can be read (sent to an engine)
    meanwhile. Last, so that every file the image holds — the ``--shell`` busybox,
    the user's files where they moved — is declared or named unknown where it is.
    ``--exclude``'s unused patterns are told after it: one may leave the records out.
    """
    root = plan.root.copy()
    records = plan_records(root, root_dir)
    warn_unused_excludes(root.excludes)
    return dataclasses.replace(plan, root=root, records=records)


def _selection(options: BuildOptions) -> PackageSelection:
    """What ``--package`` selects of its unpacked root (:mod:`.from_packages`).

    That module, and the package floor's unpacker it brings, is imported by a
    ``--package`` build only: a build of this machine's programs would pay a
    fiftieth of a second for it on every run.
    """
    from scratchpack.plan.from_packages import select

    assert options.package_root is not None
    return select(options.package_root, options.package_names)


def _package_essentials(options: BuildOptions, selection: PackageSelection) -> BuildOptions:
    """``options`` with the essentials the selected packages call for."""
    from scratchpack.plan.from_packages import package_essentials

    assert options.package_root is not None
    kept = package_essentials(options.essentials, options.package_root, selection)
    return dataclasses.replace(options, essentials=kept)


def _created_accounts(options: BuildOptions, selection: PackageSelection | None) -> set[str]:
    """The accounts the selected packages create (none without ``--package``)."""
    if options.package_root is None or selection is None:
        return set()
    from scratchpack.plan.from_packages import created_accounts

    return created_accounts(options.package_root, selection.packages)


def _add_package_files(plan: RootPlan, package_root: PackageRoot, user: str | None) -> None:
    """A package root's system files, its accounts' homes and its packages' directories."""
    from scratchpack.plan.from_packages import add_package_dirs, add_system_files, own_homes

    add_system_files(plan)
    own_homes(plan, package_root)
    add_package_dirs(plan, package_root, user)


def plan_records(plan: RootPlan, root_dir: str | None) -> Records:
    """The package records of what ``plan`` holds of the root's packages (host: this
    machine's), from the root's dpkg database (:mod:`.records`); none without one."""
    root = RootFS(root_dir)
    return add_records(plan, root, DpkgIndex.load_cached(root))


def _place_own_files(
    options: BuildOptions,
    resolver: Resolver,
    plan: RootPlan,
    config: ImageConfig,
    closures: list[Closure],
) -> Relocation[ImageConfig]:
    """A host build's own files go under /app (:mod:`.relocate`), so the image carries no
    build directory; a ``--root`` or ``--package`` root's paths are already the image's."""
    if not resolver.root.is_host or options.package_root is not None:
        return Relocation(plan, config)
    return relocate(plan, config, kept_paths(options.includes, closures, resolver))


def _image_path(path: str, moves: tuple[tuple[str, str], ...]) -> str:
    return mapped(path, dict(moves)) or path


def _moved_loaded_first(
    items: Iterable[LoadedFirst], moves: tuple[tuple[str, str], ...]
) -> list[LoadedFirst]:
    """The report names libraries where the image has them."""
    return [
        dataclasses.replace(
            item, needed_by=_image_path(item.needed_by, moves), path=_image_path(item.path, moves)
        )
        for item in items
    ]


def _binaries(
    options: BuildOptions, config: ImageConfig, selection: PackageSelection | None
) -> tuple[str, ...]:
    """The BINARY arguments; with ``--package`` and none, the packages' entry program."""
    if options.binaries or options.package_root is None or selection is None:
        return options.binaries
    from scratchpack.plan.from_packages import entry_program

    first = config.entrypoint[0] if config.entrypoint else None
    return (entry_program(options.package_root, selection, options.package_names, first),)


@dataclass(frozen=True)
class KeptRuntimes:
    """What :func:`keep_runtimes` planned: the runtimes it answered for, and the closures
    of the ELF files among their files."""

    runtimes: frozenset[Runtime] = frozenset()
    closures: tuple[Closure, ...] = ()


def keep_runtimes(
    plan: RootPlan,
    resolver: Resolver,
    programs: list[Program],
    closures: list[Closure],
    essentials: Essentials,
) -> KeptRuntimes:
    """The files the programs' interpreters cannot start without (:mod:`.runtimes`).

    Not when the user included the tree themselves. Each runtime kept gets a
    note saying what it added.
    """
    root = resolver.root
    interpreters = [target for found in programs for target in found.runs]
    loaded = [
        path
        for closure in closures
        for path in (closure.path, *(library.path for library in closure.libraries))
    ]
    included = _included(plan)
    runtimes: set[Runtime] = set()
    extra: list[Closure] = []
    for files in runtime_files(root, interpreters, loaded):
        if any(files.top == path or files.top.startswith(path + "/") for path in included):
            continue  # the user brought it
        for path in files.missing:
            warn(f"{path}: {files.what} include it, but it is not in {root.top}")
        if files.paths:
            extra += _plan_runtime(plan, resolver, files, essentials)
            runtimes.add(files.runtime)
    return KeptRuntimes(frozenset(runtimes), tuple(extra))


def _plan_runtime(
    plan: RootPlan, resolver: Resolver, files: RuntimeFiles, essentials: Essentials
) -> list[Closure]:
    """Plan ``files`` and note it; the closures of its ELF files.

    An extension module whose library is missing is kept with a warning: the
    interpreter starts without it, only importing that module fails.
    """
    root = resolver.root
    finals: dict[str, None] = {}
    for path in runtime_paths(root, files):
        final = plan.add_path(root, path, Reason.ESSENTIAL, files.runtime.value)
        if final is not None:
            finals[final] = None
    kept = {final: plan.entries[plan.through_links(final)] for final in finals}
    kept = {final: entry for final, entry in kept.items() if entry.kind is EntryKind.FILE}
    warn(files.note(len(kept), sum(entry.size for entry in kept.values())))
    closures: list[Closure] = []
    for source in kept:
        if not _loadable(resolver, source):
            continue
        closure = resolve_for_image(resolver, source, essentials)
        if closure.missing:
            names = ", ".join(item.soname for item in closure.missing)
            warn(f"{source}: missing {names}; kept, but it will not load")
            closure = dataclasses.replace(closure, missing=[])
        closures.append(closure)
    return closures


def _program_closures(
    plan: RootPlan, resolver: Resolver, programs: list[Program], essentials: Essentials
) -> list[Closure]:
    """Each program, and what it runs (a script's interpreter), with their closures."""
    closures: list[Closure] = []
    for found in programs:
        if found.path == SHELL and not found.runs:
            continue  # --shell busybox's /bin/sh: add_shell plans it
        plan.add_path(resolver.root, found.path, Reason.PROGRAM)
        for target in found.runs:
            closure = resolve_for_image(resolver, target, essentials)
            plan.add_path(resolver.root, closure.path, Reason.PROGRAM)
            closures.append(closure)
    return closures


def _package_closures(
    plan: RootPlan, resolver: Resolver, paths: Iterable[str], essentials: Essentials
) -> list[Closure]:
    """``--package``: every path of the selection; the closures of its loadable ELF files."""
    closures: list[Closure] = []
    for path in paths:
        kept = plan.add_listed(resolver.root, path, Reason.PACKAGE)
        if kept and _loadable(resolver, kept):
            closures.append(resolve_for_image(resolver, kept, essentials))
    return closures


def _include_closures(plan: RootPlan, resolver: Resolver, options: BuildOptions) -> list[Closure]:
    """``--include``: the trees placed; the closures of the loadable ELF files among them."""
    closures: list[Closure] = []
    packages = options.package_root is not None
    for include in options.includes:
        for image_path, source in add_include(plan, resolver.root, include, packages):
            if not _loadable(resolver, source):
                continue  # data, object files and core dumps included
            closure = resolve_for_image(resolver, source, options.essentials)
            if image_path != source:
                _warn_if_origin_relative(closure, image_path)
            closures.append(closure)  # the include placed the file; its libraries follow
    return closures


def _copy_closures(
    resolver: Resolver, copied: Iterable[Copied], essentials: Essentials
) -> list[Closure]:
    """``--copy``: the closures of the copied programs and libraries, from the root's files
    (the resolver sees the copies at their DESTs)."""
    return [
        resolve_for_image(resolver, path, essentials)
        for path in copied_files(copied)
        if _loadable(resolver, path)
    ]


def _loadable(resolver: Resolver, path: str) -> bool:
    """An ELF program or library, not an object file or core dump: one with a closure."""
    return resolver.root.is_elf(path) and resolver.read_loadable(path) is not None


def _add_closures(
    plan: RootPlan, root: RootFS, closures: list[Closure], allow_missing: bool
) -> None:
    """Every closure's loader and libraries, refused when one is incomplete."""
    cache_records: list[CacheRecord] = []
    for closure in closures:
        check_complete(closure, allow_missing)
        cache_records += add_closure(plan, root, closure)
    if cache_records:
        # A scratch image has no ld.so.cache: libraries the host found only through
        # it would not load. A cache of our own maps them to the same paths.
        plan.add_generated(
            "/etc/ld.so.cache", render_cache(cache_records), Reason.ESSENTIAL, "ld.so.cache"
        )


def _check_user_named(plan: RootPlan, essentials: Essentials, user: str | None) -> None:
    """A USER name needs an /etc/passwd to name it; a numeric one does not."""
    no_passwd = not essentials.users and "/etc/passwd" not in _included(plan)
    if user and not user_known(user) and no_passwd:
        raise InputError(
            f"--user {user}: the image has no /etc/passwd to name it; "
            "use a numeric uid[:gid] or --include your own /etc/passwd"
        )


def _warn_about_closed_directories(plan: RootPlan, user: str | None) -> None:
    """An included directory keeps the host's mode: a 0700 ``mktemp -d`` shuts ``--user`` out."""
    if not user or user.partition(":")[0] in ("root", "0"):
        return
    closed: list[str] = []
    for entry in plan.sorted_entries():
        if entry.kind is not EntryKind.DIR or entry.reason is not Reason.INCLUDE or entry.implied:
            continue
        shut = entry.uid == 0 and entry.mode & 0o005 != 0o005
        if shut and not any(entry.path.startswith(top + "/") for top in closed):
            closed.append(entry.path)
    for path in closed:
        mode = plan.entries[path].mode
        warn(
            f"{path}: mode {mode:04o}, as on the host, so --user {user} cannot enter it; "
            "chmod it, or include the files in it"
        )


def _warn_about_shell_calls(root: RootFS, programs: list[Program]) -> None:
    """initdb's ``popen()`` fails as ``Cannot allocate memory`` in an image with no shell."""
    for found in programs:
        for target in found.runs:
            host = root.host_path(target)
            calls = shell_calls(host) if host else []
            if calls:
                warn(
                    f"{target} calls {', '.join(f'{call}()' for call in calls)}, which "
                    f"{'runs' if len(calls) == 1 else 'run'} "
                    f"{SHELL}; the image has none: add --shell busybox if it needs one"
                )


def _binary(
    root: RootFS, binary: str, search_path: str, shell: str | None, packages: bool = False
) -> Program:
    """A BINARY argument: a host path, or a path inside ``--root`` (or a ``--copy`` DEST)."""
    path = os.path.abspath(binary) if root.is_host else "/" + binary.lstrip("/")
    if shell and path == SHELL:
        return Program(SHELL, (), "sh")  # --shell busybox's, not the root's
    host = root.host_path(path)
    if host is None or not os.path.isfile(host):
        hint = host_side_hint(binary, root, packages)
        if hint is not None:
            raise InputError(f"{binary} {hint}")
        where = f" inside {root.top}" if not root.is_host else ""
        raise InputError(f"{binary}: no such file{where}")
    return program(root, path, search_path, shell=shell)


def _warn_about_library_trees(named: list[tuple[str, Program]], kept: set[Runtime]) -> None:
    """Interpreters whose programs need a tree the image may lack; nothing is included.

    A runtime rule that kept the interpreter's own files answers for the bare
    interpreter; a script's modules beyond them are still the user's to add.
    """
    for binary, found in named:
        if not found.needs_tree:
            continue
        if Runtime.of(found.name) not in kept:
            warn(
                f"{binary}: {found.name} also needs its library tree (standard library, "
                "modules); add it with --include, or use shrink --trace"
            )
        elif found.script is not None:
            warn(
                f"{binary}: {found.name} also needs its library tree beyond what was kept "
                "(the script's own modules, site-packages); add it with --include, "
                "or use shrink --trace"
            )


def add_closure(plan: RootPlan, root: RootFS, closure: Closure) -> list[CacheRecord]:
    """The loader and libraries of ``closure``; the ld.so.cache records the image will need."""
    if closure.static:
        return []
    records: list[CacheRecord] = []
    interpreter = planned_interpreter(closure)
    if interpreter is not None:
        plan.add_path(root, interpreter, Reason.INTERPRETER)
    rules = closure.rules
    assert rules is not None
    for library in closure.libraries:
        plan.add_path(root, library.path, Reason.LIBRARY, library.soname)
        if library.via == "cache" and not _in_default_dirs(library.path, rules):
            for flags in sorted(rules.cache_flags or {0x0003}):
                records.append(CacheRecord(library.soname, library.path, flags))
    return records


def planned_interpreter(closure: Closure) -> str | None:
    """The closure's loader, unless it is missing (then one of ``missing``: nothing to plan)."""
    missing = {item.soname for item in closure.missing}
    if closure.interpreter and closure.interpreter not in missing:
        return closure.interpreter
    return None


def resolve_for_image(resolver: Resolver, path: str, essentials: Essentials) -> Closure:
    """The closure plus what glibc will dlopen: libgcc_s for unwinding, NSS modules."""
    closure = resolver.resolve(path)
    if closure.static or closure.loader != "glibc":
        return closure
    dlopen: list[tuple[str, str | None]] = []
    sonames = {library.soname for library in closure.libraries}
    if essentials.libgcc and LIBGCC_S not in sonames:
        callers = [resolver.root.host_path(path)] + [
            resolver.root.host_path(library.path)
            for library in closure.libraries
            if not library.soname.startswith(("libc.so", "ld-linux"))
        ]
        if needs_libgcc_s(host for host in callers if host is not None):
            dlopen.append((LIBGCC_S, "libc.so.6"))
    if essentials.nss:
        text = resolver.root.read_text(NSSWITCH) or ""
        dlopen.extend((f"libnss_{service}.so.2", "libc.so.6") for service in nss_services(text))
    if not dlopen:
        return closure
    closure = resolver.resolve(path, dlopen=dlopen)
    for missing in closure.dlopen_missing:
        # glibc skips NSS modules it cannot load; a missing libgcc_s aborts the program.
        if not missing.soname.startswith("libnss_"):
            warn(f"{path}: {missing.soname} is not in {resolver.root.top}; not added")
    return closure


def satisfy_from_image(resolver: Resolver, closures: list[Closure]) -> list[LoadedFirst]:
    """Take the missing sonames that a library of the image carries as loaded already.

    Only for closures of libraries (what a program dlopens, such as the JDK's
    ``lib/*.so``): a program and what it loads at start-up cannot have loaded
    anything before, so what they miss stays missing. The providers are the
    libraries in the image: the closures' own and their libraries. Each
    closure's :attr:`~Closure.missing` loses the names it finds, which join its
    libraries (``via`` "loaded"), so the provider is planned with them.
    """
    providers: dict[str, str] = {}
    for closure in closures:
        for library in closure.libraries:
            providers.setdefault(library.soname, library.path)
        soname = resolver.read_input(closure.path).soname  # parsed once, cached
        if soname:
            providers.setdefault(soname, closure.path)
    found: list[LoadedFirst] = []
    for closure in closures:
        if closure.static or not closure.missing or _is_program(resolver, closure.path):
            continue
        still: list[Missing] = []
        for item in closure.missing:
            provider = providers.get(item.soname) if item.reason is None else None
            if provider is None or provider == closure.path:
                still.append(item)
                continue
            closure.libraries.append(Library(item.soname, provider, item.needed_by, "loaded"))
            found.append(LoadedFirst(item.soname, item.needed_by, provider))
        closure.missing = still
    return found


def _is_program(resolver: Resolver, path: str) -> bool:
    """A program (ET_EXEC, or ET_DYN with a loader to start it) rather than a library."""
    info = resolver.read_input(path)
    return info.elf_type == ET_EXEC or (info.interpreter is not None and info.soname is None)


def check_complete(closure: Closure, allow_missing: bool) -> None:
    if not closure.missing:
        return
    names = ", ".join(
        item.soname + (f" ({item.reason})" if item.reason else "") for item in closure.missing
    )
    noun = "library" if len(closure.missing) == 1 else "libraries"
    message = f"{closure.path}: missing {noun} {names}"
    if not allow_missing:
        raise MissingLibraryError(message + " (--allow-missing builds anyway)")
    warn(message)


def warn_unused_excludes(excludes: Excludes) -> None:
    for pattern in excludes.unused():
        warn(f"--exclude {pattern}: matched nothing")


def _in_default_dirs(path: str, rules: LoaderRules) -> bool:
    return os.path.dirname(path) in rules.default_dirs


def _warn_if_origin_relative(closure: Closure, image_path: str) -> None:
    """An ELF moved by --include keeps its libraries' paths, not their place beside it."""
    relative = [lib.soname for lib in closure.libraries if lib.via in ("rpath", "runpath")]
    if relative:
        warn(
            f"{image_path}: moved from {closure.path}, but {', '.join(relative)} came through its "
            "RPATH/RUNPATH; if that uses $ORIGIN, include the file at its own path"
        )


def include_parts(spec: str) -> tuple[str, str]:
    """``--include SRC[:DEST]``'s SRC and normalised DEST ('' when none), checked by form
    alone, so a mistake is one line before any package is resolved."""
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
    return source, dest


def add_include(
    plan: RootPlan, root_fs: RootFS, spec: str, packages: bool = False
) -> list[tuple[str, str]]:
    """``--include SRC[:DEST]``: returns (in-image path, in-root source) of the files added.

    ``packages``: the root is ``--package``'s, which a message about a path missing in
    it names as such.
    """
    source, dest = include_parts(spec)
    if root_fs.is_host:
        source = os.path.abspath(source)
    elif not source.startswith("/"):
        source = "/" + source
    if root_fs.host_path(source) is None:
        hint = host_side_hint(spec.partition(":")[0], root_fs, packages)
        if hint is not None:
            raise InputError(f"--include {spec}: {posixpath.normpath(source)} {hint}")
        raise InputError(f"--include {spec}: {source} does not exist")
    return plan.add_tree(root_fs, source, Reason.INCLUDE, dest or None)


def _included(plan: RootPlan) -> set[str]:
    """Paths ``--include`` or ``--copy`` claimed itself, not the directories on their way."""
    return {
        entry.path
        for entry in plan.entries.values()
        if entry.reason in (Reason.INCLUDE, Reason.COPY) and not entry.implied
    }


def _add_essentials(
    plan: RootPlan,
    resolver: Resolver,
    closures: list[Closure],
    essentials: Essentials,
    env: dict[str, str],
    user: str | None,
    accounts: set[str],
) -> None:
    root = resolver.root
    included = _included(plan)
    glibc = any(closure.loader == "glibc" for closure in closures)
    if essentials.tmp and "/tmp" not in included:
        plan.add_dir("/tmp", 0o1777, Reason.ESSENTIAL, "tmp")
    if essentials.run and "/run" not in included:
        plan.add_dir("/run", 0o755, Reason.ESSENTIAL, "run")
    if essentials.users and not {"/etc/passwd", "/etc/group"} & included:
        add_users(plan, root, user, accounts)
    if glibc and "/etc/nsswitch.conf" not in included:
        if essentials.nss and root.exists(NSSWITCH):
            plan.add_path(root, NSSWITCH, Reason.ESSENTIAL, "nss")
        elif essentials.nsswitch:
            plan.add_generated(NSSWITCH, NSSWITCH_DEFAULT.encode(), Reason.ESSENTIAL, "nsswitch")
    if essentials.ca_certs:
        if not root.exists(CA_BUNDLE):
            raise InputError(f"--ca-certs: no {CA_BUNDLE} in {root.top} (ca-certificates)")
        plan.add_path(root, CA_BUNDLE, Reason.ESSENTIAL, "ca-certs")
        env.setdefault("SSL_CERT_FILE", CA_BUNDLE)
    if essentials.tzdata:
        if not root.is_dir(ZONEINFO):
            raise InputError(f"--tzdata: no {ZONEINFO} in {root.top} (tzdata)")
        plan.add_tree(root, ZONEINFO, Reason.ESSENTIAL, detail="tzdata")
    if essentials.locale:
        directory = locale_directory(root, essentials.locale)
        plan.add_tree(root, directory, Reason.ESSENTIAL, detail="locale")
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
        for module, source in plan.add_tree(root, directory, Reason.ESSENTIAL, detail="gconv"):
            if module.endswith(".so"):
                closure = resolver.resolve(source)
                for missing in closure.missing:
                    warn(f"--gconv: {module} needs {missing.soname}, not found")
                for library in closure.libraries:
                    plan.add_path(root, library.path, Reason.LIBRARY, library.soname)
