"""``scratchpack shrink``: smaller images that still work, and a report of why.

The real cases use Debian images made offline by tests/debian_images.py
(debootstrap, docker import); the small cases use images made here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"


def scratchpack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scratchpack", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def tags(docker_client) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)


def new_tag(tags: list[str], name: str) -> str:
    tag = f"scratchpack-test/{name}:{uuid.uuid4().hex[:8]}"
    tags.append(tag)
    return tag


def run(client, image: str, command: list[str] | None = None) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    container = client.containers.create(image, command=command, network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode()
    finally:
        container.remove(force=True)


def size(client, tag: str) -> int:  # type: ignore[no-untyped-def]
    return int(client.images.get(tag).attrs["Size"])


def shrink(*args: str) -> dict:
    proc = scratchpack("shrink", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- small images made here ---------------------------------------------------------------


def _build_from_tar(client, files: dict[str, tuple[bytes, int]], dockerfile: str, tag: str) -> None:  # type: ignore[no-untyped-def]
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, (content, mode) in {"Dockerfile": (dockerfile.encode(), 0o644), **files}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    for chunk in client.api.build(
        fileobj=data, custom_context=True, tag=tag, pull=False, decode=True
    ):
        assert "error" not in chunk, chunk


@pytest.fixture(scope="module")
def fat_hello(docker_client, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """hello-world plus things it never uses (docs, another program)."""
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples/hello-world")], check=True)
    tag = f"scratchpack-test/fat-hello:{uuid.uuid4().hex[:8]}"
    proc = scratchpack(
        "build", str(HELLO), "/usr/bin/curl", "-t", tag, "--engine", "docker",
        "--include", "/usr/share/doc/curl", "--cmd", "--x", "--label", "team=qa",
        "--env", "GREETING=hi", "--workdir", "/srv",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.engine
def test_shrink_keeps_the_program_and_the_config(docker_client, fat_hello: str, tags) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "thin-hello")
    report = shrink(fat_hello, "-t", tag)
    assert report["programs"] == [str(HELLO)]
    assert size(docker_client, tag) < size(docker_client, fat_hello) / 4
    assert run(docker_client, tag) == (0, "Hello from scratchpack!\n")
    before = docker_client.images.get(fat_hello).attrs["Config"]
    after = docker_client.images.get(tag).attrs["Config"]
    for key in ("Entrypoint", "Cmd", "Env", "WorkingDir"):
        assert after[key] == before[key], key
    source_id = docker_client.images.get(fat_hello).id
    assert after["Labels"] == {"team": "qa", "org.scratchpack.source.digest": source_id}
    assert "closure" in report["by_reason"] and report["size_after"] < report["size_before"]


@pytest.mark.engine
def test_shrink_reads_archives_and_writes_without_an_engine(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "fat.tar"
    built = scratchpack(
        "build", str(HELLO), "-t", "fat:1", "--include", "/usr/share/doc/curl", "-o", str(archive)
    )
    assert built.returncode == 0, built.stderr
    no_engine = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    proc = scratchpack(
        "shrink", str(archive), "-t", "thin:1", "-o", str(tmp_path / "thin.tar"), env=no_engine
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "thin.tar") as thin:
        manifest = json.load(thin.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        with tarfile.open(fileobj=thin.extractfile(manifest["Layers"][0])) as layer:  # type: ignore[arg-type]
            names = layer.getnames()
    assert str(HELLO).lstrip("/") in names
    assert not [name for name in names if name.startswith("usr/share/doc")]


@pytest.mark.engine
def test_shrink_errors_are_one_line(docker_client, tags, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    unknown = scratchpack("shrink", "scratchpack-test/none:1", "-t", "x:1")
    assert unknown.returncode == 3 and len(unknown.stderr.splitlines()) == 1
    assert "no image scratchpack-test/none:1" in unknown.stderr
    empty = new_tag(tags, "no-cmd")
    _build_from_tar(
        docker_client, {"data.txt": (b"x", 0o644)}, "FROM scratch\nCOPY data.txt /\n", empty
    )
    proc = scratchpack("shrink", empty, "-t", "x:1")
    assert proc.returncode == 2 and "neither an Entrypoint nor a Cmd" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.engine
def test_a_script_entrypoint_is_kept_with_a_warning(docker_client, tags) -> None:  # type: ignore[no-untyped-def]
    source = new_tag(tags, "script")
    script = b'#!/bin/sh\nset -e\nGREETING="${1:-hi}"\nexec /bin/hello-world "$@"\n'
    hello = HELLO.read_bytes()
    base = new_tag(tags, "script-base")
    built = scratchpack(
        "build", "/bin/sh", str(HELLO), "-t", base, "--engine", "docker",
        "--include", f"{HELLO}:/bin/hello-world",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    _build_from_tar(
        docker_client,
        {"entry.sh": (script, 0o755), "hello": (hello, 0o755)},
        f'FROM {base}\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\n',
        source,
    )
    tag = new_tag(tags, "script-thin")
    proc = scratchpack("shrink", source, "-t", tag)
    assert proc.returncode == 0, proc.stderr
    assert "--trace" in proc.stderr
    assert run(docker_client, tag) == (0, "Hello from scratchpack!\n")


# -- real Debian images -----------------------------------------------------------------------


@pytest.mark.engine
def test_curl_image_shrinks_in_static_mode(docker_client, debian_curl_image: str, tags) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "curl-thin")
    report = shrink(debian_curl_image, "-t", tag)
    assert "curl" in report["kept"]["packages"]
    after = size(docker_client, tag)
    print(f"\ncurl: {size(docker_client, debian_curl_image)} -> {after} bytes")
    assert after <= 20_000_000
    assert run(docker_client, tag) == run(docker_client, debian_curl_image)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.engine
def test_nginx_image_shrinks_with_trace_and_serves(
    docker_client, debian_nginx_image: str, tags
) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "nginx-thin")
    report = shrink(debian_nginx_image, "-t", tag, "--trace")
    after = size(docker_client, tag)
    print(f"\nnginx: {size(docker_client, debian_nginx_image)} -> {after} bytes; trace kept "
          f"{len(report['kept'].get('trace', []))} paths")  # fmt: skip
    assert after <= 15_000_000
    assert any("/modules/" in path or "modules-enabled" in path for path in report["kept"]["trace"])
    port = _free_port()
    container = docker_client.containers.create(tag, ports={"80/tcp": ("127.0.0.1", port)})
    try:
        container.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(container.logs().decode()) from None
                time.sleep(0.3)
        assert "Welcome to nginx" in body
    finally:
        container.remove(force=True)


@pytest.mark.engine
def test_python_image_shrinks_with_trace(docker_client, debian_python_image: str, tags) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "python-thin")
    report = shrink(debian_python_image, "-t", tag, "--trace")
    after = size(docker_client, tag)
    print(f"\npython: {size(docker_client, debian_python_image)} -> {after} bytes; trace kept "
          f"{len(report['kept'].get('trace', []))} paths")  # fmt: skip
    assert after <= 30_000_000
    assert run(docker_client, tag) == run(docker_client, debian_python_image)


@pytest.fixture(scope="module")
def sleeper(docker_client, static_busybox: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A program that never exits by itself and exposes nothing."""
    tag = f"scratchpack-test/sleeper:{uuid.uuid4().hex[:8]}"
    _build_from_tar(
        docker_client,
        {"busybox": (Path(static_busybox).read_bytes(), 0o755)},
        'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox", "sleep", "3600"]\n',
        tag,
    )
    yield tag
    docker_client.images.remove(tag, force=True)


def _leftovers(docker_client) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    containers = [
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": "scratchpack.trace"})
    ]
    temporary = [p.name for p in Path("/tmp").glob("scratchpack-shrink-*")]
    return containers, temporary


@pytest.mark.engine
def test_a_trace_that_times_out_leaves_nothing(docker_client, sleeper: str) -> None:  # type: ignore[no-untyped-def]
    before = _leftovers(docker_client)
    proc = scratchpack("shrink", sleeper, "-t", "x:1", "--trace", "--trace-timeout", "3")
    assert proc.returncode == 6, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert _leftovers(docker_client) == before


@pytest.mark.engine
def test_ctrl_c_mid_trace_leaves_nothing(docker_client, sleeper: str) -> None:  # type: ignore[no-untyped-def]
    before = _leftovers(docker_client)
    child = subprocess.Popen(
        [sys.executable, "-m", "scratchpack", "shrink", sleeper, "-t", "x:1", "--trace"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _leftovers(docker_client)[0] and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the traced container exists
    child.send_signal(2)  # SIGINT, as Ctrl-C sends it
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "scratchpack: interrupted"
    assert "Traceback" not in err
    assert _leftovers(docker_client) == before
