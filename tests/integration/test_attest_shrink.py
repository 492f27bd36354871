"""``shrink --attest -o``: the shrunk image with its SBOM and a provenance naming its source.

The source is a tiny engine image made here (FROM scratch, the host's static busybox):
the shrink reads it from the engine, writes a layout with the artifacts beside the
image, and ``scratchpack attestations`` reads them back and checks their subjects.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.targets import scratch_image

BUSYBOX = Path("/bin/busybox")
DOCKERFILE = 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox", "true"]\n'
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture
def source(docker_client: Any, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(tag, image ID) of a FROM-scratch busybox image of this test's own."""
    if not BUSYBOX.is_file():
        pytest.skip("no /bin/busybox (Debian package busybox-static)")
    tag = f"scratchpack-test/attest-shrink:{uuid.uuid4().hex[:8]}"
    image_id = scratch_image(docker_client, tag, {"busybox": BUSYBOX}, DOCKERFILE)
    yield tag, image_id or docker_client.images.get(tag).id
    with contextlib.suppress(Exception):
        docker_client.images.remove(tag, force=True)


def _shrink(source: str, output: Path, *more: str) -> dict[str, Any]:
    run = cli.scratchpack(
        "shrink", source, "-t", "small/busybox:1", "--attest", "-o", str(output), "--json", *more,
        env=EPOCH,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _provenance(layout: Path, attached: list[dict[str, str]]) -> dict[str, Any]:
    (found,) = [one for one in attached if one["artifact_type"] == "application/vnd.in-toto+json"]
    manifest = json.loads((layout / "blobs/sha256" / found["digest"].split(":")[1]).read_bytes())
    statement = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    return json.loads(statement.read_bytes())


@pytest.mark.engine
def test_shrink_attest_layout_names_the_source(source: tuple[str, str], tmp_path: Path) -> None:
    tag, image_id = source
    shrunk = _shrink(tag, tmp_path / "layout", "--include", "/bin/busybox")
    manifest_digest = json.loads((tmp_path / "layout/index.json").read_bytes())["manifests"][0]
    assert {one["subject"] for one in shrunk["attestations"]} == {manifest_digest["digest"]}

    run = cli.scratchpack("attestations", str(tmp_path / "layout"), "--json")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["verified"] and found["sbom"]
    assert {one["verdict"] for one in found["attached"]} == {"ok"}
    (told,) = [one for one in found["attached"] if "inputs" in one]
    assert told["inputs"] == [{"name": tag, "digest": image_id}]  # the source, by digest

    provenance = _provenance(tmp_path / "layout", shrunk["attestations"])
    definition = provenance["predicate"]["buildDefinition"]
    (dependency,) = definition["resolvedDependencies"]
    assert dependency["name"] == tag
    assert dependency["digest"] == {"sha256": image_id.split(":")[1]}
    assert dependency["annotations"] == {"digestOf": "config", "source": "engine"}
    assert definition["externalParameters"]["includes"] == ["/bin/busybox"]
    assert str(tmp_path) not in json.dumps(provenance)  # no host path of the output
    assert provenance["predicate"]["runDetails"]["metadata"]["startedOn"] == "2023-11-14T22:13:20Z"

    again = _shrink(tag, tmp_path / "again.tar", "--include", "/bin/busybox")
    assert again["attestations"] == shrunk["attestations"]  # reproducible, archive or layout


def test_shrink_attest_without_output_is_one_line() -> None:
    run = cli.scratchpack("shrink", "some/image:1", "-t", "small:1", "--attest")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--attest attaches to" in run.stderr


def test_sbom_format_without_attest_is_one_line() -> None:
    run = cli.scratchpack("shrink", "some/image:1", "-t", "small:1", "--sbom-format", "cyclonedx")
    assert run.returncode == 2
    assert run.stderr == "scratchpack: --sbom-format goes with --attest\n"
