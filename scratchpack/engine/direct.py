"""The engine's HTTP API spoken directly over its unix socket, for ``build``'s few calls.

``build`` through the engine must cost about what ``docker build`` costs, and
importing the docker SDK (requests, urllib3, its models) alone takes a tenth
of a second that the Go CLI never pays: more than the whole of scratchpack's
own work for curl. The calls a build makes — ping, build, inspect, tag,
untag — are plain HTTP requests on the local socket, so they are made here
with the standard library; everything else (load, save, containers, attach)
goes through the SDK in :mod:`scratchpack.engine.client`. Engines reached any
other way (``tcp://``, TLS, ``ssh://``) use the SDK for everything.

HTTP/1.1 itself is spoken here too (:class:`_Exchange`), not by ``http.client``:
that module imports ``email`` and ``ssl`` for 15 ms of every build's start, to
parse the few headers a local engine sends. One request per connection, the
answer framed by its length or its chunks, every line read within a bound.
"""

from __future__ import annotations

import json
import os
import re
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
from scratchpack.image.tarstream import (
    FileSpan,
    grew_since_planned,
    open_span,
    shorter_than_planned,
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
    names = " ".join(type(item).__name__ for item in chain)
    if "RemoteDisconnected" in names:  # http.client's, under the SDK (requests, urllib3)
        return "it closed the connection without answering"
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (NoAnswer, "it closed the connection without answering"),
        (AnswerCut, "its answer ended in the middle"),
        (BadAnswer, "its answer was not HTTP as an engine speaks it"),
        (ConnectionRefusedError, "it refused the connection"),
        (ConnectionResetError, "it reset the connection"),
        (BrokenPipeError, "it closed the connection while we were sending"),
        (FileNotFoundError, "its socket is gone"),
        (PermissionError, "permission denied on its socket"),
        (TimeoutError, "it did not answer in time"),
    )
    for kind, words in kinds:
        if any(isinstance(item, kind) for item in chain):
            return words
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


class NoAnswer(ConnectionResetError):
    """The engine closed the connection before its answer's status line."""


class AnswerCut(ConnectionError):
    """The engine's answer ended before its length, or its last chunk, said it would."""


class BadAnswer(ConnectionError):
    """What came back is not HTTP/1.x as an engine speaks it."""


_MAX_HEAD_LINE = 64 << 10  # a status line, a header or a chunk's size line
_MAX_HEADERS = 100
_PIECE = 1 << 16  # what one read of the body returns at most
_PENDING = 1 << 20  # a request body's bytes gathered before they are sent
_MAX_INTERIM = 10  # interim (1xx) answers skipped before the final one
_MAX_DIGITS = 19  # of a Content-Length (int() refuses more than 4300)
_STATUS = re.compile(rb"[1-9][0-9][0-9]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # int(x, 16) takes signs, 0x, _ and spaces too


class _BodyFailed(Exception):
    """What making a request's body raised: that failure's own, never the engine's."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Exchange:
    """One HTTP/1.1 request on a fresh unix-socket connection, and its answer's body."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.stream = self.sock.makefile("rb")
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.stream.close()
        self.sock.close()

    def send(self, head: str, body: bytes | Iterable[bytes | FileSpan] | None, sized: bool) -> None:
        """The request line and headers, then the body: as is when its length was
        given (or it is bytes), else in chunks; a host file's span by ``sendfile``."""
        self.sock.sendall(head.encode("latin-1"))
        if body is None or isinstance(body, bytes):
            if body:
                self.sock.sendall(body)
            return
        pending = bytearray()
        pieces = iter(body)
        while True:
            try:
                piece = next(pieces, None)
            except Exception as err:  # the body's own making failed (a file, the records)
                raise _BodyFailed(err) from None
            if piece is None:
                break
            if isinstance(piece, FileSpan):
                self._flush(pending, sized)
                self._send_span(piece, sized)
            else:
                pending += piece
                if len(pending) >= _PENDING:
                    self._flush(pending, sized)
        self._flush(pending, sized)
        if not sized:
            self.sock.sendall(b"0\r\n\r\n")

    def _flush(self, pending: bytearray, sized: bool) -> None:
        if pending:
            self.sock.sendall(pending if sized else b"%x\r\n%b\r\n" % (len(pending), pending))
            pending.clear()

    def _send_span(self, span: FileSpan, sized: bool) -> None:
        """A host file's planned bytes, copied by the kernel; refused if not that size now."""
        with open_span(span) as stream:
            if not sized:
                self.sock.sendall(b"%x\r\n" % span.size)
            if self.sock.sendfile(stream, 0, span.size) < span.size:
                raise shorter_than_planned(span.source)
            if os.fstat(stream.fileno()).st_size > span.size:
                raise grew_since_planned(span.source)
            if not sized:
                self.sock.sendall(b"\r\n")

    def _line(self) -> bytes:
        line = self.stream.readline(_MAX_HEAD_LINE + 1)
        if len(line) > _MAX_HEAD_LINE:
            raise BadAnswer("a line of the answer is too long")
        if not line.endswith(b"\n"):
            raise AnswerCut("the answer ended in the middle of a line")
        return line.rstrip(b"\r\n")

    def answer(self, method: str) -> tuple[int, Iterator[bytes]]:
        """The status, and the body as it arrives (framed by its length or its chunks)."""
        status, headers = self._final_head()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, iter(())
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, self._chunks()
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit() and len(length) <= _MAX_DIGITS):
                raise BadAnswer("the answer's length is not a number")
            return status, self._sized(int(length))
        return status, self._to_the_end()

    def _final_head(self) -> tuple[int, dict[str, str]]:
        """The status line and headers of the answer, past any interim (1xx) ones a
        server may send first (101 is final: the connection is no longer HTTP)."""
        for interim in range(_MAX_INTERIM + 1):
            status = self._status(first=interim == 0)
            headers = self._headers()
            if not 100 <= status < 200 or status == 101:
                return status, headers
        raise BadAnswer("the answer has too many interim answers")

    def _status(self, first: bool) -> int:
        line = self.stream.readline(_MAX_HEAD_LINE + 1)
        if not line and first:
            raise NoAnswer("the engine closed the connection without answering")
        if not line:
            raise AnswerCut("the answer ended after an interim answer")
        words = line.split(None, 2) if line.endswith(b"\n") else []
        if len(words) < 2 or not words[0].startswith(b"HTTP/1.") or not _STATUS.fullmatch(words[1]):
            raise BadAnswer("the answer is not HTTP/1.x")
        return int(words[1])

    def _headers(self) -> dict[str, str]:
        """Header (or trailer) lines up to the empty one, at most ``_MAX_HEADERS``."""
        headers: dict[str, str] = {}
        for count in range(_MAX_HEADERS + 1):
            if not (line := self._line()):
                return headers
            if count == _MAX_HEADERS:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise BadAnswer("the answer has too many headers")

    def _sized(self, left: int) -> Iterator[bytes]:
        while left:
            data = self.stream.read1(min(left, _PIECE))
            if not data:
                raise AnswerCut(f"the answer ended {left} bytes short")
            left -= len(data)
            yield data

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_word = self._line().split(b";", 1)[0].rstrip(b" \t")  # space before ;ext
            if not _CHUNK_SIZE.fullmatch(size_word):
                raise BadAnswer("a chunk's size is not a number")
            size = int(size_word, 16)
            if size == 0:
                self._headers()  # trailers, up to the empty line
                return
            yield from self._sized(size)
            if self._line():
                raise BadAnswer("a chunk does not end where its size says")

    def _to_the_end(self) -> Iterator[bytes]:
        while data := self.stream.read1(_PIECE):
            yield data


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
        body: bytes | Iterable[bytes | FileSpan] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Iterator[bytes]]:
        """Send a request; the status and the body as it arrives (read it to the end)."""
        url = path + (f"?{urlencode(params)}" if params else "")
        fields = {"Host": "localhost", "Connection": "close", **(headers or {})}
        sized = body is None or isinstance(body, bytes) or "Content-Length" in fields
        if isinstance(body, bytes):
            fields["Content-Length"] = str(len(body))
        elif body is not None and not sized:
            fields["Transfer-Encoding"] = "chunked"
        head = f"{method} {url} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
        try:
            exchange = _Exchange(self.path, timeout if timeout is not None else call_timeout())
        except OSError as err:
            raise self._failure(err, doing) from err
        try:
            exchange.send(head, body, sized)
            status, answer = exchange.answer(method)
        except _BodyFailed as failed:  # the body unfinished: the engine builds nothing
            exchange.close()
            body_error: Exception | None = failed.error
        except OSError as err:
            exchange.close()
            raise self._failure(err, doing) from err
        except BaseException:
            exchange.close()
            raise
        else:
            body_error = None
        if body_error is not None:
            raise body_error  # as it was raised (outside the handler: no engine error chained)
        self.answered = True

        def chunks() -> Iterator[bytes]:
            try:
                yield from answer
            except OSError as err:
                raise self._failure(err, doing) from err
            finally:
                exchange.close()

        return status, chunks()

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
        self, context: Iterable[bytes | FileSpan], size: int | None, tag: str, shown: str
    ) -> Iterator[dict[str, Any]]:
        """POST /build with a streamed context, of ``size`` bytes or in chunks: the
        engine's messages."""
        headers = {"Content-Type": "application/x-tar"}
        if size is not None:
            headers["Content-Length"] = str(size)
        status, body = self.request(
            "POST",
            "/build",
            f"while building {shown}",
            params={"t": tag, "rm": "1", "forcerm": "1"},
            body=context,
            headers=headers,
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
