"""Debug variants in a real engine: a shell beside the application, which still runs.

No registry is reachable, so the base images are made here: an alpine-like base
(real /lib and /bin directories, musl's loader in /lib, a musl-linked /bin/sh)
catches a merge that would let Debian's /lib -> usr/lib symlink wipe out /lib.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scratchpack.plan.busybox import busybox_applets
from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.cli import scratchpack

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
HELLO_IN_IMAGE = "/app/hello-world"  # a user's BINARY lands under /app (plan.relocate)
MUSL_LOADER = "/lib/x86_64-linux-musl/libc.so"
SHIM = r"""
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc; argv[0] = "sh"; execv("/bin/busybox", argv); return 127;
}
"""


def _tar(files: dict[str, tuple[bytes | None, int, str | None]]) -> bytes:
    """path -> (content or None for a directory, mode, symlink target)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, (content, mode, link) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def _build(client, context: bytes, tag: str) -> None:  # type: ignore[no-untyped-def]
    for chunk in client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, pull=False, rm=True, decode=True
    ):
        assert "error" not in chunk, chunk


@pytest.fixture(scope="module")
def alpine_like(docker_client, static_busybox: str, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    musl_gcc = shutil.which("musl-gcc")
    if musl_gcc is None or not os.path.exists(MUSL_LOADER):
        pytest.skip("needs Debian's musl and musl-tools")
    work = tmp_path_factory.mktemp("alpine-like")
    (work / "shim.c").write_text(SHIM)
    subprocess.run([musl_gcc, "-o", str(work / "sh"), str(work / "shim.c")], check=True)
    files = {
        "Dockerfile": (b'FROM scratch\nCOPY root/ /\nCMD ["/bin/sh"]\n', 0o644, None),
        "root/bin": (None, 0o755, None),
        "root/bin/busybox": (Path(static_busybox).read_bytes(), 0o755, None),
        "root/bin/sh": ((work / "sh").read_bytes(), 0o755, None),
        "root/lib": (None, 0o755, None),
        "root/lib/ld-musl-x86_64.so.1": (Path(MUSL_LOADER).read_bytes(), 0o755, None),
        "root/usr/lib": (None, 0o755, None),
        "root/etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644, None),
        "root/etc/os-release": (b"ID=alpine-like\n", 0o644, None),
    }
    for applet in ("ls", "cat", "echo", "id"):
        files[f"root/bin/{applet}"] = (None, 0o777, "busybox")
    tag = f"scratchpack-test/alpine-like:{uuid.uuid4().hex[:8]}"
    _build(docker_client, _tar(files), tag)
    yield tag
    docker_client.images.remove(tag, force=True)


def run(client, image: str, command: list[str], entrypoint: list[str] | None = None) -> str:  # type: ignore[no-untyped-def]
    container = client.containers.create(
        image, command=command, entrypoint=entrypoint, network_mode="none"
    )
    try:
        container.start()
        status = container.wait(timeout=60)["StatusCode"]
        output = container.logs().decode()
        assert status == 0, output
        return output
    finally:
        container.remove(force=True)


@pytest.fixture
def tags(docker_client) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    made: list[str] = []
    yield made
    for tag in made:
        for name in (tag, f"{tag}-debug"):
            with contextlib.suppress(Exception):
                docker_client.images.remove(name, force=True)


@pytest.mark.engine
def test_variant_on_an_alpine_like_base_keeps_both_working(
    docker_client, alpine_like: str, tags: list[str]
) -> None:
    tag = f"scratchpack-test/curl:{uuid.uuid4().hex[:8]}"
    tags.append(tag)
    proc = scratchpack(
        "build", "/usr/bin/curl", "-t", tag, "--engine", "docker", "--debug",
        "--debug-base", alpine_like, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    debug_tag = result["debug"]["tag"]
    assert debug_tag == f"{tag}-debug"
    expected = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    # The application runs unchanged, with the same entrypoint and config...
    assert run(docker_client, debug_tag, ["--version"]) == expected
    original = docker_client.images.get(tag).attrs["Config"]
    variant = docker_client.images.get(debug_tag).attrs["Config"]
    assert variant["Entrypoint"] == original["Entrypoint"] == ["/usr/bin/curl"]
    # ...and the base's musl shell still works and sees the application.
    shell = run(
        docker_client, debug_tag, ["-c", "ls /lib; curl --version; cat /etc/os-release"], ["sh"]
    )
    assert "ld-musl-x86_64.so.1" in shell and expected in shell
    # The application's package records win a clash, as its other files do (merge_onto_base):
    # its os-release says what its packages are (issue 23).
    assert "ID=debian" in shell and "ID=alpine-like" not in shell


@pytest.mark.engine
def test_busybox_variant_needs_no_base(docker_client, tags: list[str]) -> None:
    tag = f"scratchpack-test/hello:{uuid.uuid4().hex[:8]}"
    tags.append(tag)
    proc = scratchpack(
        "build", str(HELLO), "-t", tag, "--engine", "docker", "--debug", "--debug-shell", "busybox",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shell = run(docker_client, f"{tag}-debug", ["-c", f"echo $PATH; {HELLO_IN_IMAGE}"], ["sh"])
    assert shell.splitlines()[0].endswith(":/busybox")
    assert "Hello from scratchpack!" in shell
    assert run(docker_client, f"{tag}-debug", []) == "Hello from scratchpack!\n"


def test_busybox_variant_with_the_writer(tmp_path: Path, static_busybox: str) -> None:
    proc = scratchpack(
        "build", str(HELLO), "-t", "hello:w", "--debug",
        "--debug-shell", "busybox", "-o", str(tmp_path / "hello.tar"), "--json",
        env=cli.NO_ENGINE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["debug"]["output"] == str(tmp_path / "hello-debug.tar")
    with tarfile.open(tmp_path / "hello.tar") as archive:
        main = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
    names: set[str] = set()
    with tarfile.open(tmp_path / "hello-debug.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        assert manifest["RepoTags"] == ["hello:w-debug"]
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:  # type: ignore[arg-type]
                names |= set(layer.getnames())
    assert {"busybox/busybox", "busybox/sh", HELLO_IN_IMAGE.lstrip("/")} <= names
    # The variant reuses the application's layer as is: only the shell's is new.
    assert manifest["Layers"][: len(main["Layers"])] == main["Layers"]
    assert len(manifest["Layers"]) == len(main["Layers"]) + 1


def test_base_variant_needs_an_engine(tmp_path: Path) -> None:
    proc = scratchpack(
        "build", str(HELLO), "-t", "hello:w", "--debug", "-o", str(tmp_path / "hello.tar"),
        env=cli.NO_ENGINE,
    )  # fmt: skip
    assert proc.returncode == 2 and "--debug-shell busybox" in proc.stderr
    assert not (tmp_path / "hello.tar").exists()


@pytest.mark.engine
def test_unknown_base_is_a_clear_error(docker_client, tags: list[str]) -> None:
    tag = f"scratchpack-test/hello:{uuid.uuid4().hex[:8]}"
    tags.append(tag)
    proc = scratchpack(
        "build", str(HELLO), "-t", tag, "--engine", "docker", "--debug",
        "--debug-base", "scratchpack-test/no-such-base:1",
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "scratchpack: no image scratchpack-test/no-such-base:1 in the local engine"
    ]


def test_applets_are_read_without_running_busybox(static_busybox: str) -> None:
    listed = subprocess.run([static_busybox, "--list"], capture_output=True, text=True).stdout
    assert sorted(busybox_applets(static_busybox)) == sorted(listed.split())


@pytest.fixture(scope="module")
def hello_image(docker_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An image of the hello-world sample, as any tool might have built it."""
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples/hello-world")], check=True)
    tag = f"scratchpack-test/hello-src:{uuid.uuid4().hex[:8]}"
    proc = scratchpack("build", str(HELLO), "-t", tag, "--engine", "docker", "--cmd", "--greet")
    assert proc.returncode == 0, proc.stderr
    yield tag
    for name in (tag, f"{tag}-debug"):
        with contextlib.suppress(Exception):
            docker_client.images.remove(name, force=True)


@pytest.mark.engine
@pytest.mark.parametrize("shell", ["busybox", "base"])
def test_debug_variant_of_an_existing_image(
    docker_client, hello_image: str, alpine_like: str, shell: str
) -> None:
    proc = scratchpack(
        "debug", hello_image, "--debug-shell", shell, "--debug-base", alpine_like, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    variant = json.loads(proc.stdout)["tag"]
    assert variant == f"{hello_image}-debug"
    original = docker_client.images.get(hello_image).attrs["Config"]
    config = docker_client.images.get(variant).attrs["Config"]
    assert config["Entrypoint"] == original["Entrypoint"] and config["Cmd"] == ["--greet"]
    assert run(docker_client, variant, []) == "Hello from scratchpack!\n"
    shell_output = run(docker_client, variant, ["-c", f"ls /lib; {HELLO_IN_IMAGE}"], ["sh"])
    assert "Hello from scratchpack!" in shell_output
    if shell == "base":
        assert "ld-musl-x86_64.so.1" in shell_output


@pytest.mark.engine
def test_debug_of_an_unknown_image_is_a_clear_error(docker_client) -> None:  # type: ignore[no-untyped-def]
    proc = scratchpack("debug", "scratchpack-test/not-there:1")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == "scratchpack: no image scratchpack-test/not-there:1 in the local engine"
    )


@pytest.mark.engine
def test_a_base_of_another_architecture_is_refused(docker_client, tags: list[str]) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_attach import _foreign_archive

    base = f"scratchpack-test/foreign-base:{uuid.uuid4().hex[:8]}"
    tags.append(base)
    docker_client.images.load(_foreign_archive(base, "arm64"))
    tag = f"scratchpack-test/hello:{uuid.uuid4().hex[:8]}"
    tags.append(tag)
    proc = scratchpack(
        "build", str(HELLO), "-t", tag, "--engine", "docker", "--debug", "--debug-base", base
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "scratchpack: the debug base is arm64 but the application is amd64"
    ]
    for name in (tag, f"{tag}-debug"):
        assert not docker_client.images.list(name=name), "a failed run keeps no image"
