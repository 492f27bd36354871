"""``scratchpack push SOURCE REGISTRY/REPO:TAG`` against Debian's real docker-registry (2.8, no
referrers API) on 127.0.0.1: a layout and an archive written by ``build --attest -o`` go up with
their SBOM and provenance, found again from the digest alone; a corrupt layout sends nothing."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.registry_fixture import Registry, registry_or_unavailable

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
USER, PASSWORD = "pusher", "stdin pass:word"
EPOCH = {**cli.NO_ENGINE, "SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("push-open-registry"))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(
        tmp_path_factory.mktemp("push-auth-registry"), htpasswd=(USER, PASSWORD)
    )


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("push-layout") / "layout"
    run = cli.scratchpack(
        "build", HELLO, "-t", "push/hello:1", "-o", directory, "--attest", env=EPOCH
    )
    assert run.returncode == 0, run.stderr
    return directory


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("push-archive") / "hello.tar"
    run = cli.scratchpack("build", HELLO, "-t", "push/hello:2", "-o", path, "--attest", env=EPOCH)
    assert run.returncode == 0, run.stderr
    return path


def _push(source: Path, reference: str, *more: str, **options: object) -> dict[str, object]:
    run = cli.scratchpack("push", source, reference, "--json", *more, **options)  # type: ignore[arg-type]
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _found(reference: str) -> dict[str, object]:
    run = cli.scratchpack("attestations", reference, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.registry
@pytest.mark.parametrize("kind", ["layout", "archive"])
def test_a_source_goes_up_with_its_attestations_found_by_digest(
    open_registry: Registry, layout: Path, archive: Path, kind: str
) -> None:
    source = layout if kind == "layout" else archive
    reference = f"{open_registry.address}/push/{kind}:1"
    pushed = _push(source, reference)
    digest = str(pushed["digest"])
    assert pushed["reference"] == reference and digest.startswith("sha256:")
    assert pushed["attached_by"] == [f"tag sha256-{digest[7:]}"]
    assert len(pushed["attestations"]) == 2 and pushed["not_attached"] == []  # type: ignore[arg-type]
    assert pushed["blobs_uploaded"] and not pushed["blobs_skipped"]
    found = _found(reference)
    assert found["manifests"] == [digest] and found["verified"] and found["sbom"]
    assert {one["digest"] for one in found["attached"]} == set(pushed["attestations"])  # type: ignore[union-attr, index, arg-type]
    kinds = {one["artifact_type"] for one in found["attached"]}  # type: ignore[union-attr, index]
    assert kinds == {"application/spdx+json", "application/vnd.in-toto+json"}
    again = _push(source, reference)  # every blob is there now; the tag's index is added to
    assert again["digest"] == digest and not again["blobs_uploaded"]


@pytest.mark.registry
def test_the_text_report_says_how_they_were_attached(open_registry: Registry, layout: Path) -> None:
    run = cli.scratchpack("push", layout, f"{open_registry.address}/push/text:1")
    assert run.returncode == 0, run.stderr
    assert "Pushed " in run.stdout and "attestations: 2 attached through tag sha256-" in run.stdout
    assert run.stderr == ""  # progress only on a terminal


@pytest.mark.registry
def test_a_corrupt_layout_pushes_nothing(
    open_registry: Registry, layout: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(layout, broken)
    index = json.loads((broken / "index.json").read_bytes())
    manifest = json.loads(
        (broken / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes()
    )
    layer = broken / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    layer.write_bytes(layer.read_bytes() + b"\0")
    run = cli.scratchpack("push", broken, f"{open_registry.address}/push/corrupt:1")
    assert run.returncode == 2 and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert "corrupt" in line
    catalog = open_registry.api("GET", "/v2/push/corrupt/tags/list")
    assert catalog.status_code == 404


@pytest.mark.registry
def test_the_stdin_password_goes_to_the_named_registry_only(
    auth_registry: Registry, layout: Path, tmp_path: Path
) -> None:
    """docker's config holds a wrong password for the registry and the right one for another
    host: --registry-user's is used; without it, the other host's entry is never tried."""
    wrong = base64.b64encode(f"{USER}:wrong".encode()).decode()
    right = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps(
            {"auths": {auth_registry.address: {"auth": wrong}, "other:5000": {"auth": right}}}
        )
    )
    env = {"DOCKER_CONFIG": str(config)}
    reference = f"{auth_registry.address}/push/private:1"
    pushed = _push(
        layout, reference, "--registry-user", USER, "--registry-password-stdin",
        input=f"{PASSWORD}\n", env=env,
    )  # fmt: skip
    assert len(pushed["attestations"]) == 2  # type: ignore[arg-type]
    refused = cli.scratchpack("push", layout, f"{auth_registry.address}/push/private:2", env=env)
    assert refused.returncode == 5
    assert "authentication denied" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert PASSWORD not in refused.stderr + refused.stdout and "wrong" not in refused.stderr
