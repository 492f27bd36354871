"""``build --copy``: the user's own files beside packages (issue 22, finding 1).

With ``--package``, ``--include`` and BINARY name paths inside the unpacked packages, so a
user's ``haproxy.cfg`` could not be added at all. ``--copy`` takes it from this machine:
haproxy from Debian's package serves a request with the user's configuration, owners and
modes are the ones asked for (in the engine's image and in the built-in writer's alike),
and the errors say on which side a path was looked for.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.cfixtures import compile_exe, is_host_glibc_x86_64
from tests.integration.test_packages import CACHE, built

HAPROXY_CFG = """\
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s

frontend web
    bind :{port}
    http-request return status 200 content-type text/plain string hello
"""


def scratchpack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command with the suite's package cache, run from ``cwd`` (the user's directory)."""
    env = {"SCRATCHPACK_CACHE": str(CACHE / "packages")}
    return cli.scratchpack(*args, cwd=cwd, env=env, timeout=900)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fetch(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.engine
def test_haproxy_from_packages_serves_with_the_users_config(
    docker_client: Any, tmp_path: Path
) -> None:
    port = _free_port()
    (tmp_path / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=port))
    tag = f"scratchpack-test/haproxy-copy:{uuid.uuid4().hex[:8]}"
    built(
        scratchpack(
            "build", "--package", "haproxy", "/usr/sbin/haproxy", "-t", tag,
            "--engine", "docker", "--json",
            "--copy", "haproxy.cfg:/etc/haproxy/haproxy.cfg",
            "--cmd", "-f /etc/haproxy/haproxy.cfg",
            cwd=tmp_path,
        )
    )  # fmt: skip
    container = docker_client.containers.create(tag, ports={f"{port}/tcp": ("127.0.0.1", port)})
    try:
        container.start()
        try:
            text = _fetch(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
        except (urllib.error.URLError, ConnectionError) as err:
            raise AssertionError(container.logs().decode()) from err
        assert text == "hello"
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


def _user_files(top: Path) -> list[str]:
    """A start script, a document tree with a link, and the options that copy them."""
    (top / "start.sh").write_text("#!/bin/sh\nexec haproxy -f /etc/haproxy/haproxy.cfg\n")
    site = top / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("hello\n")
    (site / "css/main.css").write_text("body {}\n")
    (site / "home.html").symlink_to("index.html")
    return [
        "--copy", "start.sh,owner=www-data,mode=0750",  # DEST /app/start.sh
        "--copy", "site:/srv/site,owner=33:33,mode=0640",
    ]  # fmt: skip


# The copied paths, each (uid, gid, mode): owner= on every entry, mode= on files and
# directories (as COPY --chmod), parents COPY makes root's.
EXPECTED = {
    "app/start.sh": (33, 33, 0o750),
    "srv/site": (33, 33, 0o640),
    "srv/site/index.html": (33, 33, 0o640),
    "srv/site/css": (33, 33, 0o640),
    "srv/site/css/main.css": (33, 33, 0o640),
    "srv/site/home.html": (33, 33, 0o777),
}


def _layer_members(archive_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        members: dict[str, tarfile.TarInfo] = {}
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as inner:
                members.update({m.name.rstrip("/"): m for m in inner})
    return members


def test_owners_and_modes_with_the_built_in_writer(tmp_path: Path) -> None:
    options = _user_files(tmp_path)
    output = tmp_path / "copied.tar"
    report = built(
        scratchpack(
            "build", "--package", "haproxy", "/usr/sbin/haproxy", "-t", "scratchpack-test/c:1",
            "-o", str(output), "--json", *options, cwd=tmp_path,
        )
    )  # fmt: skip
    assert report["output"] == str(output)
    members = _layer_members(output)
    found = {name: (m.uid, m.gid, m.mode & 0o7777) for name, m in members.items()}
    assert {name: found.get(name) for name in EXPECTED} == EXPECTED
    assert (found["srv"][:2], found["app"][:2]) == ((0, 0), (0, 0))
    assert members["srv/site/home.html"].linkname == "index.html"
    passwd = archive_text(output, "etc/passwd")
    assert re.search(r"^www-data:[x*]:33:33:", passwd, re.MULTILINE), passwd  # its account


def archive_text(archive_path: Path, name: str) -> str:
    with tarfile.open(archive_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as inner:
                if name in inner.getnames():
                    stream = inner.extractfile(name)
                    assert stream is not None
                    return stream.read().decode()
    raise AssertionError(f"{name} is not in {archive_path}")


@pytest.mark.engine
def test_owners_and_modes_in_the_engines_image(docker_client: Any, tmp_path: Path) -> None:
    options = _user_files(tmp_path)
    tag = f"scratchpack-test/copy-owners:{uuid.uuid4().hex[:8]}"
    built(
        scratchpack(
            "build", "--package", "haproxy", "/usr/sbin/haproxy", "-t", tag,
            "--engine", "docker", "--json", *options, cwd=tmp_path,
        )
    )  # fmt: skip
    container = docker_client.containers.create(tag)
    try:
        found: dict[str, tuple[int, int, int]] = {}
        for path in ("/app/start.sh", "/srv/site"):
            stream, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                top = path.rsplit("/", 1)[0].lstrip("/")
                for m in tar.getmembers():
                    found[f"{top}/{m.name}".rstrip("/")] = (m.uid, m.gid, m.mode & 0o7777)
        assert {name: found.get(name) for name in EXPECTED} == EXPECTED
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


@pytest.mark.skipif(not is_host_glibc_x86_64(), reason="compiles for glibc x86-64")
def test_a_copied_program_is_the_binary_with_the_package_roots_libraries(tmp_path: Path) -> None:
    """BINARY names a --copy DEST: the user's own program is found there, and its libraries
    come from the package root (its libc is the packages' libc6, not this machine's)."""
    compile_exe(tmp_path / "build", "hello")
    output = tmp_path / "hello.tar"
    report = built(
        scratchpack(
            "build", "--package", "haproxy", "/app/hello", "--copy", "build/hello",
            "-t", "scratchpack-test/hello:1", "-o", str(output), "--json", cwd=tmp_path,
        )
    )  # fmt: skip
    assert report["output"] == str(output)
    members = _layer_members(output)
    assert members["app/hello"].isfile() and members["app/hello"].mode & 0o111
    assert any(name.endswith("x86_64-linux-gnu/libc.so.6") for name in members)
    with tarfile.open(output) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
    assert config["config"]["Entrypoint"] == ["/app/hello"]


def test_errors_say_on_which_side_a_path_was_looked_for(tmp_path: Path) -> None:
    missing = scratchpack("build", "--package", "haproxy", "--copy", "./x:/etc/x", cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip() == (
        f"scratchpack: --copy ./x:/etc/x: ./x is not on this machine (looked for from {tmp_path})"
    )
    (tmp_path / "haproxy.cfg").write_text("global\n")
    inside = scratchpack(
        "build", "--package", "haproxy", "/usr/sbin/haproxy", "-t", "scratchpack-test/h:1",
        "-o", str(tmp_path / "h.tar"),
        "--include", "./haproxy.cfg:/etc/haproxy/haproxy.cfg", cwd=tmp_path,
    )  # fmt: skip
    if "apt could not fetch the package lists" in inside.stderr:
        pytest.skip("no Debian mirror")
    assert inside.returncode == 2, inside.stderr
    assert inside.stderr.strip().endswith(
        "--include ./haproxy.cfg:/etc/haproxy/haproxy.cfg: /haproxy.cfg is not in the package "
        "root (--include and BINARY name paths inside it); a file of this machine goes with "
        "--copy ./haproxy.cfg:DEST"
    ), inside.stderr
