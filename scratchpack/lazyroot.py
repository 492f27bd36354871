"""An unpacked root whose regular files wait in one content file until they are looked at.

Creating a file costs the kernel far more than writing its bytes: an image of
100,000 small files spends most of an unpack creating inodes that ``shrink``
deletes unread, since it keeps only what the program needs. ``shrink``
therefore unpacks with :class:`LazyFiles`: directories, symbolic links and
hard links are made as usual, but a regular file's bytes are appended to one
content file, and the file is created, with its mode, the first time
:class:`~scratchpack.ld.rootfs.RootFS` looks it up (an lstat that would miss
it). Listing and walking through RootFS see both kinds, so every stage reads
the same tree it would read fully unpacked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # search, no read right needed


@dataclass(frozen=True, slots=True)
class LazyFile:
    """Where a regular file's bytes are in the content file, and its permission bits."""

    offset: int
    size: int
    mode: int  # setuid, setgid and sticky bits included


class LazyFiles:
    """The regular files of an unpacked root that are not created yet, by in-root path.

    Paths are the unpacker's: absolute, every parent a real directory of the
    root (no symlink on the way), so ``top + path`` names the file to create.
    """

    def __init__(self, top: str | os.PathLike[str], store: Path) -> None:
        self.top = os.path.realpath(top)
        self.store = store
        self._writer: IO[bytes] | None = open(store, "wb")  # noqa: SIM115 - closed by close()
        self._reader: int | None = None
        self._end = 0
        self._files: dict[str, LazyFile] = {}
        self._children: dict[str, set[str]] = {}  # in-root directory -> its lazy files' names

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def items(self) -> list[tuple[str, LazyFile]]:
        return list(self._files.items())

    def add(self, path: str, source: IO[bytes] | None, size: int, mode: int) -> None:
        """Keep the ``size`` bytes ``source`` gives as regular file ``path`` (replacing one)."""
        assert self._writer is not None, "add after close"
        offset = self._end
        copied = 0
        while source is not None and copied < size:
            chunk = source.read(min(_CHUNK, size - copied))
            if not chunk:
                break
            self._writer.write(chunk)
            copied += len(chunk)
        self._end += copied
        self._files[path] = LazyFile(offset, copied, mode)
        parent, name = posixpath.split(path)
        self._children.setdefault(parent, set()).add(name)

    def discard(self, path: str) -> None:
        """Forget ``path`` (a layer removed or replaced it)."""
        if self._files.pop(path, None) is not None:
            parent, name = posixpath.split(path)
            names = self._children[parent]
            names.discard(name)
            if not names:
                del self._children[parent]

    def discard_under(self, directory: str) -> None:
        """Forget every file below ``directory`` (a layer removed the directory)."""
        for parent in self._below(directory):
            for name in self._children.pop(parent):
                del self._files[posixpath.join(parent, name)]

    def names_in(self, directory: str) -> set[str]:
        """The names of the lazy files directly in in-root ``directory``."""
        return set(self._children.get(directory, ()))

    def materialize(self, path: str) -> bool:
        """Create ``path`` from its kept bytes; False when it is not a lazy file."""
        entry = self._files.get(path)
        if entry is None:
            return False
        if self._writer is not None:
            self._writer.flush()
        if self._reader is None:
            self._reader = os.open(self.store, os.O_RDONLY | os.O_CLOEXEC)
        directory, descriptor = self._create(path)
        try:
            try:
                self._copy(entry, descriptor)
            finally:
                os.close(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):  # never a half-written file at the path
                os.unlink(posixpath.basename(path), dir_fd=directory)
            raise
        finally:
            os.close(directory)
        self.discard(path)
        return True

    def _copy(self, entry: LazyFile, descriptor: int) -> None:
        assert self._reader is not None
        done = 0
        while done < entry.size:
            chunk = os.pread(self._reader, min(_CHUNK, entry.size - done), entry.offset + done)
            if not chunk:
                raise OSError(errno.EIO, "the content file is cut short", str(self.store))
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
            done += len(chunk)
        # Content first: an unprivileged write after the chmod would clear setuid.
        os.fchmod(descriptor, entry.mode)

    def _create(self, path: str) -> tuple[int, int]:
        """The new file ``path`` opened for writing, and its directory; no link followed.

        Each directory on the way is opened with ``O_NOFOLLOW`` from the top:
        whatever a layer did to the tree, the file lands inside the root. The
        unpacker gives directories their modes once every layer is applied, so
        a file created later may meet a 0555 directory: without privileges the
        directory is made writable for the moment.
        """
        *parents, name = path.strip("/").split("/")
        directory = os.open(self.top, _DIRECTORY)
        try:
            for part in parents:
                below = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
                os.close(directory)
                directory = below
            try:
                return directory, os.open(name, _CREATE, 0o600, dir_fd=directory)
            except PermissionError:
                # An O_PATH descriptor takes no fchmod; its /proc link names that inode.
                itself = f"/proc/self/fd/{directory}"
                mode = stat.S_IMODE(os.stat(itself).st_mode)
                os.chmod(itself, mode | stat.S_IRWXU)
                try:
                    return directory, os.open(name, _CREATE, 0o600, dir_fd=directory)
                finally:
                    os.chmod(itself, mode)
        except BaseException:
            os.close(directory)
            raise

    def materialize_under(self, directory: str) -> None:
        """Create every lazy file below ``directory``: a tree about to be copied whole."""
        for parent in self._below(directory):
            for name in sorted(self._children.get(parent, ())):
                self.materialize(posixpath.join(parent, name))

    def _below(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return [
            parent for parent in self._children if parent == directory or parent.startswith(prefix)
        ]

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


class LazyRoot(os.PathLike[str]):
    """An unpacked root's directory that brings its lazy files along to every RootFS of it."""

    def __init__(self, path: str | os.PathLike[str], files: LazyFiles) -> None:
        self.path = Path(path)
        self.files = files

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"LazyRoot({str(self.path)!r}, {len(self.files)} lazy files)"
