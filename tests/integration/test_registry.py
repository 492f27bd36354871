"""Pushing an OCI layout through the distribution API, against a real registry.

The registries are Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1,
started per module by :mod:`tests.registry_fixture`: open, Basic (htpasswd),
Bearer (a token service in a thread), HTTPS with a self-signed certificate and
read-only. No Docker engine is needed. Without ``/usr/bin/docker-registry`` the
registry tests skip, or fail with ``SCRATCHPACK_REQUIRE_ENGINE=1`` (CI).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from scratchpack.image import registry as registry_module
from scratchpack.image.media import MediaType
from scratchpack.image.registry import (
    Credentials,
    PushError,
    credentials_from_docker_config,
    push_image,
    push_layout,
)
from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.conftest import unavailable
from tests.fake_registry import (
    ManifestReply,
    Recorder,
    Servers,
    manifest_registry,
    servers_fixture,  # noqa: F401 (a fixture)
)
from tests.registry_fixture import (
    OCI_MANIFEST,
    SKOPEO,
    KeyPair,
    Layout,
    Registry,
    TokenServer,
    Unavailable,
    free_port,
    make_keypair,
    registry_or_unavailable,
    write_layout,
)

USER, PASSWORD = "pusher", "s3cret pass:word"
HELLO = REPO_ROOT / "samples/hello-world/hello-world"


def _write_config(path: Path, config: object) -> Path:
    path.write_text(json.dumps(config))
    return path


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("open-registry"))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(
        tmp_path_factory.mktemp("auth-registry"), htpasswd=(USER, PASSWORD)
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    try:
        return make_keypair(tmp_path_factory.mktemp("keys"))
    except Unavailable as missing:
        unavailable(str(missing))


@pytest.fixture(scope="module")
def token_service(keys: KeyPair) -> Iterator[TokenServer]:
    server = TokenServer(keys, USER, PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_service: TokenServer
) -> Iterator[Registry]:
    yield from registry_or_unavailable(
        tmp_path_factory.mktemp("token-registry"), token=token_service
    )


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("tls-registry"), tls=keys)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return write_layout(tmp_path / "layout", [{"hello.txt": b"hello\n"}, {"etc/motd": b"hi\n"}])


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat 127.0.0.1 like a remote registry: HTTPS with verification, as for any host."""
    monkeypatch.setattr(registry_module, "_is_loopback", lambda _registry: False)


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob_digests(layout: Layout) -> list[str]:
    return [*layout.layer_digests, layout.config_digest]


def assert_served(registry: Registry, name: str, tag: str, layout: Layout) -> None:
    """Read the image back through the API: the manifest's bytes and every blob."""
    stored = (layout.path / "blobs/sha256" / layout.manifest_digest.split(":")[1]).read_bytes()
    response = registry.api("GET", f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200, response.text
    assert response.content == stored
    assert response.headers["Docker-Content-Digest"] == layout.manifest_digest
    assert response.headers["Content-Type"] == OCI_MANIFEST
    for digest in blob_digests(layout):
        blob = registry.api("GET", f"/v2/{name}/blobs/{digest}")
        assert blob.status_code == 200
        assert sha256(blob.content) == digest


# --- pushes to a real registry -------------------------------------------------------


@pytest.mark.registry
def test_push_then_read_back_through_the_api(open_registry: Registry, layout: Layout) -> None:
    lines: list[str] = []
    result = push_layout(
        layout.path, f"{open_registry.address}/team/app:1.0", progress=lines.append
    )
    assert result.reference == f"{open_registry.address}/team/app:1.0"
    assert result.manifest_digest == layout.manifest_digest
    assert (result.blobs_uploaded, result.blobs_skipped) == (3, 0)
    assert sum(line.startswith("uploading sha256:") for line in lines) == 3
    assert all(line.endswith(" B)") for line in lines if line.startswith("uploading"))
    assert_served(open_registry, "team/app", "1.0", layout)


@pytest.mark.registry
def test_second_push_skips_every_blob(open_registry: Registry, layout: Layout) -> None:
    push_layout(layout.path, f"{open_registry.address}/again/app:1")
    lines: list[str] = []
    result = push_layout(layout.path, f"{open_registry.address}/again/app:2", progress=lines.append)
    assert (result.blobs_uploaded, result.blobs_skipped) == (0, 3)
    assert [line.split()[0] for line in lines] == ["exists", "exists", "exists", "pushed"]
    assert_served(open_registry, "again/app", "1", layout)
    assert_served(open_registry, "again/app", "2", layout)


@pytest.mark.registry
def test_skopeo_sees_our_digest(open_registry: Registry, layout: Layout) -> None:
    if not SKOPEO.exists():
        pytest.skip("skopeo is not installed (Debian package skopeo)")
    push_layout(layout.path, f"{open_registry.address}/skopeo/app:1")
    proc = subprocess.run(
        [
            str(SKOPEO),
            "inspect",
            "--tls-verify=false",
            f"docker://{open_registry.address}/skopeo/app:1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Digest"] == layout.manifest_digest


@pytest.mark.registry
def test_corrupt_blob_fails_before_anything_is_sent(
    open_registry: Registry, layout: Layout, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(layout.path, broken)
    layer = broken / "blobs/sha256" / layout.layer_digests[1].split(":")[1]
    layer.write_bytes(layer.read_bytes() + b"\0")
    with pytest.raises(PushError) as error:
        push_layout(broken, f"{open_registry.address}/corrupt/app:1")
    message = str(error.value)
    assert "corrupt" in message and layout.layer_digests[1] in message and "\n" not in message
    missing = open_registry.api("GET", "/v2/corrupt/app/manifests/1")
    assert missing.status_code == 404
    for digest in blob_digests(layout):
        assert open_registry.api("HEAD", f"/v2/corrupt/app/blobs/{digest}").status_code == 404


@pytest.mark.registry
def test_refused_connection_names_the_address(layout: Layout) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(PushError) as error:
        push_layout(layout.path, f"{address}/app:1", timeout=5)
    assert str(error.value) == f"cannot connect to {address}: Connection refused"


@pytest.mark.registry
def test_read_only_registry_reports_its_refusal(
    tmp_path_factory: pytest.TempPathFactory, layout: Layout
) -> None:
    for readonly in registry_or_unavailable(tmp_path_factory.mktemp("readonly"), readonly=True):
        with pytest.raises(PushError) as error:
            push_layout(layout.path, f"{readonly.address}/ro/app:1")
        assert "starting a blob upload failed: 405" in str(error.value)


@pytest.mark.registry
def test_a_server_without_the_registry_api(token_service: TokenServer, layout: Layout) -> None:
    address = token_service.url.split("/")[2]  # an HTTP server that answers 404 to /v2/
    with pytest.raises(PushError, match=r"does not serve the registry API \(GET /v2/ answered 404"):
        push_layout(layout.path, f"{address}/app:1")


# --- Basic auth (htpasswd) ----------------------------------------------------------


@pytest.mark.registry
def test_basic_auth_with_the_right_credentials(auth_registry: Registry, layout: Layout) -> None:
    result = push_layout(
        layout.path, f"{auth_registry.address}/private/app:1", Credentials(USER, PASSWORD)
    )
    assert result.blobs_uploaded == 3
    assert_served(auth_registry, "private/app", "1", layout)


@pytest.mark.registry
@pytest.mark.parametrize(
    ("credentials", "words"),
    [
        (Credentials(USER, "wrong"), f"authentication denied for {{address}} (user '{USER}')"),
        (None, "authentication required for {address}"),
    ],
)
def test_basic_auth_refused(
    auth_registry: Registry, layout: Layout, credentials: Credentials | None, words: str
) -> None:
    with pytest.raises(PushError) as error:
        push_layout(layout.path, f"{auth_registry.address}/private/app:2", credentials)
    message = str(error.value)
    assert message.startswith(words.format(address=auth_registry.address))
    assert "--registry-user or ~/.docker/config.json" in message and "\n" not in message
    assert PASSWORD not in message


@pytest.mark.registry
def test_credentials_from_a_docker_config_file(
    auth_registry: Registry, layout: Layout, tmp_path: Path
) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = _write_config(
        tmp_path / "config.json", {"auths": {auth_registry.address: {"auth": auth}}}
    )
    credentials = credentials_from_docker_config(auth_registry.address, config)
    result = push_layout(layout.path, f"{auth_registry.address}/fromconfig/app:1", credentials)
    assert result.manifest_digest == layout.manifest_digest
    assert_served(auth_registry, "fromconfig/app", "1", layout)


# --- Bearer auth (token service) ------------------------------------------------------


@pytest.mark.registry
@pytest.mark.parametrize("token_key", ["token", "access_token"])
def test_bearer_auth_gets_one_token_per_push(
    token_registry: Registry,
    token_service: TokenServer,
    layout: Layout,
    token_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(token_service, "token_key", token_key)
    before = token_service.requests
    name = f"bearer/{token_key.replace('_', '-')}"
    result = push_layout(
        layout.path, f"{token_registry.address}/{name}:1", Credentials(USER, PASSWORD)
    )
    assert result.blobs_uploaded == 3
    assert token_service.requests - before == 1  # cached for every request of the run
    token = token_service.issue(USER, "scratchpack-test-registry", [
        {"type": "repository", "name": name, "actions": ["pull"]}
    ])  # fmt: skip
    served = token_registry.api(
        "GET",
        f"/v2/{name}/manifests/1",
        headers={"Accept": OCI_MANIFEST, "Authorization": f"Bearer {token}"},
    )
    assert served.status_code == 200
    assert served.headers["Docker-Content-Digest"] == layout.manifest_digest


@pytest.mark.registry
@pytest.mark.parametrize(
    ("credentials", "words"),
    [
        (Credentials(USER, "wrong"), "authentication denied for"),
        (None, "authentication required for"),
    ],
)
def test_bearer_auth_refused(
    token_registry: Registry, layout: Layout, credentials: Credentials | None, words: str
) -> None:
    # No credentials: the anonymous token has no push right, the registry says 401 again.
    with pytest.raises(PushError) as error:
        push_layout(layout.path, f"{token_registry.address}/bearer/denied:1", credentials)
    assert str(error.value).startswith(f"{words} {token_registry.address}")


# --- TLS and --insecure ----------------------------------------------------------------


@pytest.mark.registry
def test_loopback_tls_registry_with_a_self_signed_certificate(
    tls_registry: Registry, layout: Layout
) -> None:
    # Docker treats loopback registries as insecure: unverified HTTPS works, like docker push.
    result = push_layout(layout.path, f"{tls_registry.address}/tls/app:1")
    assert result.blobs_uploaded == 3
    assert_served(tls_registry, "tls/app", "1", layout)


@pytest.mark.registry
@pytest.mark.usefixtures("remote")
def test_remote_tls_registry_needs_its_ca(
    tls_registry: Registry, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = f"{tls_registry.address}/tls/verified:1"
    with pytest.raises(PushError) as error:
        push_layout(layout.path, reference)
    message = str(error.value)
    assert message.startswith(f"TLS error talking to {tls_registry.address}: certificate verify")
    assert "--insecure" in message and "REQUESTS_CA_BUNDLE" in message
    assert (
        push_layout(layout.path, reference, ca_file=str(tls_registry.ca_file)).blobs_uploaded == 3
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_registry.ca_file))
    assert push_layout(layout.path, reference).blobs_skipped == 3


@pytest.mark.registry
@pytest.mark.usefixtures("remote")
def test_remote_plain_http_registry_needs_insecure(open_registry: Registry, layout: Layout) -> None:
    reference = f"{open_registry.address}/insecure/app:1"
    with pytest.raises(PushError) as error:
        push_layout(layout.path, reference)
    assert str(error.value).startswith(f"TLS error talking to {open_registry.address}")
    assert "use --insecure" in str(error.value)
    assert push_layout(layout.path, reference, insecure=True).blobs_uploaded == 3
    assert_served(open_registry, "insecure/app", "1", layout)


# --- protocol corners a fake registry provokes -----------------------------------------


class _FakeRegistry:
    """What a test below sets and reads of its fake registry (:mod:`tests.fake_registry`)."""

    manifest_reply: ClassVar[ManifestReply]  # the answer to the manifest's PUT
    seen: ClassVar[list[str]]  # the paths PUT to, in order


@pytest.fixture
def fake_registry(servers: Servers) -> tuple[str, type[_FakeRegistry]]:
    """The push flow with a relative, query-less Location and the manifest reply a test sets."""
    handler = type("Handler", (_FakeRegistry,), {"seen": []})

    def answer(request: Recorder) -> None:
        if request.command == "PUT":
            handler.seen.append(request.path)
        manifest_registry(handler.manifest_reply, "/upload-here")(request)

    address, _records = servers.serve("127.0.0.1", answer)
    return address, handler


def test_relative_location_without_query_gets_question_mark_digest(
    fake_registry: tuple[str, type[_FakeRegistry]], layout: Layout
) -> None:
    address, handler = fake_registry
    handler.manifest_reply = staticmethod(
        lambda body: (201, {"Docker-Content-Digest": sha256(body)}, b"")
    )
    push_layout(layout.path, f"{address}/fake/app:1")
    uploads = [path for path in handler.seen if path.startswith("/upload-here")]
    assert uploads == [
        f"/upload-here?digest=sha256%3A{d.split(':')[1]}" for d in blob_digests(layout)
    ]
    assert handler.seen[-1] == "/v2/fake/app/manifests/1"


def test_manifest_digest_mismatch_fails(
    fake_registry: tuple[str, type[_FakeRegistry]], layout: Layout
) -> None:
    address, handler = fake_registry
    other = "sha256:" + "0" * 64
    handler.manifest_reply = staticmethod(lambda body: (201, {"Docker-Content-Digest": other}, b""))
    with pytest.raises(PushError) as error:
        push_layout(layout.path, f"{address}/fake/app:1")
    assert other in str(error.value) and layout.manifest_digest in str(error.value)


def test_unexpected_status_carries_the_registrys_message(
    fake_registry: tuple[str, type[_FakeRegistry]], layout: Layout
) -> None:
    address, handler = fake_registry
    body = json.dumps(
        {"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]}
    ).encode()
    handler.manifest_reply = staticmethod(
        lambda _body: (400, {"Content-Type": "application/json"}, body)
    )
    with pytest.raises(PushError) as error:
        push_layout(layout.path, f"{address}/fake/app:1")
    assert str(error.value) == (
        f"{address}: PUT manifest 1 failed: blob unknown to registry (MANIFEST_BLOB_UNKNOWN)"
    )


# --- an image written by scratchpack itself ---------------------------------------------


@pytest.mark.registry
def test_push_a_layout_written_by_the_built_in_writer(
    open_registry: Registry, tmp_path: Path
) -> None:
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples")], check=True)
    output = tmp_path / "hello-layout"
    built = cli.scratchpack(
        "build", HELLO, "-t", "hello:1", "--json", "--engine", "none", "--output", output,
        cwd=tmp_path, env=cli.NO_ENGINE,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    written = json.loads(built.stdout)
    result = push_layout(output, f"{open_registry.address}/hello:1")
    assert result.manifest_digest == written["manifest_digest"]
    manifest = json.loads((output / "blobs/sha256" / result.manifest_digest[7:]).read_bytes())
    layout = Layout(
        output,
        result.manifest_digest,
        manifest["config"]["digest"],
        tuple(layer["digest"] for layer in manifest["layers"]),
    )
    assert layout.config_digest == written["image"]
    assert_served(open_registry, "hello", "1", layout)


@pytest.mark.registry
def test_an_image_index_goes_up_with_its_images(open_registry: Registry, tmp_path: Path) -> None:
    """build --platform --push: both images by digest, then the index under the tag; the
    layer they share goes up once."""
    from scratchpack.image.media import Platform
    from scratchpack.image.model import ImageIndex
    from scratchpack.image.writer import BlobStore, assemble
    from scratchpack.plan.entries import Entry, EntryKind, Reason

    store = BlobStore(tmp_path / "store")
    shared = store.write_layer(
        [Entry("/data.txt", EntryKind.FILE, 0o644, Reason.INCLUDE, data=b"shared\n")], 0
    )
    images = tuple(
        assemble(store, [shared], {"Cmd": ["/x"]}, Platform.parse(name), 0)
        for name in ("linux/amd64", "linux/arm64")
    )
    index = ImageIndex(images)
    result = push_image(index, f"{open_registry.address}/multi/app:1")
    assert result.manifest_digest == index.digest
    assert (result.blobs_uploaded, result.blobs_skipped) == (3, 0)  # one layer, two configs
    response = open_registry.api(
        "GET", "/v2/multi/app/manifests/1", headers={"Accept": str(MediaType.OCI_INDEX)}
    )
    assert response.status_code == 200 and response.content == index.index_bytes
    for image in images:
        got = open_registry.api(
            "GET",
            f"/v2/multi/app/manifests/{image.manifest_descriptor.digest}",
            headers={"Accept": OCI_MANIFEST},
        )
        assert got.status_code == 200 and got.content == image.manifest_bytes
