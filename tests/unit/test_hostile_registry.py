"""Registries that lie: credentials must stay with the registry the user named.

Fake registries on loopback answer the push flow and try to get the user's
credentials elsewhere: an upload ``Location`` on another origin, a 401 from
that origin, a Bearer realm on another origin over plain HTTP or with a
certificate nobody trusts, and an error message that echoes the request's
``Authorization`` header. 127.0.0.1 and 127.0.0.2 are different origins.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import EXIT_PUSH
from scratchpack.image.media import Platform
from scratchpack.image.registry import Credentials, PushError, push_image
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.entries import Entry, EntryKind, Reason
from tests.fake_registry import (
    BASIC,
    GOOD_TOKEN,
    PASSWORD,
    USER,
    Recorder,
    Servers,
    basic_registry,
    bearer_flow,
    image_fixture,  # noqa: F401 (a fixture)
    json_answer,
    registry_flow,
    servers_fixture,  # noqa: F401 (a fixture)
)

CREDENTIALS = Credentials(USER, PASSWORD)


def test_an_upload_location_on_another_origin_gets_no_credentials(
    servers: Servers, image: Any
) -> None:
    other, other_handler = servers.serve("127.0.0.2", lambda r: r.reply(201))
    address, handler = servers.serve("127.0.0.1", basic_registry(f"http://{other}/upload"))
    push_image(image, f"{address}/app:1", CREDENTIALS)
    assert other_handler.seen and all(auth is None for _m, _p, auth in other_handler.seen)
    assert any(auth == BASIC for _m, _p, auth in handler.seen)


def test_a_challenge_from_another_origin_is_an_error_not_an_answer(
    servers: Servers, image: Any
) -> None:
    def challenge(request: Recorder) -> None:
        request.reply(401, {"WWW-Authenticate": 'Basic realm="elsewhere"'})

    other, other_handler = servers.serve("127.0.0.2", challenge)
    address, _handler = servers.serve("127.0.0.1", basic_registry(f"http://{other}/upload"))
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert other in str(error.value) and error.value.exit_code == EXIT_PUSH
    assert all(auth is None for _m, _p, auth in other_handler.seen)


def test_registry_text_that_echoes_credentials_is_not_printed(servers: Servers, image: Any) -> None:
    address, _handler = servers.serve("127.0.0.1", basic_registry("/upload", echo=True))
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", CREDENTIALS)
    message = str(error.value)
    assert PASSWORD not in message and BASIC.split()[1] not in message
    assert "\n" not in message


def bearer_registry(realm: str) -> Any:
    def answer(request: Recorder) -> None:
        request.reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})

    return answer


def test_a_plain_http_realm_on_another_origin_gets_nothing(servers: Servers, image: Any) -> None:
    realm, realm_handler = servers.serve("127.0.0.2", lambda r: r.reply(200, {}, b"{}"))
    address, _handler = servers.serve("127.0.0.1", bearer_registry(f"http://{realm}/token"))
    with pytest.raises(PushError, match="plain HTTP"):
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert realm_handler.seen == []


def test_a_realm_keeps_strict_tls_when_the_registry_is_loopback(
    servers: Servers, image: Any, tmp_path: Path
) -> None:
    from tests.registry_fixture import Unavailable, make_keypair

    try:
        keys = make_keypair(tmp_path / "keys")
    except Unavailable as missing:
        pytest.skip(str(missing))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(keys.cert), str(keys.key))
    realm, realm_handler = servers.serve(
        "127.0.0.2", lambda r: r.reply(200, {}, b'{"token":"t"}'), tls=context
    )
    # The registry itself is loopback with a self-signed certificate, so its own TLS
    # check is relaxed (docker's rule); the realm on another host keeps the strict one.
    address, _handler = servers.serve(
        "127.0.0.1", bearer_registry(f"https://{realm}/token"), tls=context
    )
    with pytest.raises(PushError, match=r"TLS|certificate"):
        push_image(image, f"{address}/app:1", CREDENTIALS)
    assert realm_handler.seen == []


# --- hostile bodies: tokens, nesting, endless and dripping answers, dropped uploads ------

ENDLESS_CAP = 96 << 20  # what an "endless" body sends at most, so the test ends by itself
DRIP_INTERVAL = 0.25  # seconds between the bytes of a dripping answer (40 bytes: 10 s)


def push_to(servers: Servers, answer: Any, image: Any, **kwargs: Any) -> str:
    """Push ``image`` to a fake registry answering ``answer``; the PushError's one line."""
    address, _handler = servers.serve("127.0.0.1", answer, read_body=kwargs.pop("read", True))
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", retries=0, **kwargs)
    message = str(error.value)
    assert error.value.exit_code == EXIT_PUSH and "\n" not in message and "\r" not in message
    assert "Error(" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "token",
    ["abc\r\nX-Injected: yes", "two words", "x" * 9000, "t\u00f8ken", "tab\there"],
    ids=["crlf", "space", "too-long", "non-ascii", "tab"],
)
def test_a_token_that_is_not_a_bearer_token_is_refused_and_not_printed(
    servers: Servers, image: Any, token: str
) -> None:
    message = push_to(servers, bearer_flow(json_answer(200, {"token": token})), image)
    assert "is not a bearer token" in message
    for part in ("X-Injected", "two words", "xxxxxxxxxx", "t\u00f8ken", "here"):
        assert part not in message


def test_credentials_a_token_service_echoes_are_not_printed(servers: Servers, image: Any) -> None:
    def echo(request: Recorder) -> None:
        said = f"no token for {request.headers.get('Authorization')} ({PASSWORD})"
        json_answer(400, {"errors": [{"code": "DENIED", "message": said}]})(request)

    message = push_to(servers, bearer_flow(echo), image, credentials=CREDENTIALS)
    assert PASSWORD not in message and BASIC.split()[1] not in message


def test_a_token_the_registry_echoes_is_not_printed(servers: Servers, image: Any) -> None:
    def echo(request: Recorder) -> None:
        said = f"{request.headers.get('Authorization')} may not push"
        json_answer(403, {"errors": [{"code": "DENIED", "message": said}]})(request)

    token_service = json_answer(200, {"token": GOOD_TOKEN})
    message = push_to(servers, bearer_flow(token_service, echo), image)
    assert GOOD_TOKEN not in message and "may not push" in message


def test_a_secret_cut_by_the_display_limit_is_still_hidden(servers: Servers, image: Any) -> None:
    def echo(request: Recorder) -> None:
        if request.command == "POST":
            body = f"denied {'.' * 146}{PASSWORD} and more".encode()
            request.reply(403, {"Content-Type": "text/plain"}, body)
        else:
            basic_registry("/upload")(request)

    message = push_to(servers, echo, image, credentials=CREDENTIALS)
    assert PASSWORD[:5] not in message, message


NESTED = b"[" * 30000 + b"]" * 30000  # deep, and under the 64 KiB a token answer may be


@pytest.mark.parametrize("where", ["token", "error"])
def test_deeply_nested_json_is_one_line(servers: Servers, image: Any, where: str) -> None:
    def nested(status: int) -> Any:
        body = b'{"token":' + NESTED + b"}" if status == 200 else b'{"errors":' + NESTED + b"}"
        return lambda request: request.reply(status, {"Content-Type": "application/json"}, body)

    if where == "token":
        answer = bearer_flow(nested(200))
    else:
        answer = bearer_flow(json_answer(200, {"token": GOOD_TOKEN}), nested(400))
    message = push_to(servers, answer, image)
    assert "nested too deeply" in message or "400" in message


def endless(status: int, seen: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """An answer whose body never ends (until ENDLESS_CAP or the client hangs up)."""

    def answer(request: Recorder) -> None:
        request.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            request.send_header(key, value)
        request.end_headers()
        chunk, sent = b'{"token":"' + b"a" * 65526, 0
        try:
            while sent < ENDLESS_CAP:
                request.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            seen["sent"] = sent
            seen["done"].set()

    return answer


@pytest.mark.parametrize("where", ["token", "error", "success", "redirect"])
def test_an_endless_body_is_not_read_whole(servers: Servers, image: Any, where: str) -> None:
    seen: dict[str, Any] = {"done": threading.Event()}
    token_service = json_answer(200, {"token": GOOD_TOKEN})
    if where == "token":
        answer = bearer_flow(endless(200, seen))
    elif where == "error":
        answer = bearer_flow(token_service, endless(500, seen))
    elif where == "success":
        answer = bearer_flow(token_service, endless(200, seen))
    else:
        answer = bearer_flow(token_service, endless(307, seen, {"Location": "/elsewhere"}))
    address, _handler = servers.serve("127.0.0.1", answer)
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/app:1", retries=0)
    assert error.value.exit_code == EXIT_PUSH and "\n" not in str(error.value)
    assert seen["done"].wait(30)
    assert seen["sent"] < ENDLESS_CAP // 4, f"the client read {seen['sent']} bytes"


def drip(raw: bytes, prefix: bytes = b"") -> Any:
    """Send ``prefix`` at once, then ``raw`` one byte every DRIP_INTERVAL seconds."""

    def answer(request: Recorder) -> None:
        try:
            request.wfile.write(prefix)
            for byte in raw:
                request.wfile.write(bytes([byte]))
                time.sleep(DRIP_INTERVAL)
        except OSError:
            pass
        request.close_connection = True

    return answer


DRIPPED_HEADERS = (
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


@pytest.mark.parametrize("where", ["headers", "token", "upload"])
def test_a_dripping_answer_ends_at_the_deadline(
    servers: Servers, image: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchpack.image import registry_transport as registry_module

    monkeypatch.setattr(registry_module, "REQUEST_DEADLINE", 1.0)
    token = json.dumps({"token": GOOD_TOKEN}).encode()
    token_service = json_answer(200, {"token": GOOD_TOKEN})
    if where == "headers":
        answer = drip(DRIPPED_HEADERS)
    elif where == "token":
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(token)}\r\n\r\n".encode()
        answer = bearer_flow(drip(token, head))
    else:

        def answer_upload(request: Recorder) -> None:
            if request.command == "PUT" and request.path.startswith("/upload"):
                drip(DRIPPED_HEADERS.replace(b"200 OK", b"201 Created"))(request)
            else:
                registry_flow(request)

        answer = bearer_flow(token_service, answer_upload)
    started = time.monotonic()
    message = push_to(servers, answer, image, timeout=5)
    assert time.monotonic() - started < 5, "the deadline did not end the request"
    assert "within 1 s" in message, message


@pytest.fixture
def big_image(tmp_path: Path) -> Any:
    store = BlobStore(tmp_path / "big")
    data = os.urandom(4 << 20)
    layer = store.write_layer([Entry("/b", EntryKind.FILE, 0o644, Reason.INCLUDE, data=data)], 0)
    return assemble(store, [layer], {}, Platform("amd64"), 0)


@pytest.mark.parametrize("size", ["small", "big"])
def test_a_connection_dropped_during_an_upload_is_told_in_words(
    servers: Servers, image: Any, big_image: Any, size: str
) -> None:
    def answer(request: Recorder) -> None:
        if request.command == "PUT" and request.path.startswith("/upload"):
            if size == "small":
                request.rfile.read(int(request.headers["Content-Length"]))
            request.connection.shutdown(socket.SHUT_RDWR)
            request.close_connection = True
        else:
            registry_flow(request)

    pushed = image if size == "small" else big_image
    message = push_to(servers, answer, pushed, read=False)
    assert "closed the connection during the upload of" in message, message
    assert "Connection aborted" not in message and "Remote" not in message
    assert "Errno" not in message and "'" not in message


def test_the_deadline_of_an_upload_grows_with_its_size() -> None:
    from scratchpack.image import registry_transport as registry_module

    base = registry_module.REQUEST_DEADLINE
    rate = registry_module.UPLOAD_THROUGHPUT
    assert registry_module.upload_deadline(0) == base
    assert registry_module.upload_deadline(100 * rate) == base + 100


@pytest.mark.parametrize("where", ["upload", "realm"])
def test_an_address_that_is_no_url_is_one_line(servers: Servers, image: Any, where: str) -> None:
    def answer(request: Recorder) -> None:
        if where == "realm":
            request.reply(401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:99999/t"'})
        elif request.command == "POST":
            request.reply(202, {"Location": "http://[::1/upload"})
        else:
            registry_flow(request)

    message = push_to(servers, answer, image)
    assert "not a usable URL" in message or "not a URL" in message
