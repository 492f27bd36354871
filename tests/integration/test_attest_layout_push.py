"""``push_layout`` of a layout written by ``build --attest -o``, against Debian's real
docker-registry (2.8, no referrers API): the attestations go up with the image, and are
found again from the image's digest alone, through the fallback tag ``sha256-<hex>``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scratchpack.image.registry import push_layout
from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.registry_fixture import Registry, registry_or_unavailable

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("layout-push-registry"))


def _attested_layout(directory: Path) -> Path:
    run = cli.scratchpack(
        "build", HELLO, "-t", "layout/hello:1", "-o", directory, "--attest",
        env={**cli.NO_ENGINE, "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return directory


def _get(registry: Registry, path: str, accept: str) -> bytes:
    answer = registry.api("GET", f"/v2/layout/hello/{path}", headers={"Accept": accept})
    assert answer.status_code == 200, answer.text
    return answer.content


def _other_image_artifact(layout: Path) -> str:
    """An artifact about some other image, listed in the layout's index.json: its digest."""
    empty = b"{}"
    (layout / "blobs/sha256" / hashlib.sha256(empty).hexdigest()).write_bytes(empty)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.in-toto+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + hashlib.sha256(empty).hexdigest(),
                "size": 2,
            },
            "layers": [],
            "subject": {"mediaType": MANIFEST, "digest": "sha256:" + "e" * 64, "size": 9},
        }
    ).encode()
    digest = hashlib.sha256(manifest).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(manifest)
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"].append(
        {"mediaType": MANIFEST, "digest": f"sha256:{digest}", "size": len(manifest),
         "artifactType": "application/vnd.in-toto+json"}
    )  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    return f"sha256:{digest}"


@pytest.mark.registry
def test_a_layout_pushes_its_attestations_found_by_digest_alone(
    registry: Registry, tmp_path: Path
) -> None:
    layout = _attested_layout(tmp_path / "layout")
    other = _other_image_artifact(layout)
    result = push_layout(layout, f"{registry.address}/layout/hello:1")
    digest = result.manifest_digest
    assert result.referrers == (f"tag sha256-{digest[7:]}",)
    (left,) = result.not_attached
    assert other in left and "not pushed" in left

    # From the digest alone: the fallback tag, each artifact by digest, its subject, its document.
    index = json.loads(_get(registry, f"manifests/sha256-{digest[7:]}", INDEX))
    listed = {one["artifactType"]: one["digest"] for one in index["manifests"]}
    assert sorted(listed) == ["application/spdx+json", "application/vnd.in-toto+json"]
    assert other not in listed.values()
    for kind, artifact in listed.items():
        manifest = json.loads(_get(registry, f"manifests/{artifact}", MANIFEST))
        assert manifest["subject"]["digest"] == digest and manifest["artifactType"] == kind
        document = _get(registry, f"blobs/{manifest['layers'][0]['digest']}", kind)
        if kind == "application/vnd.in-toto+json":
            assert json.loads(document)["subject"][0]["digest"] == {"sha256": digest[7:]}

    run = cli.scratchpack("attestations", f"{registry.address}/layout/hello:1", "--json")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["verified"] and found["sbom"] and len(found["attached"]) == 2
