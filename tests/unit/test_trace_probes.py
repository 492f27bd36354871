"""The default probe of a traced server, against real sockets on 127.0.0.1 (no engine).

A port is probed by a connection; ``GET /`` only makes it an HTTP probe where the
answer is HTTP. Each server here is a thread with a listening socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from scratchpack.trace.parse import bind_of, loopback_only
from scratchpack.trace.run import ProbeKind, _port_probe


def _serve(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                handle(connection)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def _speaks_first(connection: socket.socket) -> None:
    connection.sendall(b"220 mail.example ESMTP ready\r\n")


def _redis_like(connection: socket.socket) -> None:
    connection.settimeout(2)
    if connection.recv(1024):
        connection.sendall(b"-ERR unknown command 'GET'\r\n")


def _http(status: bytes) -> Callable[[socket.socket], None]:
    def handle(connection: socket.socket) -> None:
        connection.settimeout(2)
        if connection.recv(1024):
            connection.sendall(b"HTTP/1.0 " + status + b"\r\nContent-Length: 0\r\n\r\n")

    return handle


def _silent(connection: socket.socket) -> None:
    connection.settimeout(2)
    connection.recv(1024)  # reads the request, answers nothing, closes


@pytest.mark.parametrize(
    ("handle", "kind", "passed", "words"),
    [
        (_speaks_first, ProbeKind.TCP, True, "it spoke first: 220 mail.example ESMTP ready"),
        (_redis_like, ProbeKind.TCP, True, "connected (not HTTP)"),
        (_silent, ProbeKind.TCP, True, "connected (no answer to GET /)"),
        (_http(b"200 OK"), ProbeKind.HTTP, True, "GET / -> HTTP/1.0 200 OK"),
        (_http(b"404 Not Found"), ProbeKind.HTTP, True, "GET / -> HTTP/1.0 404 Not Found"),
        (_http(b"500 Internal Server Error"), ProbeKind.HTTP, False, "HTTP/1.0 500"),
    ],
)
def test_a_port_is_probed_by_a_connection_and_get_only_where_it_speaks_http(
    handle: Callable[[socket.socket], None], kind: ProbeKind, passed: bool, words: str
) -> None:
    for port in _serve(handle):
        probe = _port_probe(8080, port)
        assert (probe.kind, probe.passed) == (kind, passed), probe
        assert words in probe.summary, probe
        assert probe.target == "8080/tcp"


def test_a_refused_connection_fails_the_probe() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    probe = _port_probe(80, port)
    assert (probe.kind, probe.passed) == (ProbeKind.TCP, False), probe


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "7 bind(3<TCP:[9]>, {sa_family=AF_INET, sin_port=htons(6379), "
            'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            ("127.0.0.1", 6379),
        ),
        (
            "bind(5<TCPv6:[1]>, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), "
            'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
            ("::1", 80),
        ),
        ('bind(3, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = 0', None),
        ('openat(AT_FDCWD, "/etc/bind(x", O_RDONLY) = 3', None),
    ],
)
def test_binds_are_read_from_the_log(line: str, expected: tuple[str, int] | None) -> None:
    assert bind_of(line) == expected


def test_a_port_bound_to_loopback_and_elsewhere_is_not_loopback_only() -> None:
    binds = [("127.0.0.1", 6379), ("0.0.0.0", 80), ("127.0.0.1", 80), ("::1", 5432)]
    assert loopback_only(binds) == {6379: "127.0.0.1", 5432: "::1"}
