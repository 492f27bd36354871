"""The Docker engine, through the docker Python SDK: build, inspect, run, remove.

Every failure becomes an :class:`EngineError` with one line the user can act
on. Nothing here pulls: builds pass ``pull=False`` and containers are created
from images that must already exist (``containers.run`` would pull a missing
image from a public registry on its own).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import docker
import docker.errors
import requests.exceptions

from scratchpack.errors import EXIT_ENGINE, ScratchpackError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
_IN_MEMORY_CONTEXT = 512 << 20


class EngineError(ScratchpackError):
    """The engine is unreachable, or refused or failed what we asked."""

    exit_code = EXIT_ENGINE


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: list[str]
    size: int
    architecture: str


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


class Engine:
    """A connection to the engine that ``DOCKER_HOST`` (or the default socket) names."""

    @classmethod
    def from_client(cls, client: Any) -> Engine:
        """Wrap a docker client that is already connected."""
        engine = cls.__new__(cls)
        engine.client = client
        engine.api = client.api
        return engine

    def __init__(self) -> None:
        try:
            self.client = docker.from_env()
            self.client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise EngineError(
                f"cannot reach a Docker engine at {_where()} ({_short(err)}); start dockerd or "
                "point DOCKER_HOST at a running engine (e.g. unix:///run/docker.sock)"
            ) from err
        self.api = self.client.api

    def build(
        self, context: BinaryIO, tag: str, progress: Callable[[str], None] | None = None
    ) -> str:
        """Build a context tar (Dockerfile at its top) as ``tag``; return the image ID."""
        image_id: str | None = None
        # A file body goes out in 16 KiB writes (0.12 s of syscalls for curl's 19 MB);
        # bytes go out in one. Contexts up to this size are sent from memory.
        try:
            size: int | None = os.fstat(context.fileno()).st_size
        except (AttributeError, OSError, io.UnsupportedOperation):
            size = None  # an in-memory stream: already in memory
        body: BinaryIO | bytes = context
        if size is not None and size <= _IN_MEMORY_CONTEXT:
            body = context.read()
        try:
            stream = self.api.build(
                fileobj=body,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise EngineError(f"the engine failed to build {tag}: {detail.strip()}")
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if progress is not None and chunk.get("stream", "").strip():
                    progress(chunk["stream"].rstrip("\n"))
        except docker.errors.DockerException as err:
            raise EngineError(f"the engine refused to build {tag}: {_short(err)}") from err
        except requests.exceptions.RequestException as err:
            raise EngineError(f"lost the Docker engine at {_where()}: {_short(err)}") from err
        if image_id is None:
            image_id = self.image(tag).id
        return image_id

    def image(self, reference: str) -> ImageInfo:
        """A local image, or an error: never a pull."""
        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound as err:
            raise EngineError(f"no image {reference} in the local engine") from err
        except docker.errors.APIError as err:
            raise EngineError(f"cannot inspect {reference}: {_short(err)}") from err
        attrs: dict[str, Any] = image.attrs
        return ImageInfo(
            id=attrs["Id"],
            tags=list(attrs.get("RepoTags") or []),
            size=int(attrs.get("Size") or 0),
            architecture=str(attrs.get("Architecture") or ""),
        )

    def run(
        self,
        image: str,
        command: Sequence[str] | None = None,
        network: bool = False,
        timeout: float = 120,
    ) -> RunResult:
        """Run a local image to completion and return its exit code and output."""
        self.image(image)  # fails clearly instead of letting the engine pull
        container = None
        try:
            container = self.client.containers.create(
                image,
                command=list(command) if command is not None else None,
                # network_disabled would also leave /etc/hosts empty (no localhost).
                network_mode=None if network else "none",
            )
            container.start()
            status = container.wait(timeout=timeout)
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            return RunResult(int(status.get("StatusCode", -1)), output)
        except docker.errors.APIError as err:
            raise EngineError(f"cannot run {image}: {_short(err)}") from err
        except requests.exceptions.RequestException as err:
            raise EngineError(f"{image} did not finish within {timeout:.0f} s") from err
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)

    @contextlib.contextmanager
    def exported_filesystem(self, image: str) -> Iterator[tarfile.TarFile]:
        """The image's flattened filesystem as a tar stream (``docker export``, never run).

        A container is created from the local image (not started: nothing of it
        runs) and removed afterwards.
        """
        self.image(image)  # fail clearly instead of letting the engine pull
        container = None
        try:
            container = self.client.containers.create(image, command=["/nonexistent"])
            stream = _ChunkReader(container.export(chunk_size=1 << 20))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        except docker.errors.DockerException as err:
            raise EngineError(f"cannot export {image}: {_short(err)}") from err
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)

    def tag(self, image_id: str, reference: str) -> None:
        """Give ``image_id`` the name ``reference`` (moving it from any other image)."""
        from scratchpack.reference import Reference

        parsed = Reference.parse(reference)
        try:
            self.api.tag(image_id, parsed.name, parsed.tag, force=True)
        except docker.errors.DockerException as err:
            raise EngineError(f"cannot tag {image_id} as {reference}: {_short(err)}") from err

    def has_image(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except docker.errors.DockerException:
            return False
        return True

    def load(self, archive: BinaryIO) -> None:
        """``docker load`` an image archive (docker-archive or our OCI hybrid)."""
        try:
            self.client.images.load(archive)
        except docker.errors.DockerException as err:
            raise EngineError(f"the engine refused to load the image: {_short(err)}") from err

    def remove_image(self, reference: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.client.images.remove(reference, force=True)


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (the SDK's export stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = iter(chunks)
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _short(err: BaseException) -> str:
    """The useful part of an SDK exception, on one line."""
    explanation = getattr(err, "explanation", None)
    text = str(explanation or err)
    return " ".join(text.split())[:300]
