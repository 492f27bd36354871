"""``scratchpack debug --attach``: a sidecar next to a running shell-less container.

The target is a FROM-scratch image holding one static C program (no shell, no
tools) that writes ``/data/marker.txt`` and then waits in ``pause()``. Every test
checks, directly or through ``_no_sidecars``, that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from scratchpack.commands import debug as debug_command
from scratchpack.commands.debug import BUSYBOX_LABEL, TOOLS_IMAGE, run_attach
from scratchpack.engine.attach import TARGET_LABEL, AttachResult, host_access
from scratchpack.engine.client import Engine
from scratchpack.errors import EngineError, InputError
from scratchpack.plan.busybox import busybox_applets
from tests import cli
from tests.targets import TARGET_DOCKERFILE, scratch_image, static_program

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "scratchpack-attach-marker"
TARGET_SOURCE = r"""
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    mkdir("/data", 0755);
    FILE *f = fopen("/data/marker.txt", "w");
    if (f != NULL) {
        fputs("@MARKER@\n", f);
        fclose(f);
    }
    for (;;)
        pause();
}
""".replace("@MARKER@", MARKER)

# A child process that runs attach() and exits with the sidecar's status.
CHILD = (
    "import sys\n"
    "from scratchpack.commands.debug import run_attach\n"
    "from scratchpack.engine.client import Engine\n"
    "command = sys.argv[3:] or None\n"
    "interactive = {'tty': True, 'auto': None}[sys.argv[2]]\n"
    "r = run_attach(Engine.connect(), sys.argv[1], None, command, interactive)\n"
    "sys.stdout.write(r.output or '')\n"
    "sys.exit(r.exit_code)\n"
)


def attach(
    client: Any,
    container: str,
    image: str | None = None,
    command: list[str] | None = None,
    interactive: bool | None = None,
    **options: Any,
) -> AttachResult:
    return run_attach(Engine.from_client(client), container, image, command, interactive, **options)


def ensure_tools_image(client: Any, busybox: str) -> str:
    engine = Engine.from_client(client) if client is not None else None
    return debug_command.ensure_tools_image(engine, busybox)  # type: ignore[arg-type]


def _child_argv(target: str, mode: str, *command: str) -> list[str]:
    return [sys.executable, "-c", CHILD, target, mode, *command]


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def target_image(docker_client: docker.DockerClient, tmp_path_factory) -> Iterator[str]:
    """A FROM-scratch image whose only file is a static C program: no shell at all."""
    program = static_program(tmp_path_factory.mktemp("attach-target"), TARGET_SOURCE)
    tag = f"scratchpack-attach-target:{uuid.uuid4().hex[:12]}"
    image_id = None
    try:
        image_id = scratch_image(docker_client, tag, {"target": program}, TARGET_DOCKERFILE)
        yield tag
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image_id or tag, force=True)


@pytest.fixture(scope="module")
def start_target(
    docker_client: docker.DockerClient, target_image: str
) -> Iterator[Callable[..., Any]]:
    """Start a target container (no network); every one is removed at the end."""
    started: list[Any] = []

    def start(wait_for_marker: bool = True, **options: Any) -> Any:
        options.setdefault("network_mode", "none")
        container = docker_client.containers.create(
            target_image, name=f"scratchpack-attach-target-{uuid.uuid4().hex[:8]}", **options
        )
        started.append(container)
        container.start()
        deadline = time.monotonic() + 20
        while wait_for_marker and time.monotonic() < deadline:
            if any(c["Path"] == "/data/marker.txt" for c in container.diff() or []):
                break
            time.sleep(0.1)
        container.reload()
        assert container.status == "running", container.attrs["State"]
        return container

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture(scope="module")
def target(start_target: Callable[..., Any]) -> Any:
    """One running target, shared by the tests that only look at it."""
    return start_target()


def _sidecars(client: docker.DockerClient, target: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{TARGET_LABEL}={target.id}"})


def _no_sidecars(client: docker.DockerClient, target: Any) -> None:
    assert _sidecars(client, target) == []
    target.reload()
    assert target.status == "running"


# --------------------------------------------------------------------------- applets


def test_busybox_applets_match_busybox_list(static_busybox: Path) -> None:
    # Running busybox is fine here; the library itself only reads the file.
    listed = subprocess.run(
        [str(static_busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    applets = busybox_applets(static_busybox)
    assert applets == sorted(applets)
    assert set(applets) == set(listed)
    assert len(applets) == len(listed)
    assert {"sh", "ls", "ps", "cat"} <= set(applets)


def test_busybox_applets_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "not-busybox"
    other.write_bytes(b"\x7fELF" + b"\0" * 64 + b"ls\0ps\0")
    with pytest.raises(InputError, match="no busybox applet table"):
        busybox_applets(other)
    with pytest.raises(InputError, match="cannot read"):
        busybox_applets(tmp_path / "missing")


def test_tools_image_needs_a_static_busybox() -> None:
    # Checked before the engine is asked anything, so no client is needed.
    with pytest.raises(InputError, match="not a static ELF executable"):
        ensure_tools_image(None, "/bin/true")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tools image


@pytest.mark.engine
def test_tools_image_built_reused_and_refreshed(
    docker_client: docker.DockerClient, static_busybox: Path, target_image: str
) -> None:
    # Absent: built.
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(TOOLS_IMAGE)
    built = ensure_tools_image(docker_client, str(static_busybox))
    image = docker_client.images.get(TOOLS_IMAGE)
    assert image.id == built
    digest = hashlib.sha256(static_busybox.read_bytes()).hexdigest()
    assert image.labels[BUSYBOX_LABEL] == digest
    assert any(env.startswith("PATH=/busybox:") for env in image.attrs["Config"]["Env"])
    # Present and current: reused as is.
    assert ensure_tools_image(docker_client, str(static_busybox)) == built
    # Stale (the tag names an image without the label): rebuilt, and the image the
    # tag was taken from is left alone because another tag still names it.
    stale = docker_client.images.get(target_image)
    stale.tag(TOOLS_IMAGE)
    rebuilt = ensure_tools_image(docker_client, str(static_busybox))
    assert rebuilt != stale.id
    assert docker_client.images.get(TOOLS_IMAGE).id == rebuilt
    assert docker_client.images.get(TOOLS_IMAGE).labels[BUSYBOX_LABEL] == digest
    assert docker_client.images.get(target_image).id == stale.id


@pytest.mark.engine
def test_tools_image_refuses_a_busybox_of_another_architecture(
    docker_client: docker.DockerClient, static_busybox: Path, tmp_path: Path
) -> None:
    engine = docker_client.version()["Arch"]
    machine, foreign = (183, "arm64") if engine != "arm64" else (62, "amd64")  # e_machine
    patched = bytearray(static_busybox.read_bytes())
    patched[18:20] = machine.to_bytes(2, "little")
    (tmp_path / "busybox").write_bytes(bytes(patched))
    before = docker_client.images.list(name=TOOLS_IMAGE)
    with pytest.raises(InputError, match=f"is {foreign} but the engine runs {engine}"):
        ensure_tools_image(docker_client, str(tmp_path / "busybox"))
    assert docker_client.images.list(name=TOOLS_IMAGE) == before


@pytest.mark.engine
def test_tools_image_holds_busybox_and_its_links(docker_client, target) -> None:
    result = attach(docker_client, target.name, command=["ls", "-l", "/busybox"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    links = {parts[-3]: parts[-1] for parts in lines if parts[-2:-1] == ["->"]}
    files = {parts[-1] for parts in lines if parts[0].startswith("-")}
    assert files == {"busybox"}
    assert set(links) == set(busybox_applets("/bin/busybox")) - {"busybox"}
    assert set(links.values()) == {"busybox"}
    _no_sidecars(docker_client, target)


# --------------------------------------------------------------------------- attach


@pytest.mark.engine
def test_ps_lists_the_target_process(docker_client, target) -> None:
    result = attach(docker_client, target.name, command=["ps"])
    assert result.exit_code == 0, result.output
    first = [line.split() for line in result.output.splitlines() if line.split()[:1] == ["1"]]
    assert first, result.output
    assert first[0][-1] == "/target"
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_target_files_through_proc_1_root(docker_client, target) -> None:
    listed = attach(docker_client, target.id, command=["ls", "/proc/1/root/data"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["marker.txt"]
    shown = attach(docker_client, target.name, command=["cat", "/proc/1/root/data/marker.txt"])
    assert (shown.exit_code, shown.output) == (0, f"{MARKER}\n")
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_exit_status_and_combined_output(docker_client, target) -> None:
    result = attach(
        docker_client, target.name, command=["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]
    )
    assert result.exit_code == 7
    assert sorted(result.output.splitlines()) == ["to-err", "to-out"]
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_target_is_left_unchanged(docker_client, target) -> None:
    target.reload()
    before = target.attrs["State"], sorted(map(str, target.diff() or []))
    for command in (["ps"], ["touch", "/sidecar-only"], ["cat", "/proc/1/root/data/marker.txt"]):
        assert attach(docker_client, target.name, command=command).exit_code == 0
    target.reload()
    after = target.attrs["State"], sorted(map(str, target.diff() or []))
    assert after == before
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_namespaces_shared_with_the_target(docker_client, target, start_target) -> None:
    each = "echo $(readlink /proc/1/ns/$ns) $(readlink /proc/self/ns/$ns)"
    script = f"for ns in pid net ipc; do {each}; done"
    result = attach(docker_client, target.name, command=["sh", "-c", script])
    assert result.exit_code == 0, result.output
    pid, net, ipc = (line.split() for line in result.output.splitlines())
    assert pid[0] == pid[1]
    assert net[0] == net[1]
    # A private IPC namespace (the engine's default) cannot be joined: the sidecar
    # gets its own instead of failing.
    assert ipc[0] != ipc[1]

    shareable = start_target(ipc_mode="shareable")
    result = attach(docker_client, shareable.name, command=["sh", "-c", script])
    assert result.exit_code == 0, result.output
    assert all(a == b for a, b in (line.split() for line in result.output.splitlines()))
    _no_sidecars(docker_client, shareable)


@pytest.mark.engine
def test_target_of_another_user_is_readable(docker_client, start_target) -> None:
    # Without CAP_SYS_PTRACE in the sidecar this is "Permission denied".
    other = start_target(wait_for_marker=False, user="1000:1000")
    result = attach(docker_client, other.name, command=["ls", "/proc/1/root/"])
    assert result.exit_code == 0, result.output
    assert "target" in result.output.split()
    _no_sidecars(docker_client, other)


@pytest.mark.engine
def test_script_on_stdin_without_command(docker_client, target) -> None:
    script = "echo from-script\ncat /proc/1/root/data/marker.txt\nexit 5\n"
    child = subprocess.run(
        _child_argv(target.name, "auto"),
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    assert child.returncode == 5, child.stderr
    assert child.stdout == f"from-script\n{MARKER}\n"
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_sigterm_removes_the_sidecar(docker_client, target) -> None:
    child = subprocess.Popen(
        _child_argv(target.name, "auto", "sleep", "600"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(c.status == "running" for c in _sidecars(docker_client, target)):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the sidecar never started"
            time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    _no_sidecars(docker_client, target)


# --------------------------------------------------------------------------- interactive


class Terminal:
    """A child process on a pseudo-terminal, with a read loop that waits for text."""

    def __init__(self, argv: list[str], rows: int, columns: int) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its stdin, stdout and stderr are the terminal
            os.chdir(REPO_ROOT)
            os.execve(argv[0], argv, _child_env())
        self.resize(rows, columns)
        self.seen = b""

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until ``text`` appears after what earlier calls consumed; return it all."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {timeout} s; the terminal showed {self.seen!r}"
            if select.select([self.fd], [], [], min(left, 1.0))[0]:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                assert data, f"the terminal closed before {text!r}: {self.seen!r}"
                self.seen += data
        end = self.seen.index(wanted) + len(wanted)
        consumed, self.seen = self.seen[:end], self.seen[end:]
        return consumed.decode(errors="replace")

    def exit_status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            # Keep draining the terminal so the child never blocks on its output.
            if select.select([self.fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096)
        raise AssertionError(f"the child did not exit; the terminal showed {self.seen!r}")

    def close(self) -> None:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(argv: list[str], rows: int = 37, columns: int = 123) -> Terminal:
        opened.append(Terminal(argv, rows, columns))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


@pytest.mark.engine
def test_interactive_shell_through_a_terminal(docker_client, target, terminal) -> None:
    term = terminal(_child_argv(target.name, "tty"), rows=37, columns=123)
    term.expect("# ")  # busybox ash's prompt for root
    term.type("stty size\r")
    term.expect("37 123")  # the window size at the start
    term.expect("# ")
    term.resize(40, 100)  # SIGWINCH reaches the child, which resizes the sidecar's TTY
    for _ in range(20):  # the resize is asynchronous: ask until it shows
        term.type("stty size\r")
        if "40 100" in term.expect("# "):
            break
        time.sleep(0.25)
    else:
        pytest.fail("the new window size never reached the sidecar")
    term.type("cat /proc/1/root/data/marker.txt\r")
    term.expect(MARKER)
    term.type("echo hello-$((1+1)); exit 3\r")
    term.expect("hello-2")
    assert term.exit_status() == 3
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_detaching_ends_the_session(docker_client, target, terminal) -> None:
    term = terminal(_child_argv(target.name, "tty"))
    term.expect("# ")
    term.type("\x10\x11")  # ctrl-p ctrl-q: the engine's detach keys
    assert term.exit_status() == 128 + signal.SIGKILL  # the sidecar was killed
    _no_sidecars(docker_client, target)


# --------------------------------------------------------------------------- errors


@pytest.mark.engine
def test_unknown_container(docker_client) -> None:
    name = f"scratchpack-no-such-{uuid.uuid4().hex[:8]}"
    with pytest.raises(EngineError, match=f"^no container {name}$"):
        attach(docker_client, name, command=["ps"])


@pytest.mark.engine
def test_stopped_container(docker_client, start_target) -> None:
    stopped = start_target()
    stopped.kill()
    stopped.wait(timeout=60)
    with pytest.raises(
        EngineError,
        match=f"^container {stopped.name} is not running \\(status exited\\): "
        "a sidecar needs a running process$",
    ):
        attach(docker_client, stopped.name, command=["ps"])


@pytest.mark.engine
def test_missing_image_is_not_pulled(docker_client, target) -> None:
    image = f"scratchpack-no-such-image:{uuid.uuid4().hex[:8]}"
    with pytest.raises(EngineError, match=f"^no image {image} in the local engine; "):
        attach(docker_client, target.name, image=image, command=["ps"])
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_command_missing_from_the_image(docker_client, target) -> None:
    with pytest.raises(EngineError, match="has no 'no-such-tool' to run"):
        attach(docker_client, target.name, command=["no-such-tool"])
    _no_sidecars(docker_client, target)


def _foreign_archive(tag: str, architecture: str) -> bytes:
    """A one-layer docker-archive (``docker save`` format) claiming ``architecture``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    layer_bytes = layer.getvalue()
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
            },
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (
            ("layer/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


@pytest.mark.engine
def test_tools_image_of_another_architecture(docker_client, target) -> None:
    runs = docker_client.images.get(target.attrs["Image"]).attrs["Architecture"]
    foreign = "arm64" if runs != "arm64" else "amd64"
    tag = f"scratchpack-attach-foreign:{uuid.uuid4().hex[:8]}"
    docker_client.images.load(_foreign_archive(tag, foreign))
    try:
        assert docker_client.images.get(tag).attrs["Architecture"] == foreign
        with pytest.raises(
            EngineError, match=f"^the tools image is {foreign} but the container runs {runs}"
        ):
            attach(docker_client, target.name, image=tag, command=["ps"])
    finally:
        docker_client.images.remove(tag, force=True)
    _no_sidecars(docker_client, target)


# --------------------------------------------------------------------------- host access


@pytest.mark.engine
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"pid_mode": "host"}, "shares the host's pid namespace (--pid=host)"),
        ({"network_mode": "host"}, "shares the host's network namespace (--network=host)"),
        ({"ipc_mode": "host"}, "shares the host's IPC namespace (--ipc=host)"),
    ],
    ids=["pid", "network", "ipc"],
)
def test_a_target_with_host_access_is_refused(
    docker_client, start_target, tmp_path, options, words
) -> None:
    secret = tmp_path / "host-only"
    secret.write_text("a host file\n")
    secret.chmod(0o600)
    target = start_target(**options)
    with pytest.raises(InputError) as caught:
        attach(docker_client, target.name, command=["cat", f"/proc/{os.getpid()}/root{secret}"])
    text = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in text
    assert words in text and "--allow-host-access" in text, text
    _no_sidecars(docker_client, target)


class _Inspector:
    """The engine's answers about other containers, for ``host_access`` (no engine here)."""

    def __init__(self, containers: dict[str, dict[str, Any]]) -> None:
        self.api = self
        self.containers = containers

    def inspect_container(self, name: str) -> dict[str, Any]:
        if name not in self.containers:
            raise docker.errors.NotFound(name)
        return self.containers[name]


def test_a_privileged_target_or_one_joined_to_it_is_refused() -> None:
    # This engine cannot start privileged containers (its own capabilities are
    # bounded), so what the engine says about one is given here.
    privileged = {"HostConfig": {"Privileged": True, "PidMode": ""}}
    joined = {"HostConfig": {"PidMode": "container:p", "NetworkMode": "none"}}
    client = _Inspector({"p": privileged})
    assert "is privileged" in str(host_access(client, privileged))  # type: ignore[arg-type]
    assert "is privileged" in str(host_access(client, joined))  # type: ignore[arg-type]
    cycle = _Inspector({"a": {"HostConfig": {"IpcMode": "container:b"}},
                        "b": {"HostConfig": {"IpcMode": "container:a"}}})  # fmt: skip
    assert host_access(cycle, {"HostConfig": {"IpcMode": "container:a"}}) is None  # type: ignore[arg-type]
    plain = {"HostConfig": {"PidMode": "", "NetworkMode": "none", "IpcMode": "private"}}
    assert host_access(client, plain) is None  # type: ignore[arg-type]


def test_a_target_joined_to_a_container_that_is_gone_or_given_host_capabilities_is_refused() -> (
    None
):
    """A joined container that is gone leaves its namespaces with the target: they cannot be
    checked, so the attach is refused (fail closed); so is a target with SYS_ADMIN or ALL."""
    client = _Inspector({})
    gone = {"HostConfig": {"PidMode": "container:gone"}}
    assert "which is gone" in str(host_access(client, gone))  # type: ignore[arg-type]
    for caps in (["SYS_ADMIN"], ["CAP_SYS_MODULE"], ["all"]):
        target = {"HostConfig": {"CapAdd": caps}}
        assert "--cap-add" in str(host_access(client, target))  # type: ignore[arg-type]
    harmless = {"HostConfig": {"CapAdd": ["NET_ADMIN"]}}
    assert host_access(client, harmless) is None  # type: ignore[arg-type]


@pytest.mark.engine
def test_a_target_joined_to_a_host_pid_container_is_refused(docker_client, start_target) -> None:
    on_host = start_target(pid_mode="host")
    joined = start_target(wait_for_marker=False, pid_mode=f"container:{on_host.id}")
    with pytest.raises(InputError, match="shares the host's pid namespace"):
        attach(docker_client, joined.name, command=["true"])
    _no_sidecars(docker_client, joined)


@pytest.mark.engine
def test_host_access_when_asked_for(docker_client, start_target, tmp_path) -> None:
    """What the refusal protects: with --pid=host the sidecar reads a root-only host file."""
    secret = tmp_path / "host-only"
    secret.write_text("a host file\n")
    secret.chmod(0o600)
    target = start_target(pid_mode="host")
    result = attach(
        docker_client,
        target.name,
        command=["cat", f"/proc/{os.getpid()}/root{secret}"],
        allow_host_access=True,
    )
    assert (result.exit_code, result.output) == (0, "a host file\n")
    _no_sidecars(docker_client, target)


@pytest.mark.engine
def test_host_access_on_the_command_line(docker_client, start_target) -> None:
    target = start_target(pid_mode="host")
    command = ("debug", "--attach", target.name)
    pythonpath = {"PYTHONPATH": str(REPO_ROOT)}  # what _child_env adds
    refused = cli.scratchpack(*command, "--", "true", timeout=120, env=pythonpath, cwd=REPO_ROOT)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "--allow-host-access" in lines[0] and "Traceback" not in refused.stderr
    allowed = cli.scratchpack(
        *command, "--allow-host-access", "--", "true", timeout=120, env=pythonpath, cwd=REPO_ROOT
    )
    assert allowed.returncode == 0, allowed.stderr
    _no_sidecars(docker_client, target)
