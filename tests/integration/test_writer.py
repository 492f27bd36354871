"""The built-in image writer: reproducible bytes, and real consumers accept what it writes.

skopeo, umoci and ``docker load`` are the oracles; the engine tests need an
engine, the others only the Debian tools (installed by tests/run.sh).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
GREET = REPO_ROOT / "samples/origin-lib/greet"


@pytest.fixture(scope="module", autouse=True)
def samples() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples")], check=True)


def write(output: Path, *args: str, epoch: str | None = None, tag: str = "hello:test") -> dict:
    epoch_env = {} if epoch is None else {"SOURCE_DATE_EPOCH": epoch}
    env = {**cli.NO_ENGINE, **epoch_env}  # SOURCE_DATE_EPOCH only when the test gives one
    proc = cli.scratchpack(
        "build", "-t", tag, "--json", "-o", output, *args,
        cwd=output.parent, env=env, unset=("SOURCE_DATE_EPOCH",),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("SCRATCHPACK_REQUIRE_ENGINE") == "1":
            pytest.fail(f"{name} is not installed (tests/run.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def test_two_builds_give_the_same_bytes(tmp_path: Path) -> None:
    first = write(tmp_path / "a.tar", str(HELLO))
    second = write(tmp_path / "b.tar", str(HELLO))
    assert sha256(tmp_path / "a.tar") == sha256(tmp_path / "b.tar")
    assert first["manifest_digest"] == second["manifest_digest"]
    assert first["diff_ids"] == second["diff_ids"]


def test_source_date_epoch_sets_every_timestamp(tmp_path: Path) -> None:
    result = write(tmp_path / "x.tar", str(HELLO), epoch="1700000000")
    with tarfile.open(tmp_path / "x.tar") as archive:
        assert {member.mtime for member in archive.getmembers()} == {1700000000}
        config_name = "blobs/sha256/" + result["image"].split(":")[1]
        config = json.loads(archive.extractfile(config_name).read())  # type: ignore[union-attr]
        manifest_name = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer = archive.extractfile(manifest_name[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert layer[:2] == b"\x1f\x8b" and layer[4:8] == b"\0\0\0\0"  # gzip with mtime 0
    default = write(tmp_path / "y.tar", str(HELLO))
    assert default["manifest_digest"] != result["manifest_digest"]


def test_layer_tar_is_normalised(tmp_path: Path) -> None:
    write(tmp_path / "layout", str(HELLO))
    index = json.loads((tmp_path / "layout/index.json").read_text())
    blobs = tmp_path / "layout/blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer) as archive:
        members = archive.getmembers()
    names = [member.name for member in members]
    assert names == sorted(names)
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) in (
            (0, 0, "", "", 0),
            (65532, 65532, "", "", 0),
        )
        parent = member.name.rsplit("/", 1)[0]
        assert "/" not in member.name or parent in names, f"no entry for {parent}"
    tmp = next(member for member in members if member.name == "tmp")
    assert tmp.isdir() and tmp.mode == 0o1777
    assert not any("Dockerfile" in name for name in names)


def test_skopeo_reads_the_layout_and_the_archive(tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    result = write(tmp_path / "image.tar", str(HELLO))
    write(tmp_path / "layout", str(HELLO))
    for reference in (f"oci-archive:{tmp_path}/image.tar", f"oci:{tmp_path}/layout:test"):
        proc = subprocess.run(
            [skopeo, "inspect", reference], capture_output=True, text=True, check=True
        )
        assert json.loads(proc.stdout)["Digest"] == result["manifest_digest"]
    docker_archive = subprocess.run(
        [skopeo, "inspect", "--config", f"docker-archive:{tmp_path}/image.tar"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(docker_archive.stdout)["config"]["Entrypoint"] == ["/app/hello-world"]


def test_umoci_unpacks_a_runnable_root(tmp_path: Path) -> None:
    umoci = tool("umoci")
    write(tmp_path / "layout", str(GREET))
    bundle = tmp_path / "bundle"
    subprocess.run(
        [umoci, "unpack", "--image", f"{tmp_path}/layout:test", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "app/greet").is_file()  # a user's BINARY: under /app
    assert os.path.islink(rootfs / "lib64/ld-linux-x86-64.so.2")
    if os.geteuid() == 0:
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        run = subprocess.run(
            [chroot, str(rootfs), "/lib64/ld-linux-x86-64.so.2", "/app/greet"],
            capture_output=True,
            text=True,
            check=True,
            env={},
        )
        assert run.stdout == "greetings from libgreet 1.0.0\n"


def test_split_layers_share_the_library_layer(tmp_path: Path) -> None:
    # Two different programs that need the same libraries (libc and the loader).
    hello = write(tmp_path / "hello.tar", str(HELLO), "--layers", "split")
    true = write(tmp_path / "true.tar", "/usr/bin/true", "--layers", "split", tag="true:test")
    assert len(hello["diff_ids"]) == len(true["diff_ids"]) == 2
    assert hello["diff_ids"][0] == true["diff_ids"][0]
    assert hello["diff_ids"][1] != true["diff_ids"][1]
    # A program with a private library gets a library layer of its own.
    greet = write(tmp_path / "greet.tar", str(GREET), "--layers", "split", tag="greet:test")
    assert greet["diff_ids"][0] != hello["diff_ids"][0]


def test_output_must_not_clobber_user_files(tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    proc = cli.scratchpack("build", "-t", "x:y", "-o", occupied, HELLO)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".scratchpack-*"))


def test_without_an_engine_auto_writes_an_archive(tmp_path: Path) -> None:
    proc = cli.scratchpack("build", HELLO, "-t", "hello:auto", cwd=tmp_path, env=cli.NO_ENGINE)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hello_auto.tar").is_file()
    assert "docker load -i" in proc.stdout


@pytest.mark.engine
def test_docker_loads_and_runs_the_archive(tmp_path: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    tag = f"scratchpack-test/writer:{uuid.uuid4().hex[:12]}"
    result = write(tmp_path / "image.tar", str(HELLO), "--layers", "split", tag=tag)
    try:
        with open(tmp_path / "image.tar", "rb") as stream:
            docker_client.images.load(stream.read())
        image = docker_client.images.get(tag)
        assert image.id == result["image"]
        assert image.attrs["RootFS"]["Layers"] == result["diff_ids"]
        container = docker_client.containers.create(tag, network_disabled=True)
        try:
            container.start()
            assert container.wait(timeout=60)["StatusCode"] == 0
            assert container.logs() == b"Hello from scratchpack!\n"
        finally:
            container.remove(force=True)
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="setting security.capability needs root")
def test_file_capabilities_travel_with_the_binary(tmp_path: Path) -> None:
    program = tmp_path / "pinger"
    shutil.copy2(HELLO, program)
    program.chmod(0o755)
    tmp_path.chmod(0o755)
    # cap_net_raw+ep, as Debian's ping has it (VFS capability revision 2).
    capability = bytes.fromhex("0100000200200000000000000000000000000000")
    try:
        os.setxattr(program, "security.capability", capability)
    except OSError as err:
        pytest.skip(f"this file system keeps no capabilities: {err}")
    write(tmp_path / "image.tar", str(program))
    with tarfile.open(tmp_path / "image.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        with tarfile.open(fileobj=archive.extractfile(manifest["Layers"][0])) as layer:  # type: ignore[arg-type]
            member = layer.getmember("app/pinger")
    stored = member.pax_headers["SCHILY.xattr.security.capability"]
    assert stored.encode("utf-8", "surrogateescape") == capability
