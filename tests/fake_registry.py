"""One fake registry for the tests: an HTTP server on loopback that answers as told.

A test gives an *answer*, a function of the request (a :class:`Recorder`, its
body read into ``body``), and gets an address; every request's method, path and
``Authorization`` header is recorded. :func:`registry_flow` is a registry that
has nothing and accepts everything; :func:`manifest_registry` one whose answer
to the manifest the test chooses; :func:`basic_registry` wants HTTP Basic auth,
:func:`bearer_flow` a token from a token service on its own host. Answers
compose: a test wraps one to fail, drip or lie at the step it is about. (The
integration layer pushes to Debian's real ``docker-registry`` too:
``tests/registry_fixture.py``.)
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest

from scratchpack.image.media import Platform
from scratchpack.image.model import Image
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.entries import Entry, EntryKind, Reason

USER, PASSWORD = "alice", "s3cr3t-pass"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
GOOD_TOKEN = "good.token-value_1"


class Recorder(BaseHTTPRequestHandler):
    """Records every request's method, path and Authorization header, then answers it."""

    seen: ClassVar[list[tuple[str, str, str | None]]]
    behaviour: ClassVar[dict[str, Any]]
    body: bytes = b""  # the request's body, unless the server leaves it unread

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
        self.body = b""
        if length and self.behaviour.get("read_body", True):
            self.body = self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.behaviour["answer"](self)

    do_GET = do_HEAD = do_POST = do_PUT = handle_any


Answer = Callable[[Recorder], None]
# The answer to a manifest's PUT, from the manifest's bytes: status, headers, body.
ManifestReply = Callable[[bytes], tuple[int, dict[str, str], bytes]]


class Servers:
    """The fake servers a test started; all stopped when it ends (``with Servers() as s``)."""

    def __init__(self) -> None:
        self._started: list[ThreadingHTTPServer] = []

    def serve(
        self,
        host: str,
        answer: Answer,
        tls: ssl.SSLContext | None = None,
        read_body: bool = True,
    ) -> tuple[str, type[Recorder]]:
        """Start a server on ``host`` answering ``answer``: its ``host:port`` and its records.

        ``read_body=False`` leaves a request's body unread (a server that hangs up mid-upload).
        """
        behaviour = {"answer": answer, "read_body": read_body}
        handler = type("Handler", (Recorder,), {"seen": [], "behaviour": behaviour})
        server = ThreadingHTTPServer((host, 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self._started.append(server)
        # A short poll: shutdown() waits for it, at every test's teardown.
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return f"{host}:{server.server_address[1]}", handler

    def stop(self) -> None:
        for server in self._started:
            server.shutdown()
            server.server_close()
        self._started.clear()

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def small_image(directory: Path) -> Image:
    """An image of one one-file layer, written under ``directory``."""
    store = BlobStore(directory / "store")
    layer = store.write_layer([Entry("/a", EntryKind.FILE, 0o644, Reason.INCLUDE, data=b"a")], 0)
    return assemble(store, [layer], {}, Platform("amd64"), 0)


# Fixtures for a test module to import (``from tests.fake_registry import servers_fixture``):
# the servers it starts, stopped at its end; and a small image to push.


@pytest.fixture(name="servers")
def servers_fixture() -> Iterator[Servers]:
    with Servers() as started:
        yield started


@pytest.fixture(name="image")
def image_fixture(tmp_path: Path) -> Image:
    return small_image(tmp_path)


# --- answers --------------------------------------------------------------------------


def registry_flow(request: Recorder) -> None:
    """The push flow of a registry that has nothing and accepts everything."""
    if request.command == "GET":
        request.reply(200, {"Content-Type": "application/json"}, b"{}")
    elif request.command == "HEAD":
        request.reply(404)
    elif request.command == "POST":
        request.reply(202, {"Location": "/upload"})
    else:
        request.reply(201)


def manifest_registry(reply: ManifestReply, upload_location: str = "/upload") -> Answer:
    """:func:`registry_flow` sending uploads to ``upload_location``, the manifest answered by
    ``reply``: a registry that accepts every blob and then says what the test wants."""

    def answer(request: Recorder) -> None:
        if request.command == "POST":
            request.reply(202, {"Location": upload_location})
        elif request.command == "PUT" and not request.path.startswith(upload_location):
            request.reply(*reply(request.body))
        else:
            registry_flow(request)

    return answer


def json_answer(status: int, document: Any) -> Answer:
    body = json.dumps(document).encode()
    return lambda request: request.reply(status, {"Content-Type": "application/json"}, body)


def basic_registry(upload_location: str, echo: bool = False) -> Answer:
    """A registry that wants Basic auth (:data:`BASIC`) and sends uploads to ``upload_location``.

    ``echo``: its upload answer is a 403 whose message repeats the request's
    ``Authorization`` header and the password.
    """

    def answer(request: Recorder) -> None:
        if request.headers.get("Authorization") != BASIC:
            request.reply(401, {"WWW-Authenticate": 'Basic realm="registry"'})
        elif request.command == "POST":
            request.reply(202, {"Location": upload_location})
        elif echo and request.command == "PUT":
            message = f"denied for {request.headers.get('Authorization')} ({PASSWORD})"
            json_answer(403, {"errors": [{"code": "DENIED", "message": message}]})(request)
        else:
            registry_flow(request)

    return answer


def bearer_flow(token_answer: Answer, registry_answer: Answer = registry_flow) -> Answer:
    """A registry wanting ``Bearer GOOD_TOKEN`` whose token service is on its own host."""

    def answer(request: Recorder) -> None:
        if request.path.startswith("/token"):
            token_answer(request)
        elif request.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            realm = f"http://{request.headers['Host']}/token"
            request.reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})
        else:
            registry_answer(request)

    return answer


INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


class StoringRegistry:
    """A registry that keeps what is pushed (blobs, manifests by digest and by tag) and,
    with ``referrers_api``, serves OCI 1.1's ``GET /v2/NAME/referrers/DIGEST`` from the
    stored manifests' ``subject``; without it that endpoint answers 404, as distribution
    2.8 does. ``subject_header``: a manifest PUT with a subject is answered with
    ``OCI-Subject`` (the registry says it indexed it). ``override`` answers first: a test
    makes one path lie."""

    def __init__(
        self,
        referrers_api: bool = True,
        subject_header: bool = False,
        override: Callable[[Recorder], bool] | None = None,
    ) -> None:
        self.referrers_api = referrers_api
        self.subject_header = subject_header
        self.override = override
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest or tag -> (type, bytes)
        self.uploads = 0

    def __call__(self, request: Recorder) -> None:
        import hashlib
        from urllib.parse import parse_qs, urlsplit

        if self.override is not None and self.override(request):
            return
        url = urlsplit(request.path)
        parts = url.path.split("/")
        if url.path == "/v2/":
            request.reply(200, {"Content-Type": "application/json"}, b"{}")
        elif request.command == "POST":
            self.uploads += 1
            request.reply(202, {"Location": f"/upload/{self.uploads}"})
        elif url.path.startswith("/upload/"):
            digest = parse_qs(url.query)["digest"][0]
            self.blobs[digest] = request.body
            request.reply(201)
        elif "blobs" in parts:
            data = self.blobs.get(parts[-1])
            if data is None:
                request.reply(404)
            else:
                request.reply(200, {}, b"" if request.command == "HEAD" else data)
        elif "manifests" in parts and request.command == "PUT":
            digest = "sha256:" + hashlib.sha256(request.body).hexdigest()
            kind = request.headers.get("Content-Type", "")
            self.manifests[parts[-1]] = self.manifests[digest] = (kind, request.body)
            headers = {"Docker-Content-Digest": digest}
            subject = json.loads(request.body).get("subject")
            if self.subject_header and isinstance(subject, dict):
                headers["OCI-Subject"] = subject["digest"]
            request.reply(201, headers)
        elif "manifests" in parts:
            found = self.manifests.get(parts[-1])
            if found is None:
                request.reply(404)
            else:
                request.reply(200, {"Content-Type": found[0]}, found[1])
        elif "referrers" in parts and self.referrers_api:
            request.reply(200, {"Content-Type": INDEX_TYPE}, self.referrers(parts[-1]))
        else:
            request.reply(404)

    def referrers(self, subject: str) -> bytes:
        listed = []
        for key, (kind, data) in sorted(self.manifests.items()):
            document = json.loads(data)
            named = (document.get("subject") or {}).get("digest")
            if key.startswith("sha256:") and named == subject:
                listed.append(
                    {
                        "mediaType": kind,
                        "digest": key,
                        "size": len(data),
                        "artifactType": document.get("artifactType"),
                    }
                )
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": listed}
        return json.dumps(index).encode()
