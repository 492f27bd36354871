"""``build --attest --push`` against Debian's real docker-registry (2.8, no referrers API).

The registry stores the artifact manifests (``subject``, ``artifactType``) but answers
404 on ``/v2/NAME/referrers/DIGEST``: the attestations must be found from the image's
digest alone through the OCI 1.1 fallback tag ``sha256-<hex>``, by ``attestations REF``
and by ``skopeo inspect --raw``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.registry_fixture import SKOPEO, Registry, registry_or_unavailable

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("attest-registry"))


def _build_push(registry: Registry, name: str, *more: str) -> dict[str, object]:
    reference = f"{registry.address}/{name}"
    run = cli.scratchpack(
        "build", HELLO, "-t", name, "--push", reference, "--attest", "--json", *more,
        env={**cli.NO_ENGINE, "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.registry
def test_pushed_attestations_are_found_through_the_fallback_tag(registry: Registry) -> None:
    built = _build_push(registry, "attest/hello:1")
    digest = built["push"]["digest"]  # type: ignore[index]
    attached = built["attestations"]
    assert [one["subject"] for one in attached] == [digest, digest]  # type: ignore[index]
    assert registry.api("GET", f"/v2/attest/hello/referrers/{digest}").status_code == 404

    run = cli.scratchpack("attestations", f"{registry.address}/attest/hello:1", "--json")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["verified"] and found["sbom"]
    assert found["found_by"] == f"tag sha256-{digest.split(':')[1]}"
    kinds = sorted(one["artifact_type"] for one in found["attached"])
    assert kinds == ["application/spdx+json", "application/vnd.in-toto+json"]
    provenance = [one for one in found["attached"] if one["predicate_type"]]
    assert provenance[0]["predicate_type"] == "https://slsa.dev/provenance/v1"
    assert {one["digest"] for one in found["attached"]} == {one["digest"] for one in attached}


@pytest.mark.registry
def test_skopeo_reads_the_fallback_index(registry: Registry) -> None:
    if not SKOPEO.exists():
        pytest.skip("skopeo is not installed (Debian package skopeo)")
    built = _build_push(registry, "attest/skopeo:1", "--sbom-format", "cyclonedx")
    digest = built["push"]["digest"]  # type: ignore[index]
    tag = f"sha256-{digest.split(':')[1]}"
    proc = subprocess.run(
        [SKOPEO, "inspect", "--raw", "--tls-verify=false",
         f"docker://{registry.address}/attest/skopeo:{tag}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    index = json.loads(proc.stdout)
    assert index["mediaType"] == INDEX
    kinds = sorted(one["artifactType"] for one in index["manifests"])
    assert kinds == ["application/vnd.cyclonedx+json", "application/vnd.in-toto+json"]


@pytest.mark.registry
def test_a_second_push_adds_to_the_fallback_index_once(registry: Registry) -> None:
    """The same build pushed again (reproducible): each artifact is listed once; another
    build of the same image (another tag, so other documents) adds its own beside them."""
    first = _build_push(registry, "attest/again:1")
    digest = first["push"]["digest"]  # type: ignore[index]
    tag = f"sha256-{digest.split(':')[1]}"

    def listed() -> list[dict[str, object]]:
        path = f"/v2/attest/again/manifests/{tag}"
        return registry.api("GET", path, headers={"Accept": INDEX}).json()["manifests"]

    before = listed()
    assert len(before) == 2
    again = _build_push(registry, "attest/again:1")
    assert again["attestations"] == first["attestations"]
    assert listed() == before
    other = _build_push(registry, "attest/again:2")
    assert other["push"]["digest"] == digest  # type: ignore[index]
    after = listed()
    assert after[:2] == before and len(after) == 4


@pytest.mark.registry
def test_attest_with_a_layout_keeps_them_when_copied(tmp_path: Path) -> None:
    out, sbom = tmp_path / "layout", tmp_path / "sbom.json"
    run = cli.scratchpack(
        "build", HELLO, "-t", "attest/layout:1", "-o", out, "--attest", "--sbom", sbom,
        env=cli.NO_ENGINE,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # The attached SBOM is the very document --sbom wrote.
    assert (out / "blobs/sha256" / hashlib.sha256(sbom.read_bytes()).hexdigest()).is_file()
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", out, copy], check=True)
    found = cli.scratchpack("attestations", copy, "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["verified"]


def test_attest_needs_somewhere_to_attach() -> None:
    run = cli.scratchpack("build", HELLO, "-t", "attest/none:1", "--attest", env=cli.NO_ENGINE)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--attest attaches to" in run.stderr


def test_archive_attestations_and_exit_codes(tmp_path: Path) -> None:
    """-o FILE.tar keeps them; a lying statement exits 4 with one line; a docker save
    archive (no attestations possible) and a missing path exit 2."""
    archive = tmp_path / "app.tar"
    run = cli.scratchpack(
        "build", HELLO, "-t", "attest/tar:1", "-o", archive, "--attest", env=cli.NO_ENGINE
    )
    assert run.returncode == 0, run.stderr
    found = cli.scratchpack("attestations", archive)
    assert found.returncode == 0, found.stderr
    assert "SBOM attached" in found.stdout

    from scratchpack.image.attest import (
        SLSA_PROVENANCE,
        Artifact,
        ArtifactType,
        Attested,
        BuildFacts,
    )
    from scratchpack.image.attest import statement as make_statement
    from scratchpack.image.layout import write_layout
    from scratchpack.image.readers import open_image

    image = open_image(str(archive), tmp_path / "w").image
    lying = make_statement("x", "sha256:" + "0" * 64, BuildFacts({}, ()))
    artifact = Artifact(ArtifactType.IN_TOTO, lying, image.manifest_descriptor, SLSA_PROVENANCE)
    layout = tmp_path / "lying"
    layout.mkdir()
    write_layout(Attested(image, (artifact,)), layout, "attest/tar:1")
    found = cli.scratchpack("attestations", layout)
    assert found.returncode == 8
    assert found.stderr.count("\n") == 1 and "do not name its image" in found.stderr

    missing = cli.scratchpack("attestations", tmp_path / "nothing")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
