"""An image's flattened tree from its layers' headers alone: what path is what.

Laying an application over a debug base needs to know the base's directories
and symlinks, not its bytes. The layers are read as the unpacker would apply
them (whiteouts and opaque directories honoured, parents resolved through the
tree's own symlinks, never leaving it), but nothing is written anywhere.
"""

from __future__ import annotations

import posixpath
import tarfile

from scratchpack.image.model import Image
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def flattened_tree(image: Image, where: str) -> dict[str, Node]:
    """In-image path -> node of every path the image's filesystem holds.

    Linear in the layers' entries: a subtree is removed (a whiteout, an opaque
    directory, a directory replaced by a file) through each directory's children,
    never by scanning the whole tree, which a hostile layer of many entries would
    turn quadratic.
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
                *dirs, name = parts
                parent = _resolve(tree, dirs, added)
                if parent is None:
                    continue
                path = f"{parent.rstrip('/')}/{name}"
                if name == _OPAQUE:
                    if parent not in cleared:  # once: a second marker finds only this layer's
                        tree.clear_below(parent, keep=added)
                        cleared.add(parent)
                elif name.startswith(_WHITEOUT + _WHITEOUT):
                    continue
                elif name.startswith(_WHITEOUT):
                    tree.remove(f"{parent.rstrip('/')}/{name[len(_WHITEOUT) :]}")
                else:
                    node = _node(member)
                    if node.kind is not NodeKind.DIR:
                        tree.remove(path)  # what stood there, and below it
                    tree.put(path, node)
                    added.add(path)
                    added.update(_ancestors(parent))
    return tree.nodes


def _ancestors(directory: str) -> list[str]:
    """``/a/b`` -> ``/a``, ``/a/b`` (not ``/``)."""
    parts = [part for part in directory.split("/") if part]
    return ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]


def _node(member: tarfile.TarInfo) -> Node:
    if member.issym():
        return Node(NodeKind.SYMLINK, member.linkname)
    if member.isdir():
        return Node(NodeKind.DIR)
    if member.isreg() or member.islnk():
        return Node(NodeKind.FILE)
    return Node(NodeKind.OTHER)


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
