"""What the commands share: engine and debug choices, ``--verify``, the default archive name.

``build``, ``shrink`` and ``debug`` are peers: none imports another. The
request and result types more than one of them (or the command line) speaks,
and the ``--verify`` run of a new image, live here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.errors import (
    EngineError,
    EngineLost,
    EngineTimeout,
    EngineUnreachable,
    VerifyError,
)
from scratchpack.image.reference import Reference

if TYPE_CHECKING:
    from scratchpack.engine.client import CommandEngine, Confinement, Engine
    from scratchpack.image.model import Image

DEFAULT_VERIFY_TIMEOUT = 120.0  # seconds
VERIFY_TAIL_LINES = 20  # of a failed --verify's output, shown under the error


class EngineMode(str, Enum):
    AUTO = "auto"
    DOCKER = "docker"
    NONE = "none"


class DebugShell(str, Enum):
    BASE = "base"  # laid over a base image that has a shell
    BUSYBOX = "busybox"  # a static busybox at /busybox


@dataclass(frozen=True)
class VerifyRequest:
    """``--verify ARGS``: how to run the new image once, and how long to wait for it."""

    args: tuple[str, ...]
    timeout: float = DEFAULT_VERIFY_TIMEOUT
    confinement: Confinement | None = None  # --run-memory, --run-pids; None: the defaults


@dataclass(frozen=True)
class VerifyResult:
    args: tuple[str, ...]
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "exit_code": self.exit_code, "output": self.output}


@dataclass(frozen=True)
class DebugResult:
    tag: str
    shell: DebugShell
    base: str | None
    image: str
    size: int | None = None
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tag": self.tag,
            "shell": self.shell.value,
            "base": self.base,
            "image": self.image,
        }
        if self.size is not None:
            document["size"] = self.size
        if self.output is not None:
            document["output"] = self.output
        return document


def default_archive(tag: str) -> Path:
    """``hello_latest.tar`` for ``hello:latest``, in the working directory."""
    return Path(Reference.parse(tag).archive_name())


def connected_engine() -> Engine:
    """The environment's engine, once what ended runs left in it is removed (with a warning).

    Connecting never prunes by itself: a command that connects calls this.
    """
    # The docker SDK takes a tenth of a second to import: only when an engine is wanted.
    from scratchpack.engine.client import Engine
    from scratchpack.engine.prune import prune_ended_runs

    engine = Engine.connect()
    prune_ended_runs(engine)
    return engine


# -- --verify -------------------------------------------------------------------------------


def verify_image(
    engine: CommandEngine, reference: str, tag: str, verify: VerifyRequest, loaded: bool = False
) -> VerifyResult:
    """Run the new image with ``verify.args`` and no network; fail (exit 4) if it fails.

    A lost engine stays an engine error (exit 3); an image that cannot start,
    exits non-zero, or is still running at the timeout fails its check, with
    the end of its output under the error's line: the line that matters
    (nginx's ``[emerg] open() … failed``) is rarely the last.
    """
    outcome = "nothing written" if loaded else "image removed"
    command = f"--verify {shlex.join(verify.args)!r}"
    try:
        run = engine.run(
            reference, verify.args, timeout=verify.timeout, confinement=verify.confinement
        )
    except (EngineLost, EngineUnreachable, EngineTimeout) as err:
        raise type(err)(f"{err}, which ran --verify of {tag}") from err
    except EngineError as err:  # it could not even start
        raise VerifyError(f"{tag} cannot run {command}: {err} ({outcome})") from err
    tail = tuple(run.output.rstrip().splitlines()[-VERIFY_TAIL_LINES:])
    shown = "; its output ends:" if tail else "; it wrote nothing"
    if run.exit_code is None:
        raise VerifyError(
            f"{tag} was still running {command} after {verify.timeout:g} s, so it was stopped "
            f"({outcome}): a server? Verify with a command that ends (such as --version or "
            f"a configuration test), or wait longer with --verify-timeout{shown}",
            tail,
        )
    if run.exit_code != 0:
        raise VerifyError(f"{tag} exited {run.exit_code} with {command} ({outcome}){shown}", tail)
    return VerifyResult(verify.args, run.exit_code, run.output)


def verify_written(
    image: Image, tag: str, verify: VerifyRequest, engine: CommandEngine | None = None
) -> VerifyResult:
    """``--verify`` of a writer-made image: loaded under a throw-away name, run, removed.

    The engine's own images and tags are left as they were. Without ``engine``,
    the environment's is connected for it.
    """
    if engine is None:
        try:
            engine = connected_engine()
        except EngineUnreachable as err:
            raise EngineUnreachable(f"--verify runs the image in a Docker engine: {err}") from err
    with engine.loaded(image) as reference:
        return verify_image(engine, reference, tag, verify, loaded=True)
