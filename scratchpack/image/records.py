"""An image's package records and release files, read from its layers without unpacking it.

``outdated`` needs a handful of small files of an image that may be gigabytes:
dpkg's ``status`` or distroless's ``status.d/*``, ``os-release`` and
``/etc/debian_version``. The layers' headers give the flattened tree
(:func:`~scratchpack.image.tree.flattened_tree`: whiteouts and opaque
directories honoured, links resolved inside it); in the same pass the bytes of
the members put at those files' own paths are kept, each bounded, and the final
tree tells whose stand. Only when a record is reached through a link to a path
not kept (``/var/lib/dpkg`` a link elsewhere), or a bound is passed, a second
pass reads the records as the final tree places them (and refuses as it always
has): a real image's layers are decompressed once, not twice. A link among
them is followed inside the image's tree, never on the host.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from scratchpack.errors import InputError, printable
from scratchpack.image.model import Image
from scratchpack.image.tree import flattened_tree
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk
from scratchpack.packages.updates import InstalledPackage, parse_status, tell_suite

STATUS = "/var/lib/dpkg/status"
STATUS_D = "/var/lib/dpkg/status.d"
OS_RELEASES = ("/etc/os-release", "/usr/lib/os-release")
DEBIAN_VERSION = "/etc/debian_version"
MAX_STATUS = 64 << 20  # bytes of dpkg's status (a large Debian image has a few MB)
MAX_SMALL = 1 << 20  # bytes of one status.d file, os-release, debian_version
MAX_KEPT = 256 << 20  # bytes kept over all layers
_NAMES = frozenset({"status", "os-release", "debian_version"})
_OWN_PATHS = frozenset({STATUS, DEBIAN_VERSION, *OS_RELEASES})  # and STATUS_D's files


@dataclass(frozen=True)
class ImageRecords:
    """What an image says it is and holds."""

    packages: tuple[InstalledPackage, ...]
    suite: str | None  # None: its Debian suite cannot be told
    record_files: tuple[str, ...]  # the files the packages were read from


def read_records(image: Image, where: str) -> ImageRecords:
    """The installed packages of ``image`` and its Debian suite, from its own files."""
    keeper = _OnePass()
    tree = flattened_tree(image, where, keep=keeper)
    status_d = _status_d_files(tree)  # a scan of the whole tree: once
    kept = keeper.records(tree, status_d)
    if kept is None:  # a record reached through a link elsewhere, or a bound passed
        kept = _kept_files(image, tree, where)

    def text(path: str) -> str | None:
        real = _real(tree, path)
        data = kept.get(real) if real else None
        return data.decode("utf-8", "replace") if data is not None else None

    packages: list[InstalledPackage] = []
    files: list[str] = []
    for path in status_d:
        body = text(path)
        if body is not None:
            packages += parse_status(body, f"{where}: {printable(path)}", need_installed=False)
            files.append(path)
    status = text(STATUS)
    if status is not None:
        packages += parse_status(status, f"{where}: {STATUS}")
        files.append(STATUS)
    os_release = next((found for path in OS_RELEASES if (found := text(path))), None)
    suite = tell_suite(os_release, text(DEBIAN_VERSION))
    return ImageRecords(tuple(dict.fromkeys(packages)), suite, tuple(files))


def _status_d_files(tree: dict[str, Node]) -> list[str]:
    """The paths in the tree's ``status.d`` (through its links), its ``.md5sums`` left out."""
    status_d = _real(tree, STATUS_D, directory=True)
    if status_d is None:
        return []
    inside_it = (path for path in tree if path.rsplit("/", 1)[0] == status_d)
    return sorted(path for path in inside_it if not path.endswith(".md5sums"))


@dataclass
class _OnePass:
    """The bytes of the members put at the records' own paths, kept while the tree is made.

    Bounded as :func:`_kept_files` is: a member of a record's name (wherever it is)
    over its limit, or all of them together over ``MAX_KEPT``, drops everything kept
    and leaves the verdict to the second pass, which refuses exactly as it always has.
    """

    kept: dict[int, bytes] = field(default_factory=dict)  # by the token in the node's info
    total: int = 0
    overflowed: bool = False

    def __call__(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], path: str | None
    ) -> int | None:
        if self.overflowed or not member.isreg() or not _wanted(parts):
            return None
        limit = _limit(parts)
        self.total += member.size
        if member.size > limit or self.total > MAX_KEPT:
            self.overflowed = True
            self.kept.clear()
            return None
        if path is None or not _own_path(path) or path.endswith(".md5sums"):
            return None
        handle = tar.extractfile(member)
        token = len(self.kept) + 1
        self.kept[token] = handle.read(limit) if handle is not None else b""
        return token

    def records(self, tree: dict[str, Node], status_d: list[str]) -> dict[str, bytes] | None:
        """The record files' bytes by real path (``status_d``: the files of the tree's
        status.d); None when one of them was not kept."""
        if self.overflowed:
            return None
        found: dict[str, bytes] = {}
        for real in _record_files(tree, status_d):
            data = self.kept.get(tree[real].info)  # type: ignore[arg-type]
            if data is None:  # a link elsewhere, or a hard link: read as before
                self.kept.clear()
                return None
            found[real] = data
        return found


def _record_files(tree: dict[str, Node], status_d: list[str]) -> Iterator[str]:
    """The real paths of the files :func:`read_records` may read."""
    for path in (*status_d, STATUS, *OS_RELEASES, DEBIAN_VERSION):
        real = _real(tree, path)
        if real is not None:
            yield real


def _own_path(path: str) -> bool:
    return path in _OWN_PATHS or posixpath.dirname(path) == STATUS_D


def _real(tree: dict[str, Node], path: str, directory: bool = False) -> str | None:
    """The real path ``path`` leads to in the tree (its links followed inside), if the kind fits."""
    try:
        walked = walk(path, tree.get)
    except WalkError:
        return None
    if walked is None:
        return None
    node = tree.get(walked[1])
    wanted = NodeKind.DIR if directory else NodeKind.FILE
    return walked[1] if node is not None and node.kind is wanted else None


def _kept_files(image: Image, tree: dict[str, Node], where: str) -> dict[str, bytes]:
    """The bytes of the record and release files, by real path; the last layer's win."""
    kept: dict[str, bytes] = {}
    total = 0
    for number, layer in enumerate(image.layers, 1):
        if layer.size == 0:
            continue
        with layer.open_tar(f"{where}: layer {number}/{len(image.layers)}") as tar:
            for member in tar:
                parts = inside(member.name)
                if not parts or not member.isreg() or not _wanted(parts):
                    continue
                real = _real_parent(tree, parts)
                if real is None:
                    continue
                limit = _limit(parts)
                if member.size > limit:
                    raise InputError(
                        f"{where}: {printable(real)} is larger than {limit >> 20} MiB: "
                        "not a package record"
                    )
                total += member.size
                if total > MAX_KEPT:
                    raise InputError(
                        f"{where}: its record files hold more than {MAX_KEPT >> 20} MiB"
                    )
                handle = tar.extractfile(member)
                kept[real] = handle.read(limit) if handle is not None else b""
    return kept


def _limit(parts: list[str]) -> int:
    return MAX_STATUS if parts[-1] == "status" else MAX_SMALL


def _wanted(parts: list[str]) -> bool:
    return parts[-1] in _NAMES or (len(parts) > 1 and parts[-2] == "status.d")


def _real_parent(tree: dict[str, Node], parts: list[str]) -> str | None:
    """The real path of a layer's file: its directories resolved through the final tree."""
    parent = _real(tree, "/" + "/".join(parts[:-1]), directory=True) if parts[:-1] else "/"
    return None if parent is None else f"{parent.rstrip('/')}/{parts[-1]}"
