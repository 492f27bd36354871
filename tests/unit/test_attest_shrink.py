"""``shrink --attest``: the provenance of a shrunk image names its source image and the options
that decided it, and is the same bytes when the shrink is."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from scratchpack.commands.attestations import Attached, AttestationsResult, Verdict, report_text
from scratchpack.commands.common import EngineMode
from scratchpack.commands.shrink import SbomKind, ShrinkRequest, run_shrink, shrink_parameters
from scratchpack.errors import InputError
from scratchpack.image.attest import (
    MAX_INPUT_NAME,
    MAX_REFERRERS,
    SHRINK_TYPE,
    check_statement,
    source_dependencies,
)
from scratchpack.image.readers import open_attachments
from scratchpack.trace.run import TraceNetwork
from tests.imagekit import f, layer, write_oci
from tests.unit.fake_engine import FakeEngine

BUSYBOX = Path("/bin/busybox")
CONFIG_ID = "sha256:" + "c" * 64
MANIFEST = "sha256:" + "d" * 64


def test_an_engine_image_is_named_by_its_id_and_its_repo_digests() -> None:
    pulled = f"registry.example/app@{MANIFEST}"
    found = source_dependencies(
        "app:1", "engine", CONFIG_ID, None, [pulled, "junk@sha256:zz", "no-at-sign"]
    )
    assert [one.to_json() for one in found] == [
        {
            "name": "app:1",
            "digest": {"sha256": "c" * 64},
            "annotations": {"digestOf": "config", "source": "engine"},
        },
        {
            "name": pulled,
            "digest": {"sha256": "d" * 64},
            "annotations": {"digestOf": "manifest", "source": "RepoDigests"},
        },
    ]


def test_a_layout_image_is_named_by_its_manifest_then_its_config() -> None:
    found = source_dependencies("./layout", "oci-layout", CONFIG_ID, MANIFEST)
    assert [(one.name, one.sha256, dict(one.annotations)["digestOf"]) for one in found] == [
        ("./layout", "d" * 64, "manifest"),
        ("./layout (config)", "c" * 64, "config"),
    ]
    with pytest.raises(InputError):
        source_dependencies("./layout", "oci-layout", CONFIG_ID, "sha256:short")


def test_parameters_hold_the_options_that_decide_the_image_and_no_output() -> None:
    request = ShrinkRequest(
        "app:1", "small:1", includes=("/etc/x",), excludes=("/usr/share/doc/*",),
        trace=True, trace_args=("--serve",), verify=True, fix=True,
        output=Path("/home/someone/out"), attest=SbomKind.SPDX,
    )  # fmt: skip
    parameters = shrink_parameters(request)
    assert parameters == {
        "tag": "small:1",
        "includes": ["/etc/x"],
        "excludes": ["/usr/share/doc/*"],
        "allow_missing": False,
        "trace": True,
        "trace_args": ["--serve"],
        "probe_cmd": None,
        "trace_network": TraceNetwork.BRIDGE.value,
        "verify": True,
        "fix": True,
        "compression": "gzip",
    }
    assert "/home/someone" not in json.dumps(parameters)
    assert shrink_parameters(ShrinkRequest("app:1", "small:1"))["trace_network"] is None


def test_attest_without_an_output_is_refused_before_any_work() -> None:
    with pytest.raises(InputError, match="--attest attaches to an OCI layout or an archive"):
        run_shrink(ShrinkRequest("app:1", "small:1", attest=SbomKind.SPDX), FakeEngine())


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An OCI layout whose one layer is a static busybox as /bin/app (the entrypoint)."""
    if not BUSYBOX.is_file():
        pytest.skip("no /bin/busybox (Debian package busybox-static)")
    data = BUSYBOX.read_bytes()
    return write_oci(tmp_path / "source", [layer(f("bin/app", data, mode=0o755))])


def _shrunk(source: Path, output: Path, sbom: SbomKind = SbomKind.SPDX) -> dict[str, Any]:
    request = ShrinkRequest(
        str(source), "small/app:1", output=output, engine_mode=EngineMode.NONE, attest=sbom
    )
    return run_shrink(request, FakeEngine()).to_json()


def _statement(where: Path, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    manifests, referrers = open_attachments(str(where), tmp_path / f"read-{where.name}")
    (provenance,) = [
        one for one in referrers if one.artifact_type == "application/vnd.in-toto+json"
    ]
    assert provenance.subject == manifests[0] and provenance.document is not None
    return provenance.digest, json.loads(provenance.document)


def test_a_shrink_provenance_names_its_source_and_is_reproducible(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = _shrunk(source, tmp_path / "one")
    digest, statement = _statement(tmp_path / "one", tmp_path)
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == SHRINK_TYPE
    assert definition["externalParameters"]["tag"] == "small/app:1"
    config = hashlib.sha256((source / "blobs/sha256").joinpath(_config_hex(source)).read_bytes())
    names = {one["name"]: one for one in definition["resolvedDependencies"]}
    assert str(source) in names
    assert config.hexdigest() in {one["digest"]["sha256"] for one in names.values()}
    assert str(tmp_path / "one") not in json.dumps(statement)
    assert statement["subject"][0]["digest"]["sha256"] == first["attestations"][0]["subject"][7:]

    second = _shrunk(source, tmp_path / "two.tar")
    assert second["attestations"] == first["attestations"]
    assert _statement(tmp_path / "two.tar", tmp_path)[0] == digest

    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    _shrunk(source, tmp_path / "three")
    assert "metadata" not in _statement(tmp_path / "three", tmp_path)[1]["predicate"]["runDetails"]


def test_a_layout_source_is_named_by_its_manifest_digest(source: Path, tmp_path: Path) -> None:
    _shrunk(source, tmp_path / "one", SbomKind.CYCLONEDX)
    listed = json.loads((source / "index.json").read_bytes())["manifests"][0]["digest"]
    _digest, statement = _statement(tmp_path / "one", tmp_path)
    (named,) = [
        one
        for one in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        if one["name"] == str(source)
    ]
    assert named["digest"] == {"sha256": listed[7:]}
    assert named["annotations"]["digestOf"] == "manifest"


def _config_hex(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_bytes())
    manifest = layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]
    return json.loads(manifest.read_bytes())["config"]["digest"][7:]


def test_cyclonedx_is_attached_when_asked(source: Path, tmp_path: Path) -> None:
    shrunk = _shrunk(source, tmp_path / "out", SbomKind.CYCLONEDX)
    kinds = [one["artifact_type"] for one in shrunk["attestations"]]
    assert kinds == ["application/vnd.cyclonedx+json", "application/vnd.in-toto+json"]
    shutil.rmtree(tmp_path / "out")


def test_the_inputs_read_back_are_bounded_and_junk_is_passed_over() -> None:
    subject = "sha256:" + "a" * 64
    document = {
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://slsa.dev/provenance/v1",
        "subject": [{"name": "x", "digest": {"sha256": "a" * 64}}],
        "predicate": {
            "buildDefinition": {
                "resolvedDependencies": [
                    {"name": "n" * 5000, "digest": {"sha256": "b" * 64}},
                    {"name": "bad", "digest": {"sha256": "zz"}},
                    {"name": 7, "digest": {"sha256": "b" * 64}},
                    "junk",
                    {"name": "app:1\x1b[31m", "digest": {"sha256": "c" * 64}},
                ]
                * 100
            }
        },
    }
    found = check_statement(json.dumps(document).encode(), subject, "s")
    assert found.matches and len(found.inputs) <= MAX_REFERRERS
    assert found.inputs[0] == ("n" * MAX_INPUT_NAME, "sha256:" + "b" * 64)
    assert {digest for _name, digest in found.inputs} == {
        "sha256:" + "b" * 64,
        "sha256:" + "c" * 64,
    }
    shown = Attached("t", subject, 1, subject, "p", Verdict.OK, found.inputs[1:2])
    result = AttestationsResult("x", "file", (subject,), (shown,))
    assert "\x1b" not in report_text(result) and "from app:1" in report_text(result)
