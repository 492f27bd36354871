"""Apply an image's layers, in order, into an empty directory: safely.

The layers are untrusted input, so unpacking never lets an entry reach the
host: names are normalised lexically (a ``..`` that climbs above the root is
refused), and every parent directory is resolved *inside* the root the way a
chrooted process would see it (a symlink ``evil -> /etc`` leads to
``ROOT/etc``), which is also how umoci and Docker's chrooted unpacker behave.
The final component is never followed: what is there is replaced. Devices,
fifos and sockets are skipped; ownership is recorded, not applied, so the same
code works without privileges. Blob and ``diff_id`` digests are checked while
streaming (:meth:`~scratchpack.image.model.Layer.open_tar`), so a corrupt
archive fails instead of giving a silently wrong root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from scratchpack.errors import InputError
from scratchpack.image.model import Image
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk
from scratchpack.lazyroot import Entry, IndexColumn, RootIndex

_CHUNK = 1 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_PATH_MAX = 4096  # bytes of a path the kernel takes (PATH_MAX)
_NAME_MAX = 255  # bytes of one component (NAME_MAX)
_SHOWN = 200  # characters of a name a warning quotes


@dataclass
class UnpackReport:
    """What landed in the root. Keys are in-root absolute paths, symlinks in parents resolved."""

    files: int = 0  # regular files in the final tree (each hard link counted)
    dirs: int = 0  # directories in the final tree, the root excluded
    symlinks: int = 0
    hardlinks: int = 0  # hard-link entries created
    skipped_devices: int = 0  # character/block devices and fifos, never created
    whiteouts_applied: int = 0  # ``.wh.NAME`` and opaque-directory entries honoured
    bytes: int = 0  # size of the distinct regular files (inodes) in the final tree
    # (uid, gid) and permission bits from the tar; read-only views of the index when ``lazy``
    owners: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # e.g. security.capability
    warnings: list[str] = field(default_factory=list)  # refused or unresolvable entries
    lazy: RootIndex | None = None  # unpacked with ``lazy``: the index; nothing made on disk yet


def unpack(
    image: Image,
    destination: Path,
    where: str = "the image",
    progress: Callable[[int], None] | None = None,
    max_bytes: int | None = None,
    lazy: Path | None = None,
) -> UnpackReport:
    """Apply the layers of ``image`` in order into the empty directory ``destination``.

    ``progress(n)`` is called with the number of blob bytes just read (as
    stored), adding up to the layers' sizes. What the layers may write is
    bounded: ``max_bytes`` of file content (default: the free space where
    ``destination`` is) and as many entries as that file system has free
    inodes, so a small compressed layer cannot fill the disk. On error the
    destination is left half-written: unpack into a temporary directory and
    remove it. With ``lazy`` (a file outside ``destination``) nothing is made
    in ``destination``: the report's ``lazy`` is an index of the root, the
    files' bytes kept in ``lazy`` (:mod:`scratchpack.lazyroot`), and a RootFS
    of the root makes on disk only the paths it hands out.
    """
    count = len(image.layers)

    def layers() -> Iterator[tuple[str, contextlib.AbstractContextManager[tarfile.TarFile]]]:
        for number, layer in enumerate(image.layers, 1):
            if layer.size == 0:
                continue  # an empty blob: nothing to apply
            layer_where = f"{where}: layer {number}/{count}"
            yield layer_where, layer.open_tar(layer_where, progress)

    return unpack_tars(layers(), destination, max_bytes, lazy=lazy)


def unpack_tars(
    tars: Iterable[tuple[str, contextlib.AbstractContextManager[tarfile.TarFile]]],
    destination: Path,
    max_bytes: int | None = None,
    seen: Callable[[str, tarfile.TarInfo], None] | None = None,
    lazy: Path | None = None,
) -> UnpackReport:
    """Apply tar streams, in order, as layers into the empty directory ``destination``.

    Each item is a description for messages and a context manager that opens
    the stream (a layer's blob, a Debian package's data). The bounds and the
    safety rules of :func:`unpack` hold for all of them together. ``seen``
    is told of every member, with its stream's description (a package's file
    list is its data tar's names). ``lazy``: as for :func:`unpack`.
    """
    destination = Path(destination)
    if not destination.is_dir() or any(destination.iterdir()):
        raise InputError(f"{destination}: not an empty directory")
    report = UnpackReport()
    space = os.statvfs(destination)
    free = space.f_bavail * space.f_frsize
    budget = Budget(
        min(max_bytes, free) if max_bytes is not None else free,
        space.f_favail if space.f_files else None,
        "--max-unpacked-size" if max_bytes is not None and max_bytes <= free else "free space",
        str(destination.parent),
    )
    files = RootIndex(destination, lazy) if lazy is not None else None
    unpacker: _Applier = (
        _Unpacker(destination, report, budget)
        if files is None
        else _IndexUnpacker(files, report, budget)
    )
    try:
        for tar_where, opener in tars:
            with opener as tar:
                tar.tarinfo = QuickTarInfo  # the headers after the first, read faster
                unpacker.next_layer()
                for member in tar:
                    if seen is not None:
                        seen(tar_where, member)
                    unpacker.apply(tar, member, tar_where)
                    # A streamed TarFile keeps every member it read (hundreds of bytes
                    # each) for getmembers(); iterating reads on once the list is empty.
                    tar.members.clear()
        unpacker.finish()
    except BaseException:
        if files is not None:
            files.close()
        raise
    report.lazy = files
    return report


class UnpackTooLarge(InputError):
    """What is unpacked would pass its bound (free space, inodes or --max-unpacked-size)."""


class _Refused(Exception):
    """An entry that cannot be placed safely; skipped with a warning."""


@dataclass
class Budget:
    """What an unpack may still write: bytes of content and entries (inodes)."""

    bytes: int
    entries: int | None  # None: the file system does not count inodes
    limit: str  # what set the bound, for the message
    where: str

    def spend(self, size: int, what: str) -> None:
        self.bytes -= size
        if self.entries is not None:
            self.entries -= 1
        if self.bytes < 0 or (self.entries is not None and self.entries < 0):
            raise UnpackTooLarge(
                f"{what}: the image unpacks to more than the {self.limit} of {self.where} allows; "
                "it is refused (--max-unpacked-size SIZE sets the bound, TMPDIR the place)"
            )


class _Applier:
    """What both ways of unpacking share: which entries are refused, skipped or applied."""

    def __init__(self, report: UnpackReport, budget: Budget) -> None:
        self.report = report
        self.budget = budget

    def next_layer(self) -> None:
        """The entries that follow are the next layer's."""

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> None:
        too_long = _too_long(member.name, "its name") or _too_long(member.linkname, "its target")
        if too_long is not None:  # before any walk: each would cost as much as the name
            self.warn(f"{where}: skipped {_shown(member.name)!r}: {too_long}")
            return
        parts = inside(member.name)
        if parts is None:
            self.warn(f"{where}: refused {_shown(member.name)!r}: it climbs out of the root")
            return
        if not parts:
            if member.isdir():
                self.record_root(member)
            return
        *dirs, name = parts
        self.budget.spend(member.size if member.isreg() else 0, where)
        shown = _shown(member.name)
        try:
            if "\0" in member.name or "\0" in member.linkname:
                raise ValueError("embedded null byte")
            if name == _OPAQUE:
                self.opaque(dirs)
                self.report.whiteouts_applied += 1
            elif name.startswith(_WHITEOUT + _WHITEOUT):
                pass  # aufs bookkeeping (.wh..wh.plnk, ...), not content
            elif name.startswith(_WHITEOUT):
                if name[len(_WHITEOUT) :] in ("", ".", ".."):
                    raise _Refused("a whiteout without a name")
                self.whiteout(dirs, name[len(_WHITEOUT) :])
            elif member.ischr() or member.isblk() or member.isfifo():
                self.report.skipped_devices += 1
            elif member.isdir() or member.isreg() or member.issym() or member.islnk():
                self.place(tar, member, dirs, name, where)
            else:
                self.warn(f"{where}: skipped {shown!r}: unsupported tar type {member.type!r}")
        except _Refused as reason:
            self.warn(f"{where}: skipped {shown!r}: {reason}")
        except ValueError as err:  # a NUL byte in a name
            self.warn(f"{where}: skipped {shown!r}: {err}")
        except OSError as err:
            raise InputError(f"{where}: cannot unpack {shown!r}: {err.strerror or err}") from err

    def record_root(self, member: tarfile.TarInfo) -> None:
        raise NotImplementedError

    def opaque(self, dirs: list[str]) -> None:
        raise NotImplementedError

    def whiteout(self, dirs: list[str], name: str) -> None:
        raise NotImplementedError

    def place(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dirs: list[str], name: str, where: str
    ) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)


def _too_long(text: str, what: str) -> str | None:
    """Why a member's name or link target is past the kernel's bounds; None if it is not.

    The disk refuses such a path only when it is made (ENAMETOOLONG); an index
    would keep it, and walk a path of 20,000 components for every member.
    """
    if len(text) * 4 <= _NAME_MAX:
        return None  # four bytes a character at most: within both bounds
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate: counted as the three bytes it would be
        encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) > _PATH_MAX:
        return f"{what} is over {_PATH_MAX} bytes"
    if any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        return f"a component of {what} is over {_NAME_MAX} bytes"
    return None


def _shown(name: str) -> str:
    """``name`` as a warning quotes it: a long one cut in the middle."""
    if len(name) <= _SHOWN:
        return name
    return f"{name[: _SHOWN // 2]}...{name[-_SHOWN // 4 :]}"


def _directory(
    path: str, lookup: Callable[[str], Node | None], create: Callable[[str], Node] | None
) -> str | None:
    """The real in-root directory ``path`` leads to, links followed inside the root;
    None when a part is missing (and not created). Refused: a loop, a file on the way."""
    try:
        walked = walk(path, lookup, create=create)
    except WalkError as err:
        raise _Refused(str(err)) from None
    if walked is None:
        return None
    steps, real = walked
    if steps and steps[-1].node.kind is not NodeKind.DIR:
        raise _Refused(f"{real} is not a directory")
    return real


def _xattrs(pax: dict[str, str]) -> dict[str, bytes]:
    return {
        name.removeprefix("SCHILY.xattr."): value.encode("utf-8", "surrogateescape")
        for name, value in pax.items()
        if name.startswith("SCHILY.xattr.")
    }


class _Unpacker(_Applier):
    """Applies tar entries to a root on disk whose every path is resolved inside it."""

    def __init__(self, top: Path, report: UnpackReport, budget: Budget) -> None:
        super().__init__(report, budget)
        self.top = os.path.realpath(top)
        self.owners: dict[str, tuple[int, int]] = {}
        self.modes: dict[str, int] = {}
        report.owners, report.modes = self.owners, self.modes
        self.added: set[str] = set()  # in-root paths the current layer wrote
        # Resolved parent directories: a layer's files share a few hundred of them.
        # Forgotten whenever a directory or a link goes (the only way one changes).
        self._parents: dict[tuple[str, ...], list[str]] = {}

    def next_layer(self) -> None:
        self.added = set()

    def host(self, parts: list[str]) -> str:
        return os.path.join(self.top, *parts)

    def resolve(self, parts: list[str], create: bool) -> list[str] | None:
        """Real in-root components of directory ``parts``, symlinks followed inside the root.

        ``..`` and absolute targets stop at the root, as after ``chroot``; every
        prefix tried is already a real directory, so the kernel follows nothing.
        Missing directories are created (root-owned, 0755, like Docker) when
        ``create``; otherwise None.
        """
        key = tuple(parts)
        known = self._parents.get(key)
        if known is not None:
            return list(known)
        real = _directory("/" + "/".join(parts), self._node, self._create if create else None)
        if real is None:
            return None
        resolved = [] if real == "/" else real[1:].split("/")
        self._parents[key] = resolved
        return list(resolved)

    def _node(self, in_root: str) -> Node | None:
        host = self.top + in_root
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return Node(NodeKind.SYMLINK, os.readlink(host))
        return Node(NodeKind.DIR if stat.S_ISDIR(info.st_mode) else NodeKind.FILE)

    def _create(self, in_root: str) -> Node:
        os.mkdir(self.top + in_root, 0o700)  # final modes are set once every layer is applied
        self.record(in_root[1:].split("/"), 0, 0, 0o755, {})
        return Node(NodeKind.DIR)

    def record_root(self, member: tarfile.TarInfo) -> None:
        self.record([], member.uid, member.gid, member.mode, member.pax_headers)

    def place(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dirs: list[str], name: str, where: str
    ) -> None:
        parent = self.resolve(dirs, create=True)
        assert parent is not None
        path = [*parent, name]
        host = self.host(path)
        mode = member.mode
        if member.isdir():
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.lstat(host).st_mode):
                    self.remove(host)
            if not os.path.lexists(host):
                os.mkdir(host, 0o700)
        elif member.islnk():
            if not self.hardlink(member.linkname, host, where):
                return
            mode = os.lstat(host).st_mode
        elif member.issym():
            if not member.linkname:
                raise _Refused("a symbolic link to nothing")
            self.remove(host)
            os.symlink(member.linkname, host)
            mode = 0o777
        else:
            self.write_file(tar.extractfile(member), host, member.mode & 0o7777)
        self.record(path, member.uid, member.gid, mode, member.pax_headers)

    def write_file(self, source: IO[bytes] | None, host: str, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            descriptor = os.open(host, flags, 0o600)
        except FileExistsError:  # an earlier layer's: replaced, never written through
            self.remove(host)
            descriptor = os.open(host, flags, 0o600)
        try:
            while source is not None and (chunk := source.read(_CHUNK)):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(descriptor, view) :]
            # Content first: an unprivileged write after the chmod would clear setuid.
            os.fchmod(descriptor, mode)
        finally:
            os.close(descriptor)

    def hardlink(self, linkname: str, host: str, where: str) -> bool:
        """Link ``host`` to an already-unpacked file of the root; False (warned) if absent."""
        target_parts = inside(linkname)
        if not target_parts:
            raise _Refused(f"its link target {linkname!r} is outside the root")
        parent = self.resolve(target_parts[:-1], create=False)
        target = None if parent is None else self.host([*parent, target_parts[-1]])
        try:
            info = os.lstat(target) if target is not None else None
        except FileNotFoundError:
            info = None
        if target is None or info is None:
            self.warn(f"{where}: skipped hard link {host[len(self.top) :]}: no {linkname}")
            return False
        if stat.S_ISDIR(info.st_mode):
            raise _Refused(f"a hard link to the directory {linkname!r}")
        with contextlib.suppress(FileNotFoundError):
            existing = os.lstat(host)
            if (existing.st_dev, existing.st_ino) == (info.st_dev, info.st_ino):
                return True
        self.remove(host)
        os.link(target, host, follow_symlinks=False)
        self.report.hardlinks += 1
        return True

    def whiteout(self, dirs: list[str], name: str) -> None:
        """``.wh.NAME``: delete NAME as the lower layers left it."""
        parent = self.resolve(dirs, create=False)
        self.report.whiteouts_applied += 1
        if parent is not None and "/" + "/".join([*parent, name]) not in self.added:
            self.remove(self.host([*parent, name]))

    def opaque(self, dirs: list[str]) -> None:
        self._opaque(self.resolve(dirs, create=True) or [])

    def _opaque(self, directory: list[str]) -> None:
        """``.wh..wh..opq``: the directory keeps only what this layer put in it."""
        with os.scandir(self.host(directory)) as entries:
            children = list(entries)
        for child in children:
            key = "/" + "/".join([*directory, child.name])
            if key not in self.added:
                self.remove(child.path)
            elif child.is_dir(follow_symlinks=False):
                self._opaque([*directory, child.name])

    def remove(self, host: str) -> None:
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
            self._parents.clear()  # a cached parent may lead through it
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(host)
        else:
            os.unlink(host)

    def record(self, path: list[str], uid: int, gid: int, mode: int, pax: dict[str, str]) -> None:
        key = "/" + "/".join(path)
        self.owners[key] = (uid, gid)
        self.modes[key] = stat.S_IMODE(mode)
        xattrs = _xattrs(pax)
        if xattrs:
            self.report.xattrs[key] = xattrs
        else:
            self.report.xattrs.pop(key, None)
        self.added.add(key)

    def finish(self) -> None:
        """Count the final tree, give directories their modes, forget removed paths."""
        report = self.report
        present = {"/"}
        inodes: set[tuple[int, int]] = set()
        directories: list[tuple[str, str]] = []
        pending = [(self.top, "")]
        while pending:
            host, key = pending.pop()
            with os.scandir(host) as entries:
                for entry in entries:
                    child = f"{key}/{entry.name}"
                    present.add(child)
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        report.dirs += 1
                        pending.append((entry.path, child))
                        directories.append((entry.path, child))
                    elif stat.S_ISLNK(info.st_mode):
                        report.symlinks += 1
                    elif stat.S_ISREG(info.st_mode):
                        report.files += 1
                        if (info.st_dev, info.st_ino) not in inodes:
                            inodes.add((info.st_dev, info.st_ino))
                            report.bytes += info.st_size
        for host, key in reversed(directories):  # children before their parents
            os.chmod(host, self.modes.get(key, 0o755))
        for table in (self.owners, self.modes, report.xattrs):
            for key in [key for key in table if key not in present]:
                del table[key]


class _IndexUnpacker(_Applier):
    """Applies tar entries to a :class:`RootIndex`: nothing is made on disk but the bytes.

    The index's paths are canonical, so a parent already in it as a directory
    is resolved at once; any other goes through the index's own links, as on
    disk, with the same refusals and the same messages.
    """

    def __init__(self, index: RootIndex, report: UnpackReport, budget: Budget) -> None:
        super().__init__(report, budget)
        self.index = index
        self.entries = index.entries
        self.layer = 0
        self.cleared: set[str] = set()  # directories an opaque marker of this layer cleared
        # Parents resolved through a link: a layer's members share a few. Forgotten
        # whenever the index removes or replaces a directory or a link (index.changes).
        self._parents: dict[tuple[str, ...], str] = {}
        self._parents_at = index.changes
        report.owners = IndexColumn(index, lambda entry: entry.owner)
        report.modes = IndexColumn(index, lambda entry: stat.S_IMODE(entry.mode))
        report.xattrs = index.xattrs

    def next_layer(self) -> None:
        self.layer += 1
        self.cleared = set()

    def resolve(self, dirs: list[str], create: bool) -> str | None:
        """The canonical in-root directory ``dirs`` leads to; created when ``create``."""
        path = "/" + "/".join(dirs)
        known = self.entries.get(path)
        if known is not None and known.is_dir:
            return path
        if self._parents_at != self.index.changes:
            self._parents.clear()
            self._parents_at = self.index.changes
        key = tuple(dirs)
        cached = self._parents.get(key)
        if cached is not None:
            return cached
        real = _directory(path, self._node, self._create if create else None)
        if real is not None:
            self._parents[key] = real
        return real

    def _node(self, in_root: str) -> Node | None:
        entry = self.entries.get(in_root)
        if entry is None:
            return None
        if entry.is_link:
            return Node(NodeKind.SYMLINK, str(entry.link))
        return Node(NodeKind.DIR if entry.is_dir else NodeKind.FILE)

    def _create(self, in_root: str) -> Node:
        self.index.put(
            in_root, Entry(stat.S_IFDIR | 0o755, self.index.owner(0, 0), 0, 0, None, self.layer)
        )
        return Node(NodeKind.DIR)

    def record_root(self, member: tarfile.TarInfo) -> None:
        self.index.root_recorded = True
        self.set(
            "/",
            Entry(
                stat.S_IFDIR | stat.S_IMODE(member.mode),
                self.index.owner(member.uid, member.gid),
                0,
                0,
                None,
                self.layer,
            ),
            member.pax_headers,
        )

    def set(self, path: str, entry: Entry, pax: dict[str, str]) -> None:
        self.index.put(path, entry)
        xattrs = _xattrs(pax) if pax else None
        if xattrs:
            self.index.xattrs[path] = xattrs
        else:
            self.index.xattrs.pop(path, None)

    def place(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dirs: list[str], name: str, where: str
    ) -> None:
        parent = self.resolve(dirs, create=True)
        assert parent is not None
        path = f"{parent.rstrip('/')}/{name}"
        owner = self.index.owner(member.uid, member.gid)
        existing = self.entries.get(path)
        if member.isdir():
            if existing is not None and not existing.is_dir:
                self.index.remove(path)
            entry = Entry(stat.S_IFDIR | stat.S_IMODE(member.mode), owner, 0, 0, None, self.layer)
        elif member.islnk():
            linked = self.hardlink(member.linkname, path, where)
            if linked is None:
                return
            entry = linked._replace(owner=owner, layer=self.layer)
        elif member.issym():
            if not member.linkname:
                raise _Refused("a symbolic link to nothing")
            self.index.remove(path)
            entry = Entry(stat.S_IFLNK | 0o777, owner, 0, 0, member.linkname, self.layer)
        else:
            self.index.remove(path)
            offset, size, inode = self.index.new_file(_content(tar, member), member.size)
            mode = stat.S_IFREG | (member.mode & 0o7777)
            entry = Entry(mode, owner, offset, size, inode, self.layer)
        self.set(path, entry, member.pax_headers)

    def hardlink(self, linkname: str, path: str, where: str) -> Entry | None:
        """The entry ``path`` is to share with its link target; None (warned) if absent."""
        target_parts = inside(linkname)
        if not target_parts:
            raise _Refused(f"its link target {linkname!r} is outside the root")
        parent = self.resolve(target_parts[:-1], create=False)
        target = None if parent is None else f"{parent.rstrip('/')}/{target_parts[-1]}"
        linked = self.entries.get(target) if target is not None else None
        if linked is None:
            self.warn(f"{where}: skipped hard link {path}: no {linkname}")
            return None
        if linked.is_dir:
            raise _Refused(f"a hard link to the directory {linkname!r}")
        existing = self.entries.get(path)
        if existing is not None and existing.is_file and existing.link == linked.link:
            return linked  # already the same inode
        self.index.remove(path)
        self.report.hardlinks += 1
        return linked

    def whiteout(self, dirs: list[str], name: str) -> None:
        """``.wh.NAME``: delete NAME as the lower layers left it."""
        parent = self.resolve(dirs, create=False)
        self.report.whiteouts_applied += 1
        if parent is None:
            return
        path = f"{parent.rstrip('/')}/{name}"
        entry = self.entries.get(path)
        if entry is not None and entry.layer != self.layer:
            self.index.remove(path)

    def opaque(self, dirs: list[str]) -> None:
        """``.wh..wh..opq``: the directory keeps only what this layer put in it.

        Once a layer: a second marker would find only the layer's own entries (a
        hostile layer of many markers must not walk a large directory each time).
        """
        top = self.resolve(dirs, create=True) or "/"
        if top in self.cleared:
            return
        self.cleared.add(top)
        pending = [top]
        while pending:
            directory = pending.pop()
            for name in self.index.names(directory):
                path = f"{directory.rstrip('/')}/{name}"
                entry = self.entries[path]
                if entry.layer != self.layer:
                    self.index.remove(path)
                elif entry.is_dir:
                    pending.append(path)

    def finish(self) -> None:
        """Count the final tree; its bytes are complete."""
        self.index.done_writing()
        report = self.report
        inodes: set[int] = set()
        for path, entry in self.entries.items():
            if entry.is_dir:
                report.dirs += path != "/"
            elif entry.is_link:
                report.symlinks += 1
            else:
                report.files += 1
                if entry.link not in inodes:
                    inodes.add(entry.link)  # type: ignore[arg-type]
                    report.bytes += entry.size


def _content(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes] | None:
    """Where regular file ``member``'s bytes are read: the archive itself, at them,
    for a plain file (``extractfile`` costs an object or two per file)."""
    if member.sparse is not None or tar.fileobj is None:
        return tar.extractfile(member)
    tar.fileobj.seek(member.offset_data)
    return tar.fileobj


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")
_NUMBERS = (1, 2, 3, 4, 5, 6, 11, 12)  # mode uid gid size mtime chksum devmajor devminor
_TEXTS = (0, 8, 9, 10, 13)  # name, linkname, uname, gname, prefix


class QuickTarInfo(tarfile.TarInfo):
    """A TarInfo whose header is read in one struct call: a layer of 100,000 small files
    spends most of its reading time in :meth:`tarfile.TarInfo.frombuf`'s field helpers.

    The common header (octal numbers, no old GNU sparse map) is decoded here; any
    other, and any header this finds wrong, is decoded by tarfile itself, which
    then accepts or refuses it exactly as it always does.
    """

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        fields = _HEADER.unpack(buf)
        try:
            # int() refuses what tarfile would read otherwise (a NUL inside, a base-256
            # number, a byte that is no digit): that header goes to tarfile.
            numbers = [int(fields[number].partition(b"\0")[0] or b"0", 8) for number in _NUMBERS]
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if numbers[5] != 256 + sum(buf) - sum(buf[148:156]):
            return super().frombuf(buf, encoding, errors)  # a signed checksum, or a bad one
        obj = cls()
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime, obj.chksum, major, minor = numbers
        obj.devmajor, obj.devminor = major, minor
        name, linkname, uname, gname, prefix = (
            fields[number].partition(b"\0")[0].decode(encoding, errors) for number in _TEXTS
        )
        obj.name, obj.linkname, obj.uname, obj.gname = name, linkname, uname, gname
        obj.type = fields[7]
        if obj.type == tarfile.AREGTYPE and name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # the old V7 format's directory
        if obj.isdir():
            obj.name = name.rstrip("/")
        if prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = prefix + "/" + obj.name
        return obj
