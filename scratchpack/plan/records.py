"""Package records: what vulnerability scanners read to know an image's Debian packages.

A scanner sees only the packages an image declares (``../shared/reference.md`` §10):
Trivy finds the OS by ``/etc/debian_version`` and the packages in
``/var/lib/dpkg/status.d/*``, their files in ``*.md5sums``; Grype and Syft read
the same. So every image whose files come from Debian packages gets, as planned
entries of reason ``record``:

- ``/var/lib/dpkg/status.d/NAME``: exactly that package's paragraph of the root's
  dpkg database (the archive's, for ``--package``; the host's, with the host's
  version, for a host or ``--root`` build), ``Status: install ok installed``,
  without dpkg's local bookkeeping (``Conffiles``, ``Config-Version``, triggers);
- ``status.d/NAME.md5sums``: the lines of the package's own md5sums (dpkg's
  ``MD5  relative/path``) for the files of it the image holds, sorted;
- ``/usr/lib/os-release``, ``/etc/os-release`` (Debian's link to
  ``../usr/lib/os-release``) and ``/etc/debian_version``, copied from the same
  root (base-files' files: base-files is declared with them).

Declared are exactly the packages of which the image holds a file, or a link
to a file (chisel#149: a package declared but absent is a false positive, one
present but undeclared is invisible). A link to a directory (``/lib ->
usr/lib``) declares nothing: every package lists the directory. A file no
package lists is named in :attr:`Records.unknown`, never declared.

The file is named NAME, Multi-Arch: same packages included, as distroless does
and as Trivy and Syft read it (the paragraph names the architecture); only a
second architecture of the same package in one image is ``NAME:ARCH``.

A root without a dpkg database (or a ``status.d``) gets no records at all.
``--exclude /var/lib/dpkg/**`` leaves the records out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.plan.dpkg import STATUS_D, DpkgIndex, Package
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan

OS_RELEASE = "/usr/lib/os-release"
ETC_OS_RELEASE = "/etc/os-release"
OS_RELEASE_LINK = "../usr/lib/os-release"  # base-files' /etc/os-release
DEBIAN_VERSION = "/etc/debian_version"
MAX_OS_RELEASE = 64 << 10
MAX_DEBIAN_VERSION = 4 << 10  # "12.8\n": a line
INSTALLED = "Status: install ok installed"
# What dpkg keeps about the local system in a status paragraph: not the package's record.
_LOCAL_FIELDS = frozenset(
    {"status", "conffiles", "config-version", "triggers-pending", "triggers-awaited"}
)


@dataclass(frozen=True)
class Records:
    """What :func:`add_records` declared."""

    packages: tuple[str, ...] = ()  # the status.d names written, sorted
    unknown: tuple[str, ...] = ()  # in-image paths of copied files no package lists


def package_of(entry: Entry, index: DpkgIndex, root: RootFS) -> Package | None:
    """The package (``name``, ``source_name``, ``version``, ``architecture``) that
    planned ``entry`` (``plan.entries[path]``) comes from.

    For the layers and the records alike, for a ``--package`` root (whose dpkg
    database :mod:`scratchpack.packages.root` writes) and a host or ``--root``
    build: ``index`` is ``DpkgIndex.load(root)``. A file is looked up by the
    in-root path its bytes are copied from, a link by its path unless it leads
    to a directory; a directory and a generated file come from no package.
    """
    owned = _owned(entry, index, root)
    return index.packages[owned[0]] if owned is not None else None


def _owned(entry: Entry, index: DpkgIndex, root: RootFS) -> tuple[str, str] | None:
    origin = _origin(entry, root)
    return index.owned(origin) if origin is not None else None


def _origin(entry: Entry, root: RootFS) -> str | None:
    """The in-root path ``entry`` is a copy of, or None (generated, a directory)."""
    if entry.kind is EntryKind.FILE:
        if entry.source is None:
            return None
        if root.is_host:
            return entry.source
        top = root.top.rstrip("/") + "/"
        return "/" + entry.source[len(top) :] if entry.source.startswith(top) else None
    if entry.kind is EntryKind.SYMLINK and not root.is_dir(entry.path):
        return entry.path
    return None


def held_packages(
    entries: Iterable[Entry], index: DpkgIndex, root: RootFS, also: Iterable[str] = ()
) -> tuple[dict[str, set[str]], list[str]]:
    """Package key -> the paths of it (as it lists them) among ``entries``; and the
    in-image paths of the copied files no package lists. The owners of in-root paths
    ``also`` are looked for in the same pass over the package lists."""
    held: dict[str, set[str]] = {}
    unknown: list[str] = []
    entries = list(entries)
    origins = (origin for entry in entries if (origin := _origin(entry, root)) is not None)
    index.prime([*origins, *also])
    for entry in entries:
        owned = _owned(entry, index, root)
        if owned is not None:
            held.setdefault(owned[0], set()).add(owned[1])
        elif entry.kind is EntryKind.FILE and entry.source is not None:
            unknown.append(entry.path)
    return held, sorted(unknown)


def add_records(plan: RootPlan, root: RootFS, index: DpkgIndex) -> Records:
    """Plan the records of the packages whose files ``plan`` holds (see the module).

    The OS files come first, copied from the root, so base-files (whose files they
    are) is declared with the others; only when some package is held at all.
    """
    os_files = (OS_RELEASE, ETC_OS_RELEASE, DEBIAN_VERSION)  # asked about below, after these
    if not index.packages or not held_packages(plan.entries.values(), index, root, os_files)[0]:
        return Records()
    add_os_files(plan, root)
    held, unknown = held_packages(list(plan.entries.values()), index, root)
    names = record_names(index, held)
    for key, name in names.items():
        paragraph = index.paragraphs.get(key, "")
        record = record_paragraph(paragraph).encode("utf-8", "surrogateescape")  # bytes as read
        _add(plan, f"{STATUS_D}/{name}", record, name)
        md5sums = md5sums_text(index, key, held[key])
        if md5sums:
            _add(plan, f"{STATUS_D}/{name}.md5sums", md5sums, name)
    unknown = [path for path in unknown if not _recorded(plan, path)]  # a stale record replaced
    return Records(tuple(sorted(names.values())), tuple(unknown))


def _recorded(plan: RootPlan, path: str) -> bool:
    entry = plan.entries.get(path)
    return entry is not None and entry.reason is Reason.RECORD


def record_names(index: DpkgIndex, held: Iterable[str]) -> dict[str, str]:
    """Package key -> its status.d name: NAME; a second architecture's NAME:ARCH."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for key in sorted(held):
        package = index.packages[key]
        name = package.name
        if name in taken:
            name = f"{package.name}:{package.architecture}"
        taken.add(name)
        names[key] = name
    return names


def record_paragraph(paragraph: str) -> str:
    """``paragraph`` as a record: ``Status: install ok installed`` after ``Package``, dpkg's
    local fields (and their continuation lines) left out, the rest as written.

    Lines are split at ``\n`` alone, as the database was read (``splitlines`` would also
    split at ``\x85`` or ``\u2028`` inside a value and let a root add a paragraph of its
    own); a line of only blanks, which some parsers take for a paragraph's end, is dropped.
    """
    lines: list[str] = []
    keep = True
    seen: set[str] = {"status"}  # ours replaces the database's
    for line in paragraph.split("\n"):
        if not line.strip(" \t"):
            continue
        if line[:1] not in (" ", "\t"):
            field = line.partition(":")[0].strip()
            keep = field.lower() not in _LOCAL_FIELDS and field.lower() not in seen
            seen.add(field.lower())  # a field once: the first, as the database was read
            if keep:
                lines.append(line)
                if field.lower() == "package":
                    lines.append(INSTALLED)
        elif keep:
            lines.append(line)
    return "".join(f"{line}\n" for line in lines)


def md5sums_text(index: DpkgIndex, key: str, held: set[str]) -> bytes:
    """The package's md5sums lines for the ``held`` paths (absolute, as it lists them),
    sorted by path, once each, as dpkg writes them."""
    lines = {
        path: f"{md5}  {path}\n" for md5, path in index.md5sums(key).lines if "/" + path in held
    }
    return "".join(lines[path] for path in sorted(lines)).encode("utf-8", "surrogateescape")


def add_os_files(plan: RootPlan, root: RootFS) -> None:
    """The root's os-release (``/usr/lib``'s, with Debian's link in ``/etc``; else the
    ``/etc`` one as it is) and ``/etc/debian_version``, copied from inside the root;
    what the plan holds already stays."""
    if _fits(root, OS_RELEASE, MAX_OS_RELEASE):
        _copy(plan, root, OS_RELEASE, "os-release")
        if _free(plan, ETC_OS_RELEASE):
            link = Entry(
                ETC_OS_RELEASE, EntryKind.SYMLINK, 0o777, Reason.RECORD, "os-release",
                target=OS_RELEASE_LINK,
            )  # fmt: skip
            plan.add(link)
    elif _fits(root, ETC_OS_RELEASE, MAX_OS_RELEASE):
        _copy(plan, root, ETC_OS_RELEASE, "os-release")
    if _fits(root, DEBIAN_VERSION, MAX_DEBIAN_VERSION):
        _copy(plan, root, DEBIAN_VERSION, "debian_version")


def _fits(root: RootFS, path: str, limit: int) -> bool:
    """Whether the root has regular file ``path`` of at most ``limit`` bytes (one over it
    is not a Debian one: it is named, and left out)."""
    data = root.read_bytes(path, limit + 1)
    if data is not None and len(data) > limit:
        warn(f"{path}: over {limit >> 10} KiB in {root.top}; not recorded")
        return False
    return data is not None


def _copy(plan: RootPlan, root: RootFS, path: str, detail: str) -> None:
    if _free(plan, path):
        plan.add_path(root, path, Reason.RECORD, detail)


def _add(plan: RootPlan, path: str, data: bytes, detail: str) -> None:
    """A status.d file, unless ``--exclude`` leaves it out; it replaces a stale one."""
    if not plan.left_out(path, Reason.RECORD):
        plan.add_generated(path, data, Reason.RECORD, detail)


def _free(plan: RootPlan, path: str) -> bool:
    """No entry (but an implied directory) at ``path``, through the plan's links."""
    if plan.left_out(path, Reason.RECORD):
        return False
    existing = plan.entries.get(plan.through_links(path))
    return existing is None or existing.implied
