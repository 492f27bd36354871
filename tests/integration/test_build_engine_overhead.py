"""``build`` through the local engine pays for the engine's work, not for ours around it.

What a build of this machine's program needs is imported, nothing more (the docker
SDK, Jinja2, ``http.client``, hashlib, subprocess and the package floor's unpacker
are not), and what
ended runs left in the engine is still removed, beside the plan.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

from scratchpack.owner import _namespace
from tests import cli
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
NOT_IMPORTED = ("docker", "requests", "urllib3", "jinja2", "http", "email", "ssl", "elftools")
# hashlib loads OpenSSL's libcrypto; subprocess comes with the ssh relay of remote engines.
NOT_IMPORTED += ("hashlib", "_hashlib", "subprocess")


@pytest.fixture(scope="module")
def hello() -> Path:
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True)
    return HELLO


@pytest.fixture
def tag() -> str:
    return f"scratchpack-test/overhead-{uuid.uuid4().hex[:12]}:1"


def _remove(client: docker.DockerClient, reference: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.images.remove(reference)


def test_an_engine_build_imports_only_what_it_uses(hello: Path, tag: str, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from scratchpack.cli import run\n"
        f"sys.argv = ['scratchpack', 'build', {str(hello)!r}, '-t', {tag!r}]\n"
        "sys.argv += ['--engine', 'docker']\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_IMPORTED!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('scratchpack.packages.root')))\n"
    )
    client = docker.from_env()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=cli.child_env({"PYTHONPATH": str(REPO_ROOT)}),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-2:] == ["[]", "[]"], done.stdout
        assert client.images.get(tag).attrs["Config"]["Entrypoint"]
    finally:
        _remove(client, tag)


def test_a_build_still_removes_what_an_ended_run_left(hello: Path, tag: str) -> None:
    client = docker.from_env()
    ended = subprocess.Popen(["true"])
    ended.wait()
    leftover = f"scratchpack-staging/{_namespace()}-{ended.pid}-{uuid.uuid4().hex[:8]}:0"
    try:
        done = cli.scratchpack("build", hello, "-t", tag, "--engine", "docker", "--json")
        assert done.returncode == 0, done.stderr
        client.images.get(tag).tag(leftover)
        again = cli.scratchpack("build", hello, "-t", tag, "--engine", "docker", "--json")
        assert again.returncode == 0, again.stderr
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(leftover)  # removed by this build (or by a parallel run)
        warnings = json.loads(again.stdout)["warnings"]
        assert all("removed what an ended run" in w for w in warnings if "ended run" in w)
        assert len(again.stderr.strip().splitlines()) <= len(warnings) + 1, again.stderr
    finally:
        _remove(client, leftover)
        _remove(client, tag)
