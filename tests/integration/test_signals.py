"""Ctrl-C and SIGTERM at any moment: exit 130 (143), one line, nothing left behind.

Commands are interrupted at random moments — while Python is still starting,
while layers are written, while an image is loaded into the engine — and some
get a second signal 0.15 s after the first, while they clean up. Afterwards the
temporary directory the run used, the directory it wrote to and the engine hold
nothing of it: an output is there whole or not at all. The moments come from a
seeded generator, so a failure can be run again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import cli, ownership
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
SEED = int(os.environ.get("SCRATCHPACK_SIGNAL_SEED", "20261202"))


@pytest.fixture(scope="module")
def hello() -> Path:
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True)
    return HELLO


def interrupted(
    args: list[str], delay: float, signum: int, second: float | None, tmp: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    environment = {"TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    process = cli.start(*args, cwd=cwd, env=environment)
    time.sleep(delay)
    process.send_signal(signum)
    if second is not None:
        time.sleep(second)
        process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def assert_ended_cleanly(done: subprocess.CompletedProcess[str], signum: int) -> None:
    expected = {0, 130 if signum == signal.SIGINT else 128 + signum}
    assert done.returncode in expected, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr, done.stderr
    if done.returncode:
        assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr


def ours(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if "scratchpack" in name]


def _interpreter_start() -> float:
    """How long this machine's Python takes to reach the package's first line, now.

    A signal before that lands in the interpreter's own start-up (``Could not
    import runpy module``, exit 1) or in runpy importing the package, before its
    first statement catches SIGINT: no program can answer it there. On a loaded
    machine that window outgrew the fixed 30 ms this test began at, then the time
    to ``import runpy`` measured three times (CI, two workers: a traceback from
    runpy's import of the package). So the package's import is measured, five
    times, and the slowest taken with half as much again for the load of the moment.
    """
    times = []
    for _ in range(5):
        started = time.monotonic()
        subprocess.run(
            [cli.COMMAND[0], "-c", "import runpy, scratchpack"],
            check=True,
            cwd=REPO_ROOT,
            env=cli.child_env({"PYTHONPATH": str(REPO_ROOT)}),
        )
        times.append(time.monotonic() - started)
    return 1.5 * max(times)


def test_ctrl_c_while_python_starts_is_130_without_a_traceback(hello: Path, tmp_path: Path) -> None:
    moments = random.Random(SEED)
    start = _interpreter_start()
    for attempt in range(8):
        tmp = tmp_path / f"tmp{attempt}"
        tmp.mkdir()
        done = interrupted(
            ["build", str(hello), "-t", "hello:sig", "-o", "out.tar"],
            start + moments.uniform(0, 0.22), signal.SIGINT, None, tmp, tmp,
        )  # fmt: skip
        assert_ended_cleanly(done, signal.SIGINT)
        assert ours(tmp) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_a_signal_while_writing_leaves_the_output_whole_or_absent(
    hello: Path, tmp_path: Path, signum: int
) -> None:
    moments = random.Random(SEED + signum)
    start = _interpreter_start()  # a loaded machine (tests side by side) starts Python later
    finished = 0
    for attempt in range(10):
        tmp, out = tmp_path / f"tmp{attempt}", tmp_path / f"out{attempt}"
        tmp.mkdir()
        out.mkdir()
        second = 0.15 if attempt % 2 else None  # a second one while it cleans up
        done = interrupted(
            ["build", "/usr/bin/curl", "-t", "curl:sig", "-o", "curl.tar", "--ca-certs",
             "--sbom", "curl.spdx.json"],
            start + moments.uniform(0.15, 0.9), signum, second, tmp, out,
        )  # fmt: skip
        assert_ended_cleanly(done, signum)
        assert ours(tmp) == []
        left = sorted(os.listdir(out))
        if done.returncode == 0:
            finished += 1
            assert left == ["curl.spdx.json", "curl.tar"]
            with tarfile.open(out / "curl.tar") as archive:
                assert "index.json" in archive.getnames()
        else:
            assert left == [], left
    assert finished < 10  # the moments did reach into the work


@pytest.mark.engine
def test_a_signal_while_the_engine_loads_leaves_no_engine_object(
    hello: Path, tmp_path: Path, docker_client: Any
) -> None:
    archive = tmp_path / "hello.tar"
    cli.scratchpack("build", hello, "-t", "hello:src", "-o", archive, cwd=REPO_ROOT, check=True)
    moments = random.Random(SEED + 99)
    tag = f"scratchpack-test/signal:{uuid.uuid4().hex[:8]}"
    try:
        for attempt in range(8):
            tmp = tmp_path / f"tmp{attempt}"
            tmp.mkdir()
            done = interrupted(
                ["shrink", str(archive), "-t", tag, "--engine", "docker"],
                moments.uniform(0.2, 1.4), signal.SIGINT, 0.15 if attempt % 2 else None,
                tmp, tmp_path,
            )  # fmt: skip
            assert_ended_cleanly(done, signal.SIGINT)
            assert ours(tmp) == []
            throwaway = ownership.throwaway_tags(
                docker_client, ["scratchpack-staging", "scratchpack-verify"]
            )
            assert throwaway == [], throwaway
            containers = ownership.containers(docker_client, "org.scratchpack.owner")
            assert containers == []
            if done.returncode != 0:
                with pytest.raises(Exception):  # noqa: B017 - docker's NotFound
                    docker_client.images.get(tag)
            else:
                docker_client.images.remove(tag)
    finally:
        for image in docker_client.images.list(name=tag.split(":")[0]):
            docker_client.images.remove(image.id, force=True)
