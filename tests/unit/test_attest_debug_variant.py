"""``build --debug --attest -o``: the debug variant's provenance names the image it was made
from (by manifest and config digest) and the busybox it got its shell from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from scratchpack.cli import cli

BUSYBOX = Path("/bin/busybox")


def _run(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_debug_variant_names_its_image_and_its_busybox(tmp_path: Path) -> None:
    out = tmp_path / "app"
    built = _run(
        "build", str(BUSYBOX), "-t", "attest/app:1", "--debug", "--debug-shell", "busybox",
        "--busybox", str(BUSYBOX), "--attest", "-o", str(out),
    )  # fmt: skip
    variant = Path(built["debug"]["output"])
    listed = _run("attestations", str(variant))
    assert [one["verdict"] for one in listed["attached"]] == ["ok"]
    (provenance,) = listed["attached"]
    named = {one["name"]: one["digest"] for one in provenance["inputs"]}
    main_manifest = json.loads((out / "index.json").read_bytes())["manifests"][0]["digest"]
    assert named["attest/app:1"] == main_manifest
    assert named[str(BUSYBOX)] == "sha256:" + hashlib.sha256(BUSYBOX.read_bytes()).hexdigest()
