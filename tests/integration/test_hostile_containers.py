"""Containers that run someone else's program: confined, and their failures said in words.

Every container scratchpack starts to run an image's program (``shrink --trace``,
``--verify``, ``--fix`` through :func:`~scratchpack.trace.run.trace_image`,
``build --verify`` through :meth:`Engine.run`) gets ``no-new-privileges``, no
capability but the few a root server needs, and a pids and a memory limit. The
image here is a static busybox shell FROM scratch, with a setuid-root C program
that reports its effective uid; its scripts try what an attacker would and print
what the kernel says their container is allowed (``/proc/self/status``, the
cgroup files).

The first tests need no engine: a connection the engine drops is said in words,
never as the Python repr requests and urllib3 wrap it in.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions
import urllib3.exceptions

from scratchpack.engine.client import Container, Engine, _translated
from scratchpack.errors import EngineLost
from scratchpack.image.config import RuntimeConfig
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.trace.run import TraceNetwork, trace_image
from scratchpack.trace.tracer import TracerTree
from tests import cli
from tests.cfixtures import REPO_ROOT, compile_static
from tests.imagekit import busybox_entries, load_source

GIB = 1 << 30
# Capability numbers (linux/capability.h) of what a root program keeps.
ROOT_SET = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7,
            "NET_BIND_SERVICE": 10}  # fmt: skip
ROOT_MASK = sum(1 << bit for bit in ROOT_SET.values())
ESCALATE = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("euid=%d\n", (int)geteuid());
    return 0;
}
"""
# What the program reports of its own container.
REPORT = (
    "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; "
    "echo pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max); "
    "echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
    "|| cat /sys/fs/cgroup/memory.max)"
)
# Forks up to 1100 sleepers in a subshell, which dies at the first fork refused; the
# count comes back through a file read by a builtin (the limit leaves no fork for more).
FORKS = (
    "(for i in $(seq 1100); do sleep 30 & echo $i > /tmp/forked; done) 2>/dev/null; "
    "read n < /tmp/forked; echo forked=$n"
)


def status_of(output: str) -> dict[str, str]:
    """``Name: value`` and ``name=value`` lines of a report, as a dict."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"(\w+)(?::\s*|=)(\S*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


# --------------------------------------------------------------------------- words


def _remote_disconnected() -> requests.exceptions.ConnectionError:
    """What requests raises when the engine dies with a request on the wire."""
    cause = http.client.RemoteDisconnected("Remote end closed connection without response")
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", cause)
    )


class _DroppingModel:
    """A container model whose engine drops the connection at ``start``."""

    def start(self) -> None:
        raise _remote_disconnected()


def test_an_engine_lost_while_starting_a_container_is_said_in_words() -> None:
    assert "('Connection aborted.'" in str(_remote_disconnected())  # the repr to avoid
    container = Container(Engine(client=object()), "scratchpack-x-1234")
    container.model = _DroppingModel()
    with pytest.raises(EngineLost) as caught:
        container.start()
    text = str(caught.value)
    assert "while starting scratchpack-x-1234" in text
    assert "closed the connection" in text
    assert "RemoteDisconnected" not in text and "('" not in text and "\n" not in text


def test_an_sdk_error_around_a_lost_connection_is_said_in_words() -> None:
    with pytest.raises(EngineLost) as caught, _translated("while asking its version"):
        try:
            raise requests.exceptions.ConnectionError(
                urllib3.exceptions.ProtocolError(
                    "Connection aborted.", FileNotFoundError(2, "No such file or directory")
                )
            )
        except requests.exceptions.ConnectionError as err:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {err}"
            ) from None
    assert "socket is gone" in str(caught.value) and "('" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (requests.exceptions.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, "/x", "t")),
         "did not answer in time"),
        (requests.exceptions.ChunkedEncodingError(urllib3.exceptions.ProtocolError(
            "Connection broken: IncompleteRead(0 bytes read)", http.client.IncompleteRead(b""))),
         "ended in the middle"),
        (requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))),
         "reset the connection"),
        (http.client.IncompleteRead(b"abc", 10), "ended in the middle"),
    ],
)  # fmt: skip
def test_transport_failures_in_words(error: BaseException, words: str) -> None:
    from scratchpack.engine.direct import transport_words

    text = transport_words(error)
    assert words in text
    assert "(" not in text and "Error" not in text


# --------------------------------------------------------------------------- options


def scratchpack(*args: str) -> subprocess.CompletedProcess[str]:
    return cli.scratchpack(*args, cwd=REPO_ROOT, timeout=120)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--trace", "--run-memory", "1M"], "--run-memory 1M: at least 16M"),
        (["--trace", "--run-memory", "lots"], "--run-memory 'lots': expected a size"),
        (["--run-pids", "100"], "--run-pids only applies to traced runs"),
        (["--run-memory", "1G"], "--run-memory only applies to traced runs"),
    ],
)
def test_run_limits_are_checked_before_anything_runs(args: list[str], words: str) -> None:
    done = scratchpack("shrink", "no-such-image:1", "-t", "x:1", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr


# --------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def escalate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_static(tmp_path_factory.mktemp("escalate"), "escalate", source=ESCALATE)


def _load(docker_client: Any, tmp: Path, busybox: Path, escalate: Path, user: str) -> str:
    tag = f"scratchpack-test/hostile-containers:{uuid.uuid4().hex[:10]}"
    entries = [
        *busybox_entries(busybox),
        Entry("/bin/escalate", EntryKind.FILE, 0o4755, Reason.PROGRAM, source=str(escalate)),
    ]
    runtime = {"Entrypoint": ["/bin/busybox", "sh", "-c"], "Env": ["PATH=/bin"], "User": user}
    load_source(docker_client, tmp, tag, runtime, entries)
    return tag


@pytest.fixture(scope="module")
def images(
    docker_client: Any, static_busybox: Path, escalate: Path, tmp_path_factory: Any
) -> Iterator[dict[str, str]]:
    """busybox FROM scratch and /bin/escalate (setuid root, says its effective uid),
    configured to run as root and as user 1000."""
    made = {
        user or "root": _load(
            docker_client, tmp_path_factory.mktemp("image"), static_busybox, escalate, user
        )
        for user in ("", "1000")
    }
    yield made
    for tag in made.values():
        with contextlib.suppress(docker.errors.DockerException):
            docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def image(images: dict[str, str]) -> str:
    return images["root"]


def config(script: str, user: str | None = None) -> RuntimeConfig:
    document: dict[str, Any] = {"Entrypoint": ["/bin/busybox", "sh", "-c", script],
                                "Env": ["PATH=/bin"]}  # fmt: skip
    if user is not None:
        document["User"] = user
    return RuntimeConfig.from_json(document, "test")


def traced(docker_client: Any, image: str, tracer: TracerTree, script: str, **options: Any) -> str:
    """The output of ``script`` traced in ``image`` (no network: nothing to probe)."""
    engine = Engine.from_client(docker_client)
    runtime = config(script, options.pop("user", None))
    result = trace_image(
        engine, image, runtime, tracer, timeout=120, network=TraceNetwork.NONE, **options
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.engine
def test_a_traced_root_program_is_confined(
    docker_client: Any, image: str, tracer: TracerTree
) -> None:
    seen = status_of(traced(docker_client, image, tracer, REPORT))
    assert seen["NoNewPrivs"] == "1"
    assert int(seen["CapEff"], 16) == ROOT_MASK and int(seen["CapBnd"], 16) == ROOT_MASK
    assert seen["pids"] == "1024"
    assert int(seen["memory"]) == 2 * GIB


@pytest.mark.engine
def test_a_traced_program_of_another_user_gets_no_capability(
    docker_client: Any, image: str, tracer: TracerTree
) -> None:
    output = traced(docker_client, image, tracer, f"{REPORT}; /bin/escalate", user="1000")
    seen = status_of(output)
    assert seen["NoNewPrivs"] == "1"
    assert int(seen["CapEff"], 16) == 0 and int(seen["CapBnd"], 16) == 0
    assert seen["euid"] == "1000"


@pytest.mark.engine
def test_a_traced_program_cannot_make_device_nodes(
    docker_client: Any, image: str, tracer: TracerTree
) -> None:
    script = "mknod /tmp/mem c 1 1 && echo made-a-device; echo done"
    assert "made-a-device" not in traced(docker_client, image, tracer, script)


@pytest.mark.engine
def test_a_traced_fork_bomb_stops_at_the_pids_limit(
    docker_client: Any, image: str, tracer: TracerTree
) -> None:
    from scratchpack.engine.client import Confinement

    output = traced(docker_client, image, tracer, FORKS, confinement=Confinement(pids=64))
    assert int(status_of(output)["forked"]) < 64


@pytest.mark.engine
def test_a_traced_memory_hog_is_killed_in_its_container(
    docker_client: Any, image: str, tracer: TracerTree
) -> None:
    from scratchpack.engine.client import Confinement

    hog = "head -c 200000000 /dev/zero | sort >/dev/null; echo sort=$?"
    output = traced(docker_client, image, tracer, hog, confinement=Confinement(memory=32 << 20))
    assert status_of(output)["sort"] == "137"  # SIGKILL by the container's OOM killer


@pytest.mark.engine
def test_a_verify_run_is_confined(docker_client: Any, image: str) -> None:
    """``build --verify``'s run (Engine.run): no capability, no setuid, bounded forks."""
    engine = Engine.from_client(docker_client)
    run = engine.run(image, [f"{REPORT}; mknod /tmp/mem c 1 1 && echo made-a-device"])
    seen = status_of(run.output)
    assert run.exit_code is not None, run.output
    assert seen["NoNewPrivs"] == "1" and int(seen["CapEff"], 16) == ROOT_MASK
    assert seen["pids"] == "1024" and int(seen["memory"]) == 2 * GIB
    assert "made-a-device" not in run.output
    forks = engine.run(image, [FORKS])
    assert int(status_of(forks.output)["forked"]) < 1024, forks.output


@pytest.mark.engine
def test_a_setuid_file_gives_a_verify_run_nothing(
    docker_client: Any, images: dict[str, str]
) -> None:
    engine = Engine.from_client(docker_client)
    run = engine.run(images["1000"], [f"{REPORT}; /bin/escalate"])
    seen = status_of(run.output)
    assert seen["NoNewPrivs"] == "1" and int(seen["CapBnd"], 16) == 0, run.output
    assert seen["euid"] == "1000", run.output


@pytest.mark.engine
def test_shrink_passes_its_run_limits_to_the_traced_runs(
    docker_client: Any, image: str, tmp_path: Path
) -> None:
    from scratchpack.commands.shrink import ShrinkRequest, run_shrink
    from scratchpack.engine.client import Confinement

    request = ShrinkRequest(
        image=image,
        tag="scratchpack-test/limited:1",
        trace=True,
        trace_args=(REPORT,),
        trace_network=TraceNetwork.NONE,
        output=tmp_path / "limited.tar",
        confinement=Confinement(memory=96 << 20, pids=100),
    )
    result = run_shrink(request)
    assert result.trace is not None
    seen = status_of(result.trace.output)
    assert seen["pids"] == "100" and int(seen["memory"]) == 96 << 20


@pytest.mark.engine
def test_an_engine_killed_as_the_trace_starts_is_said_in_words(
    tmp_path_factory: pytest.TempPathFactory, static_busybox: Path
) -> None:
    """A dockerd of the test's own is killed the moment the traced container exists."""
    import os
    import time

    from tests.private_engine import PrivateEngine

    engine = PrivateEngine(Path(tmp_path_factory.mktemp("engine", numbered=True))).start()
    try:
        env = {**engine.env, "SCRATCHPACK_ENGINE_TIMEOUT": "5"}
        built = cli.scratchpack(
            "build", str(static_busybox), "-t", "sleeper:1", "--engine", "docker",
            "--cmd", "sleep 60", cwd=REPO_ROOT, env=engine.env, timeout=300,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        process = cli.start(
            "shrink", "sleeper:1", "-t", "thin:1", "--trace", cwd=REPO_ROOT, env=env
        )
        deadline = time.monotonic() + 60
        while not engine.docker("ps", "-aq", "--filter", "label=scratchpack.trace").strip():
            assert time.monotonic() < deadline, "no traced container came"
            time.sleep(0.02)
        os.kill(engine.pid(), 9)
        _out, stderr = process.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert process.returncode == 3 and len(lines) == 1, stderr
        assert "lost the Docker engine" in lines[0] or "did not answer" in lines[0], lines[0]
        assert not re.search(r"\(\'|Error\(|\w+\(\d", lines[0]), lines[0]  # no Python repr
    finally:
        engine.stop()


def test_build_run_limits_need_verify() -> None:
    done = scratchpack("build", "/bin/true", "-t", "x:1", "-o", "x.tar", "--run-pids", "64")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--run-pids bound the run of --verify" in lines[0]


@pytest.mark.engine
def test_build_passes_its_run_limits_to_the_verify_run(
    docker_client: Any, static_busybox: Path, tmp_path: Path
) -> None:
    """``build --verify --run-pids 64 --run-memory 64M``: the check runs within those bounds."""
    check = (
        "p=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max); "
        "m=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
        "|| cat /sys/fs/cgroup/memory.max); "
        'echo "pids=$p memory=$m"; test "$p" = 64 && test "$m" = 67108864'
    )
    tag = "scratchpack-test/verify-limits:1"
    done = scratchpack(
        "build", str(static_busybox), "-t", tag, "--json", "--run-pids", "64",
        "--run-memory", "64M", "--verify", shlex.join(["sh", "-c", check]),
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)
