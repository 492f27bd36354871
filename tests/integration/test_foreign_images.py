"""Images someone else made, through the engine: copied exactly, never built from.

Source images are made here with the built-in writer and loaded into the
engine, so their configurations can hold what no Dockerfile would write: a
Healthcheck ending in a backslash, an Env entry whose key has a space, a
VOLUME named ``$PATH``, ONBUILD triggers that fetch from the host's loopback.
Then ``shrink`` and ``debug`` run through the engine, as a user runs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import docker.errors
import pytest

from scratchpack.plan.entries import Entry, EntryKind, Reason
from tests import cli, ownership
from tests.cfixtures import REPO_ROOT
from tests.imagekit import busybox_entries, load_source

pytestmark = pytest.mark.engine

CAPABILITY = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12  # cap_net_raw+ep


def scratchpack(*args: str) -> subprocess.CompletedProcess[str]:
    return cli.scratchpack(*args, cwd=REPO_ROOT, unset=("LD_*",), timeout=600)


@pytest.fixture
def tags(docker_client: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(docker.errors.DockerException):
            docker_client.images.remove(tag, force=True)


def new_tag(tags: list[str], name: str) -> str:
    tag = f"scratchpack-test/{name}:{uuid.uuid4().hex[:10]}"
    tags.append(tag)
    return tag


def config_of(docker_client: Any, reference: str) -> dict[str, Any]:
    return dict(docker_client.api.inspect_image(reference)["Config"])


def run(docker_client: Any, image: str, command: list[str], entrypoint: Any = None) -> str:
    container = docker_client.containers.create(
        image, command=command, entrypoint=entrypoint, network_mode="none"
    )
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
        return container.logs().decode()
    finally:
        container.remove(force=True)


class Hits(http.server.BaseHTTPRequestHandler):
    """Counts every request: an ONBUILD ADD that runs would fetch from here."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"fetched\n")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    Hits.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], Hits.hits
    server.shutdown()


def hostile_runtime(port: int) -> dict[str, Any]:
    return {
        "Entrypoint": ["/bin/busybox"],
        "Cmd": ["true"],
        "Env": ["PATH=/bin", "LD_PRELOAD /evil.so=1", 'QUOTED=a"b$PATH\\'],
        "User": "65534",
        "WorkingDir": "/tmp",
        "Volumes": {"$PATH": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", "true \\"], "Interval": 30_000_000_000},
        "Labels": {"team": "qa", "multi\nline": "ends in \\"},
        "OnBuild": [f"ADD http://127.0.0.1:{port}/onbuild /onbuild"],
        "StopSignal": "SIGINT",
        "ExposedPorts": {"8080/tcp": {}},
    }


def test_a_shrunk_image_keeps_a_hostile_configuration_exactly(
    docker_client: Any,
    static_busybox: Path,
    tmp_path: Path,
    tags: list[str],
    loopback_server: tuple[int, list[str]],
) -> None:
    port, hits = loopback_server
    source = new_tag(tags, "hostile-source")
    source_id = load_source(
        docker_client, tmp_path, source, hostile_runtime(port), busybox_entries(static_busybox)
    )
    shrunk = new_tag(tags, "hostile-shrunk")
    proc = scratchpack("shrink", source, "-t", shrunk, "--engine", "docker", "--json")
    assert proc.returncode == 0, proc.stderr
    before, after = config_of(docker_client, source), config_of(docker_client, shrunk)
    assert after["Labels"].pop("org.scratchpack.source.digest") == source_id
    assert after == before
    # What the program sees: the source's user, no LD_PRELOAD made out of a key.
    output = run(docker_client, shrunk, ["sh", "-c", "id -u; env"])
    lines = output.splitlines()
    assert lines[0] == "65534"
    assert not any(line.startswith("LD_PRELOAD=") for line in lines)
    assert 'QUOTED=a"b$PATH\\' in lines
    assert hits == []


def test_debug_of_an_image_with_onbuild_triggers_runs_none(
    docker_client: Any,
    static_busybox: Path,
    tmp_path: Path,
    tags: list[str],
    loopback_server: tuple[int, list[str]],
) -> None:
    port, hits = loopback_server
    runtime = {
        "Entrypoint": ["/bin/busybox", "echo", "app"],
        "Env": ["PATH=/bin"],
        "OnBuild": [f"ADD http://127.0.0.1:{port}/onbuild /onbuild"],
    }
    source = new_tag(tags, "onbuild")
    load_source(docker_client, tmp_path, source, runtime, busybox_entries(static_busybox))
    base = new_tag(tags, "onbuild-base")  # a base that has its own trigger too
    base_runtime = {**runtime, "OnBuild": [f"ADD http://127.0.0.1:{port}/base /base"]}
    load_source(docker_client, tmp_path, base, base_runtime, busybox_entries(static_busybox))
    for shell, extra in (("busybox", []), ("base", ["--debug-base", base])):
        variant = new_tag(tags, f"onbuild-debug-{shell}")
        proc = scratchpack("debug", source, "-t", variant, "--debug-shell", shell, *extra)
        assert proc.returncode == 0, proc.stderr
        config = config_of(docker_client, variant)
        assert config["OnBuild"] == runtime["OnBuild"]  # copied, never run
        assert run(docker_client, variant, []) == "app\n"
        assert "ok" in run(docker_client, variant, ["-c", "echo ok"], entrypoint=["sh"])
    assert hits == []
    # The attack is real: a build FROM the source fetches from the host's loopback.
    probe = new_tag(tags, "onbuild-probe")
    stream = docker_client.api.build(
        fileobj=_context(f"FROM {source}\n"), custom_context=True, tag=probe, pull=False, rm=True,
        forcerm=True, decode=True,
    )  # fmt: skip
    for _chunk in stream:
        pass
    assert hits == ["/onbuild"]


def _context(dockerfile: str) -> Any:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_a_non_root_tree_costs_the_same_through_the_engine_and_keeps_capabilities(
    docker_client: Any, static_busybox: Path, tmp_path: Path, tags: list[str]
) -> None:
    entries = busybox_entries(static_busybox)
    data = tmp_path / "data"
    data.mkdir()
    for number in range(120):
        (data / f"{number}.bin").write_bytes(hashlib.sha256(str(number).encode()).digest() * 1600)
    entries.append(Entry("/srv", EntryKind.DIR, 0o755, Reason.INCLUDE, uid=999, gid=999))
    for depth in ("a", "a/b", "a/b/c"):
        entries.append(
            Entry(f"/srv/{depth}", EntryKind.DIR, 0o750, Reason.INCLUDE, uid=999, gid=999)
        )
        for number in range(40):
            source = str(data / f"{(len(depth) * 40 + number) % 120}.bin")
            entries.append(
                Entry(
                    f"/srv/{depth}/{number}.bin",
                    EntryKind.FILE,
                    0o640,
                    Reason.INCLUDE,
                    source=source,
                    uid=999,
                    gid=999,
                )
            )
    entries.append(
        Entry(
            "/bin/capped",
            EntryKind.FILE,
            0o755,
            Reason.INCLUDE,
            source=str(static_busybox),
            xattrs=(("security.capability", CAPABILITY),),
        )
    )
    source = new_tag(tags, "owned-source")
    runtime = {"Entrypoint": ["/bin/busybox", "true"], "Env": ["PATH=/bin"]}
    load_source(docker_client, tmp_path, source, runtime, entries)
    through_engine = new_tag(tags, "owned-engine")
    keep = ["--include", "/srv", "--include", "/bin/capped"]
    proc = scratchpack("shrink", source, "-t", through_engine, *keep, "--engine", "docker")
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "owned.tar"
    through_writer = new_tag(tags, "owned-writer")
    proc = scratchpack("shrink", source, "-t", through_writer, *keep, "-o", str(written))
    assert proc.returncode == 0, proc.stderr
    with open(written, "rb") as stream:
        docker_client.images.load(stream)
    engine_size = docker_client.api.inspect_image(through_engine)["Size"]
    writer_size = docker_client.api.inspect_image(through_writer)["Size"]
    assert engine_size > 3 * 40 * 51200  # the tree is in, once
    assert abs(engine_size - writer_size) <= 0.01 * writer_size
    # Owners and the file capability are in the engine's copy of the shrunk image.
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as out:
        for chunk in docker_client.api.get_image(through_engine):
            out.write(chunk)
    members = _layer_members(saved)
    assert members["srv/a/b/c/0.bin"].uid == 999 and members["srv/a"].gid == 999
    capability = members["bin/capped"].pax_headers.get("SCHILY.xattr.security.capability")
    assert capability is not None
    assert capability.encode("utf-8", "surrogateescape") == CAPABILITY


def _layer_members(saved: Path) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(saved) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(name), mode="r|") as layer:  # type: ignore[arg-type]
                for member in layer:
                    members[member.name.strip("/")] = member
    return members


def test_a_failed_command_leaves_no_image_under_its_final_tag(
    docker_client: Any, static_busybox: Path, tmp_path: Path, tags: list[str]
) -> None:
    source = new_tag(tags, "fail-source")
    runtime = {"Entrypoint": ["/bin/busybox", "true"], "Env": ["PATH=/bin"]}
    load_source(docker_client, tmp_path, source, runtime, busybox_entries(static_busybox))
    previous = new_tag(tags, "fail-previous")
    docker_client.images.get(source).tag(previous)  # the user's image under the final tag
    before = docker_client.images.get(previous).id

    def staging() -> list[str]:
        throwaway = ("scratchpack-staging", "scratchpack-verify", "scratchpack-trace")
        return ownership.throwaway_tags(docker_client, throwaway)  # this test's runs' only

    false = shutil.which("false") or "/bin/false"
    failures = {
        "build --verify": ["build", false, "-t", previous, "--engine", "docker", "--verify", ""],
        "build -o --verify": [
            "build", false, "-t", previous, "-o", str(tmp_path / "out.tar"), "--verify", "",
        ],
        "build --debug": [
            "build", false, "-t", previous, "--engine", "docker", "--debug",
            "--debug-base", "scratchpack-test/no-such-base:1",
        ],
        "shrink": ["shrink", source, "-t", previous, "--include", "/no/such/path"],
        "debug": ["debug", source, "-t", previous, "--debug-base", "scratchpack-test/none:1"],
    }  # fmt: skip
    for what, args in failures.items():
        proc = scratchpack(*args)
        assert proc.returncode != 0, what
        assert len(proc.stderr.strip().splitlines()) == 1, (what, proc.stderr)
        assert docker_client.images.get(previous).id == before, what
        assert staging() == [], what
    assert not (tmp_path / "out.tar").exists()
