"""Assemble a minimal root: the files an image needs, planned before anything is written.

A :class:`RootPlan` maps in-image paths to entries (directories, symlinks,
files copied from the source root or generated). Every path the loader opens
keeps its symlink chain (``/lib -> usr/lib``, ``libz.so.1 -> libz.so.1.2.13``),
so each file is stored once and found under every name it is asked for.
Writing the plan to disk (:func:`write_tree`) or into a layer is a separate,
later stage.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scratchpack.errors import InputError
from scratchpack.inroot import Node, NodeKind, WalkError, walk
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.excludes import Excludes

DIR, SYMLINK, FILE = EntryKind.DIR, EntryKind.SYMLINK, EntryKind.FILE


PARENT_DIR_MODE = 0o755


@dataclass
class RootPlan:
    """The image's files, keyed by in-image path; the first claim on a path wins.

    ``source_parent_modes``: whether directories planned only on the way to a
    path keep the source's modes. An image's own tree (``shrink``) means its
    modes; the host's (``build``) does not: a binary under a 0700 ``mktemp -d``
    must still run as a non-root user, so those directories get 0755.

    ``excludes``: ``--exclude`` patterns; what they match is not planned,
    unless a program's closure needs it.
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    source_parent_modes: bool = True
    excludes: Excludes = field(default_factory=Excludes)
    # Trees planned whole (add_tree): a link into one of them brings nothing more.
    _brought: set[str] = field(default_factory=set, repr=False, compare=False)

    def add(self, entry: Entry, replace: bool = False) -> None:
        """Plan ``entry``, through the symlinks already planned, as extraction would.

        A path under a planned symlink lands where the link points (an include
        at ``/bin/tool`` goes to ``/usr/bin/tool`` when ``/bin -> usr/bin``). A
        symlink that arrives where only an implied parent directory stood takes
        its place, and what was planned below it moves through the new link.
        """
        path = self.through_links(entry.path)
        if path != entry.path:
            entry = dataclasses.replace(entry, path=path)
        existing = self.entries.get(path)
        if existing is not None and not replace:
            if existing.kind is entry.kind:
                if existing.implied:
                    self.entries[path] = entry
                elif entry.kind is FILE and _content(existing) != _content(entry):
                    warn(
                        f"{path}: kept the file of {existing.why}; "
                        f"the different one of {entry.why} is not in the image"
                    )
                return
            if existing.implied and existing.kind is DIR and entry.kind is SYMLINK:
                self._replace_dir_with_link(entry)
                return
            raise InputError(
                f"{entry.path}: wanted as a {entry.kind.value} ({entry.why}) "
                f"but already a {existing.kind.value} ({existing.why})"
            )
        self._add_parents(path, entry.reason)
        self.entries[path] = entry

    def _replace_dir_with_link(self, link: Entry) -> None:
        prefix = link.path + "/"
        moved = [self.entries.pop(path) for path in sorted(self.entries) if path.startswith(prefix)]
        self.entries[link.path] = link
        for entry in moved:
            if not entry.implied:
                self.add(entry)

    def through_links(self, path: str) -> str:
        """``path`` with every planned symlink among its parent directories followed."""
        try:
            walked = walk(path, self._node, follow_final=False, missing_literal=True)
        except WalkError:
            return path
        assert walked is not None  # missing components are taken literally
        return walked[1]

    def _node(self, path: str) -> Node | None:
        entry = self.entries.get(path)
        if entry is None:
            return None
        if entry.kind is SYMLINK:
            return Node(NodeKind.SYMLINK, entry.target)
        return Node(NodeKind.DIR if entry.kind is DIR else NodeKind.FILE)

    def _add_parents(self, path: str, reason: Reason) -> None:
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in self.entries:
            self.entries[parent] = Entry(parent, DIR, 0o755, reason, implied=True)
            parent = parent.rsplit("/", 1)[0]

    def add_generated(
        self, path: str, data: bytes, reason: Reason, detail: str | None = None, mode: int = 0o644
    ) -> None:
        """A file scratchpack writes itself (passwd, ld.so.cache); replaces a planned one."""
        self.add(Entry(path, FILE, mode, reason, detail, data=data), replace=True)

    def add_dir(
        self,
        path: str,
        mode: int,
        reason: Reason,
        detail: str | None = None,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        self.add(Entry(path, DIR, mode, reason, detail, uid=uid, gid=gid), replace=True)

    def left_out(self, path: str, reason: Reason) -> bool:
        """Whether ``--exclude`` leaves ``path`` out; a closure's file stays, with a warning."""
        if not self.excludes:
            return False
        pattern = self.excludes.match(path)
        if pattern is None:
            return False
        if reason.group == "closure":
            warn(f"{path}: matches --exclude {pattern}, but it is a program's {reason}; kept")
            return False
        return True

    def add_path(
        self, root: RootFS, path: str, reason: Reason, detail: str | None = None
    ) -> str | None:
        """Add ``path`` of ``root`` with every directory and symlink on its way.

        Returns the in-root path of the final file, or None when ``--exclude``
        leaves it out. Raises :class:`InputError` when the path does not
        resolve inside the root.
        """
        if self.left_out(path, reason):
            return None
        steps = root.trace(path)
        if steps is None:
            raise InputError(f"{path}: not found in {root.top}")
        if not steps:  # the root itself ("/", "/.."): every image has it, nothing to add
            return "/"
        if steps[-1].path != path and self.left_out(steps[-1].path, reason):
            return None
        for number, step in enumerate(steps, 1):
            mode = stat.S_IMODE(step.mode)
            # A directory only on the way: the host's mode is not the image's (see class).
            parent = step.kind == "dir" and number < len(steps) and not self.source_parent_modes
            if parent:
                mode = PARENT_DIR_MODE
            if step.kind == "symlink":
                self.add(Entry(step.path, SYMLINK, 0o777, reason, detail, target=step.target))
            elif step.kind == "dir":
                existing = self.entries.get(step.path)
                if existing is None or (existing.implied and not parent):
                    self.add(Entry(step.path, DIR, mode, reason, detail, implied=parent))
            else:
                self.add(
                    Entry(
                        step.path,
                        FILE,
                        mode,
                        reason,
                        detail,
                        source=step.host,
                        xattrs=_capabilities(step.host),
                        size_hint=step.size,
                    )
                )
        return steps[-1].path

    def add_listed(self, root: RootFS, path: str, reason: Reason) -> str | None:
        """Add a path a package lists: as :meth:`add_path`, but a symlink whose target
        is nowhere in the root is kept as the link it is.

        Packages ship such links on purpose (nginx's ``/usr/share/nginx/modules``
        points at modules that only a module package brings), and dpkg unpacks
        them as they are; the image should too, not refuse the package.
        """
        if root.trace(path) is not None:
            return self.add_path(root, path, reason)
        parent, name = posixpath.split(path)
        if self.left_out(path, reason) or not name:
            return None
        where = self.add_path(root, parent, reason)
        if where is None:
            return None
        host_parent = root.host_path(where)
        if host_parent is None:
            raise InputError(f"{path}: not found in {root.top}")
        try:
            target = os.readlink(os.path.join(host_parent, name))
        except OSError:
            raise InputError(f"{path}: not found in {root.top}") from None
        link = posixpath.join(where, name)
        self.add(Entry(link, SYMLINK, 0o777, reason, None, target=target))
        return link

    def add_tree(
        self,
        root: RootFS,
        path: str,
        reason: Reason,
        dest: str | None = None,
        detail: str | None = None,
    ) -> list[tuple[str, str]]:
        """Add a file or a whole directory tree of ``root`` (symlinks inside stay links).

        Without ``dest`` it keeps its place and the symlinks on its way; with
        ``dest`` it lands there. A symlink in the tree that points out of it
        brings its target, as the program will see it from the link's place in
        the image (nginx's ``sites-enabled/default``, the JDK's ``conf/*`` in
        ``/etc``); one that points nowhere is kept (with a warning when the root is this
        machine's). Returns
        ``(in-image path, in-root source path)`` of the regular files added, so
        callers can find the ELF files among them.
        """
        if dest is None:
            if self.left_out(path, reason):
                return []
            found = self.add_path(root, path, reason, detail)
            if found is None:
                return []
            dest = found
        elif self.left_out(dest, reason):
            return []
        host_top = root.host_path(path)
        if host_top is None:
            raise InputError(f"{path}: not found in {root.top}")
        source_top = root.realpath(path) or path
        top_info = os.stat(host_top)
        top_mode = root.image_mode(source_top, top_info.st_mode)
        if not stat.S_ISDIR(top_info.st_mode):
            size = top_info.st_size
            self.add(Entry(dest, FILE, top_mode, reason, detail, source=host_top, size_hint=size))
            return [(dest, source_top)]
        self.add(Entry(dest, DIR, top_mode, reason, detail))
        added: list[tuple[str, str]] = []
        links: list[tuple[str, str]] = []
        root.materialize_tree(path)  # a root unpacked lazily: every file below is read now
        for current, dirs, files in os.walk(host_top):
            relative = os.path.relpath(current, host_top)
            suffix = "" if relative == "." else f"/{relative}"
            image_dir = dest.rstrip("/") + suffix
            source_dir = source_top.rstrip("/") + suffix
            dirs[:] = sorted(d for d in dirs if not self.left_out(f"{image_dir}/{d}", reason))
            for name in [*dirs, *sorted(files)]:
                host = os.path.join(current, name)
                image_path = f"{image_dir}/{name}"
                if self.left_out(image_path, reason):
                    continue
                info = os.lstat(host)
                mode = root.image_mode(f"{source_dir}/{name}", info.st_mode)
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(host)
                    self.add(Entry(image_path, SYMLINK, 0o777, reason, detail, target=target))
                    links.append((image_path, target))
                elif stat.S_ISDIR(info.st_mode):
                    self.add(Entry(image_path, DIR, mode, reason, detail))
                elif stat.S_ISREG(info.st_mode):
                    self.add(
                        Entry(
                            image_path,
                            FILE,
                            mode,
                            reason,
                            detail,
                            source=host,
                            size_hint=info.st_size,
                        )
                    )
                    added.append((image_path, f"{source_dir}/{name}"))
                # Devices, sockets and fifos have no place in an image layer.
        self._brought.add(dest)
        for image_path, target in links:
            added += self._bring_link_target(root, image_path, target, reason)
        return added

    def _bring_link_target(
        self, root: RootFS, link: str, target: str, reason: Reason
    ) -> list[tuple[str, str]]:
        """The target of an included link that points out of what is planned, brought along."""
        pointed = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
        if root.trace(pointed) is None:
            # A root's link to nothing is as the packages ship it (tzdata's zoneinfo/localtime
            # -> /etc/localtime, see add_listed): kept silently. This machine's is worth a word.
            if root.is_host:
                warn(
                    f"{link} -> {target}: points to nothing in {root.top}; kept as a dangling link"
                )
            return []
        real = root.realpath(pointed) or pointed
        if any(within(path, tree) for tree in self._brought for path in (pointed, real)):
            return []  # inside a tree already planned (or being planned)
        if within(link, real):
            warn(f"{link} -> {target}: points to a directory that holds it; not brought along")
            return []
        return self.add_tree(root, pointed, reason, detail=f"target of {link}")

    def apply_owners(self, owners: Mapping[str, tuple[int, int]]) -> None:
        """Give entries the owners an unpacked image recorded (extraction does not chown)."""
        for path, entry in list(self.entries.items()):
            owner = owners.get(path)
            if owner is not None and owner != (0, 0) and entry.kind is not SYMLINK:
                self.entries[path] = dataclasses.replace(entry, uid=owner[0], gid=owner[1])

    def apply_xattrs(self, xattrs: Mapping[str, Mapping[str, bytes]]) -> None:
        """Give files the extended attributes an unpacked image recorded (file capabilities)."""
        for path, entry in list(self.entries.items()):
            found = xattrs.get(path)
            if found and entry.kind is FILE and entry.data is None:
                self.entries[path] = dataclasses.replace(entry, xattrs=tuple(sorted(found.items())))

    @property
    def files(self) -> list[Entry]:
        return [entry for entry in self.entries.values() if entry.kind is FILE]

    @property
    def size(self) -> int:
        """Bytes of file content in the image."""
        return sum(entry.size for entry in self.files)

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[path] for path in sorted(self.entries)]

    def added_by(self, later: RootPlan) -> list[Entry] | None:
        """The entries ``later`` (a copy of this plan, added to) adds, by path; None if it
        changed or dropped one of this plan's."""
        if any(later.entries.get(path) != entry for path, entry in self.entries.items()):
            return None
        return [later.entries[path] for path in sorted(later.entries.keys() - self.entries)]

    def copy(self) -> RootPlan:
        """A plan to add to while this one is read: the same entries, trees and excludes."""
        return RootPlan(
            dict(self.entries), self.source_parent_modes, self.excludes, set(self._brought)
        )


def within(path: str, tree: str) -> bool:
    """Whether ``path`` is ``tree`` or lies below it (``/usr/lib`` is not below ``/usr/li``)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def ancestors(path: str) -> list[str]:
    """The directories above ``path``, from the top: ``/a/b/c`` -> ``/a``, ``/a/b``."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def _capabilities(host: str) -> tuple[tuple[str, bytes], ...]:
    """A file's capabilities (``security.capability``): ping needs cap_net_raw to run."""
    try:
        return (("security.capability", os.getxattr(host, "security.capability")),)
    except OSError:
        return ()


def _content(entry: Entry) -> object:
    """What a file entry holds: its generated bytes, or the real file it copies."""
    if entry.data is not None:
        return entry.data
    return os.path.realpath(entry.source) if entry.source else None


def write_tree(entries: Iterable[Entry], destination: str) -> None:
    """Materialise entries under ``destination`` (a fresh directory), modes included.

    Ownership is not written here: the image writer sets it (uid/gid 0 unless
    an entry says otherwise), so this works unprivileged.
    """
    ordered = sorted(entries, key=lambda entry: entry.path)
    for entry in ordered:
        target = destination + entry.path
        if entry.kind is DIR:
            os.makedirs(target, exist_ok=True)
        elif entry.kind is SYMLINK:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            assert entry.target is not None
            os.symlink(entry.target, target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if entry.data is not None:
                with open(target, "wb") as stream:
                    stream.write(entry.data)
            else:
                assert entry.source is not None
                shutil.copyfile(entry.source, target, follow_symlinks=True)
    # Modes last, deepest first, so read-only directories do not block their contents.
    for entry in reversed(ordered):
        if entry.kind is not SYMLINK:
            os.chmod(destination + entry.path, entry.mode)
