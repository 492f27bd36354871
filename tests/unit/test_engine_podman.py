"""What Podman answers differently, handled in scratchpack/engine/dialect.py: with fakes.

The answers faked here are the ones Podman 4.3.1 (Debian 12) gave to the same requests;
tests/integration/test_podman.py runs the commands against the real service.
"""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from scratchpack.engine import attach
from scratchpack.engine.client import Engine
from scratchpack.engine.dialect import (
    DOCKER,
    PODMAN,
    EngineKind,
    created_ipc_mode,
    dialect_of,
    familiar,
    missing_command,
)
from scratchpack.owner import OWNER_LABEL, TAG_REPOSITORIES

DOCKER_VERSION = {
    "Components": [{"Name": "Engine", "Version": "20.10.24+dfsg1"}],
    "Version": "20.10.24+dfsg1",
    "ApiVersion": "1.41",
    "Arch": "amd64",
}
PODMAN_VERSION = {
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [
        {"Name": "Podman Engine", "Version": "4.3.1", "Details": {"APIVersion": "4.3.1"}},
        {"Name": "Conmon", "Version": "conmon version 2.1.6"},
    ],
    "Version": "4.3.1",
    "ApiVersion": "1.41",
    "Arch": "amd64",
}
PODMAN_MISSING = (
    "preparing container 349cddccc464 for attach: runc: runc create failed: unable to start "
    'container process: exec: "nosuchcmd": executable file not found in $PATH: OCI runtime '
    "attempted to invoke a command that was not found"
)
DOCKER_MISSING = (
    "failed to create shim: OCI runtime create failed: runc create failed: unable to start "
    'container process: exec: "nosuchcmd": executable file not found in $PATH: unknown'
)


@pytest.mark.parametrize(
    ("version", "kind"),
    [
        (PODMAN_VERSION, EngineKind.PODMAN),
        (DOCKER_VERSION, EngineKind.DOCKER),
        ({}, EngineKind.DOCKER),
        ({"Components": "Podman Engine"}, EngineKind.DOCKER),
        ({"Components": [None, 3, {"Name": ["Podman Engine"]}]}, EngineKind.DOCKER),
        ([], EngineKind.DOCKER),
    ],
)
def test_the_engine_is_recognised_from_its_version(version: Any, kind: EngineKind) -> None:
    assert dialect_of(version).kind is kind


def test_each_difference_is_named_in_the_dialect() -> None:
    assert (DOCKER.exit_wait, PODMAN.exit_wait) == ("removed", "next-exit")
    assert not DOCKER.qualifies_names and PODMAN.qualifies_names
    assert DOCKER.reports_ipc_mode and not PODMAN.reports_ipc_mode
    assert not DOCKER.ands_filter_values and PODMAN.ands_filter_values


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("localhost/scratchpack-verify/1-2-ab:0", "scratchpack-verify/1-2-ab:0"),
        ("docker.io/scratchpack-staging/1-2-ab:0", "scratchpack-staging/1-2-ab:0"),
        ("docker.io/library/hello:1", "hello:1"),
        (
            "registry.example/scratchpack-verify/1-2-ab:0",
            "registry.example/scratchpack-verify/1-2-ab:0",
        ),
        ("localhostile/x:1", "localhostile/x:1"),
    ],
)
def test_podman_names_lose_only_the_registry_podman_added(stored: str, shown: str) -> None:
    assert familiar(stored) == shown
    assert PODMAN.familiar(stored) == shown
    assert DOCKER.familiar(stored) == stored  # Docker's names are what the user gave


def test_throwaway_tags_are_listed_by_one_request_on_docker_and_one_each_on_podman() -> None:
    repositories = ("a", "b")
    assert DOCKER.tag_filters(repositories) == [["a/*", "b/*"]]
    assert PODMAN.tag_filters(repositories) == [["*/a/*"], ["*/b/*"]]


def _created(*argv: str) -> dict[str, Any]:
    return {"Config": {"CreateCommand": list(argv)}}


@pytest.mark.parametrize(
    ("attrs", "mode"),
    [
        ({}, None),
        ({"Config": None}, None),
        ({"Config": {"CreateCommand": "podman run --ipc=host"}}, None),
        (_created("podman", "system", "service", "--time=0"), None),  # made through the API
        (_created("podman", "run", "--ipc=host", "img"), "host"),
        (_created("podman", "run", "--ipc", "host", "img"), "host"),
        (_created("podman", "run", "--ipc=private", "img"), "private"),
        (_created("podman", "run", "--ipc=container:db", "img"), "container:db"),
        (_created("podman", "run", "--ipc=ns:/proc/1/ns/ipc", "img"), "ns:/proc/1/ns/ipc"),
        # The image's own arguments cannot hide a --ipc=host before them.
        (_created("podman", "run", "--ipc=host", "img", "--ipc=private"), "host"),
        (_created("podman", "run", "--ipc=private", "img", "--ipc", "host"), "host"),
    ],
)
def test_the_ipc_mode_podman_was_asked_for(attrs: dict[str, Any], mode: str | None) -> None:
    assert created_ipc_mode(attrs) == mode


@pytest.mark.parametrize("text", [PODMAN_MISSING, DOCKER_MISSING])
def test_a_missing_command_is_recognised_where_either_engine_says_it(text: str) -> None:
    assert missing_command(text) == "executable file not found in $PATH"
    assert missing_command("no space left on device") is None


def test_the_refusal_at_attach_becomes_one_line() -> None:
    err = docker.errors.APIError("500 Server Error", explanation=PODMAN_MISSING)
    refused = attach._refused(err, "tools:1", ["nosuchcmd", "-x"])
    assert str(refused) == "tools:1 has no 'nosuchcmd' to run (executable file not found in $PATH)"
    assert "\n" not in str(attach._refused(docker.errors.APIError("x\ny"), "t", ["sh"]))


class _FakeAPI:
    """The few calls the engine makes while recognising Podman and listing leftovers."""

    base_url = "http+docker://localhost"

    def __init__(self, version: dict[str, Any], images: list[dict[str, Any]]) -> None:
        self._version = version
        self._images = images
        self.calls: list[str] = []
        self.native: dict[str, dict[str, Any]] = {}

    def version(self) -> dict[str, Any]:
        self.calls.append("version")
        return self._version

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("containers")
        return [{"Names": ["/scratchpack-1-2-x"], "Labels": {OWNER_LABEL: "1-2"}}]

    def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Podman's reference filter: a name must match every value given (fnmatch-like)."""
        import fnmatch

        self.calls.append("images")
        patterns = filters["reference"]
        return [
            image
            for image in self._images
            if any(
                all(fnmatch.fnmatchcase(tag, pattern) for pattern in patterns)
                for tag in image["RepoTags"]
            )
        ]

    def _get(self, url: str) -> str:
        return url

    def _result(self, url: str, json: bool) -> dict[str, Any]:
        return self.native[url.rsplit("/", 2)[-2]]

    def inspect_container(self, name: str) -> dict[str, Any]:
        raise docker.errors.NotFound(name)


class _FakeClient:
    def __init__(self, api: _FakeAPI) -> None:
        self.api = api


def test_podman_leftovers_are_found_under_their_qualified_names() -> None:
    images = [
        {"Id": "a", "RepoTags": ["localhost/scratchpack-verify/1-2-ab:0", "docker.io/app:1"]},
        {"Id": "b", "RepoTags": ["docker.io/scratchpack-staging/1-3-cd:0"]},
        {"Id": "c", "RepoTags": ["docker.io/scratchpack-trace/1-4-ef:0"]},
        {"Id": "d", "RepoTags": ["docker.io/library/other:1"]},
    ]
    api = _FakeAPI(PODMAN_VERSION, images)
    found = Engine.from_client(_FakeClient(api)).leftovers()
    assert sorted(found) == [
        ("container", "scratchpack-1-2-x", "1-2"),
        ("image", "docker.io/scratchpack-staging/1-3-cd:0", "1-3"),
        ("image", "docker.io/scratchpack-trace/1-4-ef:0", "1-4"),
        ("image", "localhost/scratchpack-verify/1-2-ab:0", "1-2"),
    ]
    assert api.calls.count("images") == len(TAG_REPOSITORIES)


def test_the_version_is_asked_once_per_connection() -> None:
    api = _FakeAPI(PODMAN_VERSION, [])
    engine = Engine.from_client(_FakeClient(api))
    assert engine.dialect is PODMAN
    assert engine.architecture() == "amd64"
    engine.leftovers()
    assert engine.dialect is PODMAN
    assert api.calls.count("version") == 1


def test_on_podman_the_ipc_mode_comes_from_podmans_own_record() -> None:
    """Podman's compatible inspect says "shareable" even for ``--ipc=host``."""
    api = _FakeAPI(PODMAN_VERSION, [])
    client: Any = _FakeClient(api)
    attrs = {"Id": "t1", "HostConfig": {"IpcMode": "shareable"}}
    api.native["t1"] = _created("podman", "run", "-d", "--ipc=host", "img")
    assert "IPC namespace (--ipc=host)" in str(attach.host_access(client, attrs, PODMAN))
    assert attach.host_access(client, attrs, DOCKER) is None
    api.native["t1"] = _created("podman", "system", "service", "--time=0")
    assert attach.host_access(client, attrs, PODMAN) is None
    api.native["t1"] = _created("podman", "run", "--ipc=ns:/proc/1/ns/ipc", "img")
    assert "unknowable" in str(attach.host_access(client, attrs, PODMAN))
