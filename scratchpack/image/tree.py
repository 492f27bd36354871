"""An image's flattened tree from its layers' headers alone: what path is what.

Laying an application over a debug base needs to know the base's directories
and symlinks, not its bytes. The layers are read as the unpacker would apply
them (whiteouts and opaque directories honoured, parents resolved through the
tree's own symlinks, never leaving it), but nothing is written anywhere.
"""

from __future__ import annotations

from scratchpack.image.model import Image
from scratchpack.inroot import Node, NodeKind, WalkError, inside, walk

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def flattened_tree(image: Image, where: str) -> dict[str, Node]:
    """In-image path -> node of every path the image's filesystem holds."""
    tree: dict[str, Node] = {}
    for number, layer in enumerate(image.layers, 1):
        if layer.size == 0:
            continue
        added: set[str] = set()
        with layer.open_tar(f"{where}: layer {number}/{len(image.layers)}") as tar:
            for member in tar:
                parts = inside(member.name)
                if not parts:
                    continue
                *dirs, name = parts
                parent = _resolve(tree, dirs)
                if parent is None:
                    continue
                path = f"{parent.rstrip('/')}/{name}"
                if name == _OPAQUE:
                    prefix = parent.rstrip("/") + "/"
                    for key in [k for k in tree if k.startswith(prefix) and k not in added]:
                        del tree[key]
                elif name.startswith(_WHITEOUT + _WHITEOUT):
                    continue
                elif name.startswith(_WHITEOUT):
                    gone = f"{parent.rstrip('/')}/{name[len(_WHITEOUT) :]}"
                    for key in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                        del tree[key]
                else:
                    if member.issym():
                        node = Node(NodeKind.SYMLINK, member.linkname)
                    elif member.isdir():
                        node = Node(NodeKind.DIR)
                    elif member.isreg() or member.islnk():
                        node = Node(NodeKind.FILE)
                    else:
                        node = Node(NodeKind.OTHER)
                    if node.kind is not NodeKind.DIR:
                        for key in [k for k in tree if k.startswith(path + "/")]:
                            del tree[key]
                    tree[path] = node
                    added.add(path)
    return tree


def _resolve(tree: dict[str, Node], dirs: list[str]) -> str | None:
    """The real directory ``dirs`` leads to, through the tree's symlinks (created if absent)."""

    def create(path: str) -> Node:
        tree[path] = Node(NodeKind.DIR)
        return tree[path]

    try:
        walked = walk("/" + "/".join(dirs), tree.get, create=create)
    except WalkError:
        return None
    return None if walked is None else walked[1]
