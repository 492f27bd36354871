"""The flattened tree of an image's layers: the same answer as the plain definition.

``flattened_tree`` removes subtrees through each directory's children (a hostile
layer of many entries must not make it quadratic); the reference here is the
definition written plainly, scanning every path, and random layer stacks of
files, directories, whiteouts and opaque markers must agree with it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scratchpack.image.readers import open_image
from scratchpack.image.tree import flattened_tree
from scratchpack.inroot import NodeKind
from tests.imagekit import d, f, layer, write_docker_archive

NAMES = ("a", "b", "c")


def _reference(layers: list[list[tuple[str, str]]]) -> dict[str, NodeKind]:
    """The plain definition: each layer applied in order, subtrees found by scanning."""
    tree: dict[str, NodeKind] = {}
    for entries in layers:
        added: set[str] = set()
        for kind, path in entries:
            parent, _, name = path.rpartition("/")
            if any(tree.get(ancestor) is NodeKind.FILE for ancestor in _ancestors(parent)):
                continue  # no directory to put it in: the entry is skipped
            for ancestor in _ancestors(parent):
                if ancestor not in tree:  # made by this layer, as its own, with its parents
                    tree[ancestor] = NodeKind.DIR
                    added.update(_ancestors(ancestor))
            if name == ".wh..wh..opq":
                for key in [k for k in tree if k.startswith(parent + "/") and k not in added]:
                    del tree[key]
            elif name.startswith(".wh."):
                gone = f"{parent}/{name[4:]}"
                for key in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                    del tree[key]
            else:
                if kind == "file":
                    for key in [k for k in tree if k.startswith(path + "/")]:
                        del tree[key]
                tree[path] = NodeKind.FILE if kind == "file" else NodeKind.DIR
                added.update([path, *_ancestors(parent)])  # and the directories it sits in
    return tree


def _ancestors(parent: str) -> list[str]:
    parts = [part for part in parent.split("/") if part]
    return ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]


def _random_layers(seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    layers = []
    for _ in range(rng.randint(1, 4)):
        entries = []
        for _ in range(rng.randint(1, 12)):
            path = "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
            parent, _, name = path.rpartition("/")
            kind = rng.choice(("file", "dir", "dir", "whiteout", "opaque"))
            if kind == "whiteout":
                entries.append((kind, f"{parent}/.wh.{name}"))
            elif kind == "opaque":
                entries.append((kind, f"{parent}/.wh..wh..opq"))
            else:
                entries.append((kind, path))
        layers.append(entries)
    return layers


@pytest.mark.parametrize("seed", range(200))
def test_the_tree_is_the_layers_applied_in_order(seed: int, tmp_path: Path) -> None:
    stack = _random_layers(seed)
    blobs = [
        layer(
            *(d(path.lstrip("/")) if kind == "dir" else f(path.lstrip("/")) for kind, path in one)
        )
        for one in stack
    ]
    image = open_image(str(write_docker_archive(tmp_path / "i.tar", blobs)), tmp_path / "w").image
    got = {path: node.kind for path, node in flattened_tree(image, "img").items()}
    assert got == _reference(stack)
