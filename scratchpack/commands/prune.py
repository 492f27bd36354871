"""``prune``: remove what killed runs left behind, and only that.

A run stopped by SIGKILL cannot clean up. Everything it made names its owner
(:mod:`scratchpack.owner`): temporary directories ``scratchpack-<owner>-…`` in
TMPDIR, staged outputs ``.scratchpack-<owner>-…`` beside their targets,
containers labelled ``org.scratchpack.owner`` and throw-away tags
``scratchpack-staging/<owner>-…``. What belongs to an owner that has ended is
removed; anything of a live run, or of another PID namespace, stays. Every
command does the cheap part at its start (TMPDIR, the directory it writes to,
the engine it connects to) and says what it removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.owner import gone, owner_of

if TYPE_CHECKING:
    from scratchpack.engine.client import Engine


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]  # "directory /tmp/scratchpack-…", "image scratchpack-staging/…"

    def to_json(self) -> dict[str, Any]:
        return {"removed": list(self.removed)}


def stale_files(directories: Iterable[Path]) -> list[Path]:
    """Our temporary and staged entries in ``directories`` whose owner has ended."""
    found: list[Path] = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(("scratchpack-", ".scratchpack-")):
                continue
            who = owner_of(name)
            if who is not None and gone(who):
                found.append(Path(directory) / name)
    return found


def prune_files(directories: Iterable[Path]) -> list[str]:
    removed = []
    for path in stale_files(directories):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(f"directory {path}" if not path.suffix else f"file {path}")
    return removed


def prune_engine(engine: Engine) -> list[str]:
    """Containers and throw-away tags of ended runs, removed from ``engine``."""
    removed = []
    for kind, name, who in engine.leftovers():
        if not gone(who):
            continue
        if kind == "container":
            engine.remove_container(name)
        else:
            engine.untag(name)
        removed.append(f"{kind} {name}")
    return removed


def run_prune(engine: Engine | None, directories: Iterable[Path] = ()) -> PruneResult:
    """Everything of ended runs in TMPDIR, ``directories`` and the engine (if one answers)."""
    removed = prune_files([Path(tempfile.gettempdir()), *directories])
    if engine is not None:
        removed += prune_engine(engine)
    return PruneResult(tuple(removed))
