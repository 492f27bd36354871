"""What ended runs of scratchpack left in the engine: their containers and throw-away tags.

Connecting never prunes by itself: each command that connects decides, and
calls :func:`prune_ended_runs` (``prune`` calls :func:`prune_engine` to report
what it removed itself).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from scratchpack.errors import EngineError
from scratchpack.lifecycle import report_removed
from scratchpack.owner import gone

if TYPE_CHECKING:
    from scratchpack.engine.client import Engine


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


def prune_ended_runs(engine: Engine) -> None:
    """Remove what ended runs left in ``engine``, with a warning; three calls when nothing.

    A cleanup of others' leftovers never fails this run: an engine error here is
    ignored (the command's own calls will meet it if it lasts).
    """
    with contextlib.suppress(EngineError):
        report_removed(prune_engine(engine))
