"""Attestations as OCI 1.1 artifacts: their bytes, a layout that holds them, reading them back,
and registries that have the referrers API, lack it, or lie."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scratchpack.commands.attestations import Verdict, problem_line, run_attestations
from scratchpack.errors import InputError
from scratchpack.image.attest import (
    EMPTY_MEDIA_TYPE,
    SLSA_PROVENANCE,
    STATEMENT_TYPE,
    Artifact,
    ArtifactType,
    Attested,
    BuildFacts,
    Dependency,
    attestations,
    check_statement,
    statement,
)
from scratchpack.image.layout import archive_chunks, write_layout
from scratchpack.image.model import Image
from scratchpack.image.readers import open_attachments, open_image, open_images
from scratchpack.image.registry import PushError, fetch_attachments, push_image
from tests.fake_registry import (
    Recorder,
    Servers,
    StoringRegistry,
    image_fixture,  # noqa: F401 (a fixture)
    servers_fixture,  # noqa: F401 (a fixture)
)

FACTS = BuildFacts(
    {"tag": "app:1", "binaries": ["/bin/true"]},
    (Dependency("libc6", "ab" * 32, "pkg:deb/debian/libc6@2.36-9?arch=amd64", "2.36-9"),),
)
SBOM = b'{"spdxVersion": "SPDX-2.3"}\n'


def _attached(image: Image, facts: BuildFacts = FACTS) -> tuple[Artifact, Artifact]:
    return attestations(image, "app:1", SBOM, "spdx", facts)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the documents ---------------------------------------------------------------------------


def test_artifact_manifest_is_byte_stable(image: Image) -> None:
    sbom, provenance = _attached(image)
    again = _attached(image)
    assert (sbom.manifest_bytes, provenance.manifest_bytes) == (
        again[0].manifest_bytes,
        again[1].manifest_bytes,
    )
    manifest = json.loads(sbom.manifest_bytes)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert sbom.manifest_bytes == canonical
    assert manifest["artifactType"] == "application/spdx+json"
    assert manifest["config"] == {
        "mediaType": EMPTY_MEDIA_TYPE,
        "digest": _sha(b"{}"),
        "size": 2,
    }
    assert manifest["layers"] == [
        {"mediaType": "application/spdx+json", "digest": _sha(SBOM), "size": len(SBOM)}
    ]
    assert manifest["subject"] == image.manifest_descriptor.to_json()
    assert sbom.digest == _sha(sbom.manifest_bytes)
    layer = json.loads(provenance.manifest_bytes)["layers"][0]
    assert layer["annotations"] == {"in-toto.io/predicate-type": SLSA_PROVENANCE}


def test_statement_shape_and_reproducibility(image: Image) -> None:
    digest = image.manifest_descriptor.digest
    document = json.loads(statement("app:1", digest, FACTS))
    assert document["_type"] == STATEMENT_TYPE
    assert document["subject"] == [{"name": "app:1", "digest": {"sha256": digest[7:]}}]
    assert document["predicateType"] == SLSA_PROVENANCE
    definition = document["predicate"]["buildDefinition"]
    assert definition["externalParameters"] == {"tag": "app:1", "binaries": ["/bin/true"]}
    assert definition["resolvedDependencies"] == [
        {
            "name": "libc6",
            "digest": {"sha256": "ab" * 32},
            "uri": "pkg:deb/debian/libc6@2.36-9?arch=amd64",
            "annotations": {"version": "2.36-9"},
        }
    ]
    details = document["predicate"]["runDetails"]
    assert details["builder"]["id"] == "scratchpack"
    assert "metadata" not in details  # no clock: the same build, the same bytes
    dated = json.loads(statement("app:1", digest, BuildFacts({}, (), epoch=1700000000)))
    assert dated["predicate"]["runDetails"]["metadata"]["startedOn"] == "2023-11-14T22:13:20Z"
    assert statement("app:1", digest, FACTS) == statement("app:1", digest, FACTS)


# --- layouts and archives --------------------------------------------------------------------


def test_a_layout_with_attestations_is_one_image(image: Image, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    out.mkdir()
    write_layout(Attested(image, _attached(image)), out, "app:1")
    index = json.loads((out / "index.json").read_text())
    assert len(index["manifests"]) == 3
    assert open_image(str(out), tmp_path / "w").image.image_id == image.image_id
    assert len(open_images(str(out), tmp_path / "w")) == 1
    manifests, referrers = open_attachments(str(out), tmp_path / "w")
    assert manifests == (image.manifest_descriptor.digest,)
    assert sorted(one.artifact_type for one in referrers) == [
        "application/spdx+json",
        "application/vnd.in-toto+json",
    ]


def test_artifacts_without_annotations_are_not_images(image: Image, tmp_path: Path) -> None:
    """Another tool's layout: the artifact entries carry no marks; their manifests tell."""
    out = tmp_path / "layout"
    out.mkdir()
    write_layout(Attested(image, _attached(image)), out, "app:1")
    index = json.loads((out / "index.json").read_text())
    for entry in index["manifests"][1:]:
        entry.pop("annotations")
        entry.pop("artifactType")
    (out / "index.json").write_text(json.dumps(index))
    assert open_image(str(out), tmp_path / "w").image.image_id == image.image_id


def test_archive_holds_the_attestations(image: Image, tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    archive.write_bytes(b"".join(archive_chunks(Attested(image, _attached(image)), "app:1", 0)))
    result = run_attestations(str(archive))
    assert result.has_sbom and not result.problems
    assert [one.verdict for one in result.attached] == [Verdict.OK, Verdict.OK]


def test_a_statement_whose_subject_lies_is_refused(image: Image, tmp_path: Path) -> None:
    subject = image.manifest_descriptor
    lying = statement("app:1", "sha256:" + "0" * 64, FACTS)
    artifacts = (Artifact(ArtifactType.IN_TOTO, lying, subject, SLSA_PROVENANCE),)
    out = tmp_path / "layout"
    out.mkdir()
    write_layout(Attested(image, artifacts), out, "app:1")
    result = run_attestations(str(out))
    assert [one.verdict for one in result.attached] == [Verdict.STATEMENT_MISMATCH]
    assert not result.has_sbom
    line = problem_line(result)
    assert line is not None and "do not name its image" in line


def test_an_artifact_about_another_image(image: Image, tmp_path: Path) -> None:
    other = Image(image.config_bytes, (), where="other")
    out = tmp_path / "layout"
    out.mkdir()
    write_layout(Attested(image, _attached(other)), out, "app:1")
    result = run_attestations(str(out))
    assert {one.verdict for one in result.attached} == {Verdict.OTHER_SUBJECT}


def test_one_junk_statement_is_one_verdict_and_hides_nothing(image: Image, tmp_path: Path) -> None:
    """Whoever may push may attach junk: it is said, and the other artifacts still checked."""
    junk = Artifact(ArtifactType.IN_TOTO, b'{"_type": "junk"}', image.manifest_descriptor, "x")
    out = tmp_path / "layout"
    out.mkdir()
    write_layout(Attested(image, (*_attached(image), junk)), out, "app:1")
    result = run_attestations(str(out))
    verdicts = sorted(one.verdict.value for one in result.attached)
    assert verdicts == ["malformed", "ok", "ok"]
    line = problem_line(result)
    assert line is not None and "is not an in-toto Statement v1" in line


def test_a_statement_that_is_not_one_is_malformed() -> None:
    with pytest.raises(InputError, match="not an in-toto Statement"):
        check_statement(b'{"_type": "x"}', "sha256:" + "0" * 64, "s")
    with pytest.raises(InputError):
        check_statement(b"[1, 2", "sha256:" + "0" * 64, "s")


# --- registries ------------------------------------------------------------------------------


def test_push_through_the_referrers_api(servers: Servers, image: Image) -> None:
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    result = push_image(image, f"{address}/app:1", attachments=_attached(image))
    assert result.referrers == ("referrers API",)
    assert not any(key.startswith("sha256-") for key in registry.manifests)
    manifests, referrers, found_by = fetch_attachments(f"{address}/app:1")
    assert found_by == "referrers API"
    assert manifests == (image.manifest_descriptor.digest,)
    assert len(referrers) == 2 and all(one.subject == manifests[0] for one in referrers)


def test_an_oci_subject_header_spares_the_lookup(servers: Servers, image: Image) -> None:
    registry = StoringRegistry(referrers_api=True, subject_header=True)
    address, handler = servers.serve("127.0.0.1", registry)
    push_image(image, f"{address}/app:1", attachments=_attached(image))
    assert not any("/referrers/" in path for _method, path, _auth in handler.seen)


def test_push_through_the_fallback_tag(servers: Servers, image: Image) -> None:
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    digest = image.manifest_descriptor.digest
    result = push_image(image, f"{address}/app:1", attachments=_attached(image))
    tag = f"sha256-{digest[7:]}"
    assert result.referrers == (f"tag {tag}",)
    index = json.loads(registry.manifests[tag][1])
    assert len(index["manifests"]) == 2
    assert run_attestations(f"{address}/app:1").has_sbom


def test_a_fallback_index_too_big_is_refused(servers: Servers, image: Image) -> None:
    huge = json.dumps({"manifests": [{"digest": "sha256:" + "1" * 64}] * 5000}).encode()

    def lie(request: Recorder) -> bool:
        if request.command == "GET" and "/manifests/sha256-" in request.path:
            request.reply(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, huge)
            return True
        return False

    address, _handler = servers.serve("127.0.0.1", StoringRegistry(False, override=lie))
    with pytest.raises(PushError, match="larger than"):
        push_image(image, f"{address}/app:1", attachments=_attached(image), retries=0)


def test_a_referrer_whose_bytes_lie_is_refused(servers: Servers, image: Image) -> None:
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    sbom, _provenance = _attached(image)
    push_image(image, f"{address}/app:1", attachments=_attached(image))
    kind, data = registry.manifests[sbom.digest]
    registry.manifests[sbom.digest] = (kind, data.replace(b"spdx", b"SPDX"))
    with pytest.raises(PushError, match="does not match its digest"):
        fetch_attachments(f"{address}/app:1")


def test_an_index_gets_a_fallback_tag_per_platform(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    from scratchpack.image.media import Platform
    from scratchpack.image.model import ImageIndex
    from scratchpack.image.writer import BlobStore, assemble

    store = BlobStore(tmp_path / "arm")
    arm = assemble(store, list(image.layers), {}, Platform("arm64"), 0)
    index = ImageIndex((image, arm))
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    attached = _attached(image) + _attached(arm)
    result = push_image(index, f"{address}/app:1", attachments=attached)
    assert len(result.referrers) == 2 and all(way.startswith("tag ") for way in result.referrers)
    found = run_attestations(f"{address}/app:1")
    assert found.manifests[1:] == (image.manifest_descriptor.digest, arm.manifest_descriptor.digest)
    assert len(found.attached) == 4 and not found.problems
