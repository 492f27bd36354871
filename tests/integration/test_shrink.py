"""``scratchpack shrink``: smaller images that still work, and a report of why.

The real cases use Debian images made offline by tests/debian_images.py
(debootstrap, docker import); the small cases use images made here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from tests import cli, ownership
from tests.cfixtures import REPO_ROOT
from tests.cli import NO_ENGINE, scratchpack

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
HELLO_IN_IMAGE = "/app/hello-world"  # a user's BINARY lands under /app (plan.relocate)


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


def read_from_image(client, image: str, path: str) -> tuple[tarfile.TarInfo, bytes]:  # type: ignore[no-untyped-def]
    """``path`` of ``image`` (its tar header and, for a file, its bytes), never run."""
    container = client.containers.create(image, network_mode="none")
    try:
        stream, _stat = container.get_archive(path)
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        assert member is not None
        content = tar.extractfile(member) if member.isfile() else None
        return member, content.read() if content else b""


def serves(client, tag: str) -> str:  # type: ignore[no-untyped-def]
    """The body of ``GET /`` from ``tag`` with its port 80 published on 127.0.0.1."""
    port = _free_port()
    container = client.containers.create(tag, ports={"80/tcp": ("127.0.0.1", port)})
    try:
        container.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(container.logs().decode()) from None
                time.sleep(0.3)
    finally:
        container.remove(force=True)


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
        fileobj=data, custom_context=True, tag=tag, pull=False, decode=True, rm=True, forcerm=True
    ):
        assert "error" not in chunk, chunk


@pytest.mark.engine
def test_build_from_tar_leaves_no_containers(docker_client, tags) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "no-leftovers")
    unique = uuid.uuid4().hex.encode()  # no cached step: every step runs in a container
    _build_from_tar(
        docker_client,
        {"a.txt": (unique, 0o644), "b.txt": (unique, 0o644)},
        'FROM scratch\nCOPY a.txt /\nCOPY b.txt /\nCMD ["/none"]\n',
        tag,
    )
    parent = docker_client.images.get(tag).attrs["Parent"]
    assert parent  # the classic builder's intermediate image
    assert docker_client.containers.list(all=True, filters={"ancestor": parent}) == []


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
    assert report["programs"] == [HELLO_IN_IMAGE]
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
    proc = scratchpack(
        "shrink", str(archive), "-t", "thin:1", "-o", str(tmp_path / "thin.tar"), env=NO_ENGINE
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "thin.tar") as thin:
        manifest = json.load(thin.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        with tarfile.open(fileobj=thin.extractfile(manifest["Layers"][0])) as layer:  # type: ignore[arg-type]
            names = layer.getnames()
    assert HELLO_IN_IMAGE.lstrip("/") in names
    assert not [name for name in names if name.startswith("usr/share/doc")]


@pytest.fixture(scope="module")
def hello_archive(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """hello-world and curl's docs, written by the built-in writer (no engine)."""
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples/hello-world")], check=True)
    archive = tmp_path_factory.mktemp("hello") / "fat.tar"
    built = scratchpack(
        "build", str(HELLO), "-t", "fat:1", "--include", "/usr/share/doc/curl", "-o", str(archive),
        env=NO_ENGINE,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return archive


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "/nonexistent/thin.tar"], "--output /nonexistent/thin.tar: /nonexistent is not a"),
        (["-o", "{full}"], "exists and is not empty"),
        (["--engine", "docker", "-o", "thin.tar"], "-o/--output uses the built-in writer"),
        (
            ["--trace-args", "--version"],
            "--trace-args only applies to traced runs: add --trace or --verify",
        ),
        (
            ["--probe-cmd", "curl {host}"],
            "--probe-cmd only applies to traced runs: add --trace or --verify",
        ),
        (["--trace-network", "host"], "--trace-network only applies to traced runs"),
        (["--allow-probe-failure"], "--allow-probe-failure only applies to traced runs"),
        (["--fix"], "--fix adds what --verify finds missing: add --verify"),
        (
            ["--verify", "--trace-network", "none", "--probe-cmd", "true"],
            "--probe-cmd needs a network",
        ),
    ],
)
def test_shrink_refuses_bad_options_before_any_work(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """The source does not even exist and no engine answers: the options are checked first."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("x")
    options = [option.replace("{full}", str(full)) for option in options]
    proc = scratchpack("shrink", "scratchpack-test/none:1", "-t", "x:1", *options, env=NO_ENGINE)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no .scratchpack-* left
    assert [p.name for p in full.iterdir()] == ["keep"]


def test_shrink_writes_builds_default_archive_name(hello_archive: Path, tmp_path: Path) -> None:
    from scratchpack.commands.build import default_archive

    tag = "scratchpack-test/thin:v1"
    proc = scratchpack(
        "shrink", str(hello_archive), "-t", tag, "--engine", "none", "--json",
        env=NO_ENGINE, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == "thin_v1.tar" == str(default_archive(tag))
    assert [p.name for p in tmp_path.iterdir()] == ["thin_v1.tar"]


def _docker_archive(
    source: Path, target: Path, extra: list[tuple[tarfile.TarInfo, bytes]], pax: dict[str, dict]
) -> None:
    """``source`` (an archive) as a docker-save archive of one layer: ``extra`` members
    appended to it, ``pax`` headers set on the members it names."""
    with tarfile.open(source) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        assert len(manifest["Layers"]) == 1
        blob = archive.extractfile(manifest["Layers"][0]).read()  # type: ignore[union-attr]
    layer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as old,
        tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as new,
    ):
        for member in old:
            member.pax_headers = {**member.pax_headers, **pax.get(member.name, {})}
            new.addfile(member, old.extractfile(member) if member.isreg() else None)
        for info, data in extra:
            new.addfile(info, io.BytesIO(data))
    config["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()]
    files = {
        "config.json": json.dumps(config).encode(),
        "layer.tar": layer.getvalue(),
        "manifest.json": json.dumps(
            [{"Config": "config.json", "RepoTags": ["fat:1"], "Layers": ["layer.tar"]}]
        ).encode(),
    }
    with tarfile.open(target, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_refused_entries_are_warned_and_capabilities_kept(
    hello_archive: Path, tmp_path: Path
) -> None:
    escape = tarfile.TarInfo("../escape")
    escape.size = 1
    program = HELLO_IN_IMAGE.lstrip("/")
    capability = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02 \x04"}
    archive = tmp_path / "caps.tar"
    _docker_archive(hello_archive, archive, [(escape, b"x")], {program: capability})
    proc = scratchpack(
        "shrink", str(archive), "-t", "thin:1", "-o", str(tmp_path / "thin.tar"), env=NO_ENGINE
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert any("'../escape'" in line and "climbs out of the root" in line for line in warnings)
    with tarfile.open(tmp_path / "thin.tar") as thin:
        manifest = json.load(thin.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        with tarfile.open(fileobj=thin.extractfile(manifest["Layers"][0])) as layer:  # type: ignore[arg-type]
            member = layer.getmember(program)
    assert (
        member.pax_headers["SCHILY.xattr.security.capability"]
        == capability["SCHILY.xattr.security.capability"]
    )


@pytest.mark.engine
def test_tracing_an_archive_leaves_the_engines_images_and_tags(
    docker_client, tags, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An archive's RepoTags never move a tag of the engine, and nothing of it is removed."""
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples/hello-world")], check=True)
    name = new_tag(tags, "traced")
    mine = new_tag(tags, "mine")

    def archive(path: Path) -> None:
        made = scratchpack("build", str(HELLO), "-t", name, "--label", f"l={uuid.uuid4().hex}",
                           "-o", str(path), env=NO_ENGINE)  # fmt: skip
        assert made.returncode == 0, made.stderr

    def state() -> dict[str, str]:
        return {tag: docker_client.images.get(tag).id for tag in (name, mine)}

    def trace(source: Path) -> dict:
        return shrink(str(source), "-t", "thin:1", "--trace", "--engine", "none",
                      "-o", str(tmp_path / "thin.tar"))  # fmt: skip

    # The image is in the engine (loaded as NAME, tagged MINE too): traced by its ID.
    loaded = tmp_path / "loaded.tar"
    archive(loaded)
    with open(loaded, "rb") as stream:
        docker_client.images.load(stream.read())
    docker_client.images.get(name).tag(mine)
    before = state()
    assert trace(loaded)["trace"] == {
        "exit_code": 0, "ended": "exited", "stop_signal": "SIGTERM", "network": "bridge",
        "probes": [],
    }  # fmt: skip
    assert state() == before
    # Not in the engine, as an archive and as a layout naming NAME too: NAME stays.
    for path in (tmp_path / "other.tar", tmp_path / "layout"):
        archive(path)
        image_id = json.loads(_read(path, "manifest.json"))[0]["Config"].split("/")[-1]
        assert trace(path)["kept"]["trace"]
        assert state() == before
        assert not ownership.throwaway_tags(docker_client, ["scratchpack-trace"])
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(f"sha256:{image_id}")


def _tar_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def _read(path: Path, name: str) -> bytes:
    return (path / name).read_bytes() if path.is_dir() else _tar_member(path, name)


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
    assert "curl" in report["packages"] and "packages" not in report["kept"]
    after = size(docker_client, tag)
    print(f"\ncurl: {size(docker_client, debian_curl_image)} -> {after} bytes")
    assert after <= 20_000_000
    assert run(docker_client, tag) == run(docker_client, debian_curl_image)


@pytest.mark.engine
def test_curl_static_shrink_verified_and_fixed(docker_client, debian_curl_image: str, tags) -> None:  # type: ignore[no-untyped-def]
    """Static mode misses what libsasl2 dlopens at start-up (its sasldb plugin and libdb);
    --verify sees it, --fix adds it. 22 MB: the static image's 19.3 MB and those 1.9 MB."""
    tag = new_tag(tags, "curl-verified")
    report = shrink(debian_curl_image, "-t", tag, "--verify", "--fix")
    rounds = report["verify"]["rounds"]
    assert report["verify"]["passed"] and len(rounds) == 2, rounds
    added = rounds[1]["added"]
    assert any(path.endswith("/sasl2/libsasldb.so") for path in added), added
    assert all(item["kind"] == "path" for item in rounds[0]["differences"]), rounds[0]
    after = size(docker_client, tag)
    print(f"\ncurl --verify --fix: {after} bytes")
    assert after <= 22_000_000
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
    report = shrink(debian_nginx_image, "-t", tag, "--trace", "--verify")
    assert report["verify"]["passed"] and len(report["verify"]["rounds"]) == 1, report["verify"]
    after = size(docker_client, tag)
    print(f"\nnginx: {size(docker_client, debian_nginx_image)} -> {after} bytes; trace kept "
          f"{len(report['kept'].get('trace', []))} paths")  # fmt: skip
    assert after <= 15_000_000
    kept = report["kept"]
    everything = [path for paths in kept.values() for path in paths]
    assert any("/modules/" in path or "modules-enabled" in path for path in everything)
    assert kept["trace"]
    assert "Welcome to nginx" in serves(docker_client, tag)
    # Only the users needed: root, nobody, and nginx's ``user www-data;`` (not every
    # user of the traced /etc/passwd, nor words of comment lines such as ``#mail {``).
    _info, passwd = read_from_image(docker_client, tag, "/etc/passwd")
    users = {line.split(":")[0] for line in passwd.decode().splitlines()}
    assert {"root", "nobody", "www-data"} <= users
    assert not users & {"games", "uucp", "mail", "news", "daemon"}, users
    # The report: each file under one reason, whatever name it was asked by; the
    # generated account files not under trace; the trace's outcome.

    def canonical(paths: list[str]) -> set[str]:
        return {path.removeprefix("/usr") for path in paths}

    assert not canonical(kept["closure"]) & canonical(kept["trace"])
    assert "/etc/passwd" in kept["runtime"] and "/etc/passwd" not in kept["trace"]
    assert "/etc/group" not in kept["trace"]
    assert report["trace"]["exit_code"] is None  # stopped after its probe
    # nginx's master catches its StopSignal: it gets docker stop's grace, not SIGKILL.
    assert report["trace"]["ended"] == "stopped", report["trace"]
    probes = report["trace"]["probes"]
    assert any(p["target"] == "80/tcp" and " 200 " in p["summary"] for p in probes), probes
    assert all(p["passed"] for p in probes), probes


@pytest.mark.engine
def test_nginx_image_shrinks_in_static_mode_and_serves(
    docker_client, debian_nginx_image: str, tags
) -> None:  # type: ignore[no-untyped-def]
    """No trace: nginx needs /run (its pid file) and what its maintainer scripts made."""
    tag = new_tag(tags, "nginx-static")
    report = shrink(debian_nginx_image, "-t", tag)
    assert {"/run", "/var/run", "/var/tmp", "/tmp"} <= set(report["kept"]["runtime"])
    kept = set(report["kept"]["package"])
    assert "/etc/nginx/sites-enabled/default" in kept  # a link made by nginx's postinst
    assert "/var/www/html/index.nginx-debian.html" in kept  # named by that site
    assert "libnginx-mod-http-echo" in report["packages"]  # a modules-enabled link into it
    assert "Welcome to nginx" in serves(docker_client, tag)
    for path, mode in (("/var/tmp", 0o1777), ("/run", 0o755)):
        info, _ = read_from_image(docker_client, tag, path)
        assert info.isdir() and info.mode & 0o7777 == mode, (path, oct(info.mode))
    info, _ = read_from_image(docker_client, tag, "/var/run")
    assert info.issym() and info.linkname == "/run"


@pytest.mark.engine
def test_python_image_shrinks_with_trace(docker_client, debian_python_image: str, tags) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "python-thin")
    report = shrink(debian_python_image, "-t", tag, "--trace", "--verify")
    assert report["verify"]["passed"] and len(report["verify"]["rounds"]) == 1, report["verify"]
    after = size(docker_client, tag)
    print(f"\npython: {size(docker_client, debian_python_image)} -> {after} bytes; trace kept "
          f"{len(report['kept'].get('trace', []))} paths")  # fmt: skip
    assert after <= 30_000_000
    assert run(docker_client, tag) == run(docker_client, debian_python_image)


@pytest.mark.engine
def test_python_image_shrinks_in_static_mode(docker_client, debian_python_image: str, tags) -> None:  # type: ignore[no-untyped-def]
    """/usr/bin/python3 is python3-minimal's link; python3.11's packages hold the stdlib."""
    tag = new_tag(tags, "python-static")
    proc = scratchpack("shrink", debian_python_image, "-t", tag, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"python3-minimal", "python3.11-minimal", "libpython3.11-stdlib"} <= set(
        report["packages"]
    )
    assert "python3 also needs its library tree" in proc.stderr
    source = run(docker_client, debian_python_image)
    assert source[0] == 0 and '"sqlite"' in source[1]
    assert run(docker_client, tag) == source


@pytest.mark.engine
def test_an_env_shebang_keeps_its_interpreter(docker_client, tags) -> None:  # type: ignore[no-untyped-def]
    """``#!/usr/bin/env bash``: env, and bash found through the image's PATH."""
    base = new_tag(tags, "bash-base")
    built = scratchpack("build", "/usr/bin/bash", "/usr/bin/env", "-t", base, "--engine", "docker")
    assert built.returncode == 0, built.stderr
    source = new_tag(tags, "env-script")
    script = b'#!/usr/bin/env bash\necho "bash ${BASH_VERSINFO[0]} here"\n'
    _build_from_tar(
        docker_client,
        {"entry.sh": (script, 0o755)},
        f'FROM {base}\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\n',
        source,
    )
    tag = new_tag(tags, "env-script-thin")
    report = shrink(source, "-t", tag)
    assert report["programs"] == ["/entry.sh", "/usr/bin/env", "/usr/bin/bash"]
    status, output = run(docker_client, tag)
    assert (status, output) == run(docker_client, source)
    assert status == 0 and output.startswith("bash ")


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
    """This test's traced containers and temporary directories (tests/ownership.py)."""
    containers = [c.name for c in ownership.containers(docker_client, "scratchpack.trace")]
    temporary = ownership.temporary(p.name for p in Path("/tmp").glob("scratchpack-shrink-*"))
    return containers, temporary


@pytest.mark.engine
def test_a_trace_that_times_out_leaves_nothing(docker_client, sleeper: str) -> None:  # type: ignore[no-untyped-def]
    before = _leftovers(docker_client)
    proc = scratchpack("shrink", sleeper, "-t", "x:1", "--trace", "--trace-timeout", "3")
    assert proc.returncode == 6, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert _leftovers(docker_client) == before


@pytest.mark.engine
def test_a_trace_that_fails_is_reported(docker_client, sleeper: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``busybox sleep nonsense`` exits 1: the trace ran, but maybe not the usual work."""
    proc = scratchpack(
        "shrink", sleeper, "-t", "x:1", "--trace", "--trace-args", "nonsense",
        "-o", str(tmp_path / "x.tar"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["trace"] == {
        "exit_code": 1, "ended": "exited", "stop_signal": "SIGTERM", "network": "bridge",
        "probes": [],
    }  # fmt: skip
    assert "the traced program exited 1" in proc.stderr
    text = scratchpack("shrink", sleeper, "-t", "x:1", "--trace", "--trace-args", "nonsense",
                       "-o", str(tmp_path / "y.tar"))  # fmt: skip
    assert "traced: the program exited 1" in text.stdout


@pytest.mark.engine
def test_ctrl_c_mid_trace_leaves_nothing(docker_client, sleeper: str) -> None:  # type: ignore[no-untyped-def]
    before = _leftovers(docker_client)
    child = cli.start("shrink", sleeper, "-t", "x:1", "--trace")
    deadline = time.monotonic() + 60
    while not _leftovers(docker_client)[0] and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the traced container exists
    child.send_signal(2)  # SIGINT, as Ctrl-C sends it
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "scratchpack: interrupted"
    assert "Traceback" not in err
    assert _leftovers(docker_client) == before


# -- --trace networks and probes ----------------------------------------------------------------


def _httpd_image(
    docker_client, static_busybox: str, tags: list[str], address: str, port: int
) -> str:  # type: ignore[no-untyped-def]
    """busybox httpd serving /www, listening on ``address:port``, EXPOSE port."""
    tag = new_tag(tags, "httpd")
    listen = f"{address}:{port}" if address else str(port)
    _build_from_tar(
        docker_client,
        {
            "bin/busybox": (Path(static_busybox).read_bytes(), 0o755),
            "www/index.html": (b"<h1>hi</h1>\n", 0o644),
        },
        f"FROM scratch\nCOPY . /\nEXPOSE {port}\nUSER 65534\n"
        f'ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "{listen}", "-h", "/www"]\n',
        tag,
    )
    return tag


@pytest.mark.engine
def test_a_server_on_its_own_loopback_is_reported_at_once_and_traced_on_the_host_network(
    docker_client, static_busybox: str, tags, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    source = _httpd_image(docker_client, static_busybox, tags, "127.0.0.1", port)
    started = time.monotonic()
    proc = scratchpack("shrink", source, "-t", "x:1", "--trace", "-o", str(tmp_path / "a.tar"))
    assert time.monotonic() - started < 30, proc.stderr  # not the 60 s trace timeout
    assert proc.returncode == 6, proc.stderr
    assert f"listens on 127.0.0.1:{port} inside its container" in proc.stderr, proc.stderr
    assert "--trace-network host" in proc.stderr
    assert not (tmp_path / "a.tar").exists()
    report = shrink(
        source, "-t", "x:1", "--trace", "--trace-network", "host", "-o", str(tmp_path / "b.tar")
    )
    assert report["trace"]["network"] == "host"
    [probe] = report["trace"]["probes"]
    assert probe["kind"] == "http" and " 200 " in probe["summary"], probe
    assert "/www/index.html" in report["kept"]["trace"]


@pytest.mark.engine
def test_a_failed_probe_of_the_original_is_an_error_unless_allowed(
    docker_client, static_busybox: str, tags, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source = _httpd_image(docker_client, static_busybox, tags, "", 8080)
    probe = f"{sys.executable} -c 'print(\"no such page\"); raise SystemExit(2)'"
    out = tmp_path / "x.tar"
    proc = scratchpack(
        "shrink", source, "-t", "x:1", "--trace", "--probe-cmd", probe, "-o", str(out)
    )
    assert proc.returncode == 6, proc.stderr
    first, *details = proc.stderr.splitlines()
    assert "a probe of the original" in first and "exit 2" in first, proc.stderr
    assert "  | no such page" in details, proc.stderr
    assert not out.exists()
    proc = scratchpack(
        "shrink", source, "-t", "x:1", "--trace", "--probe-cmd", probe, "-o", str(out),
        "--allow-probe-failure", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "a probe of" in proc.stderr and "kept what the trace saw anyway" in proc.stderr
    [result] = json.loads(proc.stdout)["trace"]["probes"]
    assert (result["kind"], result["passed"], result["output"]) == (
        "command",
        False,
        "no such page",
    )
    assert out.exists()


@pytest.mark.engine
def test_trace_network_none_runs_the_program_to_its_end_unprobed(
    docker_client, static_busybox: str, tags, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source = _httpd_image(docker_client, static_busybox, tags, "", 8080)
    report = shrink(
        source, "-t", "x:1", "--trace", "--trace-network", "none",
        "--trace-args", "--help", "-o", str(tmp_path / "x.tar"),
    )  # fmt: skip
    assert report["trace"]["network"] == "none" and report["trace"]["probes"] == []


# -- shrink --verify and --fix ----------------------------------------------------------------


def image_exists(client, tag: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


COMPUTED_NAME = 'n=part; read line < "/data/$n-$((1+1)).txt"; echo "got $line"'


@pytest.fixture(scope="module")
def computed_name_image(docker_client, static_busybox: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A program that opens a file by a name it computes: no scan, no package finds it."""
    tag = f"scratchpack-test/computed:{uuid.uuid4().hex[:8]}"
    _build_from_tar(
        docker_client,
        {
            "bin/busybox": (Path(static_busybox).read_bytes(), 0o755),
            "data/part-2.txt": (b"two\n", 0o644),
            "data/unused.txt": (b"never read\n", 0o644),
        },
        "FROM scratch\nCOPY . /\n"
        f"ENTRYPOINT {json.dumps(['/bin/busybox', 'sh', '-c', COMPUTED_NAME])}\n",
        tag,
    )
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.engine
def test_verify_fails_a_static_shrink_that_lost_a_file_and_fix_mends_it(
    docker_client, computed_name_image: str, tags, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tag = new_tag(tags, "computed-thin")
    proc = scratchpack("shrink", computed_name_image, "-t", tag, "--verify")
    assert proc.returncode == 4, proc.stderr
    first, *details = [line for line in proc.stderr.splitlines() if "warning" not in line]
    assert "does not behave like" in first and "nothing written" in first, proc.stderr
    assert (
        "  | /data/part-2.txt: used in the original, not found or refused in the shrunk image"
        in details
    ), details
    assert any("exit status" in line or "standard output" in line for line in details), details
    assert not image_exists(docker_client, tag)

    report = shrink(computed_name_image, "-t", tag, "--verify", "--fix")
    rounds = report["verify"]["rounds"]
    assert report["verify"]["passed"] and len(rounds) == 2, rounds
    assert rounds[0]["added"] == [] and rounds[0]["differences"]
    assert rounds[1]["added"] == ["/data/part-2.txt"] and rounds[1]["differences"] == []
    assert report["kept"]["verify"] == ["/data/part-2.txt"]
    assert run(docker_client, tag) == (0, "got two\n")
    assert run(docker_client, computed_name_image) == (0, "got two\n")


# -- accounts (issue 22): named on the command line only, as memcached -u memcache ------------

ACCOUNTS_PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\ngames:x:5:60:games:/usr/games:/bin/false\n"
    b"memcache:x:100:101:Memcached:/nonexistent:/bin/false\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
ACCOUNTS_GROUP = b"root:x:0:\ngames:x:60:\nmemcache:x:101:\nnogroup:x:65534:\n"
# Like memcached: the program looks its user up and exits 67 when it is not there.
NEEDS_USER = 'id "$2" >/dev/null || { echo "can\'t find the user $2" >&2; exit 67; }; echo "as $2"'


NEEDS_USER_CONFIG = (
    f"ENTRYPOINT {json.dumps(['/bin/busybox', 'sh', '-c', NEEDS_USER, 'check'])}\n"
    'CMD ["-u", "memcache"]\n'
)


@pytest.fixture(scope="module")
def needs_user_image(docker_client, static_busybox: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A server-like program whose account is named only by its command line (``-u memcache``)."""
    tag = f"scratchpack-test/needs-user:{uuid.uuid4().hex[:8]}"
    files = {"etc/passwd": ACCOUNTS_PASSWD, "etc/group": ACCOUNTS_GROUP}
    context = {name: (data, 0o644) for name, data in files.items()}
    context["bin/busybox"] = (Path(static_busybox).read_bytes(), 0o755)
    _build_from_tar(docker_client, context, "FROM scratch\nCOPY . /\n" + NEEDS_USER_CONFIG, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.engine
@pytest.mark.parametrize(
    "options", [(), ("--trace",), ("--include", "/etc/passwd")], ids=["static", "trace", "include"]
)
def test_shrink_keeps_accounts_the_command_line_names(
    docker_client, needs_user_image: str, tags, options: tuple[str, ...]
) -> None:  # type: ignore[no-untyped-def]
    assert run(docker_client, needs_user_image) == (0, "as memcache\n")
    tag = new_tag(tags, "needs-user-thin")
    report = shrink(needs_user_image, "-t", tag, "--verify", *options)
    assert report["verify"]["passed"], report["verify"]
    assert run(docker_client, tag) == (0, "as memcache\n")
    _info, passwd = read_from_image(docker_client, tag, "/etc/passwd")
    if "--include" in options:
        assert passwd == ACCOUNTS_PASSWD  # the user's own file, never a generated one
        assert "/etc/passwd" in report["kept"]["include"]
    else:
        users = {line.split(":")[0] for line in passwd.decode().splitlines()}
        assert users == {"root", "memcache", "nobody"}, users


# -- a failed --verify shows the shrunk image's own words (issue 22) --------------------------

# Like memcached without its account: a message on stderr, exit 67; the message opens with an
# escape sequence that would retitle the terminal if it reached it raw.
DIES_SAYING_WHY = (
    'n=part; read line < "/data/$n-$((1+1)).txt" || '
    "{ printf '\\033]0;owned\\007can'\\''t find the data\\n' >&2; exit 67; }; echo \"got $line\""
)


@pytest.mark.engine
def test_a_failed_shrink_verify_shows_what_the_shrunk_image_wrote(
    docker_client, static_busybox: str, tags
) -> None:  # type: ignore[no-untyped-def]
    source = new_tag(tags, "dies-saying-why")
    _build_from_tar(
        docker_client,
        {
            "bin/busybox": (Path(static_busybox).read_bytes(), 0o755),
            "data/part-2.txt": (b"two\n", 0o644),
        },
        "FROM scratch\nCOPY . /\n"
        f"ENTRYPOINT {json.dumps(['/bin/busybox', 'sh', '-c', DIES_SAYING_WHY])}\n",
        source,
    )
    assert run(docker_client, source) == (0, "got two\n")
    tag = new_tag(tags, "dies-saying-why-thin")
    for fix in ((), ("--fix", "--exclude", "/data/part-2.txt")):
        proc = scratchpack("shrink", source, "-t", tag, "--verify", *fix)
        assert proc.returncode == 4, proc.stderr
        details = [line for line in proc.stderr.splitlines() if line.startswith("  | ")]
        assert "  | exit status: exited 0 in the original, exited 67 in the shrunk image" in (
            details
        ), proc.stderr
        at = details.index("  | the shrunk image's output ends:")
        shown = details[at + 1 :]  # busybox's own complaint, then the program's
        assert shown[-1] == "  |   \\x1b]0;owned\\x07can't find the data", proc.stderr
        assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
        assert not image_exists(docker_client, tag)
