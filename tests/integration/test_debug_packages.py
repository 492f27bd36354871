"""``scratchpack debug --attach CONTAINER --package PKG``: tools from Debian packages beside a
running shell-less container.

The target is a FROM-scratch image holding one static C program that wakes every 100 ms
(``nanosleep``), so ``strace -p 1`` has something to show. The packages come through the
project's private apt state, cached in ``$SCRATCHPACK_CACHE`` (``/var/cache/scratchpack-tests
/packages``); the tools image they make stays in the engine as a cache (``scratchpack-tools/
pkgs:…``), which ``prune`` keeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from scratchpack.commands.debug import (
    ToolsRequest,
    ensure_package_tools,
    packages_key,
    request_key,
)
from scratchpack.engine.attach import TARGET_LABEL
from scratchpack.engine.client import Engine
from scratchpack.engine.prune import prune_engine
from tests import cli
from tests.podman import Podman, podman_service
from tests.targets import TARGET_DOCKERFILE, scratch_image, static_program

CACHE = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))
PACKAGES_ENV = {"SCRATCHPACK_CACHE": str(CACHE / "packages")}
TARGET_SOURCE = r"""
#include <time.h>

int main(void) {
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;)
        nanosleep(&tick, 0);
}
"""


def scratchpack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return cli.scratchpack(*args, env=PACKAGES_ENV, timeout=timeout)


@pytest.fixture(autouse=True)
def _package_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process calls use the tests' package cache too."""
    monkeypatch.setenv("SCRATCHPACK_CACHE", PACKAGES_ENV["SCRATCHPACK_CACHE"])


@pytest.fixture(scope="module")
def target_program(tmp_path_factory: Any) -> Path:
    """The static C program of the targets (no shell, no tools in its image)."""
    return static_program(tmp_path_factory.mktemp("debug-packages-program"), TARGET_SOURCE)


@pytest.fixture(scope="module")
def target_image(docker_client: docker.DockerClient, target_program: Path) -> Iterator[str]:
    """A FROM-scratch image whose only file is the static program: no shell, no tools."""
    tag = f"scratchpack-debug-packages-target:{uuid.uuid4().hex[:12]}"
    try:
        scratch_image(docker_client, tag, {"target": target_program}, TARGET_DOCKERFILE)
        yield tag
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def start_target(
    docker_client: docker.DockerClient, target_image: str
) -> Iterator[Callable[..., Any]]:
    """Start a target container (no network); every one is removed at the end."""
    started: list[Any] = []

    def start(**options: Any) -> Any:
        options.setdefault("network_mode", "none")
        container = docker_client.containers.run(
            target_image,
            name=f"scratchpack-debug-packages-{uuid.uuid4().hex[:8]}",
            detach=True,
            **options,
        )
        started.append(container)
        container.reload()
        assert container.status == "running", container.attrs["State"]
        return container

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _no_sidecars(client: docker.DockerClient, target: Any) -> None:
    found = client.containers.list(all=True, filters={"label": f"{TARGET_LABEL}={target.id}"})
    assert found == []
    target.reload()
    assert target.status == "running"


def _forget(client: docker.DockerClient, request: ToolsRequest) -> None:
    """Remove this request's cached tools image (its request tag and its packages tag)."""
    engine = Engine.from_client(client)
    tools = ensure_package_tools(engine, request)  # whatever is there, to learn its tags
    for tag in {tools.tag, f"scratchpack-tools/pkgs:{packages_key(tools.packages)[:20]}"}:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            client.images.remove(tag, force=True)


# The strace line of an attached process, and the call the target makes.
ATTACHED = "Process 1 attached"
TRACED_CALL = "nanosleep"


# Only the cold test uses this set: removing its image cannot pull one from under another test.
COLD_SET = ("strace", "procps")


def test_strace_traces_pid_1_cold_then_warm(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    target = start_target()
    _forget(docker_client, ToolsRequest(COLD_SET))
    packages = [word for name in COLD_SET for word in ("--package", name)]
    command = ("debug", "--attach", target.name, *packages, "--")
    trace = ("timeout", "5", "strace", "-p", "1")  # busybox's timeout ends strace

    began = time.monotonic()
    cold = scratchpack(*command, *trace)
    cold_seconds = time.monotonic() - began
    assert ATTACHED in cold.stdout + cold.stderr, cold.stderr
    assert TRACED_CALL in cold.stdout, cold.stdout
    _no_sidecars(docker_client, target)

    began = time.monotonic()
    warm = scratchpack(*command, "ps", "-o", "pid,comm")  # procps's ps: the target's PID 1
    warm_seconds = time.monotonic() - began
    assert warm.returncode == 0, warm.stderr
    assert any(line.split() == ["1", "target"] for line in warm.stdout.splitlines()), warm.stdout
    # In-process: the request's image is found by its tag, nothing resolved.
    found = ensure_package_tools(Engine.from_client(docker_client), ToolsRequest(COLD_SET))
    assert found.cached
    assert any(package.startswith("strace=") for package in found.packages)
    assert {"strace", "ps", "top"} <= set(found.programs)
    print(f"cold {cold_seconds:.1f} s, warm {warm_seconds:.1f} s (to the command's end)")
    assert warm_seconds < cold_seconds
    _no_sidecars(docker_client, target)


def test_exit_status_is_the_commands(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    target = start_target()
    ran = scratchpack("debug", "--attach", target.name, "--package", "strace", "--",
                      "strace", "-p", "99999")  # fmt: skip
    assert ran.returncode == 1, (ran.stdout, ran.stderr)
    assert "99999" in ran.stdout
    _no_sidecars(docker_client, target)


def test_capabilities_are_the_tools_only(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    """strace's sidecar has CAP_SYS_PTRACE and not CAP_NET_ADMIN (tcpdump's)."""
    target = start_target()
    ran = scratchpack("debug", "--attach", target.name, "--package", "strace", "--",
                      "cat", "/proc/self/status")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    effective = next(
        int(line.split()[1], 16) for line in ran.stdout.splitlines() if line.startswith("CapEff:")
    )
    sys_ptrace, net_admin = 19, 12
    assert effective & (1 << sys_ptrace)
    assert not effective & (1 << net_admin)


def test_as_target_user_runs_as_its_uid(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    target = start_target(user="1000:1000")
    ran = scratchpack("debug", "--attach", target.name, "--package", "strace",
                      "--as-target-user", "--", "sh", "-c",
                      "id -u; timeout 5 strace -p 1")  # fmt: skip
    assert ran.stdout.splitlines()[0] == "1000", (ran.stdout, ran.stderr)
    assert ATTACHED in ran.stdout, ran.stdout
    _no_sidecars(docker_client, target)


def test_tcpdump_captures_in_the_targets_network(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    """tcpdump's sidecar has raw sockets (NET_RAW, NET_ADMIN) in the target's namespace."""
    target = start_target()
    script = (
        "timeout 15 tcpdump -n -i lo -c 1 icmp 2>&1 & "
        "for i in 1 2 3 4 5 6; do sleep 1; ping -c 1 127.0.0.1 >/dev/null; done; wait"
    )
    ran = scratchpack("debug", "--attach", target.name, "--package", "tcpdump", "--",
                      "sh", "-c", script)  # fmt: skip
    assert "1 packet captured" in ran.stdout, (ran.stdout, ran.stderr)
    assert "ICMP echo request" in ran.stdout
    _no_sidecars(docker_client, target)


def test_ctrl_c_removes_the_sidecar(
    docker_client: docker.DockerClient, start_target: Callable[..., Any]
) -> None:
    """strace -p 1 runs until interrupted: SIGINT to scratchpack leaves nothing behind."""
    target = start_target()
    scratchpack("debug", "--attach", target.name, "--package", "strace", "--", "true")  # cached
    running = cli.start(
        "debug", "--attach", target.name, "--package", "strace", "--", "strace", "-p", "1",
        env=PACKAGES_ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        label = f"{TARGET_LABEL}={target.id}"
        while not docker_client.containers.list(filters={"label": label}):
            assert time.monotonic() < deadline, "no sidecar started"
            assert running.poll() is None, running.communicate()
            time.sleep(0.2)
        running.send_signal(signal.SIGINT)
        running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode != 0
    _no_sidecars(docker_client, target)


def test_prune_keeps_the_tools_image(docker_client: docker.DockerClient) -> None:
    engine = Engine.from_client(docker_client)
    tools = ensure_package_tools(engine, ToolsRequest(("strace",)))
    removed = prune_engine(engine)
    assert not [name for name in removed if "scratchpack-tools/" in name]
    assert engine.image(tools.tag).id == tools.image


def test_request_key_names_what_changes_the_image() -> None:
    base = request_key(ToolsRequest(("strace",)), "amd64", "abc")
    assert base == request_key(ToolsRequest(("strace", "strace")), "amd64", "abc")
    assert base != request_key(ToolsRequest(("strace",)), "arm64", "abc")
    assert base != request_key(ToolsRequest(("strace",), "trixie"), "amd64", "abc")
    assert base != request_key(ToolsRequest(("strace",)), "amd64", "def")


# --------------------------------------------------------------------------- debug IMAGE


def test_a_variant_with_gdb_runs_its_python(
    docker_client: docker.DockerClient, target_image: str
) -> None:
    """gdb's embedded Python needs libpython3.11-stdlib's files: kept as the runtime rule
    keeps a python program's (not "Python not initialized")."""
    variant = f"scratchpack-debug-packages-gdb:{uuid.uuid4().hex[:12]}"
    made = scratchpack("debug", target_image, "--package", "gdb", "-t", variant)
    try:
        assert made.returncode == 0, made.stderr
        ran = docker_client.containers.run(
            variant,
            entrypoint=["gdb", "--batch", "-ex", "python print(40 + 2)", "/target"],
            remove=True,
            network_mode="none",
            stdout=True,
            stderr=True,
        ).decode()
        assert "42" in ran.splitlines(), ran
        image = docker_client.images.get(variant)
        base = docker_client.images.get(target_image)
        assert (
            image.attrs["RootFS"]["Layers"][: len(base.attrs["RootFS"]["Layers"])]
            == (base.attrs["RootFS"]["Layers"])
        )
        path = next(env for env in image.attrs["Config"]["Env"] if env.startswith("PATH="))
        assert "/usr/bin" in path.split(":") and path.endswith(":/busybox")
        assert image.attrs["Config"]["Entrypoint"] == ["/target"]
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(variant, force=True)


# --------------------------------------------------------------------------- Podman


@pytest.mark.podman
def test_strace_traces_pid_1_on_podman(tmp_path: Path, target_program: Path) -> None:
    """The same sidecar through Podman's Docker-compatible API: strace attaches to PID 1,
    the command's status comes back, nothing is left.

    """
    (tmp_path / "podman").mkdir()
    with podman_service(tmp_path / "podman") as podman:
        tag = f"scratchpack-debug-packages-podman/target:{uuid.uuid4().hex[:12]}"
        env = {**PACKAGES_ENV, **podman.env}
        built = cli.scratchpack("build", target_program, "-t", tag, env=env, timeout=300)
        assert built.returncode == 0, built.stderr
        api = podman.client.api
        created = api.create_container(tag, name=tag.split(":")[1], network_disabled=True)
        api.start(created["Id"])
        try:
            _trace_on_podman(podman, env, created["Id"])
        finally:
            api.remove_container(created["Id"], force=True)
            podman.cli("rmi", "--force", tag)


def _trace_on_podman(podman: Podman, env: dict[str, str], target: str) -> None:
    command = ("debug", "--attach", target, "--package", "strace", "--")
    traced = cli.scratchpack(*command, "timeout", "5", "strace", "-p", "1", env=env, timeout=600)
    assert ATTACHED in traced.stdout, (traced.stdout, traced.stderr)
    assert TRACED_CALL in traced.stdout
    failed = cli.scratchpack(*command, "strace", "-p", "99999", env=env, timeout=120)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    left = podman.client.api.containers(all=True, filters={"label": f"{TARGET_LABEL}={target}"})
    assert left == []
