"""An engine in memory: what the commands ask of Docker, answered without a daemon.

Loading an image keeps the object the writer made under its name; saving one
streams it back as the ``docker save`` archive the real engine would send, so
the commands read it with their own readers. Every call is recorded, and a
run answers with a fixed exit status and output (``--verify`` of a build). A traced run
(``shrink --trace``, ``--verify``) plays the next :class:`ScriptedRun` the test
gave: the strace log its container leaves, its exit status and its output.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from scratchpack.engine.client import (
    VERIFY_REPOSITORY,
    ImageInfo,
    RunResult,
)
from scratchpack.engine.context import Context
from scratchpack.errors import EngineError, NoSuchImage
from scratchpack.image.layout import docker_archive_chunks
from scratchpack.image.model import Image
from scratchpack.trace.tracer import LOG_DIR, LOG_NAME


@dataclass(frozen=True)
class ScriptedRun:
    """What one traced container does: the log strace leaves in it, how it ends, what it says."""

    log: str  # strace's log, as ``-o`` writes it
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


class FakeContainer:
    """A container that plays a :class:`ScriptedRun`: it exits at once, its log in its layer.

    Reading an executed file back (a loader, a ``#!`` line) finds nothing.
    """

    def __init__(self, run: ScriptedRun) -> None:
        self.run = run
        self.state = "created"

    def put_directory(self, path: str, mode: int) -> None:
        pass

    def start(self) -> None:
        self.state = "exited"

    def wait(self, timeout: float, message: str) -> int:
        return self.run.exit_code

    def status(self) -> str:
        return self.state

    def attrs(self) -> dict[str, Any]:
        return {"State": {"Status": self.state}, "NetworkSettings": {"Ports": {}}}

    def stop(self, grace: int) -> None:
        self.state = "exited"

    def logs(self, tail: int | str = "all", stderr: bool = True) -> str:
        """Standard output, then standard error: the last ``tail`` lines, as Docker counts them."""
        lines = (self.run.stdout + (self.run.stderr if stderr else "")).splitlines(keepends=True)
        return "".join(lines if tail == "all" else lines[max(0, len(lines) - int(tail)) :])

    def read_head(self, path: str, limit: int = 64 * 1024) -> bytes | None:
        return None

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        if path != f"{LOG_DIR}/{LOG_NAME}" or self.state == "created":
            raise EngineError(f"the container has no {path}")
        data = self.run.log.encode()
        member = tarfile.TarInfo(LOG_NAME)
        member.size = len(data)
        yield member, io.BytesIO(data)


class FakeEngine:
    """Images by name and by ID, held in memory; calls recorded as tuples of words."""

    def __init__(
        self,
        exit_code: int = 0,
        refuse_loads: bool = False,
        runs: Iterable[ScriptedRun] = (),
        output: str = "ran\n",
    ) -> None:
        self.exit_code = exit_code
        self.output = output  # what a ``--verify`` run writes
        self.refuse_loads = refuse_loads
        self.runs = list(runs)  # what the traced containers do, in order
        self.calls: list[tuple[str, ...]] = []
        self.names: dict[str, str] = {}  # reference -> image ID
        self.images: dict[str, Image] = {}  # image ID -> image

    def holding(self, image: Image, reference: str) -> FakeEngine:
        """The engine with ``image`` already in it as ``reference`` (not recorded)."""
        self.images[image.image_id] = image
        self.names[reference] = image.image_id
        return self

    def _find(self, reference: str) -> Image:
        image_id = self.names.get(reference, reference)
        if image_id not in self.images:
            raise NoSuchImage(f"no image {reference} in the local engine")
        return self.images[image_id]

    # -- staging

    def load(self, image: Image, tag: str) -> str:
        self.calls.append(("load", tag))
        if self.refuse_loads:
            raise EngineError(f"the engine refused to load {tag}: no space left on device")
        self.holding(image, tag)
        return image.image_id

    def tag(self, image_id: str, reference: str) -> None:
        self.calls.append(("tag", image_id, reference))
        self.names[reference] = image_id

    def untag(self, reference: str) -> None:
        self.calls.append(("untag", reference))
        self.names.pop(reference, None)

    def has_image(self, reference: str) -> bool:
        return reference in self.names or reference in self.images

    # -- reading

    def image(self, reference: str) -> ImageInfo:
        image = self._find(reference)
        tags = tuple(name for name, known in self.names.items() if known == image.image_id)
        return ImageInfo(
            id=image.image_id,
            tags=tags,
            size=image.size,
            architecture=image.platform.architecture,
            diff_ids=tuple(layer.diff_id for layer in image.layers),
        )

    def save_image(self, reference: str, destination: Path) -> tuple[str, ...]:
        self.calls.append(("save", reference))
        image = self._find(reference)
        with open(destination, "wb") as out:
            for chunk in docker_archive_chunks(image, reference):
                out.write(chunk)
        return self.image(reference).tags

    @contextlib.contextmanager
    def saved_stream(self, image_id: str) -> Iterator[BinaryIO]:
        self.calls.append(("save", image_id))
        image = self._find(image_id)
        yield io.BytesIO(b"".join(docker_archive_chunks(image, image_id)))

    # -- making and running

    def build(self, context: Context, tag: str, *_rest: object, **_options: object) -> str:
        raise EngineError(f"the fake engine builds nothing ({tag})")

    def run(
        self, image: str, command: Sequence[str] | None = None, **_options: object
    ) -> RunResult:
        self._find(image)
        self.calls.append(("run", image, *(command or ())))
        return RunResult(self.exit_code, self.output)

    @contextlib.contextmanager
    def container(self, image_id: str, **options: object) -> Iterator[FakeContainer]:
        """A traced container of ``image_id``: the next scripted run, recorded."""
        self._find(image_id)
        self.calls.append(("container", image_id))
        if not self.runs:
            raise EngineError(f"the fake engine has no scripted run left for {image_id}")
        yield FakeContainer(self.runs.pop(0))

    @contextlib.contextmanager
    def loaded(self, image: Image, repository: str = VERIFY_REPOSITORY) -> Iterator[str]:
        name = f"{repository}/fake-{os.urandom(4).hex()}:0"
        try:
            self.load(image, name)
            yield name
        finally:
            self.untag(name)


def recorded(engine: FakeEngine, *verbs: str) -> list[tuple[str, ...]]:
    """The calls of ``engine`` whose verb is one of ``verbs``."""
    return [call for call in engine.calls if call[0] in verbs]
