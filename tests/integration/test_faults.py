"""An engine that dies or freezes under a command: exit 3, one line, and nothing lost.

Each test starts an engine of its own (tests/private_engine.py, in its own
network namespace), kills it (SIGKILL) or pauses it (SIGSTOP) in the middle of
a build, a ``--verify`` run or a trace, and checks what the user sees: exit
status 3, one line saying what was happening, no traceback. Then the engine is
brought back and ``scratchpack prune`` removes what the dead run left in it
(the throw-away tag, the verify container), and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.private_engine import PrivateEngine

pytestmark = pytest.mark.engine

BUSYBOX = Path("/bin/busybox")


@pytest.fixture
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateEngine]:
    private = PrivateEngine(Path(tmp_path_factory.mktemp("engine", numbered=True)))
    private.start()
    try:
        yield private
    finally:
        private.stop()


def start(engine: PrivateEngine, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {**engine.env, "SCRATCHPACK_ENGINE_TIMEOUT": "5", **env}
    return cli.start(*args, cwd=REPO_ROOT, env=environment)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    _out, err = process.communicate(timeout=timeout)
    return process.returncode, err


def one_engine_line(code: int, stderr: str, *words: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 3, stderr
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the moment to strike never came")


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose build takes seconds: room to kill the engine in the middle."""
    top = tmp_path_factory.mktemp("big")
    for number in range(6):
        subprocess.run(["fallocate", "-l", "100M", str(top / f"blob{number}")], check=True)
    return top


def staging(engine: PrivateEngine) -> list[str]:
    names = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    return [name for name in names if name.startswith("scratchpack-")]


def owned_containers(engine: PrivateEngine, running: bool = False) -> list[str]:
    status = ["--filter", "status=running"] if running else ["-a"]
    return engine.docker(
        "ps", *status, "--filter", "label=org.scratchpack.owner", "--format", "{{.Names}}"
    ).split()


def prune(engine: PrivateEngine) -> list[str]:
    done = cli.scratchpack("prune", cwd=REPO_ROOT, env=engine.env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_an_engine_killed_mid_build(engine: PrivateEngine, big_tree: Path) -> None:
    process = start(
        engine, "build", str(BUSYBOX), "-t", "app:1", "--engine", "docker",
        "--include", f"{big_tree}:/big",
    )  # fmt: skip
    wait_for(lambda: bool(engine.docker("ps", "-aq") or staging(engine)) or _busy(engine), 30)
    time.sleep(0.5)
    engine.kill()
    code, stderr = finish(process)
    one_engine_line(code, stderr, "lost the Docker engine", "app:1")
    engine.start()
    prune(engine)
    assert "app:1" not in engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert staging(engine) == [] and owned_containers(engine) == []


def _busy(engine: PrivateEngine) -> bool:
    """The engine has started reading a build context (its temporary directory exists)."""
    tmp = engine.data / "tmp"
    return tmp.is_dir() and any(tmp.iterdir())


def test_an_engine_killed_mid_verify_leaves_what_prune_removes(engine: PrivateEngine) -> None:
    process = start(
        engine, "build", str(BUSYBOX), "-t", "app:2", "--engine", "docker", "--verify", "sleep 60"
    )
    wait_for(lambda: bool(owned_containers(engine)), 60)
    time.sleep(1)
    engine.kill()
    code, stderr = finish(process)
    line = one_engine_line(code, stderr, "lost the Docker engine", "--verify of app:2")
    assert "left" in line  # the rollback could not reach the engine: it says what it left
    engine.start()
    assert staging(engine) and owned_containers(engine)  # what the dead run left
    removed = prune(engine)
    assert any(line.startswith("removed container ") for line in removed)
    assert any(line.startswith("removed image scratchpack-staging/") for line in removed)
    assert staging(engine) == [] and owned_containers(engine) == []
    assert "app:2" not in engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}")


def test_an_engine_paused_mid_verify_is_a_timeout_not_a_failed_image(
    engine: PrivateEngine,
) -> None:
    process = start(
        engine, "build", str(BUSYBOX), "-t", "app:3", "--engine", "docker", "--verify", "sleep 60"
    )
    wait_for(lambda: bool(owned_containers(engine, running=True)), 60)
    time.sleep(1)
    engine.pause()
    try:
        code, stderr = finish(process, timeout=180)
    finally:
        engine.resume()
    one_engine_line(code, stderr, "stopped answering", "--verify of app:3")


def test_an_engine_paused_mid_build_is_a_timeout(engine: PrivateEngine, big_tree: Path) -> None:
    process = start(
        engine, "build", str(BUSYBOX), "-t", "app:4", "--engine", "docker",
        "--include", f"{big_tree}:/big",
    )  # fmt: skip
    wait_for(lambda: _busy(engine), 30)
    engine.pause()
    try:
        code, stderr = finish(process, timeout=180)
    finally:
        engine.resume()
    one_engine_line(code, stderr, "did not answer", "app:4")


def test_an_engine_killed_mid_trace(engine: PrivateEngine, tmp_path: Path) -> None:
    built = cli.scratchpack(
        "build", str(BUSYBOX), "-t", "sleeper:1", "--engine", "docker", "--cmd", "sleep 60",
        cwd=REPO_ROOT, env=engine.env, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    process = start(
        engine, "shrink", "sleeper:1", "-t", "thin:1", "--trace", "--trace-timeout", "90"
    )
    wait_for(lambda: bool(owned_containers(engine)), 60)
    time.sleep(1)
    engine.kill()
    code, stderr = finish(process)
    one_engine_line(code, stderr, "lost the Docker engine", "traced sleeper:1")
    engine.start()
    prune(engine)
    assert owned_containers(engine) == [] and staging(engine) == []
    assert not [
        p
        for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir()
        if "scratchpack" in p.name and str(process.pid) in p.name
    ]
