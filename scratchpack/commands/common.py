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
    OUTPUT_TAIL_LINES,
    EngineError,
    EngineLost,
    EngineTimeout,
    EngineUnreachable,
    InputError,
    VerifyError,
    output_tail,
)
from scratchpack.image.media import Platform
from scratchpack.image.reference import Reference

if TYPE_CHECKING:
    from scratchpack.engine.client import CommandEngine, Confinement, Engine
    from scratchpack.image.model import Image

DEFAULT_VERIFY_TIMEOUT = 120.0  # seconds
VERIFY_TAIL_LINES = OUTPUT_TAIL_LINES  # of a failed --verify's output, shown under the error


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


def connected_engine(prune: bool = True) -> Engine:
    """The environment's engine, once what ended runs left in it is removed (with a warning).

    Connecting never prunes by itself: a command that connects calls this. With
    ``prune`` false, the caller prunes (``build`` does, beside its plan:
    :func:`~scratchpack.engine.prune.pruning_aside`).
    """
    # The docker SDK takes a tenth of a second to import: only when an engine is wanted.
    from scratchpack.engine.client import Engine
    from scratchpack.engine.prune import prune_ended_runs

    engine = Engine.connect()
    if prune:
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
    tail = output_tail(run.output, VERIFY_TAIL_LINES)  # made safe for a terminal
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


# -- run limits (--run-memory, --run-pids) ---------------------------------------------------

MIN_RUN_MEMORY = 16 << 20  # bytes: less and no program starts


def parse_size(text: str | None, option: str = "--max-unpacked-size") -> int | None:
    """``20G``, ``500M``, ``1.5T`` or plain bytes (powers of 1024)."""
    import re

    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if match is None:
        raise InputError(f"{option} {text!r}: expected a size such as 20G or 500M")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def run_confinement(memory: str, pids: int) -> Confinement:
    """``--run-memory`` and ``--run-pids`` as the bounds of a run, the memory at least 16M."""
    from scratchpack.engine.client import Confinement

    size = parse_size(memory, "--run-memory")
    assert size is not None
    if size < MIN_RUN_MEMORY:
        raise InputError(f"--run-memory {memory}: at least 16M")
    return Confinement(memory=size, pids=pids)


@dataclass(frozen=True)
class PackageSources:
    """Where ``--package`` comes from and what is pinned: shared by ``build`` and ``lock``.

    The packages and suite themselves are the plan's (:class:`BuildOptions`).
    """

    repositories: tuple[str, ...] = ()  # --repository lines, as a lock records them
    platforms: tuple[Platform, ...] = ()  # --platform: one image each, an index over them
    lock: Path | None = None  # --lock FILE: written when absent, obeyed when present
    # --only-listed-suites: resolve from exactly the suites this machine's apt sources list,
    # without the -updates and -security of Debian's archive added where they are missing
    only_listed_suites: bool = False
    # --update: resolve the lock's packages afresh, rebuild, rewrite the lock with the image
    update: bool = False

    @classmethod
    def from_options(
        cls,
        packages: tuple[str, ...],
        suite: str | None,
        repositories: tuple[str, ...] = (),
        platforms: tuple[str, ...] = (),
        lock: str | None = None,
        only_listed_suites: bool = False,
        update: bool = False,
    ) -> PackageSources:
        """Check --package, --suite, --repository, --platform, --lock and --update (from flags
        or a YAML file) before apt runs."""
        if update:
            _check_update(packages, lock)

        for given, what in (
            (suite, "--suite chooses the Debian suite of --package"),
            (repositories, "--repository is a source of --package"),
            (lock, "--lock pins the packages of --package"),
            (only_listed_suites, "--only-listed-suites chooses the sources of --package"),
        ):
            if given and not packages:
                raise InputError(f"{what}: add --package PKG")
        if not packages:  # a build of binaries: apt's module (6 ms) stays unloaded
            return cls((), _platforms(platforms))
        from scratchpack.packages.apt import Word, check_word, parse_repository
        from scratchpack.packages.apt import check_request as check_package

        for package in packages:
            check_package(package, "--package")
        if suite is not None:
            check_word(Word.SUITE, suite, "--suite")
        return cls(
            tuple(parse_repository(line).one_line() for line in repositories),
            _platforms(platforms),
            Path(lock) if lock else None,
            only_listed_suites,
            update,
        )


def _check_update(packages: tuple[str, ...], lock: str | None) -> None:
    """--update rewrites a lock that exists, for the packages it names."""
    refused = "--update re-resolves an existing lock"
    if not lock:
        raise InputError(f"{refused}: add --lock FILE (made by build --lock or scratchpack lock)")
    if not packages:
        raise InputError(f"{refused}: add the --package PKG it was made for")
    if not Path(lock).is_file():
        raise InputError(
            f"{refused}: no file {lock} (make it with build --lock {lock} or scratchpack lock)"
        )


def _platforms(values: tuple[str, ...]) -> tuple[Platform, ...]:
    """``--platform linux/amd64,linux/arm64`` (or repeated): each once, in the order given."""
    found: list[Platform] = []
    for value in values:
        for text in value.split(","):
            if text.strip():
                platform = Platform.parse(text)
                if platform not in found:
                    found.append(platform)
    return tuple(found)
