"""The engine API spoken directly on a unix socket: its stream parsing and its failures."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from scratchpack.engine.direct import DirectAPI, json_messages, unix_socket
from scratchpack.errors import EngineError, EngineLost, EngineUnreachable


def test_messages_split_anyhow_across_chunks() -> None:
    stream = [
        b'{"stream":"Step 1/2',
        b' : FROM scratch\\n"}\r\n{"aux":',
        b'{"ID":"sha256:ab"}}\r\n',
    ]
    assert list(json_messages(stream)) == [
        {"stream": "Step 1/2 : FROM scratch\n"},
        {"aux": {"ID": "sha256:ab"}},
    ]
    with pytest.raises(EngineLost, match="ended in the middle"):
        list(json_messages([b'{"stream":"cut']))


def test_the_socket_comes_from_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert unix_socket() == "/var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    assert unix_socket() == "/run/other.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    assert unix_socket() is None  # the SDK speaks TLS and the rest


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(answer)
        connection.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_absent_engine_a_refusal_and_a_lost_one(tmp_path: Path) -> None:
    with pytest.raises(EngineUnreachable, match="cannot reach a Docker engine"):
        DirectAPI(str(tmp_path / "none.sock")).ping()
    refusing = tmp_path / "refusing.sock"
    body = b'{"message":"conflict: unable to tag"}'
    serve_once(
        refusing,
        b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    api = DirectAPI(str(refusing))
    with pytest.raises(EngineError, match="conflict: unable to tag") as refused:
        api.tag("sha256:ab", "app", "1")
    assert refused.value.exit_code == 3
    cut = tmp_path / "cut.sock"
    serve_once(cut, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    api = DirectAPI(str(cut))
    api.answered = True
    with pytest.raises(EngineError):
        api.inspect_image("app:1")


def test_a_chunked_answer_is_read_whole_and_a_cut_one_is_lost(tmp_path: Path) -> None:
    """The build's answer comes in chunks (split anywhere); one cut short is an engine lost."""
    whole = tmp_path / "whole.sock"
    serve_once(
        whole,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7;ext=1\r\n{"a": 1\r\n2\r\n}\n\r\n0\r\nTrailer: x\r\n\r\n',
    )
    status, body = DirectAPI(str(whole)).request("GET", "/x", "while testing")
    assert status == 200 and b"".join(body) == b'{"a": 1}\n'
    cut = tmp_path / "cut-chunks.sock"
    serve_once(cut, b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"a"')
    api = DirectAPI(str(cut))
    status, body = api.request("GET", "/x", "while testing")
    with pytest.raises(EngineLost, match="ended in the middle"):
        b"".join(body)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"", "closed the connection without answering"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 " + b"x" * (70 << 10), "not HTTP"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 << 10) + b"\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab", "not HTTP"),  # "2" in latin-1
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "not HTTP"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"T: x\r\n" * 200,
            "not HTTP",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 11 + b"HTTP/1.1 200 OK\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 100 Continue\r\n" + b"X: y\r\n" * 200 + b"\r\n", "not HTTP"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "ended in the middle"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not HTTP"),
    ],
)
def test_an_answer_that_is_not_http_is_an_engine_error_in_words(
    tmp_path: Path, answer: bytes, words: str
) -> None:
    """Whatever answers on the socket, the error is one line in words, never a traceback."""
    failure = _failure(tmp_path / "odd.sock", answer)
    assert words in failure and "\n" not in failure


def _failure(path: Path, answer: bytes) -> str:
    """The engine error a call gets when ``answer`` comes back, in words."""
    serve_once(path, answer)
    api = DirectAPI(str(path))
    api.answered = True  # it answered before: a failure now means it went wrong
    with pytest.raises(EngineError) as caught:
        api.call("GET", "/x", "while testing")
    return str(caught.value)


def _answered(path: Path, answer: bytes) -> tuple[int, bytes]:
    """The status and the whole body a request gets when ``answer`` comes back."""
    serve_once(path, answer)
    status, body = DirectAPI(str(path)).request("POST", "/x", "while testing")
    return status, b"".join(body)


def test_a_request_body_of_unknown_length_goes_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    received = bytearray()

    def run() -> None:
        connection, _ = server.accept()
        while not received.endswith(b"0\r\n\r\n"):
            data = connection.recv(65536)
            if not data:
                break
            received.extend(data)
        connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        connection.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    status, body = DirectAPI(str(path)).request("POST", "/x", "while testing", body=[b"ab", b"c"])
    assert status == 204 and b"".join(body) == b""
    thread.join(timeout=5)
    head, _, sent = bytes(received).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert sent == b"3\r\nabc\r\n0\r\n\r\n"  # the pieces gathered into one chunk, then the last


@pytest.mark.parametrize(
    "size", [b"-2", b"0x2", b"+2", b"1_0", b" 2", b"2 2", b"\xb2", b"", b"0" * 16 + b"2"]
)
def test_a_chunk_size_is_hex_digits_and_nothing_else(tmp_path: Path, size: bytes) -> None:
    """``int(x, 16)`` takes a sign, a 0x, underscores and spaces; a negative size read to the
    end of the stream. A chunk's size is 1 to 16 hex digits (an extension may follow)."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    failure = _failure(tmp_path / "chunk.sock", chunked + size + b"\r\nab\r\n0\r\n\r\n" + b"x" * 99)
    assert "not HTTP" in failure and "\n" not in failure


def test_longest_chunk_size_and_an_extension_are_read(tmp_path: Path) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"000000000000000A ; name=value\r\n0123456789\r\n0\r\n\r\n"
    assert _answered(tmp_path / "chunk.sock", chunked + chunks) == (200, b"0123456789")


def test_interim_answers_are_skipped_for_the_final_one(tmp_path: Path) -> None:
    """A ``100 Continue`` (or any 1xx but 101) is not the answer: its headers are read and
    the next status line is the one that counts."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
    final = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    assert _answered(tmp_path / "interim.sock", interim + final) == (201, b"{}")
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\nraw"
    assert _answered(tmp_path / "switching.sock", switching) == (101, b"")  # final: not HTTP now


@pytest.mark.parametrize(
    ("message", "raced"),
    [
        ('unable to find image "sha256:' + "ab" * 32 + '"', True),
        ('unable to find image "sha256:ab"', False),  # not an image ID
        ("COPY failed: file not found in build context", False),
        ('unable to find image "sha256:' + "ab" * 32 + '" and more', False),
    ],
)
def test_a_cache_probe_that_lost_an_image_is_told_from_other_failures(
    message: str, raced: bool
) -> None:
    """moby's legacy builder lists every image, then reads each: one that another client
    removed between the two fails the build with these words, and a second build can
    succeed (the command builds again once)."""
    from scratchpack.engine.client import _build_messages
    from scratchpack.errors import BuildRaced

    with pytest.raises(EngineError) as failed:
        _build_messages([{"error": message, "errorDetail": {"message": message}}], "t:1", None)
    assert isinstance(failed.value, BuildRaced) is raced
    assert failed.value.exit_code == 3
