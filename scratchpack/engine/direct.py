"""The engine's HTTP API spoken directly over its unix socket, for ``build``'s few calls.

``build`` through the engine must cost about what ``docker build`` costs, and
importing the docker SDK (requests, urllib3, its models) alone takes a tenth
of a second that the Go CLI never pays: more than the whole of scratchpack's
own work for curl. The calls a build makes — ping, build, inspect, tag,
untag — are plain HTTP requests on the local socket, so they are made here
with the standard library; everything else (load, save, containers, attach)
goes through the SDK in :mod:`scratchpack.engine.client`. Engines reached any
other way (``tcp://``, TLS, ``ssh://``) use the SDK for everything.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

from scratchpack.errors import (
    EngineError,
    EngineLost,
    EngineTimeout,
    EngineUnreachable,
    exception_chain,
)

_CALL_TIMEOUT = 60.0  # a plain request that gets no byte back for this long: the engine hangs


def engine_timeout() -> float:
    """How long a build, load or save may go without a byte from the engine.

    A long COPY says nothing for minutes, so the default is generous (10 min);
    ``SCRATCHPACK_ENGINE_TIMEOUT`` (seconds) changes it — and bounds plain calls,
    60 s by default, too.
    """
    raw = os.environ.get("SCRATCHPACK_ENGINE_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else 600.0
    except ValueError:
        value = 600.0
    return max(1.0, value)


def call_timeout() -> float:
    return min(_CALL_TIMEOUT, engine_timeout())


_DECODER = json.JSONDecoder()


def transport_words(err: BaseException) -> str:
    """What happened to a connection to the engine, in words (never an exception's repr)."""
    chain = exception_chain(err)
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (http.client.RemoteDisconnected, "it closed the connection without answering"),
        (ConnectionRefusedError, "it refused the connection"),
        (ConnectionResetError, "it reset the connection"),
        (BrokenPipeError, "it closed the connection while we were sending"),
        (FileNotFoundError, "its socket is gone"),
        (PermissionError, "permission denied on its socket"),
        (http.client.IncompleteRead, "its answer ended in the middle"),
        (TimeoutError, "it did not answer in time"),
    )
    for kind, words in kinds:
        if any(isinstance(item, kind) for item in chain):
            return words
    names = " ".join(type(item).__name__ for item in chain)
    if "Timeout" in names:
        return "it did not answer in time"
    if "ChunkedEncoding" in names or "ProtocolError" in names or "IncompleteRead" in names:
        return "its answer ended in the middle"
    for item in reversed(chain):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror[0].lower() + item.strerror[1:]
    return "the connection failed"


def unix_socket() -> str | None:
    """The engine's unix socket when DOCKER_HOST names one (or is unset), else None."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return "/var/run/docker.sock"
    if host.startswith("unix://"):
        return host[len("unix://") :] or None
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class DirectAPI:
    """Requests to the engine at a unix socket; every failure an engine error."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.answered = False  # once it has answered, a refused connection means it went away

    def _failure(self, err: OSError, doing: str) -> EngineError:
        where = f"unix://{self.path}"
        if isinstance(err, TimeoutError):
            return EngineTimeout(f"the Docker engine at {where} did not answer {doing}")
        if not self.answered:
            return EngineUnreachable(
                f"cannot reach a Docker engine at {where} ({err.strerror or err}); start "
                "dockerd or point DOCKER_HOST at a running engine (e.g. unix:///run/docker.sock)"
            )
        return EngineLost(f"lost the Docker engine at {where} {doing}: {transport_words(err)}")

    def request(
        self,
        method: str,
        path: str,
        doing: str,
        params: dict[str, Any] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Iterator[bytes]]:
        """Send a request; the status and the body as it arrives (read it to the end)."""
        url = path + (f"?{urlencode(params)}" if params else "")
        connection = _UnixConnection(self.path, timeout if timeout is not None else call_timeout())
        try:
            connection.request(method, url, body=body, headers=headers or {})
            response = connection.getresponse()
        except OSError as err:
            connection.close()
            raise self._failure(err, doing) from err
        except http.client.HTTPException as err:
            connection.close()
            raise EngineLost(
                f"lost the Docker engine at unix://{self.path} {doing}: {transport_words(err)}"
            ) from err
        self.answered = True

        def chunks() -> Iterator[bytes]:
            try:
                while data := response.read1(1 << 16):
                    yield data
            except OSError as err:
                raise self._failure(err, doing) from err
            except http.client.HTTPException as err:
                raise EngineLost(
                    f"lost the Docker engine at unix://{self.path} {doing}: {transport_words(err)}"
                ) from err
            finally:
                connection.close()

        return response.status, chunks()

    def call(self, method: str, path: str, doing: str, **options: Any) -> tuple[int, Any]:
        """A request whose answer is one JSON document (or nothing)."""
        status, body = self.request(method, path, doing, **options)
        data = b"".join(body)
        try:
            document = json.loads(data) if data.strip() else None
        except ValueError:
            document = data.decode("utf-8", "replace")
        return status, document

    def listing(self, path: str, filters: dict[str, list[str]], doing: str) -> list[dict[str, Any]]:
        """GET a list endpoint (containers, images) with engine filters."""
        status, document = self.call(
            "GET", path, doing, params={"all": "1", "filters": json.dumps(filters)}
        )
        if status >= 400 or not isinstance(document, list):
            raise EngineError(f"cannot list {doing}: {_message(document)}")
        return [item for item in document if isinstance(item, dict)]

    def remove_container(self, name: str) -> None:
        status, document = self.call(
            "DELETE", f"/containers/{quote(name, safe='')}", f"while removing {name}",
            params={"force": "1", "v": "1"},
        )  # fmt: skip
        if status >= 400 and status != 404:
            raise EngineError(f"the engine refused to remove {name}: {_message(document)}")

    def ping(self) -> None:
        status, _ = self.call("GET", "/_ping", "a ping")
        if status != 200:
            raise EngineUnreachable(f"the Docker engine at unix://{self.path} answered {status}")

    def build(
        self, context: Iterable[bytes], size: int, tag: str, shown: str
    ) -> Iterator[dict[str, Any]]:
        """POST /build with a streamed context of ``size`` bytes: the engine's messages."""
        status, body = self.request(
            "POST",
            "/build",
            f"while building {shown}",
            params={"t": tag, "rm": "1", "forcerm": "1"},
            body=context,
            headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
            timeout=engine_timeout(),  # a long COPY says nothing for minutes
        )
        if status >= 400:
            raise EngineError(f"the engine refused to build {shown}: {_message(b''.join(body))}")
        return json_messages(body)

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        status, document = self.call(
            "GET", f"/images/{quote(reference, safe='')}/json", f"while inspecting {reference}"
        )
        if status == 404:
            return None
        if status >= 400 or not isinstance(document, dict):
            raise EngineError(f"cannot inspect {reference}: {_message(document)}")
        return document

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        status, document = self.call(
            "POST",
            f"/images/{quote(image_id, safe='')}/tag",
            f"while tagging {repository}:{tag}",
            params={"repo": repository, "tag": tag, "force": "1"},
        )
        if status >= 400:
            raise EngineError(f"the engine refused to tag {repository}:{tag}: {_message(document)}")

    def remove_image(self, reference: str, force: bool = False) -> bool:
        """DELETE the name (or image); False when there was none."""
        status, document = self.call(
            "DELETE",
            f"/images/{quote(reference, safe='')}",
            f"while removing {reference}",
            params={"force": "1" if force else "0", "noprune": "0"},
        )
        if status == 404:
            return False
        if status >= 400:
            raise EngineError(f"the engine refused to remove {reference}: {_message(document)}")
        return True


def json_messages(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a streamed answer, however the stream splits them."""
    buffered = ""
    for data in chunks:
        buffered += data.decode("utf-8", "replace")
        while True:
            buffered = buffered.lstrip()
            if not buffered:
                break
            try:
                document, end = _DECODER.raw_decode(buffered)
            except ValueError:
                break  # an object split across chunks: wait for the rest
            buffered = buffered[end:]
            if isinstance(document, dict):
                yield document
    if buffered.strip():
        raise EngineLost("the Docker engine's answer ended in the middle of a message")


def _message(document: Any) -> str:
    if isinstance(document, bytes):
        try:
            document = json.loads(document)
        except ValueError:
            document = document.decode("utf-8", "replace")
    if isinstance(document, dict):
        document = document.get("message", document)
    return " ".join(str(document).split())[:300]
