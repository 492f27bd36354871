"""One walk through a tree's symlinks as a process chrooted into that tree would see it.

Resolving a root's library paths, planning an image's files, unpacking
someone else's layers and laying an application over a debug base all ask the
same question — where does this path lead, inside this tree? — of different
trees: a directory on disk, a planned image, the headers of an image's layers.
:func:`walk` answers it once; each caller says how to look a path up.

An absolute link target restarts at the tree's top and ``..`` stops there, so
no path ever leaves the tree, whatever its links say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)
MAX_PATH = 4096  # bytes of a path the kernel takes (PATH_MAX; a path in characters here)


class NodeKind(str, Enum):
    DIR = "dir"
    SYMLINK = "symlink"
    FILE = "file"
    OTHER = "other"  # a device, fifo or socket


@dataclass(frozen=True, slots=True)
class Node:
    """What a path of the tree is; ``info`` carries the caller's own facts (an lstat)."""

    kind: NodeKind
    target: str | None = None  # a symlink's target, as written
    info: Any = None


@dataclass(frozen=True, slots=True)
class Step:
    """One component met on the way: a real directory, a symlink, or the final node."""

    path: str  # in-tree absolute path of this component
    node: Node


class WalkError(Exception):
    """The path cannot be walked: a link loop, or a file where a directory must be."""


Lookup = Callable[[str], "Node | None"]


def components(path: str) -> list[str]:
    """The parts of ``path`` without empty and ``.`` components (``..`` kept)."""
    return [part for part in path.split("/") if part and part != "."]


def inside(name: str) -> list[str] | None:
    """Components of a name taken relative to the top; None when ``..`` climbs out of it.

    A leading ``/`` is dropped: names in a layer or archive are relative to its top.
    """
    parts: list[str] = []
    for part in components(name):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


def walk(
    path: str,
    lookup: Lookup,
    *,
    follow_final: bool = True,
    create: Callable[[str], Node] | None = None,
    missing_literal: bool = False,
) -> tuple[list[Step], str] | None:
    """Every step on the way to ``path`` inside the tree, and the real path it reaches.

    ``lookup(p)`` tells what the in-tree absolute path ``p`` is (None: absent).
    A missing component ends the walk with None, unless ``create`` makes it
    (a directory, for unpacking) or ``missing_literal`` keeps walking as if it
    were a plain directory (planning, where it will be one). With
    ``follow_final`` false the last component is not followed even if it is
    a link (its parents always are). Raises :class:`WalkError` on a loop or
    a non-directory in the middle.
    """
    parts = components(path)
    if not parts:
        return [], "/"
    final = parts[-1] if not follow_final else None
    pending = list(reversed(parts if follow_final else parts[:-1]))
    real: list[str] = []
    above: list[str] = []  # above[i]: "/" + "/".join(real[: i + 1]), kept along with real
    steps: list[Step] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if real:
                real.pop()
                above.pop()
            continue
        here = f"{above[-1] if above else ''}/{part}"
        if len(here) > MAX_PATH:  # as lstat would (ENAMETOOLONG): a walk stays linear
            raise WalkError(f"{path}: it leads to a path longer than {MAX_PATH} bytes")
        node = lookup(here)
        if node is None:
            if create is not None:
                node = create(here)
            elif missing_literal:
                real.append(part)
                above.append(here)
                continue
            else:
                return None
        if node.kind is NodeKind.SYMLINK:
            links += 1
            if links > MAX_SYMLINKS:
                raise WalkError(f"{path}: too many levels of symbolic links")
            steps.append(Step(here, node))
            target = node.target or ""
            if target.startswith("/"):
                real, above = [], []
            pending.extend(reversed(components(target)))
            continue
        if (pending or final is not None) and node.kind is not NodeKind.DIR:
            raise WalkError(f"{here} is not a directory")
        real.append(part)
        above.append(here)
        steps.append(Step(here, node))
    if final is not None:
        if final == "..":
            if real:
                real.pop()
            return steps, "/" + "/".join(real)
        real.append(final)
    return steps, "/" + "/".join(real)
