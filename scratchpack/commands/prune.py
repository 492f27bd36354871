"""``prune``: remove what killed runs left behind, and only that.

A run stopped by SIGKILL cannot clean up. Everything it made names its owner
(:mod:`scratchpack.owner`): temporary directories ``scratchpack-<owner>-…`` in
TMPDIR, staged outputs ``.scratchpack-<owner>-…`` beside their targets,
containers labelled ``org.scratchpack.owner`` and throw-away tags
``scratchpack-staging/<owner>-…``. What belongs to an owner that has ended is
removed; anything of a live run, or of another PID namespace, stays. Every
command does the cheap part at its start (TMPDIR, the directory it writes to,
the engine it connects to) and says what it removed. The pruning itself lives
with what it prunes: files in :mod:`scratchpack.publish`, the engine's in
:mod:`scratchpack.engine.prune`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.engine.prune import prune_engine
from scratchpack.publish import prune_files

if TYPE_CHECKING:
    from scratchpack.engine.client import Engine


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]  # "directory /tmp/scratchpack-…", "image scratchpack-staging/…"

    def to_json(self) -> dict[str, Any]:
        return {"removed": list(self.removed)}


def report_text(result: PruneResult) -> str:
    """The human report of ``prune``: a line per thing removed, or that there was none."""
    if not result.removed:
        return "nothing to remove\n"
    return "".join(f"removed {item}\n" for item in result.removed)


def reachable_engine() -> Engine | None:
    """The environment's engine, or ``None`` when none answers: the files are pruned anyway.

    A plain connection: :func:`run_prune` is the pruning, so nothing is pruned on connecting.
    """
    from scratchpack.engine.client import Engine
    from scratchpack.errors import EngineUnreachable

    try:
        return Engine.connect()
    except EngineUnreachable:
        return None


def run_prune(engine: Engine | None, directories: Iterable[Path] = ()) -> PruneResult:
    """Everything of ended runs in TMPDIR, ``directories`` and the engine (if one answers)."""
    removed = prune_files([Path(tempfile.gettempdir()), *directories])
    if engine is not None:
        removed += prune_engine(engine)
    return PruneResult(tuple(removed))
