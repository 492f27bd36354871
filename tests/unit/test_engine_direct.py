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
