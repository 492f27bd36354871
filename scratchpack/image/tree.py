"""An image's flattened tree from its layers' headers alone: what path is what.

Laying an application over a debug base needs to know the base's directories
and symlinks, not its bytes. The layers are read as the unpacker would apply
them (whiteouts and opaque directories honoured, parents resolved through the
tree's own symlinks, never leaving it), but nothing is written anywhere.
"""

from __future__ import annotations

import posixpath
import tarfile
from typing import Protocol

from scratchpack.image.model import Image
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class Keeper(Protocol):
    """What a reader of the same pass keeps of each member (see :func:`flattened_tree`)."""

    def __call__(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], path: str | None
    ) -> object: ...


def flattened_tree(image: Image, where: str, keep: Keeper | None = None) -> dict[str, Node]:
    """In-image path -> node of every path the image's filesystem holds.

    Linear in the layers' entries: a subtree is removed (a whiteout, an opaque
    directory, a directory replaced by a file) through each directory's children,
    never by scanning the whole tree, which a hostile layer of many entries would
    turn quadratic. ``keep``, if given, sees every member in the same pass, with the
    real path it is put at (None: it puts nothing); what it returns is the node's
    ``info``, so the final tree tells which layer's member stands at each path.
    """
    tree = _Tree()
    for number, layer in enumerate(image.layers, 1):
        if layer.size == 0:
            continue
        added: set[str] = set()  # this layer's entries and the directories they sit in
        cleared: set[str] = set()  # directories this layer's opaque markers cleared
        with layer.open_tar(f"{where}: layer {number}/{len(image.layers)}") as tar:
            for member in tar:
                tar.members.clear()  # a streamed TarFile would keep every member read
                parts = inside(member.name)
                if not parts:
                    continue
                path = _apply(tree, parts, added, cleared)
                info = keep(tar, member, parts, path) if keep is not None else None
                if path is None:
                    continue
                node = _node(member, info)
                if node.kind is not NodeKind.DIR:
                    tree.remove(path)  # what stood there, and below it
                tree.put(path, node)
                added.add(path)
                added.update(_ancestors(posixpath.dirname(path)))
    return tree.nodes


def _apply(tree: _Tree, parts: list[str], added: set[str], cleared: set[str]) -> str | None:
    """Where a member's node goes; None when it puts none (a whiteout, an opaque marker —
    both applied here — or a parent that is no directory)."""
    *dirs, name = parts
    parent = _resolve(tree, dirs, added)
    if parent is None:
        return None
    if name == _OPAQUE:
        if parent not in cleared:  # once: a second marker finds only this layer's
            tree.clear_below(parent, keep=added)
            cleared.add(parent)
        return None
    if name.startswith(_WHITEOUT + _WHITEOUT):
        return None
    if name.startswith(_WHITEOUT):
        tree.remove(f"{parent.rstrip('/')}/{name[len(_WHITEOUT) :]}")
        return None
    return f"{parent.rstrip('/')}/{name}"


def _ancestors(directory: str) -> list[str]:
    """``/a/b`` -> ``/a``, ``/a/b`` (not ``/``)."""
    parts = [part for part in directory.split("/") if part]
    return ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]


def _node(member: tarfile.TarInfo, info: object = None) -> Node:
    if member.issym():
        return Node(NodeKind.SYMLINK, member.linkname, info)
    if member.isdir():
        return Node(NodeKind.DIR, info=info)
    if member.isreg() or member.islnk():
        return Node(NodeKind.FILE, info=info)
    return Node(NodeKind.OTHER, info=info)


class _Tree:
    """The nodes by path, and each directory's children, kept together."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.children: dict[str, set[str]] = {}

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> Node:
        self.nodes[path] = node
        self.children.setdefault(posixpath.dirname(path), set()).add(path)
        return node

    def clear_below(self, top: str, keep: set[str]) -> None:
        """Everything below ``top`` but the paths in ``keep`` (an opaque directory hides
        the lower layers' entries; its own layer's stay, with what they hold of it)."""
        pending = [top]
        while pending:
            for child in list(self.children.get(pending.pop(), ())):
                if child in keep:
                    pending.append(child)
                else:
                    self.remove(child)

    def remove(self, path: str) -> None:
        """``path`` and everything below it, if it is there."""
        if self.nodes.pop(path, None) is None:
            return
        self.children.get(posixpath.dirname(path), set()).discard(path)
        pending = [path]
        while pending:
            for child in self.children.pop(pending.pop(), ()):
                self.nodes.pop(child, None)
                pending.append(child)


def _resolve(tree: _Tree, dirs: list[str], added: set[str]) -> str | None:
    """The real directory ``dirs`` leads to, through the tree's symlinks; the directories
    absent are made, as this layer's own (``added``: an opaque marker keeps them)."""

    def create(path: str) -> Node:
        added.update(_ancestors(path))
        return tree.put(path, Node(NodeKind.DIR))

    try:
        walked = walk("/" + "/".join(dirs), tree.get, create=create)
    except WalkError:
        return None
    if walked is None:
        return None
    steps, real = walked
    if steps and steps[-1].node.kind is not NodeKind.DIR:
        return None  # a file is no directory: the unpacker refuses such an entry too
    return real
