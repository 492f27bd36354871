"""``scratchpack push``: its arguments checked before any file is read or password asked for, the
shared login helpers, and sources pushed to an in-process registry (an index: every platform)."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scratchpack import cli as cli_module
from scratchpack.cli import cli
from scratchpack.commands.push import PushRequest, check_request, run_push
from scratchpack.errors import InputError
from scratchpack.image.attest import Attested, BuildFacts, attestations
from scratchpack.image.layout import write_layout
from scratchpack.image.media import Platform
from scratchpack.image.model import Image, ImageIndex
from scratchpack.image.registry_auth import check_login_options, login_credentials
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.notes import collecting
from tests.fake_registry import (
    Servers,
    StoringRegistry,
    image_fixture,  # noqa: F401 (a fixture)
    servers_fixture,  # noqa: F401 (a fixture)
)

FACTS = BuildFacts({"tag": "app:1"}, ())
IN_TOTO = "application/vnd.in-toto+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _attested(image: Image) -> tuple:  # type: ignore[type-arg]
    return attestations(image, "app:1", b'{"spdxVersion": "SPDX-2.3"}\n', "spdx", FACTS)


@pytest.fixture
def no_password(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every read of the password: a refused command reads none."""
    reads: list[str] = []
    monkeypatch.setattr(cli_module, "_read_password", lambda: reads.append("read") or "pw")
    return reads


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--registry-user", "u"], "--registry-user needs --registry-password-stdin"),
        (["--registry-password-stdin"], "--registry-password-stdin needs --registry-user"),
    ],
)
def test_login_options_come_together(
    tmp_path: Path, no_password: list[str], args: list[str], words: str
) -> None:
    result = CliRunner().invoke(cli, ["push", str(tmp_path), "127.0.0.1:1/app:1", *args])
    assert result.exit_code == 2 and words in result.output
    assert len(result.output.splitlines()) == 1 and no_password == []


def test_a_missing_source_is_one_line(tmp_path: Path, no_password: list[str]) -> None:
    missing = tmp_path / "nothing\x1b[31m"
    args = ["push", str(missing), "127.0.0.1:1/app:1", "--registry-user", "u",
            "--registry-password-stdin"]  # fmt: skip
    result = CliRunner().invoke(cli, args, input="secret\n")
    assert result.exit_code == 2 and "no such file" in result.output
    assert "\x1b" not in result.output and no_password == []


@pytest.mark.parametrize("reference", ["UPPER/Case:1", "127.0.0.1:1/app:bad tag", ""])
def test_a_malformed_reference_is_refused_first(
    tmp_path: Path, no_password: list[str], reference: str
) -> None:
    result = CliRunner().invoke(cli, ["push", str(tmp_path), reference])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output


def test_two_arguments_are_needed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["push", str(tmp_path)])
    assert result.exit_code == 2


@pytest.mark.parametrize("content", ["not a layout", None])
def test_what_is_not_an_image_is_bad_input_and_nothing_is_contacted(
    tmp_path: Path, content: str | None
) -> None:
    source = tmp_path / "source"
    if content is None:
        source.mkdir()
    else:
        source.write_text(content)
    result = CliRunner().invoke(cli, ["push", str(source), "127.0.0.1:1/app:1"])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert "127.0.0.1:1" not in result.output  # refused before any connection


def test_the_shared_login_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_login_options(None, False)
    check_login_options("u", True)
    with pytest.raises(InputError):
        check_login_options("u", False)
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"user:kept").decode()
    config.write_text(json.dumps({"auths": {"registry.example:5000": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    asked: list[str] = []

    def password() -> str:
        asked.append("asked")
        return "typed"

    given = login_credentials("registry.example:5000", "me", password)
    assert (given.username, given.password, asked) == ("me", "typed", ["asked"])  # type: ignore[union-attr]
    kept = login_credentials("registry.example:5000", None, password)
    assert kept is not None and kept.password == "kept" and asked == ["asked"]
    assert login_credentials("other.example", None, password) is None


def test_check_request_refuses_an_empty_source() -> None:
    with pytest.raises(InputError):
        check_request(PushRequest(" ", "127.0.0.1:1/app:1"))


def test_an_index_goes_up_with_every_platform_and_its_attestations(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    arm = assemble(BlobStore(tmp_path / "arm"), list(image.layers), {}, Platform("arm64"), 0)
    index = ImageIndex((image, arm))
    attached = _attested(image) + _attested(arm)
    write_layout(Attested(index, attached), tmp_path / "layout", "app:1")
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    result = run_push(PushRequest(str(tmp_path / "layout"), f"{address}/app:1", retries=0)).push
    assert result.manifest_digest == index.digest
    assert set(result.attached) == {one.digest for one in attached}
    assert len(result.referrers) == 2 and not result.not_attached
    for one in (image, arm):
        assert one.manifest_descriptor.digest in registry.manifests


def test_an_oci_archive_keeps_its_attestations(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    attached = _attested(image)
    write_layout(Attested(image, attached), layout, "app:1")
    archive = tmp_path / "app.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, str(path.relative_to(layout)), recursive=False)
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    pushed = run_push(PushRequest(str(archive), f"{address}/app:1", retries=0)).push
    assert pushed.manifest_digest == image.manifest_descriptor.digest
    assert pushed.referrers == ("referrers API",) and len(pushed.attached) == 2


def test_a_docker_archive_goes_up_without_attestations(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    from scratchpack.image.layout import docker_archive_chunks

    archive = tmp_path / "saved.tar"
    archive.write_bytes(b"".join(docker_archive_chunks(image, "app:1")))
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    pushed = run_push(PushRequest(str(archive), f"{address}/app:1", retries=0)).push
    assert pushed.manifest_digest in registry.manifests and pushed.attached == ()


def _stored(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def test_another_tools_spelling_keeps_its_digest_and_attestations(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    """A layout whose manifest is not canonical JSON (skopeo's, BuildKit's, with annotations)
    goes up byte for byte, so the attestations naming its digest still name the image."""
    layout = tmp_path / "layout"
    write_layout(image, layout, "app:1")
    respelled = json.dumps(
        {**json.loads(image.manifest_bytes), "annotations": {"by": "another tool"}}, indent=3
    ).encode()
    digest = _stored(layout, respelled)
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": _stored(layout, b"{}"),
             "size": 2}  # fmt: skip
    statement = b'{"_type": "https://in-toto.io/Statement/v1"}'
    artifact = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": IN_TOTO, "config": empty,
        "layers": [{"mediaType": IN_TOTO, "digest": _stored(layout, statement),
                    "size": len(statement)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(respelled)},
    }).encode()  # fmt: skip
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(respelled)},
        {"mediaType": OCI_MANIFEST, "artifactType": IN_TOTO, "digest": _stored(layout, artifact),
         "size": len(artifact)},
    ]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    with collecting() as warnings:
        pushed = run_push(PushRequest(str(layout), f"{address}/app:1", retries=0)).push
    assert pushed.manifest_digest == digest and registry.manifests[digest][1] == respelled
    assert len(pushed.attached) == 1 and not pushed.not_attached and not warnings.messages
