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
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchpack.errors import InputError
from scratchpack.image.model import Image
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk
from scratchpack.lazyroot import LazyFiles

_CHUNK = 1 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


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
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)  # (uid, gid) from the tar
    modes: dict[str, int] = field(default_factory=dict)  # permission bits from the tar
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # e.g. security.capability
    warnings: list[str] = field(default_factory=list)  # refused or unresolvable entries
    lazy: LazyFiles | None = None  # unpacked with ``lazy``: the regular files not created yet


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
    remove it. With ``lazy`` (a file outside ``destination``) regular files
    are kept there instead of created (:mod:`scratchpack.lazyroot`): the
    report's ``lazy`` creates them when a RootFS of the root looks them up.
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
    files = LazyFiles(destination, lazy) if lazy is not None else None
    unpacker = _Unpacker(destination, report, budget, files)
    try:
        for tar_where, opener in tars:
            with opener as tar:
                unpacker.added = set()
                for member in tar:
                    if seen is not None:
                        seen(tar_where, member)
                    unpacker.apply(tar, member, tar_where)
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


class _Unpacker:
    """Applies tar entries to a root whose every path is resolved inside it."""

    def __init__(
        self, top: Path, report: UnpackReport, budget: Budget, lazy: LazyFiles | None = None
    ) -> None:
        self.top = os.path.realpath(top)
        self.report = report
        self.budget = budget
        self.lazy = lazy  # regular files kept there rather than created
        self.added: set[str] = set()  # in-root paths the current layer wrote
        # Resolved parent directories: a layer's files share a few hundred of them.
        # Forgotten whenever a directory or a link goes (the only way one changes).
        self._parents: dict[tuple[str, ...], list[str]] = {}

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
        try:
            walked = walk(
                "/" + "/".join(parts), self._node, create=self._create if create else None
            )
        except WalkError as err:
            raise _Refused(str(err)) from None
        if walked is None:
            return None
        steps, real = walked
        if steps and steps[-1].node.kind is not NodeKind.DIR:
            raise _Refused(f"{real} is not a directory")
        resolved = [] if real == "/" else real[1:].split("/")
        self._parents[key] = resolved
        return list(resolved)

    def _node(self, in_root: str) -> Node | None:
        host = self.top + in_root
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return Node(NodeKind.FILE) if self.lazy is not None and in_root in self.lazy else None
        if stat.S_ISLNK(info.st_mode):
            return Node(NodeKind.SYMLINK, os.readlink(host))
        return Node(NodeKind.DIR if stat.S_ISDIR(info.st_mode) else NodeKind.FILE)

    def _create(self, in_root: str) -> Node:
        os.mkdir(self.top + in_root, 0o700)  # final modes are set once every layer is applied
        self.record(in_root[1:].split("/"), 0, 0, 0o755, {})
        return Node(NodeKind.DIR)

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> None:
        parts = inside(member.name)
        if parts is None:
            self.warn(f"{where}: refused {member.name!r}: it climbs out of the root")
            return
        if not parts:
            if member.isdir():
                self.record([], member.uid, member.gid, member.mode, member.pax_headers)
            return
        *dirs, name = parts
        self.budget.spend(member.size if member.isreg() else 0, where)
        try:
            if name == _OPAQUE:
                self.opaque(self.resolve(dirs, create=True) or [])
                self.report.whiteouts_applied += 1
            elif name.startswith(_WHITEOUT + _WHITEOUT):
                pass  # aufs bookkeeping (.wh..wh.plnk, ...), not content
            elif name.startswith(_WHITEOUT):
                self.whiteout(dirs, name[len(_WHITEOUT) :])
            elif member.ischr() or member.isblk() or member.isfifo():
                self.report.skipped_devices += 1
            elif member.isdir() or member.isreg() or member.issym() or member.islnk():
                self.place(tar, member, dirs, name, where)
            else:
                self.warn(f"{where}: skipped {member.name!r}: unsupported tar type {member.type!r}")
        except _Refused as reason:
            self.warn(f"{where}: skipped {member.name!r}: {reason}")
        except ValueError as err:  # a NUL byte in a name
            self.warn(f"{where}: skipped {member.name!r}: {err}")
        except OSError as err:
            raise InputError(
                f"{where}: cannot unpack {member.name!r}: {err.strerror or err}"
            ) from err

    def place(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dirs: list[str], name: str, where: str
    ) -> None:
        parent = self.resolve(dirs, create=True)
        assert parent is not None
        path = [*parent, name]
        host = self.host(path)
        mode = member.mode
        if self.lazy is not None:
            key = "/" + "/".join(path)
            if member.isreg() and not member.sparse:
                self.remove(host)  # what an earlier layer had there, lazy or not
                self.lazy.add(key, tar.extractfile(member), member.size, member.mode & 0o7777)
                self.record(path, member.uid, member.gid, mode, member.pax_headers)
                return
            if member.isdir() or member.isreg():  # links replace it once they are checked
                self.lazy.discard(key)
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
            source = tar.extractfile(member)
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
                os.fchmod(descriptor, member.mode & 0o7777)
            finally:
                os.close(descriptor)
        self.record(path, member.uid, member.gid, mode, member.pax_headers)

    def hardlink(self, linkname: str, host: str, where: str) -> bool:
        """Link ``host`` to an already-unpacked file of the root; False (warned) if absent."""
        target_parts = inside(linkname)
        if not target_parts:
            raise _Refused(f"its link target {linkname!r} is outside the root")
        parent = self.resolve(target_parts[:-1], create=False)
        target = None if parent is None else self.host([*parent, target_parts[-1]])
        if target is not None and self.lazy is not None:
            self.lazy.materialize(target[len(self.top) :])  # a link needs the inode
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
        if name in ("", ".", ".."):
            raise _Refused("a whiteout without a name")
        parent = self.resolve(dirs, create=False)
        self.report.whiteouts_applied += 1
        if parent is not None and "/" + "/".join([*parent, name]) not in self.added:
            self.remove(self.host([*parent, name]))

    def opaque(self, directory: list[str]) -> None:
        """``.wh..wh..opq``: the directory keeps only what this layer put in it."""
        with os.scandir(self.host(directory)) as entries:
            children = list(entries)
        if self.lazy is not None:
            key = "/" + "/".join(directory)
            for name in self.lazy.names_in(key):
                if posixpath.join(key, name) not in self.added:
                    self.lazy.discard(posixpath.join(key, name))
        for child in children:
            key = "/" + "/".join([*directory, child.name])
            if key not in self.added:
                self.remove(child.path)
            elif child.is_dir(follow_symlinks=False):
                self.opaque([*directory, child.name])

    def remove(self, host: str) -> None:
        if self.lazy is not None:
            self.lazy.discard(host[len(self.top) :])
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
            self._parents.clear()  # a cached parent may lead through it
        if stat.S_ISDIR(info.st_mode):
            if self.lazy is not None:
                self.lazy.discard_under(host[len(self.top) :])
            shutil.rmtree(host)
        else:
            os.unlink(host)

    def record(self, path: list[str], uid: int, gid: int, mode: int, pax: dict[str, str]) -> None:
        key = "/" + "/".join(path)
        self.report.owners[key] = (uid, gid)
        self.report.modes[key] = stat.S_IMODE(mode)
        xattrs = {
            name.removeprefix("SCHILY.xattr."): value.encode("utf-8", "surrogateescape")
            for name, value in pax.items()
            if name.startswith("SCHILY.xattr.")
        }
        if xattrs:
            self.report.xattrs[key] = xattrs
        else:
            self.report.xattrs.pop(key, None)
        self.added.add(key)

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)

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
        if self.lazy is not None:
            self.lazy.done_writing()
            for key, lazy_file in self.lazy.items():
                present.add(key)
                report.files += 1
                report.bytes += lazy_file.size
        for host, key in reversed(directories):  # children before their parents
            os.chmod(host, report.modes.get(key, 0o755))
        for table in (report.owners, report.modes, report.xattrs):
            for key in [key for key in table if key not in present]:
                del table[key]
