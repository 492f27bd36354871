"""Registry references and credentials, read without any registry.

How ``--push REGISTRY/REPO:TAG`` is split by Docker's rules, and where its
credentials come from (``--registry-user``, ``~/.docker/config.json``). The
pushes themselves are in tests/integration/test_registry.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.registry import (
    EXIT_PUSH,
    Credentials,
    PushError,
    credentials_from_docker_config,
    parse_reference,
    push_layout,
)
from tests.cfixtures import REPO_ROOT

USER, PASSWORD = "pusher", "s3cret pass:word"
HELLO = REPO_ROOT / "samples/hello-world/hello-world"


# --- references and credentials (no registry) --------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/team/app:1.0", ("127.0.0.1:5000", "team/app", "1.0")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app", "latest")),
        ("localhost/app:v1", ("localhost", "app", "v1")),
        ("localhost:5000/a/b/c:x_y.z-1", ("localhost:5000", "a/b/c", "x_y.z-1")),
        ("ghcr.io/owner/image:tag", ("ghcr.io", "owner/image", "tag")),
        ("[::1]:5000/app:1", ("[::1]:5000", "app", "1")),
        ("Registry/app", ("Registry", "app", "latest")),
        ("alpine", ("docker.io", "library/alpine", "latest")),
        ("alpine:3.19", ("docker.io", "library/alpine", "3.19")),
        ("user/app:1", ("docker.io", "user/app", "1")),
        ("docker.io/alpine", ("docker.io", "library/alpine", "latest")),
        ("index.docker.io/user/app", ("docker.io", "user/app", "latest")),
        ("my_team/app-x.y__z:1", ("docker.io", "my_team/app-x.y__z", "1")),
    ],
)
def test_parse_reference_follows_dockers_rules(ref: str, expected: tuple[str, str, str]) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "App:1",
        "127.0.0.1:5000/App:1",
        "127.0.0.1:5000/app:",
        "127.0.0.1:5000/app:-bad",
        "127.0.0.1:5000/app@sha256:" + "0" * 64,
        "app//x",
        "host:port:5000/app",
        "127.0.0.1:5000/app:" + "t" * 129,
    ],
)
def test_parse_reference_rejects_invalid_references(ref: str) -> None:
    with pytest.raises(InputError) as error:
        parse_reference(ref)
    assert "\n" not in str(error.value) and "image reference" in str(error.value)


def _write_config(path: Path, config: object) -> Path:
    path.write_text(json.dumps(config))
    return path


def test_credentials_from_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = _write_config(
        tmp_path / "config.json",
        {
            "auths": {
                "127.0.0.1:5000": {"auth": auth},
                "https://registry.example:8443/v1/": {"username": "u2", "password": "p2"},
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                "empty.example": {},
            }
        },
    )
    assert credentials_from_docker_config("127.0.0.1:5000", config) == Credentials(USER, PASSWORD)
    assert credentials_from_docker_config("registry.example:8443", str(config)) == Credentials(
        "u2", "p2"
    )
    assert credentials_from_docker_config("docker.io", config) == Credentials("hub", "pw")
    assert credentials_from_docker_config("127.0.0.1:5001", config) is None
    assert credentials_from_docker_config("empty.example", config) is None
    assert credentials_from_docker_config("x.example", tmp_path / "missing.json") is None
    # docker's lookup: $DOCKER_CONFIG/config.json
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert credentials_from_docker_config("127.0.0.1:5000") == Credentials(USER, PASSWORD)
    assert "s3cret" not in repr(Credentials(USER, PASSWORD))


def test_credential_helpers_are_not_run_but_explained(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path / "config.json",
        {
            "auths": {"ghcr.io": {}},
            "credsStore": "desktop",
            "credHelpers": {"123.dkr.ecr.example": "ecr-login"},
        },
    )
    notes: list[str] = []
    assert credentials_from_docker_config("ghcr.io", config, note=notes.append) is None
    assert credentials_from_docker_config("123.dkr.ecr.example", config, note=notes.append) is None
    assert len(notes) == 2
    assert "docker-credential-desktop" in notes[0] and "--registry-user" in notes[0]
    assert "docker-credential-ecr-login" in notes[1]


@pytest.mark.parametrize("content", ["{not json", '{"auths": {"h": {"auth": "!!!"}}}'])
def test_corrupt_docker_config_is_one_line_error(tmp_path: Path, content: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(content)
    with pytest.raises(PushError) as error:
        credentials_from_docker_config("h", config)
    assert str(config) in str(error.value) and "\n" not in str(error.value)


def test_invalid_layout_is_a_push_error(tmp_path: Path) -> None:
    with pytest.raises(PushError, match="not an OCI image layout"):
        push_layout(tmp_path, "127.0.0.1:1/app:1")
    assert PushError("x").exit_code == EXIT_PUSH == 5
