"""Stable in-image paths for the user's own files: ``build`` moves them under ``/app``.

A host build plans every file at its host path, so a binary built in
``/home/USER/src/...`` would carry the builder's directory names into the
image, and two clones in two directories would give two image IDs. This stage
runs on a finished host plan and moves the user's own files (the BINARY
programs, ``--include SRC`` without ``:DEST``, and the libraries of their
closures that live beside them) under :data:`APP_PREFIX`, keeping their layout
relative to their deepest common directory so ``$ORIGIN`` runpaths still
resolve. Nothing is written; the plan and the configuration come back new.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from scratchpack.ld.resolve import Closure, Library, Resolver
from scratchpack.notes import warn
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan, ancestors, within

APP_PREFIX = "/app"

# Where a distribution, a package manager or an administrator puts files: a path
# below one of these keeps its place. Everything else (/home, /root, /tmp, /work,
# /mnt, /srv, a build directory) holds the user's own files: /srv is where a
# checkout often lives (the fresh-machine check clones into /srv/project).
SYSTEM_DIRS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/var",
    "/run",
    "/boot",
    "/nix",
    "/snap",
)
# Scratch space inside them: a build under /var/tmp is as much the user's as one in /tmp.
USER_PLACES_IN_SYSTEM_DIRS = ("/var/tmp",)

# Reasons of what the user named (a BINARY and what it runs, --include) and of the
# libraries beside them. A PT_INTERP loader is named by absolute path in the ELF
# file, so it never moves.
_MOVABLE = (Reason.PROGRAM, Reason.LIBRARY, Reason.INCLUDE)
# Library searches that still find a moved library: an $ORIGIN runpath (checked
# below), LD_LIBRARY_PATH (rewritten with the Env) and a provider already loaded.
_FOLLOWING_SEARCHES = ("rpath", "runpath", "library-path", "loaded")
_ENV_WORD_SEPARATORS = re.compile(r"([:\s]+)")
_SHEBANG_BYTES = 256


@dataclass(frozen=True)
class Kept:
    """What must keep its host path although it lies outside the system directories.

    ``dests``: the explicit ``--include SRC:DEST`` destinations (DEST always
    wins); ``pinned``: libraries a moved program would no longer find (an
    absolute RUNPATH, ld.so.cache, a path in DT_NEEDED); ``installed``: the
    programs that find them so, installed in place (a pyenv ``python3.11`` with
    its ``libpython``), which stay with them (the links to them elsewhere may move).
    """

    dests: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    installed: tuple[str, ...] = ()


class RunSettings(Protocol):
    """The settings of ``image.config.ImageConfig`` this stage rewrites (a frozen dataclass).

    Named here so the plan floor does not import the image floor for plain data.
    """

    @property
    def entrypoint(self) -> tuple[str, ...] | None: ...
    @property
    def cmd(self) -> tuple[str, ...] | None: ...
    @property
    def env(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def workdir(self) -> str | None: ...


Settings = TypeVar("Settings", bound=RunSettings)


@dataclass(frozen=True)
class Relocation(Generic[Settings]):
    """The plan and configuration after the move, and what moved (for the report)."""

    root: RootPlan
    config: Settings
    moves: tuple[tuple[str, str], ...] = ()  # (host path, image path) of each moved top item


def kept_paths(includes: Iterable[str], closures: Iterable[Closure], resolver: Resolver) -> Kept:
    """The :class:`Kept` of a host build: ``--include`` DESTs and libraries found by fixed paths."""
    dests = tuple(
        posixpath.normpath(dest)
        for _, _, dest in (spec.partition(":") for spec in includes)
        if dest
    )
    libraries = {
        library.path
        for closure in closures
        for library in closure.libraries
        if not is_system_path(library.path) and not _follows_a_move(closure, library, resolver)
    }
    for path in sorted(libraries):
        warn(f"{path}: keeps its host path in the image (found without $ORIGIN or LD_LIBRARY_PATH)")
    installed = {
        closure.path
        for closure in closures
        if not is_system_path(closure.path)
        and any(library.path in libraries for library in closure.libraries)
    }
    return Kept(dests, tuple(sorted(libraries)), tuple(sorted(installed)))


def _follows_a_move(closure: Closure, library: Library, resolver: Resolver) -> bool:
    """Whether the loader still finds ``library`` once it and its program moved together."""
    if library.via not in _FOLLOWING_SEARCHES:
        return False
    if library.via in ("library-path", "loaded"):
        return True
    for path in (library.needed_by, closure.path):
        info = resolver.read_input(path)
        if "ORIGIN" in (info.runpath if info.runpath is not None else info.rpath or ""):
            return True
    return False


def is_system_path(path: str) -> bool:
    """Whether ``path`` lies in one of :data:`SYSTEM_DIRS` (or is ``/``)."""
    if any(within(path, top) for top in USER_PLACES_IN_SYSTEM_DIRS):
        return False
    return path == "/" or any(within(path, top) for top in SYSTEM_DIRS)


def relocate(plan: RootPlan, config: Settings, kept: Kept) -> Relocation[Settings]:
    """Move the user's own files of a host build's ``plan`` under :data:`APP_PREFIX`.

    Returns ``plan`` and ``config`` themselves when nothing is the user's (a
    ``curl`` image). Absolute symlinks to a moved path, and words of the
    Entrypoint, Cmd, WorkingDir and Env that are a moved path, follow it;
    each configuration rewrite is reported.
    """
    moved = _movable(plan, kept)
    if not moved:
        return Relocation(plan, config)
    common = posixpath.commonpath([posixpath.dirname(path) for path in moved])
    vanished = _vanished_directories(plan, moved)
    mapping = {path: _new_path(path, common) for path in moved}
    mapping.update(
        (path, _new_path(path, common)) for path in vanished if within(path, common) and path != "/"
    )
    new_plan = RootPlan(source_parent_modes=plan.source_parent_modes, excludes=plan.excludes)
    for path, entry in plan.entries.items():
        if path not in moved and path not in vanished:
            new_plan.add(_relinked(entry, entry.path, mapping))
    for path in sorted(moved, key=lambda old: mapping[old]):
        new_plan.add(_relinked(plan.entries[path], mapping[path], mapping))
    tops = tuple(path for path in sorted(moved) if not set(ancestors(path)) & moved)
    _warn_about_shebangs(plan, moved, mapping, tops)
    moves = tuple((path, mapping[path]) for path in tops)
    return Relocation(new_plan, _rewritten_config(config, mapping), moves)


def _movable(plan: RootPlan, kept: Kept) -> set[str]:
    """The paths of the user's own entries, less those pinned and the symlink chains to them.

    What already lies under :data:`APP_PREFIX` is where it belongs (a file placed
    there by its DEST, a checkout in a CI container's ``/app``): moving it again
    would stack the prefix.
    """
    pinned: set[str] = set()
    for path in kept.pinned:
        pinned.update(_chain(plan, path))
    for path in kept.installed:  # its file, and the links beside it (python3 -> python3.11)
        chain = _chain(plan, path)
        home = posixpath.dirname(chain[-1]) if chain else None
        pinned.update(link for link in chain if posixpath.dirname(link) == home)
    return {
        path
        for path, entry in plan.entries.items()
        if not entry.implied
        and entry.reason in _MOVABLE
        and not is_system_path(path)
        and not within(path, APP_PREFIX)
        and path not in pinned
        and not any(within(path, dest) for dest in kept.dests)
    }


def _chain(plan: RootPlan, path: str) -> list[str]:
    """``path`` and each planned link on its way to its file (``libx.so.1 -> libx.so.1.0``)."""
    chain: list[str] = []
    current = plan.through_links(path)
    while current in plan.entries and current not in chain:
        chain.append(current)
        entry = plan.entries[current]
        if entry.kind is not EntryKind.SYMLINK or entry.target is None:
            break
        current = plan.through_links(_resolved_target(current, entry.target))
    return chain


def _vanished_directories(plan: RootPlan, moved: set[str]) -> set[str]:
    """Directories planned only on the way to moved files, which nothing left in place needs."""
    needed = {
        parent
        for path, entry in plan.entries.items()
        if path not in moved and not entry.implied
        for parent in ancestors(path)
    }
    on_the_way = {parent for path in moved for parent in ancestors(path)} - needed - moved
    return {path for path in on_the_way if path in plan.entries and plan.entries[path].implied}


def _new_path(path: str, common: str) -> str:
    """``path`` below :data:`APP_PREFIX`, as it stood below ``common``."""
    return APP_PREFIX + (path if common == "/" else path[len(common) :])


def mapped(path: str, mapping: Mapping[str, str]) -> str | None:
    """``path``'s image path when it is a moved path or lies below one; else None."""
    if path in mapping:
        return mapping[path]
    for parent in reversed(ancestors(path)):
        if parent in mapping:
            return mapping[parent] + path[len(parent) :]
    return None


def _resolved_target(link: str, target: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(link), target))


def _relinked(entry: Entry, new_path: str, mapping: Mapping[str, str]) -> Entry:
    """``entry`` at ``new_path``; a symlink whose target moved points to its new place."""
    if entry.kind is EntryKind.SYMLINK and entry.target is not None:
        old_target = _resolved_target(entry.path, entry.target)
        new_target = mapped(old_target, mapping) or old_target
        if _resolved_target(new_path, entry.target) != new_target:
            if entry.target.startswith("/"):
                target = new_target
            else:
                target = posixpath.relpath(new_target, posixpath.dirname(new_path))
            return replace(entry, path=new_path, target=target)
    return entry if new_path == entry.path else replace(entry, path=new_path)


def _rewritten_config(config: Settings, mapping: Mapping[str, str]) -> Settings:
    """Entrypoint, Cmd, WorkingDir and Env words that are a moved path, rewritten and reported."""

    def word(value: str, where: str) -> str:
        new = mapped(value, mapping) if value.startswith("/") else None
        if new is None:
            return value
        warn(
            f"{where}: {value} is now {new} in the image (files outside the system "
            f"directories move under {APP_PREFIX}; --include SRC:SRC keeps a path)"
        )
        return new

    def words(values: tuple[str, ...] | None, where: str) -> tuple[str, ...] | None:
        return None if values is None else tuple(word(value, where) for value in values)

    def env_value(key: str, value: str) -> str:
        parts = _ENV_WORD_SEPARATORS.split(value)
        return "".join(word(part, f"Env {key}") for part in parts)

    return replace(  # type: ignore[type-var]  # ImageConfig: a frozen dataclass
        config,
        entrypoint=words(config.entrypoint, "Entrypoint"),
        cmd=words(config.cmd, "Cmd"),
        workdir=word(config.workdir, "WorkingDir") if config.workdir else config.workdir,
        env=tuple((key, env_value(key, value)) for key, value in config.env),
    )


def _warn_about_shebangs(
    plan: RootPlan, moved: Iterable[str], mapping: Mapping[str, str], tops: tuple[str, ...]
) -> None:
    """Moved scripts whose ``#!`` names a moved interpreter will not start: say so, and how.

    One warning per interpreter: a venv's ``bin`` holds several such scripts (pip, pip3).
    """
    scripts: dict[str, list[str]] = {}
    for path in sorted(moved, key=lambda old: mapping[old]):
        interpreter = _shebang(plan.entries[path])
        if interpreter is not None and mapped(interpreter, mapping) is not None:
            scripts.setdefault(interpreter, []).append(mapping[path])
    for interpreter, names in sorted(scripts.items()):
        top = next((top for top in tops if within(interpreter, top)), interpreter)
        subject = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        warn(
            f"{subject}: #! names {interpreter}, which is {mapped(interpreter, mapping)} in "
            f"the image, so {'it' if len(names) == 1 else 'they'} will not start; keep that "
            f"path with --include {top}:{top} (an explicit DEST is never moved)"
        )


def _shebang(entry: Entry) -> str | None:
    """The interpreter a script's first line names, or None for anything else."""
    if entry.kind is not EntryKind.FILE:
        return None
    head = entry.data
    if head is None and entry.source is not None:
        try:
            with open(entry.source, "rb") as stream:
                head = stream.read(_SHEBANG_BYTES)
        except OSError:
            return None
    if not head or not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return words[0].decode(errors="replace") if words else None
