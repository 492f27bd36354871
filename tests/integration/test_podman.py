"""Every command that uses an engine, against Podman's Docker-compatible API.

The service is rootful ``podman system service`` at /run/podman/podman.sock, found or
started by tests/podman.py; scratchpack reaches it through ``DOCKER_HOST`` alone. What
Podman answers differently is handled in scratchpack/engine/dialect.py; each test here
runs the command as a user would (``python -m scratchpack``) and checks the outcome in
Podman itself. Images are made here (a static C-free sample, Debian's busybox-static,
``podman load`` of an archive of ours): nothing is pulled. Marked ``podman``, so
``-m podman`` runs just these and ``-m "not podman"`` leaves them out.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchpack.engine.attach import TARGET_LABEL
from scratchpack.owner import OWNER_LABEL
from tests import cli
from tests.podman import Podman, podman_service

pytestmark = pytest.mark.podman

REPO_ROOT = Path(__file__).resolve().parents[2]
HELLO = REPO_ROOT / "samples" / "hello-world" / "hello-world"
SCOPE = f"scratchpack-podman-test-{uuid.uuid4().hex[:8]}"  # this run's image names


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    with podman_service(tmp_path_factory.mktemp("podman")) as service:
        yield service


def run(podman: Podman, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """``scratchpack ARGS`` with Podman as its engine."""
    return cli.scratchpack(*args, env=podman.env, timeout=180, **options)


@pytest.fixture(scope="module")
def names(podman: Podman) -> Iterator[list[str]]:
    """Image names the tests made; removed (forced) at the end of the module."""
    made: list[str] = []
    yield made
    for name in made:
        podman.cli("rmi", "--force", name)


def new_name(names: list[str], what: str) -> str:
    names.append(f"{SCOPE}/{what}:1")
    return names[-1]


@pytest.fixture(scope="module")
def hello(podman: Podman, names: list[str]) -> str:
    """``build`` through the engine, with ``--verify``: the sample program's image."""
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True, capture_output=True)
    tag = new_name(names, "hello")
    done = run(podman, "build", HELLO, "-t", tag, "--verify", "")
    assert done.returncode == 0, done.stderr
    assert podman.client.images.get(tag).attrs["Config"]["Entrypoint"] == ["/app/hello-world"]
    return tag


@pytest.fixture(scope="module")
def debug_variant(podman: Podman, hello: str, names: list[str]) -> str:
    """``debug IMAGE``: the hello image with busybox at /busybox."""
    tag = new_name(names, "hello-debug")
    done = run(podman, "debug", hello, "--debug-shell", "busybox", "-t", tag)
    assert done.returncode == 0, done.stderr
    return tag


@pytest.fixture(scope="module")
def target(podman: Podman, debug_variant: str) -> Iterator[str]:
    """A running container (made through the API) for ``debug --attach``: busybox's sleep."""
    api = podman.client.api
    created = api.create_container(
        debug_variant, entrypoint=["/busybox/sleep", "600"], name=f"{SCOPE}-target"
    )
    api.start(created["Id"])
    try:
        yield created["Id"]
    finally:
        api.remove_container(created["Id"], force=True)


def sidecars(podman: Podman, target_id: str) -> list[Any]:
    return podman.client.api.containers(all=True, filters={"label": f"{TARGET_LABEL}={target_id}"})


def test_build_through_podman_and_its_verify_run(podman: Podman, hello: str) -> None:
    run_once = podman.cli("run", "--rm", "--network", "none", "--pull", "never", hello)
    assert run_once.returncode == 0, run_once.stderr
    assert "ello" in run_once.stdout


def test_shrink_static_of_a_podman_loaded_archive(
    podman: Podman, names: list[str], tmp_path: Path
) -> None:
    """An archive of ours loaded by ``podman load`` (named ``localhost/…``), then shrunk."""
    archive = tmp_path / "hello.tar"
    loaded = f"{SCOPE}/loaded:1"
    written = cli.scratchpack("build", HELLO, "-t", loaded, "-o", archive, env=cli.NO_ENGINE)
    assert written.returncode == 0, written.stderr
    load = podman.cli("load", "-i", str(archive))
    assert load.returncode == 0, load.stderr
    names.append(f"localhost/{loaded}")
    small = new_name(names, "static")
    done = run(podman, "shrink", f"localhost/{loaded}", "-t", small)
    assert done.returncode == 0, done.stderr
    assert podman.client.images.get(small).attrs["Config"]["Entrypoint"] == ["/app/hello-world"]


def test_shrink_trace_and_verify(podman: Podman, hello: str, names: list[str]) -> None:
    small = new_name(names, "traced")
    done = run(podman, "shrink", hello, "-t", small, "--trace", "--verify")
    assert done.returncode == 0, done.stderr
    assert "traced: the program exited 0" in done.stdout
    assert "verify round 1: same" in done.stdout
    assert _own(podman) == []


def _own(podman: Podman) -> list[Any]:
    """Containers of the commands this test started (their owner label)."""
    from tests import ownership

    mine = ownership.owners()
    listed = podman.client.api.containers(all=True, filters={"label": OWNER_LABEL})
    return [c for c in listed if (c.get("Labels") or {}).get(OWNER_LABEL) in mine]


def test_debug_variant_has_a_working_shell(podman: Podman, debug_variant: str) -> None:
    shell = podman.cli(
        "run", "--rm", "--pull", "never", "--entrypoint", "sh", debug_variant, "-c", "ls /app"
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == ["hello-world"]


def test_attach_returns_the_commands_exit_status(podman: Podman, target: str) -> None:
    """Podman answers wait-until-removed with 0: the status must be the command's own."""
    done = run(podman, "debug", "--attach", target, "--", "sh", "-c", "ls /proc/1/root/app; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout.split() == ["hello-world"]
    assert sidecars(podman, target) == []


def test_attach_script_on_stdin_returns_the_shells_status(podman: Podman, target: str) -> None:
    done = run(podman, "debug", "--attach", target, input="ps -o pid,args\nexit 5\n")
    assert done.returncode == 5, done.stderr
    assert "/busybox/sleep 600" in done.stdout
    assert sidecars(podman, target) == []


def test_attach_on_a_terminal_returns_the_shells_status(podman: Podman, target: str) -> None:
    """An interactive session (a TTY) ends with the status of the shell's ``exit``."""
    import os
    import pty
    import select
    import time

    argv = [*cli.COMMAND, "debug", "--attach", target]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.execve(argv[0], argv, cli.child_env(podman.env))
    cli.STARTED.append(pid)
    seen, sent = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not data:
                break
            seen += data
        if not sent and b"# " in seen:
            os.write(fd, b"echo in-$((6*7)); exit 4\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 4, seen[-300:]
    assert b"in-42" in seen
    assert sidecars(podman, target) == []


def test_attach_with_a_missing_command_says_so_in_one_line(podman: Podman, target: str) -> None:
    """Podman refuses when the attach is opened, not at the start: still one clear line."""
    done = run(podman, "debug", "--attach", target, "--", "no-such-tool", "-x")
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        "scratchpack: scratchpack/debug-tools:busybox has no 'no-such-tool' to run "
        "(executable file not found in $PATH)"
    ]
    assert sidecars(podman, target) == []


def test_attach_refuses_a_target_in_the_hosts_ipc_namespace(
    podman: Podman, debug_variant: str
) -> None:
    """Podman reports every IpcMode as "shareable": its own record of ``--ipc=host`` counts."""
    name = f"{SCOPE}-host-ipc"
    started = podman.cli(
        "run", "-d", "--pull", "never", "--name", name, "--ipc=host",
        "--entrypoint", "/busybox/sleep", debug_variant, "600",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        done = run(podman, "debug", "--attach", name, "--", "true")
        assert done.returncode == 2
        assert "shares the host's IPC namespace (--ipc=host)" in done.stderr
    finally:
        podman.cli("rm", "--force", "--time", "0", name)


def test_prune_removes_what_ended_runs_left_in_podman(podman: Podman, hello: str) -> None:
    """Podman stores names with a registry and ANDs filter values: prune still finds them."""
    dead = _dead_owner()
    api = podman.client.api
    api.tag(hello, f"scratchpack-verify/{dead}-{uuid.uuid4().hex[:8]}", "0")  # docker.io/…
    trace_tag = f"scratchpack-trace/{dead}-{uuid.uuid4().hex[:8]}:0"
    assert podman.cli("tag", hello, trace_tag).returncode == 0  # localhost/…
    left = api.create_container(hello, labels={OWNER_LABEL: dead}, name=f"scratchpack-{dead}-x")
    try:
        done = run(podman, "prune")
    finally:  # what prune missed goes anyway
        for tag in podman.client.images.get(hello).tags:
            if dead in tag:
                podman.cli("untag", hello, tag)
        podman.cli("rm", "--force", left["Id"])
    assert done.returncode == 0, done.stderr
    removed = done.stdout.splitlines()
    assert f"removed container scratchpack-{dead}-x" in removed
    assert f"removed image localhost/{trace_tag}" in removed
    assert any(line.startswith("removed image docker.io/scratchpack-verify/") for line in removed)


def _dead_owner() -> str:
    """An owner (``<pid namespace>-<pid>``) whose process has ended."""
    import os

    child = subprocess.Popen(["true"])
    child.wait()
    return f"{os.stat('/proc/self/ns/pid').st_ino}-{child.pid}"
