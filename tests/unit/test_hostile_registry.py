"""Registries that lie: credentials must stay with the registry the user named.

Fake registries on loopback answer the push flow and try to get the user's
credentials elsewhere: an upload ``Location`` on another origin, a 401 from
that origin, a Bearer realm on another origin over plain HTTP or with a
certificate nobody trusts, and an error message that echoes the request's
``Authorization`` header. 127.0.0.1 and 127.0.0.2 are different origins.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from scratchpack.errors import EXIT_PUSH
from scratchpack.image.media import Platform
from scratchpack.image.registry import Credentials, PushError, push_image
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.entries import Entry, EntryKind, Reason

USER, PASSWORD = "alice", "s3cr3t-pass"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CREDENTIALS = Credentials(USER, PASSWORD)


class Recorder(BaseHTTPRequestHandler):
    """Records every request's method, path and Authorization header."""

    seen: ClassVar[list[tuple[str, str, str | None]]]
    behaviour: ClassVar[dict[str, Any]]

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.behaviour["answer"](self)

    do_GET = do_HEAD = do_POST = do_PUT = handle_any


def serve(host: str, answer: Any, tls: ssl.SSLContext | None = None) -> tuple[str, Any, Any]:
    handler = type("Handler", (Recorder,), {"seen": [], "behaviour": {"answer": answer}})
    server = ThreadingHTTPServer((host, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"{host}:{server.server_address[1]}", handler, server


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def image(tmp_path: Path) -> Any:
    store = BlobStore(tmp_path / "store")
    layer = store.write_layer([Entry("/a", EntryKind.FILE, 0o644, Reason.INCLUDE, data=b"a")], 0)
    return assemble(store, [layer], {}, Platform("amd64"), 0)


def registry_answer(upload_location: str, echo: bool = False) -> Any:
    """A registry that wants Basic auth and sends uploads to ``upload_location``."""

    def answer(request: Recorder) -> None:
        authorized = request.headers.get("Authorization") == BASIC
        if not authorized:
            request.reply(401, {"WWW-Authenticate": 'Basic realm="registry"'})
        elif request.command == "GET":
            request.reply(200, {"Content-Type": "application/json"}, b"{}")
        elif request.command == "HEAD":
            request.reply(404)
        elif request.command == "POST":
            request.reply(202, {"Location": upload_location})
        elif echo:
            message = f"denied for {request.headers.get('Authorization')} ({PASSWORD})"
            body = json.dumps({"errors": [{"code": "DENIED", "message": message}]}).encode()
            request.reply(403, {"Content-Type": "application/json"}, body)
        else:
            request.reply(201, {})

    return answer


def test_an_upload_location_on_another_origin_gets_no_credentials(
    servers: list[Any], image: Any
) -> None:
    other, other_handler, other_server = serve("127.0.0.2", lambda r: r.reply(201))
    servers.append(other_server)
    address, handler, server = serve("127.0.0.1", registry_answer(f"http://{other}/upload"))
    servers.append(server)
    push_image(image, f"{address}/app:1", CREDENTIALS)
    assert other_handler.seen and all(auth is None for _m, _p, auth in other_handler.seen)
    assert any(auth == BASIC for _m, _p, auth in handler.seen)


def test_a_challenge_from_another_origin_is_an_error_not_an_answer(
    servers: list[Any], image: Any
) -> None:
    def challenge(request: Recorder) -> None:
        request.reply(401, {"WWW-Authenticate": 'Basic realm="elsewhere"'})

    other, other_handler, other_server = serve("127.0.0.2", challenge)
    servers.append(other_server)
    address, _handler, server = serve("127.0.0.1", registry_answer(f"http://{other}/upload"))
    servers.append(server)
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert other in str(error.value) and error.value.exit_code == EXIT_PUSH
    assert all(auth is None for _m, _p, auth in other_handler.seen)


def test_registry_text_that_echoes_credentials_is_not_printed(
    servers: list[Any], image: Any
) -> None:
    address, _handler, server = serve("127.0.0.1", registry_answer("/upload", echo=True))
    servers.append(server)
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", CREDENTIALS)
    message = str(error.value)
    assert PASSWORD not in message and BASIC.split()[1] not in message
    assert "\n" not in message


def bearer_registry(realm: str) -> Any:
    def answer(request: Recorder) -> None:
        request.reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})

    return answer


def test_a_plain_http_realm_on_another_origin_gets_nothing(servers: list[Any], image: Any) -> None:
    realm, realm_handler, realm_server = serve("127.0.0.2", lambda r: r.reply(200, {}, b"{}"))
    servers.append(realm_server)
    address, _handler, server = serve("127.0.0.1", bearer_registry(f"http://{realm}/token"))
    servers.append(server)
    with pytest.raises(PushError, match="plain HTTP"):
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert realm_handler.seen == []


def test_a_realm_keeps_strict_tls_when_the_registry_is_loopback(
    servers: list[Any], image: Any, tmp_path: Path
) -> None:
    from tests.registry_fixture import Unavailable, make_keypair

    try:
        keys = make_keypair(tmp_path / "keys")
    except Unavailable as missing:
        pytest.skip(str(missing))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(keys.cert), str(keys.key))
    realm, realm_handler, realm_server = serve(
        "127.0.0.2", lambda r: r.reply(200, {}, b'{"token":"t"}'), tls=context
    )
    servers.append(realm_server)
    # The registry itself is loopback with a self-signed certificate, so its own TLS
    # check is relaxed (docker's rule); the realm on another host keeps the strict one.
    address, _handler, server = serve(
        "127.0.0.1", bearer_registry(f"https://{realm}/token"), tls=context
    )
    servers.append(server)
    with pytest.raises(PushError, match=r"TLS|certificate"):
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert realm_handler.seen == []
