"""An engine build sends its files while the package records are made (issue 26), in a real
engine: the image holds what the built-in writer writes, records included; records that
change a file already sent make the whole context go again; records that fail leave the
engine as it was, with one line for the user."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import cli, ownership
from tests.cfixtures import REPO_ROOT
from tests.integration.test_records import ImageFiles, image_files

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
STATUS_D = "var/lib/dpkg/status.d/"


@pytest.fixture(scope="module")
def hello() -> Path:
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True)
    return HELLO


@pytest.fixture
def tag(docker_client: Any) -> Any:
    name = f"scratchpack-test/streamed-{uuid.uuid4().hex[:12]}:1"
    yield name
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.images.remove(name)


def _salt(directory: Path) -> list[str]:
    """``--include`` of a file unique to the test: the legacy builder shares a layer among
    builds of the same files, and another test's image removed takes the shared ones
    with it (moby#29011), in the middle of this test's build."""
    salt = directory / "salt"
    salt.write_text(uuid.uuid4().hex)
    return ["--include", f"{salt}:/salt"]


def _saved(client: Any, reference: str, archive: Path) -> ImageFiles:
    with open(archive, "wb") as out:
        for chunk in client.images.get(reference).save(named=True):
            out.write(chunk)
    return image_files(archive)


def _described(image: ImageFiles) -> dict[str, tuple[Any, ...]]:
    """Each file and link: its kind, mode, owner, and bytes or target (directories aside:
    the engine's COPY makes the ones above the context's own)."""
    described: dict[str, tuple[Any, ...]] = {}
    for path, (info, data) in image.members.items():
        if info.isfile() or info.issym():
            what = data if info.isfile() else info.linkname
            described[path] = (info.type, info.mode & 0o7777, info.uid, info.gid, what)
    return described


def test_an_engine_build_holds_what_the_writer_writes_records_included(
    hello: Path, tag: str, docker_client: Any, tmp_path: Path
) -> None:
    salt = _salt(tmp_path)
    built = cli.scratchpack("build", hello, *salt, "-t", tag, "--engine", "docker", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    written = cli.scratchpack(
        "build", hello, *salt, "-t", tag, "-o", tmp_path / "written.tar", cwd=tmp_path,
        env=cli.NO_ENGINE,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    engine = _described(_saved(docker_client, tag, tmp_path / "saved.tar"))
    assert engine == _described(image_files(tmp_path / "written.tar"))
    assert f"{STATUS_D}libc6" in engine and "etc/debian_version" in engine


def test_records_that_change_a_file_already_sent_send_the_whole_context_again(
    hello: Path, tag: str, docker_client: Any, tmp_path: Path
) -> None:
    """``--include`` plans a stale ``status.d/libc6``; the records replace it, after it went."""
    stale = tmp_path / "stale"
    stale.write_text("Package: libc6\nVersion: 0.stale\n")
    built = cli.scratchpack(
        "build", hello, "-t", tag, "--engine", "docker", "--include",
        f"{stale}:/{STATUS_D}libc6", *_salt(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    record = _saved(docker_client, tag, tmp_path / "saved.tar").read(f"{STATUS_D}libc6")
    assert record.startswith(b"Package: libc6\nStatus: install ok installed\n")
    assert b"0.stale" not in record
    assert not ownership.throwaway_tags(docker_client)


FAILING_RECORDS = """
import sys, time
import scratchpack.commands.build as build
from scratchpack.errors import InputError

def failing(plan, root):
    time.sleep(0.3)  # after the planned files went: the body waits for the records
    raise InputError("the records failed")

build.with_records = failing
sys.argv = ["scratchpack", "build", sys.argv[1], "-t", sys.argv[2], "--engine", "docker"]
from scratchpack.entry import main
main()
"""


def test_records_that_fail_leave_the_context_unfinished_and_the_engine_as_it_was(
    hello: Path, tag: str, docker_client: Any, tmp_path: Path
) -> None:
    child = cli._started(
        [sys.executable, "-c", FAILING_RECORDS, str(hello), tag],
        cwd=tmp_path,
        env=cli.child_env({"PYTHONPATH": str(REPO_ROOT)}),
    )
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr
    assert stderr == "scratchpack: the records failed\n"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert not ownership.throwaway_tags(docker_client)
    assert not ownership.containers(docker_client)  # the engine never began the build


RACED_ONCE = """
import sys
import scratchpack.engine.client as client
from scratchpack.errors import BuildRaced

real = client.Engine.build
calls = []

def raced_once(self, context, tag, progress=None, shown=""):
    calls.append(tag)
    if len(calls) == 1:  # the whole context is taken, then the cache probe loses an image
        for _piece in context.pieces:
            pass
        raise BuildRaced(f'the engine failed to build {shown}: unable to find image "sha256:'
                         + "0" * 64 + '"')
    return real(self, context, tag, progress, shown)

client.Engine.build = raced_once
sys.argv = ["scratchpack", "build", sys.argv[1], "-t", sys.argv[2], "--engine", "docker",
            "--include", sys.argv[3] + ":/salt"]
from scratchpack.entry import main
main()
"""


def test_a_build_whose_cache_probe_lost_an_image_is_built_again_once(
    hello: Path, tag: str, docker_client: Any, tmp_path: Path
) -> None:
    """moby#29011's kin: another client's image removed while the legacy builder looked
    for a cached layer. The build is made again, whole, with a warning."""
    salt = tmp_path / "salt"
    salt.write_text(uuid.uuid4().hex)
    child = cli._started(
        [sys.executable, "-c", RACED_ONCE, str(hello), tag, str(salt)],
        cwd=tmp_path,
        env=cli.child_env({"PYTHONPATH": str(REPO_ROOT)}),
    )
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert stderr.count("built again (another client removed an image meanwhile)") == 1, stderr
    assert docker_client.images.get(tag).attrs["Config"]["Entrypoint"]
    assert not ownership.throwaway_tags(docker_client)
