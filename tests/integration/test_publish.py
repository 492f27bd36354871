"""``build --push`` and ``build --sbom`` end to end, through the command line.

The push goes to a real docker-registry on 127.0.0.1 (tests.registry_fixture);
the SBOMs are validated against the official schemas (tests.test_sbom's
validators, which never fetch anything).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.registry_fixture import (
    OCI_MANIFEST,
    Registry,
    registry_or_unavailable,
)
from tests.unit.test_sbom import assert_valid, cyclonedx_validator, spdx_validator  # noqa: F401

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
USER, PASSWORD = "builder", "pa ss:word"


@pytest.fixture(scope="module", autouse=True)
def samples() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples")], check=True)


def scratchpack(*args: str, stdin: str | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    env = {**cli.NO_ENGINE, "DOCKER_CONFIG": "/nonexistent"}
    return cli.scratchpack(*args, cwd=cwd, env=env, input=stdin)


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("open"))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from registry_or_unavailable(tmp_path_factory.mktemp("auth"), htpasswd=(USER, PASSWORD))


@pytest.mark.registry
def test_push_keeps_the_manifest_digest(open_registry: Registry, tmp_path: Path) -> None:
    reference = f"{open_registry.address}/samples/hello:1.0"
    proc = scratchpack(
        "build", str(HELLO), "-t", "hello:1.0", "--push", reference, "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["push"] == {"reference": reference, "digest": result["manifest_digest"]}
    assert result["output"] is None and not list(tmp_path.iterdir()), (
        "a push-only run keeps nothing"
    )
    response = open_registry.api(
        "GET", "/v2/samples/hello/manifests/1.0", headers={"Accept": OCI_MANIFEST}
    )
    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == result["manifest_digest"]
    assert response.headers["Docker-Content-Digest"] == result["manifest_digest"]


@pytest.mark.registry
def test_push_with_credentials_from_stdin(auth_registry: Registry, tmp_path: Path) -> None:
    reference = f"{auth_registry.address}/private/hello:2"
    base = ("build", str(HELLO), "-t", "hello:2", "--push", reference)
    ok = scratchpack(*base, "--registry-user", USER, "--registry-password-stdin", stdin=PASSWORD)
    assert ok.returncode == 0, ok.stderr
    denied = scratchpack(*base, "--registry-user", USER, "--registry-password-stdin", stdin="no")
    assert denied.returncode == 5
    assert len(denied.stderr.splitlines()) == 1 and "authentication" in denied.stderr
    anonymous = scratchpack(*base, "-o", str(tmp_path / "kept.tar"))
    assert anonymous.returncode == 5 and "Traceback" not in anonymous.stderr
    assert not (tmp_path / "kept.tar").exists(), "a failed push leaves no output"


def test_push_refuses_bad_references_before_any_work(tmp_path: Path) -> None:
    proc = scratchpack("build", str(HELLO), "-t", "x:y", "--push", "Bad Ref", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("sbom_format", ["spdx", "cyclonedx"])
def test_sbom_from_the_command_line_is_valid_and_reproducible(
    sbom_format: str,
    tmp_path: Path,
    spdx_validator: Draft7Validator,  # noqa: F811
    cyclonedx_validator: Draft7Validator,  # noqa: F811
) -> None:
    documents = []
    for name in ("a", "b"):
        proc = scratchpack(
            "build", str(HELLO), "-t", "hello:sbom", "-o", str(tmp_path / f"{name}.tar"),
            "--sbom", str(tmp_path / f"{name}.json"), "--sbom-format", sbom_format,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        documents.append((tmp_path / f"{name}.json").read_bytes())
    assert documents[0] == documents[1]
    document = json.loads(documents[0])
    validator = spdx_validator if sbom_format == "spdx" else cyclonedx_validator
    assert_valid(validator, document)
    text = documents[0].decode()
    assert "pkg:deb/debian/libc6@" in text
    assert hashlib.sha256(HELLO.read_bytes()).hexdigest() in text
