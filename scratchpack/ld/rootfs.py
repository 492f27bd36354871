"""A filesystem tree seen from inside: paths and symlinks resolve within its top.

With ``--root DIR`` every absolute path the loader would use (ld.so.conf, the
cache, library directories, symlink targets, absolute or relative) must land
inside DIR, as it would after ``chroot DIR``, and never reach the host. The
host root ``/`` needs no such care, so it takes the kernel's own resolution.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from scratchpack.inroot import Node, NodeKind, WalkError, walk
from scratchpack.lazyroot import Entry, LazyRoot


@dataclass(frozen=True, slots=True)
class PathStep:
    """One component met on the way to a file: a real directory, a symlink, or the file."""

    path: str  # in-root absolute path of this component
    kind: str  # "dir" | "symlink" | "file" (a regular file); "other" only inside RootFS
    host: str  # where it is on the host
    mode: int  # st_mode from lstat
    target: str | None  # the symlink's target, as written
    size: int = 0  # st_size from lstat


class _IndexStat(NamedTuple):
    """What a PathStep takes from an lstat, for a path of an index (not on disk)."""

    st_mode: int
    st_size: int


def _kind(mode: int) -> NodeKind:
    if stat.S_ISDIR(mode):
        return NodeKind.DIR
    return NodeKind.FILE if stat.S_ISREG(mode) else NodeKind.OTHER


def open_regular(host: str, follow: bool = True) -> int:
    """A read-only descriptor of regular file ``host``, opened without blocking.

    Raises :class:`OSError` (``EISDIR`` for a directory, ``EINVAL`` for a FIFO,
    socket or device) instead of waiting on a FIFO's writer or a device. With
    ``follow`` false a final symlink is refused (the path is already resolved).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(host, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise OSError(errno.EISDIR, "is a directory", host)
            raise OSError(errno.EINVAL, "not a regular file", host)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(host: str, follow: bool = True, limit: int = -1) -> bytes | None:
    """The bytes of regular file ``host`` (its first ``limit``); None when absent or not a file."""
    try:
        fd = open_regular(host, follow)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as stream:
            return stream.read(limit)
    except OSError:
        return None


class RootFS:
    """Maps in-root absolute paths to host paths, following symlinks inside the root."""

    def __init__(self, top: str | os.PathLike[str] | None = None) -> None:
        self.top = os.path.realpath(top) if top else "/"
        self.is_host = self.top == "/"
        self._real_cache: dict[str, str | None] = {}
        # A root unpacked as an index: lookups read the index, and a path is made on
        # disk (with its parents) when a host path of it is handed out.
        self.lazy = top.files if isinstance(top, LazyRoot) and not self.is_host else None

    def __repr__(self) -> str:
        return f"RootFS({self.top!r})"

    def host_path(self, path: str) -> str | None:
        """Host path of in-root ``path``, every symlink resolved; None if it is absent."""
        if self.is_host:
            return path
        real = self.realpath(path)
        if real is None:
            return None
        if self.lazy is not None:
            self._materialize(real)
        return self.top + real

    def _materialize(self, real: str) -> None:
        """Make canonical ``real`` on disk; a directory with the links in it, which callers
        tell from its other entries by their host paths (``os.path.islink``, ``readlink``)."""
        assert self.lazy is not None
        self.lazy.materialize(real)
        entry = self.lazy.entries.get(real)
        if entry is not None and entry.is_dir:
            prefix = real.rstrip("/") + "/"
            for name in self.lazy.names(real):
                if self.lazy.entries[prefix + name].is_link:
                    self.lazy.materialize(prefix + name)

    def realpath(self, path: str) -> str | None:
        """In-root canonical path of absolute ``path``, or None when a component is missing."""
        if self.is_host:
            real = os.path.realpath(path)
            return real if os.path.lexists(real) else None
        if not path.startswith("/"):
            path = "/" + path
        cached = self._real_cache.get(path, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        result = self._resolve(path)
        self._real_cache[path] = result
        return result

    def _resolve(self, path: str) -> str | None:
        # A FIFO, socket or device still has a path: callers stat it and say what it is.
        steps = self._walk(path)
        if steps is None:
            return None
        return steps[-1].path if steps else "/"

    def trace(self, path: str) -> list[PathStep] | None:
        """Every directory and symlink met while resolving absolute ``path``, then the file.

        An image must reproduce the chain (``/lib -> usr/lib``, SONAME links),
        not just the final file, for the loader to open the path it opens here.
        None when a component is missing, the links loop, or the final component
        is not a directory, a symlink or a regular file (a FIFO, a socket, a
        device node): every step returned is one of "dir", "symlink", "file".
        """
        steps = self._walk(path)
        if steps is not None and steps and steps[-1].kind == "other":
            return None
        if steps and self.lazy is not None:
            for step in steps:  # every step's host path is handed out
                self.lazy.materialize(step.path)
        return steps

    def _walk(self, path: str) -> list[PathStep] | None:
        """:meth:`trace`, with a final component of any type (kind "other" for the rest)."""
        try:
            walked = walk(path, self._node)
        except WalkError:
            return None
        if walked is None:
            return None
        return [
            PathStep(
                step.path, step.node.kind.value, host, info.st_mode, step.node.target, info.st_size
            )
            for step in walked[0]
            for host, info in (step.node.info,)
        ]

    def _node(self, in_root: str) -> Node | None:
        host = in_root if self.is_host else self.top + in_root
        if self.lazy is not None:
            entry = self.lazy.entries.get(in_root)
            if entry is None:
                return None
            info = (host, _IndexStat(entry.mode, entry.size))
            if entry.is_link:
                return Node(NodeKind.SYMLINK, str(entry.link), info)
            return Node(NodeKind.DIR if entry.is_dir else NodeKind.FILE, None, info)
        try:
            info = os.lstat(host)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return Node(NodeKind.SYMLINK, os.readlink(host), (host, info))
        return Node(_kind(info.st_mode), None, (host, info))

    def image_mode(self, real: str, on_disk: int) -> int:
        """The permission bits the image gives ``real`` (a canonical in-root path): the
        index's, for a root unpacked as one (its copy on disk may have gained its owner's
        bits, so an unprivileged run can read it), else those of ``on_disk``, an lstat's."""
        if self.lazy is not None:
            entry = self.lazy.entries.get(real)
            if entry is not None:
                return stat.S_IMODE(entry.mode)
        return stat.S_IMODE(on_disk)

    def _entry(self, path: str) -> tuple[str, Entry] | None:
        """The canonical path and the index entry ``path`` leads to (an index root only)."""
        assert self.lazy is not None
        real = self.realpath(path)
        entry = None if real is None else self.lazy.entries.get(real)
        return None if real is None or entry is None else (real, entry)

    def is_link(self, path: str) -> bool:
        """Whether the last component of ``path`` is a symbolic link (its parents followed)."""
        parent, name = posixpath.split(path)
        real_parent = self.realpath(parent or "/")
        if real_parent is None or not name:
            return False
        link = real_parent.rstrip("/") + "/" + name
        if self.lazy is not None:
            entry = self.lazy.entries.get(link)
            return entry is not None and entry.is_link
        return os.path.islink(link if self.is_host else self.top + link)

    def exists(self, path: str) -> bool:
        if self.lazy is not None:
            return self.realpath(path) is not None
        host = self.host_path(path)
        return host is not None and os.path.exists(host)

    def is_elf(self, path: str) -> bool:
        """Whether ``path`` is a regular file that starts like an ELF file."""
        if self.lazy is not None:
            try:
                return self.read_bytes(path, 4) == b"\x7fELF"
            except OSError:
                return False
        host = self.host_path(path)
        if host is None or not os.path.isfile(host):
            return False
        try:
            with open(host, "rb") as stream:
                return stream.read(4) == b"\x7fELF"
        except OSError:
            return False

    def is_dir(self, path: str) -> bool:
        if self.lazy is not None:
            found = self._entry(path)
            return found is not None and found[1].is_dir
        host = self.host_path(path)
        return host is not None and os.path.isdir(host)

    def read_bytes(self, path: str, limit: int = -1) -> bytes | None:
        """The regular file's bytes (the first ``limit``), or None when absent or not a file.

        A FIFO or a device in the root must not block or stream forever: the file
        is opened non-blocking and read only when it is a regular file. An index
        root's file is read from its content file, not made on disk.
        """
        if self.lazy is not None:
            found = self._entry(path)
            if found is None or not found[1].is_file:
                return None
            return self.lazy.read(found[0], limit)
        host = self.host_path(path)
        if host is None:
            return None
        return read_regular(host, follow=self.is_host, limit=limit)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    def glob(self, pattern: str) -> list[str]:
        """In-root paths matching absolute ``pattern``, sorted like glob(3).

        The directory part is resolved inside the root first, so a symlinked
        ``/etc/ld.so.conf.d`` cannot lead the match onto the host.
        """
        directory, _, name_pattern = pattern.rpartition("/")
        # Wildcards in directories are rare; each level is expanded inside the root.
        parents = self.glob(directory) if glob.has_magic(directory) else [directory or "/"]
        matches: list[str] = []
        for parent in parents:
            real_parent = self.realpath(parent)
            if real_parent is None:
                continue
            if self.lazy is not None:
                names = set(self._index_matches(real_parent, name_pattern))
            else:
                host_parent = self.top + real_parent if not self.is_host else real_parent
                names = {
                    os.path.basename(host)
                    for host in glob.glob(os.path.join(glob.escape(host_parent), name_pattern))
                }
            matches.extend(parent.rstrip("/") + "/" + name for name in names)
        return sorted(matches)

    def _index_matches(self, directory: str, name_pattern: str) -> list[str]:
        """The names of ``directory`` that glob(3) would match (dot files by a dot)."""
        assert self.lazy is not None
        names = self.lazy.names(directory)
        if not glob.has_magic(name_pattern):
            return [name_pattern] if name_pattern in names else []
        return [
            name
            for name in names
            if fnmatch.fnmatchcase(name, name_pattern)
            and (not name.startswith(".") or name_pattern.startswith("."))
        ]

    def listdir(self, path: str) -> list[str] | None:
        """The names in directory ``path``, sorted; None if it is not one."""
        if self.lazy is not None:
            found = self._entry(path)
            if found is None or not found[1].is_dir:
                return None
            return sorted(self.lazy.names(found[0]))
        host = self.host_path(path)
        if host is None or not os.path.isdir(host):
            return None
        try:
            return sorted(os.listdir(host))
        except OSError:
            return None

    def walk(self, path: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """:func:`os.walk` of directory ``path`` on the host (of the index, for an index root).

        The yielded ``dirs`` list may be pruned in place, as with os.walk;
        nothing is walked when ``path`` is not a directory.
        """
        if self.lazy is not None:
            found = self._entry(path)
            if found is not None and found[1].is_dir:
                yield from self._walk_index(found[0])
            return
        host = self.host_path(path)
        if host is None or not os.path.isdir(host):
            return
        yield from os.walk(host)

    def _walk_index(self, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """os.walk's answers from the index: a link to a directory among the directories
        (made on disk, for a caller's ``islink``), never walked into."""
        assert self.lazy is not None
        entries = self.lazy.entries
        pending = [top]
        while pending:
            current = pending.pop()
            prefix = current.rstrip("/") + "/"
            dirs: list[str] = []
            files: list[str] = []
            for name in self.lazy.names(current):
                entry = entries[prefix + name]
                if entry.is_dir:
                    dirs.append(name)
                elif entry.is_link and self.is_dir(prefix + name):
                    self.lazy.materialize(prefix + name)
                    dirs.append(name)
                else:
                    files.append(name)
            yield self.top + current, dirs, files
            pending.extend(
                prefix + name
                for name in reversed(dirs)
                if (entry := entries.get(prefix + name)) is not None and entry.is_dir
            )

    def materialize_tree(self, path: str) -> None:
        """Make everything below ``path`` on disk: a tree about to be read file by file."""
        real = self.realpath(path)
        if self.lazy is not None and real is not None:
            self.lazy.materialize_under(real)
