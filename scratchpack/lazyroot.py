"""An unpacked root kept as an index of its layers' entries: the disk sees only what is used.

Creating a file or a directory costs the kernel far more than writing its
bytes: an image of 100,000 small files, each in a directory of its own, spends
most of an unpack making inodes that ``shrink`` then deletes unread, since it
keeps only what the program needs. ``shrink`` therefore unpacks into a
:class:`RootIndex`: every entry the layers leave (directories, symbolic links,
regular files and hard links, whiteouts and opaque directories applied) is a
line of the index, with its mode and owner, and the regular files' bytes are
appended to one content file. :class:`~scratchpack.ld.rootfs.RootFS` answers
lookups, listings, walks and reads from the index; a path is made on disk,
with its parent directories, only when a caller needs a real host path (to
open it as a file, to copy it into the output).

Paths of the index are canonical: absolute, every parent a real directory of
the index (no link on the way), so ``top + path`` names a path that only this
module ever creates. It still opens every parent with ``O_NOFOLLOW`` from the
top, so whatever happened to the directory, what it makes lands inside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, NamedTuple, TypeVar

_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # search, no read right needed
_MADE_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # to fchmod
_T = TypeVar("_T")


class Entry(NamedTuple):
    """One path of the index: a tuple, a few dozen bytes, for 100,000s of them."""

    mode: int  # st_mode: the type bits and the permission bits (setuid... included)
    owner: tuple[int, int]  # (uid, gid) from the tar, shared between entries
    offset: int  # a regular file's bytes in the content file
    size: int
    link: str | int | None  # a symlink's target; a regular file's inode (hard links share it)
    layer: int  # the layer that placed it (a whiteout or opaque marker spares its own layer's)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


_ROOT = Entry(stat.S_IFDIR | 0o755, (0, 0), 0, 0, None, 0)


class RootIndex:
    """The entries of an unpacked root by in-root path, their bytes in one content file."""

    def __init__(self, top: str | os.PathLike[str], store: Path) -> None:
        self.top = os.path.realpath(top)
        self.store = store
        self._writer: IO[bytes] | None = open(store, "wb")  # noqa: SIM115 - closed by close()
        self._reader: int | None = None
        self._end = 0
        self.entries: dict[str, Entry] = {"/": _ROOT}
        # Directory -> the names placed in it, each once (a dict keeps their order). A
        # removed name stays until the directory goes (the entries are the truth):
        # removal never searches, and a name placed again and again is kept once.
        self._children: dict[str, dict[str, None]] = {}
        self.xattrs: dict[str, dict[str, bytes]] = {}
        self.root_recorded = False  # a layer gave "/" an entry of its own
        self._owners: dict[tuple[int, int], tuple[int, int]] = {}
        self._inodes = 0
        self._made: set[str] = {"/"}  # paths created on disk
        self._made_inodes: dict[int, str] = {}  # inode -> the path that holds it on disk
        # Counts the removals and replacements of directories and links: what a path
        # with a link on its way leads to changes only then (see _IndexUnpacker).
        self.changes = 0

    # -- building ------------------------------------------------------------------------

    def owner(self, uid: int, gid: int) -> tuple[int, int]:
        """One shared tuple per (uid, gid)."""
        key = (uid, gid)
        return self._owners.setdefault(key, key)

    def put(self, path: str, entry: Entry) -> None:
        """Place ``entry`` at canonical ``path`` (its parent is a directory of the index)."""
        existing = self.entries.get(path)
        if existing is None:
            parent, _, name = path.rpartition("/")
            self._children.setdefault(parent or "/", {}).setdefault(sys.intern(name))
        elif existing.is_link or (existing.is_dir and not entry.is_dir):
            self.changes += 1
        self.entries[path] = entry

    def new_file(self, source: IO[bytes] | None, size: int) -> tuple[int, int, int]:
        """Keep the ``size`` bytes ``source`` gives: (offset, bytes kept, new inode)."""
        assert self._writer is not None, "a file added after done_writing"
        offset = self._end
        copied = 0
        while source is not None and copied < size:
            chunk = source.read(min(_CHUNK, size - copied))
            if not chunk:
                break
            self._writer.write(chunk)
            copied += len(chunk)
        self._end += copied
        self._inodes += 1
        return offset, copied, self._inodes

    def remove(self, path: str) -> None:
        """``path`` and, for a directory, everything below it."""
        entry = self.entries.pop(path, None)
        if entry is None:
            return
        self.xattrs.pop(path, None)
        if entry.is_link:
            self.changes += 1
        if not entry.is_dir:
            return
        self.changes += 1
        pending = [path]
        while pending:
            directory = pending.pop()
            for name in self._children.pop(directory, ()):
                child = f"{directory.rstrip('/')}/{name}"
                removed = self.entries.pop(child, None)
                if removed is not None:
                    self.xattrs.pop(child, None)
                    if removed.is_dir:
                        pending.append(child)

    def names(self, directory: str) -> list[str]:
        """The names in canonical directory ``directory``, in the order they were placed."""
        prefix = directory.rstrip("/") + "/"
        entries = self.entries
        return [name for name in self._children.get(directory, ()) if prefix + name in entries]

    def done_writing(self) -> None:
        """Every layer is applied: the content file is complete."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self.done_writing()
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None

    # -- what the unpacked root holds ----------------------------------------------------

    def __contains__(self, path: str) -> bool:
        """Whether ``path`` is a regular file of the index not created on disk yet."""
        entry = self.entries.get(path)
        return entry is not None and entry.is_file and path not in self._made

    def __len__(self) -> int:
        """The regular files not created on disk yet."""
        made = self._made
        return sum(1 for path, entry in self.entries.items() if entry.is_file and path not in made)

    def paths(self) -> Iterator[str]:
        """Every in-root path but ``/`` (``/`` too when a layer recorded it)."""
        for path in self.entries:
            if path != "/" or self.root_recorded:
                yield path

    def read(self, path: str, limit: int = -1) -> bytes:
        """The bytes of regular file ``path`` (its first ``limit``), from the content file."""
        entry = self.entries[path]
        size = entry.size if limit < 0 else min(limit, entry.size)
        return b"".join(self._chunks(entry.offset, size))

    def _chunks(self, offset: int, size: int) -> Iterator[bytes]:
        if self._writer is not None:
            self._writer.flush()
        if self._reader is None:
            self._reader = os.open(self.store, os.O_RDONLY | os.O_CLOEXEC)
        done = 0
        while done < size:
            chunk = os.pread(self._reader, min(_CHUNK, size - done), offset + done)
            if not chunk:
                raise OSError(errno.EIO, "the content file is cut short", str(self.store))
            done += len(chunk)
            yield chunk

    # -- making paths on disk ------------------------------------------------------------

    def materialize(self, path: str) -> bool:
        """Create ``path`` and its parents on disk; False when the index has no ``path``."""
        entry = self.entries.get(path)
        if entry is None:
            return False
        if path in self._made:
            return True
        *parents, name = path.strip("/").split("/")
        directory = os.open(self.top, _DIRECTORY)
        try:
            here = ""
            for part in parents:
                here += "/" + part
                if here not in self._made:
                    self._make(directory, part, here)
                below = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
                os.close(directory)
                directory = below
            self._make(directory, name, path)
        finally:
            os.close(directory)
        return True

    def materialize_under(self, directory: str) -> None:
        """Create ``directory`` and everything below it: a tree about to be read whole."""
        pending = [directory]
        while pending:
            path = pending.pop()
            self.materialize(path)
            entry = self.entries.get(path)
            if entry is not None and entry.is_dir:
                prefix = path.rstrip("/") + "/"
                pending.extend(prefix + name for name in reversed(self.names(path)))

    def _make(self, directory: int, name: str, path: str) -> None:
        entry = self.entries.get(path)
        if entry is None:
            raise OSError(errno.ENOENT, "not in the unpacked root", path)
        if entry.is_dir:
            _writable(directory, lambda: os.mkdir(name, 0o700, dir_fd=directory))
            made = os.open(name, _MADE_DIRECTORY, dir_fd=directory)
            try:
                os.fchmod(made, stat.S_IMODE(entry.mode))
                _usable(made, directory, name, stat.S_IRUSR | stat.S_IXUSR)
            finally:
                os.close(made)
        elif entry.is_link:
            _writable(directory, lambda: os.symlink(str(entry.link), name, dir_fd=directory))
        elif isinstance(entry.link, int) and entry.link in self._made_inodes:
            self._link(directory, name, self._made_inodes[entry.link])
        else:
            self._create_file(directory, name, entry)
            if isinstance(entry.link, int):
                self._made_inodes[entry.link] = path
        self._made.add(path)

    def _link(self, directory: int, name: str, existing: str) -> None:
        """A hard link ``name`` to the inode already made at ``existing``."""
        *parents, existing_name = existing.strip("/").split("/")
        source = os.open(self.top, _DIRECTORY)
        try:
            for part in parents:
                below = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=source)
                os.close(source)
                source = below
            _writable(
                directory,
                lambda: os.link(
                    existing_name,
                    name,
                    src_dir_fd=source,
                    dst_dir_fd=directory,
                    follow_symlinks=False,
                ),
            )
        finally:
            os.close(source)

    def _create_file(self, directory: int, name: str, entry: Entry) -> None:
        descriptor = _writable(directory, lambda: os.open(name, _CREATE, 0o600, dir_fd=directory))
        try:
            try:
                for chunk in self._chunks(entry.offset, entry.size):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(descriptor, view) :]
                # Content first: an unprivileged write after the chmod would clear setuid.
                os.fchmod(descriptor, stat.S_IMODE(entry.mode))
                _usable(descriptor, directory, name, stat.S_IRUSR)
            finally:
                os.close(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):  # never a half-written file at the path
                os.unlink(name, dir_fd=directory)
            raise


def _usable(made: int, directory: int, name: str, needed: int) -> None:
    """Add the owner's ``needed`` bits to ``name`` (open as ``made``) when this process,
    without privileges, could not use it under the image's mode (a directory of mode 0,
    a file of mode 0): its files are read and its tree removed. The image's mode stays
    the index's (:attr:`Entry.mode`), which a plan takes; root keeps it on disk too."""
    mode = stat.S_IMODE(os.fstat(made).st_mode)
    if mode & needed == needed:
        return
    rights = (os.R_OK if needed & stat.S_IRUSR else 0) | (os.X_OK if needed & stat.S_IXUSR else 0)
    if not os.access(name, rights, dir_fd=directory, effective_ids=True, follow_symlinks=False):
        os.fchmod(made, mode | needed)


def _writable(directory: int, action: Callable[[], _T]) -> _T:
    """``action`` in ``directory``, made writable for the moment if it is not (0555).

    Directories get their modes when they are made; without privileges a
    read-only one takes nothing more until it is opened for a moment.
    """
    try:
        return action()
    except PermissionError:
        # An O_PATH descriptor takes no fchmod; its /proc link names that inode.
        itself = f"/proc/self/fd/{directory}"
        mode = stat.S_IMODE(os.stat(itself).st_mode)
        os.chmod(itself, mode | stat.S_IRWXU)
        try:
            return action()
        finally:
            os.chmod(itself, mode)


class IndexColumn(Mapping[str, _T]):
    """One fact of every path of an index (owner, mode), read as a dict would be."""

    def __init__(self, index: RootIndex, fact: Callable[[Entry], _T]) -> None:
        self._index = index
        self._fact = fact

    def __getitem__(self, path: str) -> _T:
        if path == "/" and not self._index.root_recorded:
            raise KeyError(path)
        return self._fact(self._index.entries[path])

    def __iter__(self) -> Iterator[str]:
        return self._index.paths()

    def __len__(self) -> int:
        return len(self._index.entries) - (0 if self._index.root_recorded else 1)


class LazyRoot(os.PathLike[str]):
    """An unpacked root's directory that brings its index along to every RootFS of it."""

    def __init__(self, path: str | os.PathLike[str], files: RootIndex) -> None:
        self.path = Path(path)
        self.files = files

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"LazyRoot({str(self.path)!r}, {len(self.files.entries)} entries)"
