"""How a planned root is cut into layers: one, the shared libraries apart, or a layer per
Debian source package.

``--layers packages`` (:func:`package_layers`) is what makes an update cheap and
images of one suite share their bytes: a new openssl changes openssl's layer, the
records layer and the config, nothing else, and two images holding libc6 hold the
same libc6 blob. That only works if a package's layer depends on nothing but the
package, so before it is cut the plan is completed (:func:`complete_packages`)
with the whole of every package it holds a file of — as shrink's static mode and
``--package`` keep a package: every file and link it lists but its docs, man pages
and translations — not only the libraries one program's closure asked for.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.packages.control import NAME
from scratchpack.packages.deb import paragraph_fields
from scratchpack.packages.root import PackageRoot
from scratchpack.plan.dpkg import DpkgIndex
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.from_packages import archive_source, kept_of_package, own_homes
from scratchpack.plan.rootplan import RootPlan, ancestors

# containerd refuses an image of more than 127 layers; docker's overlay2 stops at 125
# lower directories plus the container's: the budget is never above this.
MAX_LAYERS = 127
# A package layer's mtime: fixed, so its bytes are its packages' alone (SOURCE_DATE_EPOCH
# dates the records and the user's layer, and the config).
PACKAGE_LAYER_MTIME = 0


def split_layers(plan: RootPlan, split: bool) -> list[list[Entry]]:
    """One layer, or shared libraries (with the loader) apart from the application.

    The library layer holds the loader, the libraries and the directories and
    symlinks on their paths, so two images with the same libraries share it.
    """
    entries = plan.sorted_entries()
    if not split:
        return [entries]
    wanted = {
        entry.path for entry in entries if entry.reason in (Reason.LIBRARY, Reason.INTERPRETER)
    }
    # The symlinks and directories the library paths go through come along.
    for entry in entries:
        if entry.kind in (EntryKind.DIR, EntryKind.SYMLINK) and any(
            path.startswith(entry.path.rstrip("/") + "/") for path in wanted
        ):
            wanted.add(entry.path)
    libraries = [entry for entry in entries if entry.path in wanted]
    application = [entry for entry in entries if entry.path not in wanted]
    # Each layer names the directories its own entries sit in, as layers should.
    parents = {
        parent
        for entry in application
        for parent in ancestors(entry.path)
        if parent in plan.entries and plan.entries[parent].kind is EntryKind.DIR
    }
    application = sorted(
        [*application, *(plan.entries[p] for p in parents if p in wanted)], key=lambda e: e.path
    )
    return [libraries, application] if libraries and application else [entries]


# -- a layer per source package -----------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """The Debian package a planned path is a file of."""

    package: str  # the binary package (libssl3)
    source: str  # its source package (openssl): binary packages of one source share a layer
    base: bool = False  # Essential: yes, or Priority: required


class LayerKind(str, Enum):
    PACKAGES = "packages"  # one source package's files, or the smallest ones merged
    RECORDS = "records"  # package records: status.d, os-release, debian_version
    OWN = "own"  # the user's files and what scratchpack generates: of no package


@dataclass(frozen=True)
class PlannedLayer:
    """One layer's entries, in path order, the directories they sit in included."""

    kind: LayerKind
    sources: tuple[str, ...]  # the source packages of a PACKAGES layer
    entries: tuple[Entry, ...]

    @property
    def comment(self) -> str:
        """What the image's history says of the layer."""
        if self.kind is LayerKind.PACKAGES:
            return f"packages: {', '.join(self.sources)}"
        return "package records" if self.kind is LayerKind.RECORDS else "application"

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)


def package_layers(
    plan: RootPlan, origins: Mapping[str, tuple[Origin, ...]], max_layers: int
) -> list[PlannedLayer]:
    """The plan's entries as ordered layers: each source package's, the records, the user's.

    ``origins``: each in-image path of a package's file, link or directory -> the
    packages that list it (a file belongs to the first). Order, stable between
    images: the C library's source (the one holding the program loader) first, then
    Essential and Priority: required packages, then the rest, each group by source
    name; then the records layer (``Reason.RECORD``), then the user's own layer
    (what no package holds: the BINARY, --copy, --include, passwd, ld.so.cache).

    Budget: at most ``max_layers`` (never above :data:`MAX_LAYERS`) in all. When the
    groups do not fit, the largest keep a layer each and the smallest share one,
    after them; with no room for that either, the records join the user's layer.
    Every layer carries the directories its entries sit in, so each one unpacks
    alone as its packages lay it out.
    """
    if max_layers < 2:
        raise ValueError(f"max_layers {max_layers}: at least 2")
    budget = min(max_layers, MAX_LAYERS)
    groups, records, own = _assign(plan, origins)
    extra = bool(records) + bool(own)
    room = max(budget - extra, 1)
    ordered = sorted(groups, key=lambda source: (_rank(groups[source], origins), source))
    if len(ordered) > room:
        by_size = sorted(ordered, key=lambda source: (-_bytes(groups[source]), source))
        alone = set(by_size[: room - 1])
        shared = [source for source in ordered if source not in alone]
        ordered = [source for source in ordered if source in alone]
    else:
        shared = []
    layers = [PlannedLayer(LayerKind.PACKAGES, (s,), _carried(plan, groups[s])) for s in ordered]
    if shared:
        merged = [entry for source in shared for entry in groups[source]]
        layers.append(PlannedLayer(LayerKind.PACKAGES, tuple(shared), _carried(plan, merged)))
    if records and len(layers) + extra > budget:
        own, records = [*records, *own], []
    if records:
        layers.append(PlannedLayer(LayerKind.RECORDS, (), _carried(plan, records)))
    if own:
        layers.append(PlannedLayer(LayerKind.OWN, (), _carried(plan, own)))
    return layers


def _assign(
    plan: RootPlan, origins: Mapping[str, tuple[Origin, ...]]
) -> tuple[dict[str, list[Entry]], list[Entry], list[Entry]]:
    """Each entry's place: its source package's group, the records, or the user's own.

    A directory goes with every group that lists it; one no group lists but that
    is only a parent (implied) is carried by the layers below it, never alone.
    """
    groups: dict[str, list[Entry]] = {}
    records: list[Entry] = []
    own: list[Entry] = []
    for entry in plan.sorted_entries():
        owners = origins.get(entry.path, ())
        if entry.reason is Reason.RECORD:
            records.append(entry)
        elif owners and entry.kind is not EntryKind.DIR:
            groups.setdefault(owners[0].source, []).append(entry)
    placed = {entry.path for group in groups.values() for entry in group}
    placed |= {entry.path for entry in records}
    parents = {parent for path in plan.entries for parent in ancestors(path)}
    for entry in plan.sorted_entries():
        if entry.path in placed or entry.reason is Reason.RECORD:
            continue
        listing = [o.source for o in origins.get(entry.path, ()) if o.source in groups]
        if entry.kind is EntryKind.DIR and listing:
            for source in dict.fromkeys(listing):
                groups[source].append(entry)
        elif not (entry.kind is EntryKind.DIR and entry.implied and entry.path in parents):
            own.append(entry)
    return groups, records, own


def _rank(entries: list[Entry], origins: Mapping[str, tuple[Origin, ...]]) -> int:
    """0: the C library (it holds the loader); 1: Essential or required; 2: the rest."""
    if any(entry.reason is Reason.INTERPRETER for entry in entries):
        return 0
    if any(origin.base for entry in entries for origin in origins.get(entry.path, ())[:1]):
        return 1
    return 2


def _bytes(entries: list[Entry]) -> int:
    return sum(entry.size for entry in entries)


def _carried(plan: RootPlan, entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """``entries`` and the planned directories they sit in, once each, by path."""
    chosen = {entry.path: entry for entry in entries}
    for path in list(chosen):
        for parent in ancestors(path):
            found = plan.entries.get(parent)
            if found is not None and found.kind is EntryKind.DIR:
                chosen.setdefault(parent, found)
    return tuple(chosen[path] for path in sorted(chosen))


# -- which package a planned path comes from, and the whole of each package ----------------


@dataclass(frozen=True)
class RootPackages:
    """The packages of a root: each one's origin and the paths it lists.

    Made from a ``--package`` root's unpacked packages (:meth:`of_package_root`) or
    a root's dpkg database (:meth:`of_dpkg`: this machine's, for a host build).
    """

    root: RootFS
    origins: Mapping[str, Origin]  # package key -> its origin
    listed: Mapping[str, tuple[str, ...]]  # package key -> the paths it lists
    index: DpkgIndex | None = None  # a dpkg database answers owner() itself

    @classmethod
    def of_package_root(cls, root: PackageRoot) -> RootPackages:
        origins = {}
        for package in root.packages:
            name = package.ref.name
            fields = paragraph_fields(package.ref.index) if package.ref.index else {}
            origins[name] = _origin(name, archive_source(package), fields)
        listed = {package.ref.name: package.paths for package in root.packages}
        return cls(RootFS(str(root.top)), origins, listed)

    @classmethod
    def of_dpkg(cls, index: DpkgIndex) -> RootPackages:
        origins = {}
        for key, package in index.packages.items():
            fields = paragraph_fields(index.paragraphs.get(key, ""))
            origins[key] = _origin(package.name, package.source or package.name, fields)
        return cls(index.root, origins, {key: tuple(index.files(key)) for key in origins}, index)

    def owners(self) -> dict[str, list[str]]:
        """In-root path -> the keys of the packages listing it (``--package`` roots)."""
        found: dict[str, list[str]] = {}
        for key, paths in self.listed.items():
            for path in paths:
                found.setdefault(path, []).append(key)
        return found


def _origin(name: str, source: str, fields: Mapping[str, str]) -> Origin:
    """A package's origin; a source outside Debian's grammar (the archive's word, another
    party's) is not taken: the package is its own source."""
    base = fields.get("Essential") == "yes" or fields.get("Priority") == "required"
    return Origin(name, source if NAME.fullmatch(source) else name, base)


def plan_origins(plan: RootPlan, packages: RootPackages) -> dict[str, tuple[Origin, ...]]:
    """In-image path -> the packages it is a file, link or directory of, as planned.

    A file is a package's only when its bytes are the package's file at that path
    (not generated, not the user's copy placed there); a link only when it points
    where the package's link does. The image's own /lib -> usr/lib spelling and the
    package's are one path (both are resolved in the root).
    """
    keys = _keys_of(plan, packages)
    return {
        path: tuple(packages.origins[key] for key in found) for path, found in keys.items() if found
    }


def _keys_of(plan: RootPlan, packages: RootPackages) -> dict[str, list[str]]:
    """In-image path -> the keys of the packages whose entry the planned one is."""
    root, index = packages.root, packages.index
    if index is not None:
        key_of = {id(package): key for key, package in index.packages.items()}

        def lookup(path: str) -> list[str]:
            owner = index.owner(path)
            return [key_of[id(owner)]] if owner is not None else []

    else:
        listed = _canonical_owners(packages)

        def lookup(path: str) -> list[str]:
            return listed.get(_canonical(root, path), [])

    found: dict[str, list[str]] = {}
    for path, entry in plan.entries.items():
        keys = lookup(path)
        if entry.kind is EntryKind.SYMLINK:
            keys = [key for key in keys if _lists_link(packages, key, path)]
        if keys and _is_theirs(root, entry):
            found[path] = keys
    return found


def _lists_link(packages: RootPackages, key: str, path: str) -> bool:
    """Whether package ``key`` lists ``path`` (or its merged-/usr twin) as a link of its own.

    A link that leads to a directory is nobody's: a merged-/usr root's ``/lib ->
    usr/lib`` is what dozens of packages list as the directory ``/lib``.
    """
    twin = path[4:] if path.startswith("/usr/") else "/usr" + path
    listed = packages.listed.get(key, ())
    for spelling in (path, twin):
        parent, name = posixpath.split(spelling)
        host_parent = packages.root.host_path(parent)
        if spelling not in listed or not host_parent:
            continue
        here = f"{host_parent}/{name}"
        if os.path.islink(here) and not packages.root.is_dir(spelling):
            return True
    return False


def _canonical(root: RootFS, path: str) -> str:
    """``path`` with its directory resolved in the root (its last component as it is)."""
    parent, name = posixpath.split(path)
    real = root.realpath(parent)
    return posixpath.join(real, name) if real is not None else path


def _canonical_owners(packages: RootPackages) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, keys in packages.owners().items():
        if path not in ("/", "/."):
            found.setdefault(_canonical(packages.root, path), []).extend(keys)
    return found


def _is_theirs(root: RootFS, entry: Entry) -> bool:
    """Whether the planned entry is the root's own at its path: its bytes, its link."""
    if entry.kind is EntryKind.DIR:
        return True
    if entry.kind is EntryKind.FILE:
        here = root.host_path(entry.path)
        if entry.data is not None or entry.source is None or here is None:
            return False
        return os.path.realpath(entry.source) == os.path.realpath(here)
    parent, name = posixpath.split(entry.path)
    host_parent = root.host_path(parent)
    try:
        return host_parent is not None and os.readlink(f"{host_parent}/{name}") == entry.target
    except OSError:
        return False


def complete_packages(plan: RootPlan, packages: RootPackages) -> RootPlan:
    """The plan with the whole of every package it holds a file or link of.

    Whole as ``--package`` and shrink's static mode keep a package: every path it
    lists but docs, man pages and translations. A link among them that leads into
    another package brings that package's file, and then that package whole too,
    until none is left. The new files' own libraries are not added: the program's
    closure is in the image already. ``--exclude`` still leaves paths out.
    """
    plan = plan.copy()
    done: set[str] = set()
    while True:
        held = {keys[0] for path, keys in _keys_of(plan, packages).items()
                if plan.entries[path].kind is not EntryKind.DIR} - done  # fmt: skip
        if not held:
            return plan
        for key in sorted(held):
            for path in packages.listed.get(key, ()):
                if kept_of_package(path) and _new(plan, path) and _exists(packages.root, path):
                    _add_listed(plan, packages.root, path)
        done |= held


def _new(plan: RootPlan, path: str) -> bool:
    """Not planned yet, or only as a parent: what the plan holds there stands (the records'
    os-release, a generated file, the user's copy)."""
    existing = plan.entries.get(plan.through_links(path))
    return existing is None or existing.implied


def _exists(root: RootFS, path: str) -> bool:
    parent, name = posixpath.split(path)
    host_parent = root.host_path(parent)
    return host_parent is not None and os.path.lexists(f"{host_parent}/{name}")


def _add_listed(plan: RootPlan, root: RootFS, path: str) -> None:
    """Plan a package's path; one the plan has otherwise (a link where it lists a directory)
    stays as planned, with a warning: the layer then differs from the package's."""
    try:
        plan.add_listed(root, path, Reason.PACKAGE)
    except InputError as err:
        warn(f"--layers packages: {err}; the image keeps what was planned there")


def whole_packages(
    plan: RootPlan, package_root: PackageRoot | None, root: str | None
) -> tuple[RootPlan, dict[str, tuple[Origin, ...]]]:
    """``--layers packages``: the plan completed with its packages whole, and each path's
    packages. The packages are a ``--package`` root's, else the root's dpkg database
    (this machine's for a host build); owners are as dpkg and the scripts leave them."""
    if package_root is not None:
        packages = RootPackages.of_package_root(package_root)
    else:
        packages = RootPackages.of_dpkg(DpkgIndex.load_cached(RootFS(root)))
    completed = complete_packages(plan, packages)
    if package_root is not None:
        own_homes(completed, package_root)
    return completed, plan_origins(completed, packages)
