"""Hostile Debian packages through the README's command, `build --package --repository`,
in a real engine (issue 20).

One signed repository serves an application whose package ships a link from
``var/lib/dpkg/status`` to a host file, a ``..`` entry, and a postinst that
makes a user whose home is a directory with a newline and Dockerfile
instructions in its name; and a dependency whose own control file claims to be
built from the application's source, to have its setuid file and sudoers entry
kept as a "sibling". The build must write nothing outside its root, run no
instruction the package wrote, keep nothing the archive does not call a
sibling, and say what it refused.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.debkit import Deb, Dir, File, Link, Repository, signed_repository
from tests.integration.test_repository import BUSYBOX, ok, scratchpack

pytestmark = pytest.mark.engine

NEWLINE_HOME = '/srv/ .\nLABEL injected=yes\nADD ["http://127.0.0.1:9/x", "/x"]'
TAG = "scratchpack-test/hostile-package:1"


def _packages(host_file: Path) -> list[Deb]:
    app = Deb(
        "scratchpack-test-hostile",
        "1.0-1",
        files={
            "usr/bin/scratchpack-test-hostile": File(BUSYBOX.read_bytes(), 0o755),
            "var/lib/dpkg/status": Link(str(host_file)),
            NEWLINE_HOME.lstrip("/"): Dir(0o755),
            "../../../escaped": File(b"out"),
        },
        control={"Depends": "scratchpack-test-hostile-dep"},
        scripts={
            "postinst": f"#!/bin/sh\nadduser --system --home '{NEWLINE_HOME}' evil >/dev/null\n"
        },
    )
    dep = Deb(
        "scratchpack-test-hostile-dep",
        "1.0-1",
        files={
            "usr/lib/hostile/escalate": File(b"\x7fELF", 0o6755),
            "etc/sudoers.d/hostile": File(b"ALL ALL=(ALL) NOPASSWD: ALL\n", 0o440),
        },
        control={"Source": "scratchpack-test-hostile"},  # the package's word, not the archive's
        index_fields={
            "Package": "scratchpack-test-hostile-dep",
            "Version": "1.0-1",
            "Architecture": "amd64",
        },
    )
    return [app, dep]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repository, Path]:
    if not BUSYBOX.is_file():
        unavailable(f"{BUSYBOX} is missing: apt-get install busybox-static")
    top = tmp_path_factory.mktemp("hostile")
    host_file = top / "host-status"
    host_file.write_text("the host's own file\n")
    return signed_repository(top / "repo", _packages(host_file)), host_file


def test_a_hostile_package_reaches_neither_the_host_nor_the_dockerfile(
    hostile: tuple[Repository, Path], docker_client
) -> None:
    repo, host_file = hostile
    report = ok(
        scratchpack(
            "build", "--package", "scratchpack-test-hostile", "--repository", repo.line,
            "-t", TAG, "--json",
        )
    )  # fmt: skip
    try:
        assert host_file.read_text() == "the host's own file\n"
        assert not (host_file.parent.parent / "escaped").exists()
        assert any(
            warning.startswith("package scratchpack-test-hostile 1.0-1:") and "escaped" in warning
            for warning in report["warnings"]
        ), report["warnings"]
        image = docker_client.images.get(TAG)
        assert "injected" not in (image.labels or {})
        container = docker_client.api.create_container(TAG)
        try:
            data = b"".join(docker_client.api.export(container))
        finally:
            docker_client.api.remove_container(container)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {member.name: member for member in tar}
            passwd = tar.extractfile(members["etc/passwd"]).read().decode()  # type: ignore[union-attr]
    finally:
        docker_client.images.remove(TAG, force=True)
    assert "usr/bin/scratchpack-test-hostile" in members
    assert not [name for name in members if "hostile/escalate" in name or "sudoers" in name]
    assert not [name for name in members if name in ("x", "escaped")]
    assert "evil" not in passwd  # its home was no path: the account is skipped
    assert not any(member.mode & 0o6000 for member in members.values())
