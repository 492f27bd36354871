"""What ended runs of scratchpack left in the engine: their containers and throw-away tags.

Connecting never prunes by itself: each command that connects decides, and
calls :func:`prune_ended_runs` (``prune`` calls :func:`prune_engine` to report
what it removed itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from scratchpack.aside import Aside
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


@contextlib.contextmanager
def pruning_aside(engine: object) -> Iterator[None]:
    """:func:`prune_ended_runs` of a connected engine in a thread while the block runs,
    waited for at its end.

    Its three requests (the engine's version, its containers and its throw-away
    tags) cost a build 20 ms of waiting on the engine before any work; beside the
    plan they cost nothing. Its warning joins the command's at the end of the block,
    and a failure of its own (not the engine's) is raised there, when the block
    succeeded; one that failed does not wait for the thread (:class:`Aside`).
    """
    from scratchpack.engine.client import Engine

    if not isinstance(engine, Engine):  # none connected (a caller's own engine stays as it is)
        yield
        return
    if engine.direct is None:  # the SDK's session is not shared between threads
        prune_ended_runs(engine)
        yield
        return
    pruning = Aside("prune", prune_ended_runs, engine)
    yield  # a failed block does not wait: the command ends, and the thread with it
    pruning.result()
