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
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from scratchpack.inroot import Node, NodeKind, WalkError, walk
from scratchpack.lazyroot import LazyRoot


@dataclass(frozen=True, slots=True)
class PathStep:
    """One component met on the way to a file: a real directory, a symlink, or the file."""

    path: str  # in-root absolute path of this component
    kind: str  # "dir" | "symlink" | "file" (a regular file); "other" only inside RootFS
    host: str  # where it is on the host
    mode: int  # st_mode from lstat
    target: str | None  # the symlink's target, as written
    size: int = 0  # st_size from lstat


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
        # A root unpacked lazily: its regular files are created when looked up here.
        self.lazy = top.files if isinstance(top, LazyRoot) and not self.is_host else None

    def __repr__(self) -> str:
        return f"RootFS({self.top!r})"

    def host_path(self, path: str) -> str | None:
        """Host path of in-root ``path``, every symlink resolved; None if it is absent."""
        if self.is_host:
            return path
        real = self.realpath(path)
        return None if real is None else self.top + real

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
        try:
            info = os.lstat(host)
        except OSError:
            if self.lazy is None or not self.lazy.materialize(in_root):
                return None
            info = os.lstat(host)
        if stat.S_ISLNK(info.st_mode):
            return Node(NodeKind.SYMLINK, os.readlink(host), (host, info))
        return Node(_kind(info.st_mode), None, (host, info))

    def exists(self, path: str) -> bool:
        host = self.host_path(path)
        return host is not None and os.path.exists(host)

    def is_elf(self, path: str) -> bool:
        """Whether ``path`` is a regular file that starts like an ELF file."""
        host = self.host_path(path)
        if host is None or not os.path.isfile(host):
            return False
        try:
            with open(host, "rb") as stream:
                return stream.read(4) == b"\x7fELF"
        except OSError:
            return False

    def is_dir(self, path: str) -> bool:
        host = self.host_path(path)
        return host is not None and os.path.isdir(host)

    def read_bytes(self, path: str, limit: int = -1) -> bytes | None:
        """The regular file's bytes (the first ``limit``), or None when absent or not a file.

        A FIFO or a device in the root must not block or stream forever: the file
        is opened non-blocking and read only when it is a regular file.
        """
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
            host_parent = self.top + real_parent if not self.is_host else real_parent
            names = {
                os.path.basename(host)
                for host in glob.glob(os.path.join(glob.escape(host_parent), name_pattern))
            }
            names.update(self._lazy_matches(real_parent, name_pattern))
            matches.extend(parent.rstrip("/") + "/" + name for name in names)
        return sorted(matches)

    def _lazy_matches(self, directory: str, name_pattern: str) -> list[str]:
        """The lazy files of ``directory`` that glob(3) would match (dot files by a dot)."""
        if self.lazy is None:
            return []
        names = self.lazy.names_in(directory)
        if not glob.has_magic(name_pattern):
            return [name_pattern] if name_pattern in names else []
        return [
            name
            for name in names
            if fnmatch.fnmatchcase(name, name_pattern)
            and (not name.startswith(".") or name_pattern.startswith("."))
        ]

    def listdir(self, path: str) -> list[str] | None:
        """The names in directory ``path`` (lazy files too), sorted; None if it is not one."""
        real = self.realpath(path)
        host = self.host_path(path)
        if real is None or host is None or not os.path.isdir(host):
            return None
        try:
            names = set(os.listdir(host))
        except OSError:
            return None
        if self.lazy is not None:
            names |= self.lazy.names_in(real)
        return sorted(names)

    def walk(self, path: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """:func:`os.walk` of directory ``path`` on the host, lazy files among the files.

        The yielded ``dirs`` list may be pruned in place, as with os.walk;
        nothing is walked when ``path`` is not a directory.
        """
        host = self.host_path(path)
        if host is None or not os.path.isdir(host):
            return
        for current, dirs, files in os.walk(host):
            if self.lazy is not None:
                in_root = current[len(self.top) :] or "/"
                files = sorted({*files, *self.lazy.names_in(in_root)})
            yield current, dirs, files

    def materialize_tree(self, path: str) -> None:
        """Create every lazy file below ``path``: a tree about to be read file by file."""
        real = self.realpath(path)
        if self.lazy is not None and real is not None:
            self.lazy.materialize_under(real)
