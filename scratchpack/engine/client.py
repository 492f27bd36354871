"""The Docker engine, through the docker Python SDK: the one place that talks to it.

Every failure becomes an :class:`~scratchpack.errors.EngineError` with one line
the user can act on, and tells apart an engine that is not there
(:class:`~scratchpack.errors.EngineUnreachable`), one that went away in the
middle (:class:`~scratchpack.errors.EngineLost`) and one that took too long
(:class:`~scratchpack.errors.EngineTimeout`). Nothing here pulls: builds pass
``pull=False``, and containers are created from images checked to exist
(``containers.run`` would pull a missing image from a public registry).

Images are loaded as a stream (:func:`~scratchpack.image.layout.docker_archive_chunks`)
and saved as one, so no image is ever copied whole into memory.

What the publish stage, the tracer and the commands ask of an engine is a few
small protocols, :class:`StagingEngine`, :class:`TracingEngine` (with its
:class:`RunningContainer`) and :class:`CommandEngine`: a fake in memory stands
in for :class:`Engine` in the unit tests.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol

from scratchpack.engine.dialect import Dialect, dialect_of
from scratchpack.engine.direct import (
    DirectAPI,
    engine_timeout,
    transport_words,
    unix_socket,
)
from scratchpack.errors import (
    BuildRaced,
    ContainerTimeout,
    EngineError,
    EngineLost,
    EngineTimeout,
    EngineUnreachable,
    InputError,
    NoSuchImage,
    exception_chain,
    printable,
)
from scratchpack.lifecycle import deferred_signals, leftover
from scratchpack.owner import OWNER_LABEL, TAG_REPOSITORIES, owner, owner_of, prefix

if TYPE_CHECKING:
    from scratchpack.engine.context import Context
    from scratchpack.engine.remote import EngineAddress
    from scratchpack.image.model import Image
    from scratchpack.image.saved import ImageStreamer

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
_CHUNK = 1 << 20
_WAIT_SLICE = 5.0  # seconds a container wait goes before the engine is asked if it answers
# Repositories of the throw-away tags :meth:`Engine.loaded` loads images under.
VERIFY_REPOSITORY = "scratchpack-verify"  # a new image, for its --verify run
TRACE_REPOSITORY = "scratchpack-trace"  # an archive's image, for its traced runs


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    size: int
    architecture: str
    variant: str | None = None
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    diff_ids: tuple[str, ...] = ()  # RootFS.Layers: the layers' digests, in order
    repo_digests: tuple[str, ...] = ()  # RepoDigests: NAME@sha256:... it was pulled or pushed as


DEFAULT_RUN_MEMORY = 2 << 30  # bytes of memory (swap included) a run of an image may use
DEFAULT_RUN_PIDS = 1024  # processes and threads a run of an image may have at once
# What servers started as root need and nothing more: a root entrypoint that
# chowns its data directory and drops to its own user (postgres, redis), or
# binds a low port and signals its workers (nginx). MKNOD, NET_RAW, SETFCAP,
# SETPCAP, FSETID, SYS_CHROOT and AUDIT_WRITE of Docker's default set are left out.
ROOT_CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "NET_BIND_SERVICE",
    "KILL",
)


@dataclass(frozen=True)
class Confinement:
    """What a container that runs someone else's program may do: the same for every such run.

    No privilege is gained on exec (``no-new-privileges``: setuid files and file
    capabilities give nothing), every capability is dropped and a program
    configured to start as root gets back only :data:`ROOT_CAPABILITIES` (one
    started as another user needs none), and processes and memory are bounded,
    so a fork bomb or a memory hog stays in its container.
    """

    memory: int = DEFAULT_RUN_MEMORY  # bytes, swap included
    pids: int = DEFAULT_RUN_PIDS

    def options(self, user: str | None) -> dict[str, Any]:
        """``containers.create`` options for a program configured to run as ``user``."""
        return {
            "security_opt": ["no-new-privileges:true"],
            "cap_drop": ["ALL"],
            "cap_add": list(ROOT_CAPABILITIES) if starts_as_root(user) else [],
            "pids_limit": self.pids,
            "mem_limit": self.memory,
            "memswap_limit": self.memory,
        }


def starts_as_root(user: str | None) -> bool:
    """Whether an image's ``User`` starts its program as root (unset, ``root`` or uid 0)."""
    name = (user or "").partition(":")[0].strip()
    return name in ("", "root", "0")


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its exit status, or ``None`` when it was still running at the timeout."""

    exit_code: int | None
    output: str

    @property
    def finished(self) -> bool:
        return self.exit_code is not None


# -- what callers ask of an engine ------------------------------------------------------------
# Small protocols, like ImageSaver and ImageStreamer of the image floor: :class:`Engine`
# satisfies them all, and so does a fake that holds images in memory, so ``build``, ``shrink``
# and ``debug`` can be run, published and rolled back without a daemon.


Progress = Callable[[str], None]  # a line of a build's output, as it comes


class StagingEngine(Protocol):
    """What a :class:`~scratchpack.publish.Publication` does with the images it stages."""

    def load(self, image: Image, tag: str) -> str: ...

    def tag(self, image_id: str, reference: str) -> None: ...

    def untag(self, reference: str) -> None: ...

    def has_image(self, reference: str) -> bool: ...


class RunningContainer(Protocol):
    """What a traced run does with its container (:class:`Container` is one)."""

    def put_directory(self, path: str, mode: int) -> None: ...

    def start(self) -> None: ...

    def wait(self, timeout: float, message: str) -> int: ...

    def status(self) -> str: ...

    def attrs(self) -> dict[str, Any]: ...

    def stop(self, grace: int) -> None: ...

    def logs(self, tail: int | str = ..., stderr: bool = ...) -> str: ...

    def read_head(self, path: str, limit: int = ...) -> bytes | None: ...

    def open_file(
        self, path: str
    ) -> contextlib.AbstractContextManager[tuple[tarfile.TarInfo, IO[bytes] | None]]: ...


class TracingEngine(Protocol):
    """What :func:`~scratchpack.trace.run.trace_image` asks of an engine: the image, a container."""

    def image(self, reference: str) -> ImageInfo: ...

    def container(
        self, image_id: str, **options: Any
    ) -> contextlib.AbstractContextManager[RunningContainer]: ...


if TYPE_CHECKING:  # a type only: the image floor's reader (ImageStreamer's) loads when used

    class CommandEngine(StagingEngine, ImageStreamer, TracingEngine, Protocol):
        """What ``build``, ``shrink`` and ``debug`` ask of an engine besides staging and tracing."""

        def build(  # in the engine, from a streamed context; the image ID
            self, context: Context, tag: str, progress: Progress | None = None, shown: str = ""
        ) -> str: ...

        def run(  # a --verify run: no network, keyword options
            self,
            image: str,
            command: Sequence[str] | None = None,
            *,
            timeout: float = ...,
            confinement: Confinement | None = None,
        ) -> RunResult: ...

        def loaded(
            self, image: Image, repository: str = ...
        ) -> contextlib.AbstractContextManager[str]: ...


def where() -> str:
    """The engine's address, as the user would recognise it (never a password)."""
    from scratchpack.engine.remote import engine_address, hidden

    try:
        return engine_address().shown
    except InputError:
        return printable(hidden(os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET))


def sdk_client() -> Any:
    """The docker SDK's client for the engine ``DOCKER_HOST`` names, as the docker CLI reads it.

    ``ssh://`` goes through an :class:`~scratchpack.engine.remote.SshRelay` (the
    system's ssh; the SDK's own ssh needs paramiko), ``tcp://`` with TLS when
    ``DOCKER_TLS_VERIFY`` is set. :class:`EngineUnreachable` when it does not answer.
    """
    import docker
    import requests.exceptions

    from scratchpack.engine.remote import Scheme, SshRelay, engine_address, tls_config

    address = engine_address()
    relay = SshRelay(address) if address.scheme is Scheme.SSH else None
    try:
        base_url = relay.url if relay is not None else _base_url(address)
        tls = tls_config(address)
        with _engine_ca_only(tls):
            client = docker.DockerClient(
                base_url=base_url, tls=tls or False, timeout=int(engine_timeout())
            )
        if tls is not None:
            _keep_engine_ca(client.api)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        reason = (relay.last_words() if relay is not None else None) or _unreachable_words(err)
        if relay is not None:
            relay.close()
        hint = "" if address.remote else (
            "; start dockerd or point DOCKER_HOST at a running engine (e.g. unix:///run/docker.sock)"
        )  # fmt: skip
        raise EngineUnreachable(
            f"cannot reach a Docker engine at {address.shown} ({reason}){hint}"
        ) from err
    client.scratchpack_relay = relay  # lives as long as the client
    return client


# Variables with which requests replaces, in every request, the CA file a session was given:
# set machine-wide on many hosts, they would make the engine's own CA count for nothing.
_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@contextlib.contextmanager
def _engine_ca_only(tls: Any) -> Iterator[None]:
    """Without the CA bundle variables while the SDK's client is made (it asks the version)."""
    hidden_values = {}
    if tls is not None:
        hidden_values = {name: os.environ.pop(name) for name in _CA_BUNDLE_VARIABLES
                         if name in os.environ}  # fmt: skip
    try:
        yield
    finally:
        os.environ.update(hidden_values)


def _keep_engine_ca(api: Any) -> None:
    """Every request of ``api`` verifies the engine against DOCKER_CERT_PATH's CA, and only it."""
    merge = api.merge_environment_settings

    def merged(*args: Any, **kwargs: Any) -> dict[str, Any]:
        settings = dict(merge(*args, **kwargs))
        settings["verify"] = api.verify
        return settings

    api.merge_environment_settings = merged


def _base_url(address: EngineAddress) -> str:
    from scratchpack.engine.remote import Scheme

    if address.scheme is Scheme.UNIX:
        return f"unix://{address.host}"
    return f"tcp://{address.host}:{address.port}"


def _unreachable_words(err: BaseException) -> str:
    from scratchpack.engine.remote import tls_words

    return tls_words(err) or short(err)


def short(err: BaseException) -> str:
    """The useful part of an SDK exception, on one line, in words.

    A failure of the connection itself (requests and urllib3 wrap the socket's
    error in tuples whose ``str`` is a Python repr) is said in words instead.
    """
    explanation = getattr(err, "explanation", None)
    if not explanation and connection_failure(err):
        return transport_words(err)
    text = str(explanation or err)
    return " ".join(text.split())[:300]


def connection_failure(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps) is the transport failing, not the engine refusing."""
    import requests.exceptions

    transport = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        OSError,
    )
    return any(isinstance(cause, transport) for cause in exception_chain(err))


@contextlib.contextmanager
def _translated(doing: str) -> Iterator[None]:
    """SDK and transport failures while ``doing`` something, as engine errors."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.DockerException as err:
        if not isinstance(err, docker.errors.APIError) and connection_failure(err):
            raise EngineLost(
                f"lost the Docker engine at {where()} {doing}: {transport_words(err)}"
            ) from err
        raise EngineError(f"the engine refused {doing}: {short(err)}") from err
    except requests.exceptions.Timeout as err:
        raise EngineTimeout(f"the Docker engine at {where()} did not answer {doing}") from err
    except requests.exceptions.RequestException as err:
        raise EngineLost(f"lost the Docker engine at {where()} {doing}: {short(err)}") from err


def _diff_ids(rootfs: object) -> tuple[str, ...]:
    layers = rootfs.get("Layers") if isinstance(rootfs, dict) else None
    return tuple(str(d) for d in layers) if isinstance(layers, list) else ()


class _ChunkStream(io.RawIOBase):
    """A readable stream over the SDK's chunks; transport failures become engine errors."""

    def __init__(self, chunks: Iterator[bytes], doing: str) -> None:
        self.chunks = chunks
        self.doing = doing
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            with _translated(self.doing):
                chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.pending = memoryview(chunk)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


class Engine:
    """A connection to the engine that ``DOCKER_HOST`` (or the default socket) names.

    The docker SDK is imported on first use: a build on the local socket never
    needs it (:mod:`scratchpack.engine.direct`).
    """

    def __init__(self, client: Any = None, direct: DirectAPI | None = None) -> None:
        self._client = client
        self.direct = direct
        self._version: dict[str, Any] | None = None

    @property
    def client(self) -> Any:
        """The docker SDK's client (``docker.DockerClient``), made when first needed."""
        if self._client is None:
            self._client = sdk_client()
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    @classmethod
    def connect(cls) -> Engine:
        """The engine of the environment, checked to answer; :class:`EngineUnreachable` if not.

        What ended runs left in it stays: the command decides whether to remove it
        (:func:`scratchpack.engine.prune.prune_ended_runs`).
        """
        path = unix_socket()
        if path is not None:
            direct = DirectAPI(path)
            direct.ping()
            return cls(None, direct)
        return cls(sdk_client())

    @classmethod
    def from_client(cls, client: Any) -> Engine:
        """Wrap a docker client that is already connected (tests have one)."""
        return cls(client)

    # -- images ------------------------------------------------------------------------

    def build(
        self,
        context: Context,
        tag: str,
        progress: Callable[[str], None] | None = None,
        shown: str | None = None,
    ) -> str:
        """Build a streamed context tar (with its Dockerfile) as ``tag``; the image ID.

        ``shown`` is what messages call the image (its final tag, not the throw-away one).
        """
        from scratchpack.engine.context import context_chunks

        image_id: str | None = None
        shown = shown or tag
        if self.direct is not None:
            messages: Iterable[dict[str, Any]] = self.direct.build(
                context.pieces, context.size, tag, shown
            )
            image_id = _build_messages(messages, shown, progress)
        else:
            with _translated(f"while building {shown}"):
                messages = self.api.build(
                    fileobj=context_chunks(context),  # in chunks
                    timeout=int(engine_timeout()),
                    custom_context=True,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    pull=False,
                    decode=True,
                )
                image_id = _build_messages(messages, shown, progress)
        if image_id is None:
            image_id = self.image(tag).id
        return image_id

    def load(self, image: Image, tag: str) -> str:
        """Load ``image`` under ``tag`` (and no other name), streamed; its image ID."""
        from scratchpack.image.layout import docker_archive_chunks

        with _translated(f"while loading {tag}"):
            for message in self.api.load_image(docker_archive_chunks(image, tag), quiet=True):
                error = message.get("error") if isinstance(message, dict) else None
                if error:
                    text = " ".join(str(error).split())
                    raise EngineError(f"the engine refused to load {tag}: {text}")
        return image.image_id

    @contextlib.contextmanager
    def loaded(self, image: Image, repository: str = VERIFY_REPOSITORY) -> Iterator[str]:
        """``image`` loaded under a throw-away tag of ``repository`` for the block: the tag.

        The tag is always removed afterwards, and only the tag: the engine's own
        images and names stay as they were. After a failure, a tag that cannot
        be removed is named beside the error (:func:`leftover`), not in its place.
        """
        name = f"{repository}/{owner()}-{os.urandom(4).hex()}:0"
        try:
            self.load(image, name)
            yield name
        except BaseException:
            with leftover(f"the image {name}", f"docker rmi {name}"):
                self.untag(name)
            raise
        with deferred_signals():
            self.untag(name)

    def image(self, reference: str) -> ImageInfo:
        """A local image, or an error: never a pull."""
        if self.direct is not None:
            found = self.direct.inspect_image(reference)
            if found is None:
                raise NoSuchImage(f"no image {reference} in the local engine")
            attrs: dict[str, Any] = found
        else:
            import docker.errors

            with _translated(f"while inspecting {reference}"):
                try:
                    attrs = self.api.inspect_image(reference)
                except docker.errors.NotFound as err:
                    raise NoSuchImage(f"no image {reference} in the local engine") from err
        return ImageInfo(
            id=str(attrs["Id"]),
            tags=tuple(attrs.get("RepoTags") or ()),
            size=int(attrs.get("Size") or 0),
            architecture=str(attrs.get("Architecture") or ""),
            variant=attrs.get("Variant") or None,
            config=dict(attrs.get("Config") or {}),
            diff_ids=_diff_ids(attrs.get("RootFS")),
            repo_digests=tuple(str(one) for one in attrs.get("RepoDigests") or ()),
        )

    def has_image(self, reference: str) -> bool:
        try:
            self.image(reference)
        except NoSuchImage:
            return False
        return True

    def save_image(self, reference: str, destination: Path) -> tuple[str, ...]:
        """``docker save`` a local image into ``destination``; returns its tags."""
        info = self.image(reference)  # a clear error for a missing image: nothing pulls
        try:
            with _translated(f"while reading {reference}"), open(destination, "wb") as out:
                for chunk in self.api.get_image(info.id, chunk_size=_CHUNK):
                    out.write(chunk)
        except OSError as err:
            raise InputError(f"cannot save {reference} into {destination}: {err.strerror}") from err
        return info.tags

    @contextlib.contextmanager
    def saved_stream(self, image_id: str) -> Iterator[BinaryIO]:
        """The ``docker save`` archive of ``image_id``, read as the engine sends it."""
        doing = f"while reading {image_id}"
        with _translated(doing):
            chunks = self.api.get_image(image_id, chunk_size=_CHUNK)
        try:
            yield io.BufferedReader(_ChunkStream(chunks, doing), _CHUNK)
        finally:
            chunks.close()

    def tag(self, image_id: str, reference: str) -> None:
        """Give ``image_id`` the name ``reference`` (moving it from any other image)."""
        from scratchpack.image.reference import Reference

        parsed = Reference.parse(reference)
        if self.direct is not None:
            self.direct.tag(image_id, parsed.name, parsed.tag)
            return
        with _translated(f"while tagging {reference}"):
            self.api.tag(image_id, parsed.name, parsed.tag, force=True)

    def untag(self, reference: str) -> None:
        """Remove the name ``reference`` (the image goes only if nothing else names it)."""
        if self.direct is not None:
            self.direct.remove_image(reference)
            return
        import docker.errors

        with _translated(f"while removing {reference}"):
            try:
                self.api.remove_image(reference, noprune=False)
            except docker.errors.NotFound:
                return

    def remove_unnamed(self, image_id: str) -> None:
        """Remove an image that nothing names and nothing uses any more; keep it otherwise."""
        import docker.errors

        with _translated(f"while removing {image_id}"):
            try:
                if self.api.inspect_image(image_id).get("RepoTags"):
                    return
                self.api.remove_image(image_id)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as err:
                if err.status_code == 409:  # a container uses it
                    return
                raise

    def remove_image(self, reference: str) -> None:
        """Remove an image by name or ID, forced (its tags too); absent is fine."""
        import docker.errors

        with _translated(f"while removing {reference}"):
            try:
                self.api.remove_image(reference, force=True)
            except docker.errors.NotFound:
                return

    def leftovers(self) -> list[tuple[str, str, str]]:
        """(kind, name, owner) of the containers and throw-away tags runs of scratchpack made."""
        found: list[tuple[str, str, str]] = []
        dialect = self.dialect
        if self.direct is not None:
            containers = self.direct.listing(
                "/containers/json", {"label": [OWNER_LABEL]}, "containers"
            )
        else:
            with _translated("while listing containers"):
                containers = self.api.containers(all=True, filters={"label": OWNER_LABEL})
        images = self._throwaway_images(dialect)
        for container in containers:
            names = container.get("Names") or [container.get("Id", "")]
            labels = container.get("Labels") or {}
            found.append(("container", str(names[0]).lstrip("/"), str(labels.get(OWNER_LABEL))))
        for image in images:
            for tag in image.get("RepoTags") or []:
                who = owner_of(dialect.familiar(str(tag)))
                if who is not None:
                    found.append(("image", str(tag), who))
        return found

    def _throwaway_images(self, dialect: Dialect) -> list[dict[str, Any]]:
        """The images tagged in :data:`TAG_REPOSITORIES`, each once."""
        images: dict[str, dict[str, Any]] = {}
        for references in dialect.tag_filters(TAG_REPOSITORIES):
            if self.direct is not None:
                listed = self.direct.listing("/images/json", {"reference": references}, "images")
            else:
                with _translated("while listing images"):
                    listed = self.api.images(filters={"reference": references})
            images.update((str(image.get("Id")), image) for image in listed)
        return list(images.values())

    def remove_container(self, name: str) -> None:
        if self.direct is not None:
            self.direct.remove_container(name)
            return
        Container(self, name).remove()

    def answers(self, within: float = 5.0) -> bool:
        """Whether the engine answers a ping within ``within`` seconds."""
        path = unix_socket()
        if path is not None:
            import socket

            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(within)
                    sock.connect(path)
                    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    return sock.recv(12).startswith(b"HTTP/1.")
            except OSError:
                return False
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def version(self) -> dict[str, Any]:
        """The engine's ``/version`` answer, asked once per connection."""
        if self._version is None:
            doing = "while asking its version"
            if self.direct is not None:
                status, document = self.direct.call("GET", "/version", doing)
                if status >= 400 or not isinstance(document, dict):
                    raise EngineError(f"the engine refused {doing}: answered {status}")
            else:
                with _translated(doing):
                    document = self.api.version()
            self._version = dict(document)
        return self._version

    @property
    def dialect(self) -> Dialect:
        """How this engine's answers differ from Docker's (:mod:`scratchpack.engine.dialect`)."""
        return dialect_of(self.version())

    def architecture(self) -> str:
        return str(self.version().get("Arch") or "")

    # -- containers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def container(self, image_id: str, **options: Any) -> Iterator[Container]:
        """A container of a local image, removed (with its anonymous volumes) afterwards.

        Its name is chosen and its owner label set before the engine is asked,
        so an interrupt while the engine creates it still finds and removes it.
        ``containers.create`` never pulls; callers pass images that exist.
        """
        _check_mounts(options)
        name = options.pop("name", None) or f"{prefix()}{os.urandom(4).hex()}"
        labels = {OWNER_LABEL: owner(), **(options.pop("labels", None) or {})}
        container = Container(self, name)

        try:
            with _translated(f"while creating a container of {image_id}"):
                container.model = self.client.containers.create(
                    image_id, name=name, labels=labels, **options
                )
            yield container
        except BaseException:
            with leftover(f"the container {name}", f"docker rm -f {name}"):
                container.remove()
            raise
        with deferred_signals():
            container.remove()

    def run(
        self,
        image: str,
        command: Sequence[str] | None = None,
        network: bool = False,
        timeout: float = 120,
        confinement: Confinement | None = None,
    ) -> RunResult:
        """Run a local image to completion, confined: its exit code and output.

        A run still going after ``timeout`` seconds (a server) is stopped; its
        result has no exit code and the output it had written so far.
        """
        info = self.image(image)  # fails clearly instead of letting the engine pull
        confined = (confinement or Confinement()).options(str(info.config.get("User") or ""))
        with self.container(
            image,
            command=list(command) if command is not None else None,
            # network_disabled would also leave /etc/hosts empty (no localhost).
            network_mode=None if network else "none",
            **confined,
        ) as container:
            container.start()
            try:
                code: int | None = container.wait(
                    timeout, f"{image} did not finish within {timeout:.0f} s"
                )
            except ContainerTimeout:
                code = None
                container.stop(grace=1)
            return RunResult(code, container.logs())


def _check_mounts(options: dict[str, Any]) -> None:
    """Refuse a container that mounts this machine's files when the engine may be elsewhere.

    There the path would name the engine host's files (or none): images and
    files travel over the connection instead.
    """
    volumes = options.get("volumes") or {}
    paths = [path for path in volumes if str(path).startswith("/")]
    paths += [str(bind).split(":")[0] for bind in options.get("binds") or ()]
    if paths:
        from scratchpack.engine.remote import remote_refusal

        refusal = remote_refusal(f"a container that mounts {printable(paths[0])} from this machine")
        if refusal is not None:
            raise EngineError(refusal)


class Container:
    """A container the engine made for us: started, waited for, read, removed."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.model: Any = None

    def _get(self) -> Any:
        if self.model is None:
            self.model = self.engine.client.containers.get(self.name)
        return self.model

    def start(self) -> None:
        with _translated(f"while starting {self.name}"):
            self._get().start()

    def wait(self, timeout: float, message: str) -> int:
        """The exit status; :class:`ContainerTimeout` with ``message`` if it takes longer.

        The wait goes in slices, the engine asked in between whether it still
        answers: a paused or hung engine is an :class:`EngineTimeout` within
        seconds, not a slow container at the end of the timeout.
        """
        import time

        import docker.errors
        import requests.exceptions

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                status = self._get().wait(timeout=max(1, min(left, _WAIT_SLICE)))
                return int(status.get("StatusCode", -1))
            except requests.exceptions.ConnectionError as err:
                timed_out = isinstance(err, requests.exceptions.ReadTimeout) or (
                    "timed out" in str(err).lower()
                )
                if not timed_out:
                    raise EngineLost(
                        f"lost the Docker engine at {where()} while waiting for {self.name}"
                    ) from err
            except requests.exceptions.Timeout:
                pass
            except requests.exceptions.RequestException as err:  # a stream cut off
                raise EngineLost(
                    f"lost the Docker engine at {where()} while waiting for {self.name}"
                ) from err
            except docker.errors.DockerException as err:
                raise EngineError(f"the engine lost {self.name}: {short(err)}") from err
            if not self.engine.answers():
                raise EngineTimeout(
                    f"the Docker engine at {where()} stopped answering while waiting for "
                    f"{self.name}"
                )
            if time.monotonic() >= deadline:
                raise ContainerTimeout(message)

    def status(self) -> str:
        with _translated(f"while inspecting {self.name}"):
            model = self._get()
            model.reload()
            return str(model.status)

    def attrs(self) -> dict[str, Any]:
        with _translated(f"while inspecting {self.name}"):
            model = self._get()
            model.reload()
            return dict(model.attrs)

    def stop(self, grace: int) -> None:
        with _translated(f"while stopping {self.name}"):
            self._get().stop(timeout=grace)

    def logs(self, tail: int | str = "all", stderr: bool = True) -> str:
        with _translated(f"while reading the output of {self.name}"):
            data = self._get().logs(stdout=True, stderr=stderr, tail=tail)
        return data.decode("utf-8", "replace")

    def read_head(self, path: str, limit: int = 64 * 1024) -> bytes | None:
        """The first ``limit`` bytes of ``path`` in the container (``docker cp``), or None.

        Symlinks are followed (inside the container); the archive the engine
        sends is read only as far as needed; anything but a regular file is None.
        """
        import posixpath

        import docker.errors
        import requests.exceptions

        whole = 4 << 20  # files up to this size are read whole (the response ends cleanly)
        for _hop in range(40):
            try:
                chunks, stat = self._get().get_archive(path, chunk_size=65536)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                return None
            cut = None if int(stat.get("size") or 0) <= whole else limit + 16384
            data = bytearray()
            try:
                for chunk in chunks:
                    data += chunk
                    if cut is not None and len(data) >= cut:
                        break
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                return None
            finally:
                with contextlib.suppress(Exception):
                    chunks.close()
            try:
                with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tar:
                    member = tar.next()
            except tarfile.TarError:
                return None
            if member is None:
                return None
            if member.issym() or member.islnk():
                path = stat.get("linkTarget") or posixpath.join(
                    posixpath.dirname(path), member.linkname
                )
                continue
            if not member.isfile():
                return None
            start = member.offset_data
            return bytes(data[start : start + min(member.size, limit)])
        return None

    def put_directory(self, path: str, mode: int) -> None:
        """Make directory ``path`` in the container's own layer (created, not yet started).

        Nothing on the host is shared: what the container writes there stays in
        its writable layer and comes out only through :meth:`open_file`.
        """
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.addfile(info)
        with _translated(f"while preparing {self.name}"):
            self._get().put_archive("/", buffer.getvalue())

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        """``path`` in the container as the engine's archive API gives it, streamed.

        The header tells what it is (a symlink is not followed); the stream is
        there for a regular file only and is read as it arrives, never whole.
        """
        import docker.errors

        doing = f"while reading {path} from {self.name}"
        with _translated(doing):
            try:
                chunks, _stat = self._get().get_archive(path, chunk_size=_CHUNK)
            except docker.errors.NotFound as err:
                raise EngineError(f"{self.name} has no {path}") from err
            try:
                with tarfile.open(fileobj=_ChunkStream(iter(chunks), doing), mode="r|") as tar:
                    member = tar.next()
                    if member is None:
                        raise EngineError(f"the engine sent nothing for {path}")
                    yield member, tar.extractfile(member) if member.isreg() else None
            except tarfile.TarError as err:
                raise EngineError(f"the engine sent a broken archive of {path}: {err}") from err
            finally:
                with contextlib.suppress(Exception):
                    chunks.close()

    def remove(self) -> None:
        """Remove it and its anonymous volumes; absent is fine, a lost engine is not hidden."""
        import docker.errors

        with _translated(f"while removing the container {self.name}"):
            try:
                self.engine.api.remove_container(self.name, v=True, force=True)
            except docker.errors.NotFound:
                return


# What the legacy builder says when an image it was about to compare with vanished
# (errors.BuildRaced): its cache probe's own words, about an image ID.
_RACED = re.compile(r'unable to find image "sha256:[0-9a-f]{64}"')


def _build_messages(
    messages: Iterable[dict[str, Any]], tag: str, progress: Callable[[str], None] | None
) -> str | None:
    """Follow a build's messages: its image ID, or the engine's own error."""
    image_id = None
    for chunk in messages:
        if "error" in chunk:
            detail = str((chunk.get("errorDetail") or {}).get("message") or chunk["error"])
            failed = BuildRaced if _RACED.fullmatch(detail.strip()) else EngineError
            raise failed(f"the engine failed to build {tag}: {detail.strip()}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
        stream = chunk.get("stream")
        if progress is not None and isinstance(stream, str) and stream.strip():
            progress(stream.rstrip("\n"))
    return image_id
