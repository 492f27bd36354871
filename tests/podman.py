"""A rootful Podman service for the tests marked ``podman``: found, or started for the session.

scratchpack speaks to Podman through its Docker-compatible API, at the socket
``podman system service`` opens (:data:`SOCKET`). A service already answering there
(one the machine runs) is used as it is; otherwise one is started, shared by the suite's
workers, and stopped when the last of them is done (only the process started here).

Root cannot raise resource limits on these machines, and Podman gives every container
``nofile`` and ``nproc`` limits above them unless told otherwise: each container then
fails with "error setting rlimit type 7". So Podman gets a ``containers.conf``
(``CONTAINERS_CONF``) whose ``default_ulimits`` stay within the hard limits
(:func:`containers_conf`); the ``podman`` commands the tests run get it too.

Without podman the tests are skipped, or fail with ``SCRATCHPACK_REQUIRE_ENGINE=1``
(tests/conftest.py). Nothing ever pulls: images are made by the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import unavailable

SOCKET = Path("/run/podman/podman.sock")
HOST = f"unix://{SOCKET}"
_START_WITHIN = 20.0  # seconds a new service has to answer
# Podman sets its own nproc limit to this at start: a container may not ask for more.
_PODMAN_NPROC = 32768
_PODMAN_NOFILE = 1048576


@dataclass(frozen=True)
class Podman:
    """A Podman service the tests can use: its address, its containers.conf, a client."""

    host: str  # DOCKER_HOST for scratchpack
    configs: tuple[tuple[str, str], ...]  # CONTAINERS_CONF (and CONTAINERS_STORAGE_CONF)
    client: Any  # a docker.DockerClient connected to it

    @property
    def env(self) -> dict[str, str]:
        """The environment of a command that must use Podman as its engine."""
        return {"DOCKER_HOST": self.host, **dict(self.configs)}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` with the tests' configuration; never a pull (``--pull never``)."""
        env = {**os.environ, **dict(self.configs)}
        return subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout
        )


def _configs(work: Path) -> dict[str, str]:
    """Podman's configuration for the tests: the ulimits below (``CONTAINERS_CONF``), and
    where the machine's own disk is overlayfs (a container, as a fresh test machine is),
    the vfs storage driver in a store of its own (``CONTAINERS_STORAGE_CONF``): overlay
    is not supported over overlayfs without fuse-overlayfs."""
    conf = work / "containers.conf"
    conf.write_text(containers_conf())
    configs = {"CONTAINERS_CONF": str(conf)}
    if _backing_filesystem(Path("/var/lib/containers")) == "overlayfs":
        storage = work / "storage.conf"
        storage.write_text(
            '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/scratchpack-tests-vfs"\n'
            'graphroot = "/var/lib/containers/scratchpack-tests-vfs"\n'
        )
        configs["CONTAINERS_STORAGE_CONF"] = str(storage)
    return configs


def _backing_filesystem(path: Path) -> str:
    """``stat -f`` of ``path``, or of its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    done = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def containers_conf() -> str:
    """A containers.conf whose default ulimits are within what root may set here."""
    nofile = _within(resource.RLIMIT_NOFILE, _PODMAN_NOFILE)
    nproc = _within(resource.RLIMIT_NPROC, _PODMAN_NPROC)
    return (
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
    )


def _within(limit: int, ceiling: int) -> int:
    hard = resource.getrlimit(limit)[1]
    return ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)


def version(path: Path = SOCKET, within: float = 2.0) -> dict[str, Any] | None:
    """The ``/version`` answer of the engine at ``path``, or None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(within)
            sock.connect(str(path))
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    _head, _, body = data.partition(b"\r\n\r\n")
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def is_podman(document: dict[str, Any] | None) -> bool:
    components = (document or {}).get("Components") or []
    return any(isinstance(c, dict) and c.get("Name") == "Podman Engine" for c in components)


@contextlib.contextmanager
def podman_service(work: Path) -> Iterator[Podman]:
    """The Podman service at :data:`SOCKET`: the one running, or one started until the last
    user of it, in any process, is done (the suite's workers share it: :func:`_users`)."""
    import docker

    if shutil.which("podman") is None:
        unavailable("podman is missing: apt-get install podman")
    configs = _configs(work)
    with _users(configs, work / "service.log"):
        client = docker.DockerClient(base_url=HOST, timeout=120)
        try:
            yield Podman(HOST, tuple(configs.items()), client)
        finally:
            client.close()


_LOCKS = SOCKET.parent / "scratchpack-tests"  # beside the socket: one per machine


@contextlib.contextmanager
def _users(configs: dict[str, str], log: Path) -> Iterator[None]:
    """Use the service, starting it if none answers; the last user stops what was started.

    Every user holds a shared lock on ``users.lock``; starting and leaving happen under
    ``start.lock``, so a worker never starts a second service or stops one another
    worker still uses. The started service's PID is kept in ``started.pid``.
    """
    _LOCKS.mkdir(parents=True, exist_ok=True)
    with (_LOCKS / "users.lock").open("a") as users:
        with _held(_LOCKS / "start.lock"):
            fcntl.flock(users, fcntl.LOCK_SH)
            found = version()
            if found is not None and not is_podman(found):
                unavailable(f"{SOCKET} answers, but not as Podman")
            if found is None:
                (_LOCKS / "started.pid").write_text(str(_start(configs, log).pid))
        try:
            yield
        finally:
            with _held(_LOCKS / "start.lock"):
                fcntl.flock(users, fcntl.LOCK_UN)
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another process still uses it
                _stop_started()


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stop_started() -> None:
    """Stop the service the tests started (none: a service of the machine's, left alone)."""
    pid_file = _LOCKS / "started.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    pid_file.unlink()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while version() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if version() is not None:  # still answering after 15 s
            os.kill(pid, signal.SIGKILL)


def _start(configs: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``podman system service`` at :data:`SOCKET`, answering; a clear skip if it will not."""
    SOCKET.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        SOCKET.unlink()  # a stale socket of a service that died
    command: Sequence[str] = ("podman", "system", "service", "--time=0", HOST)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **configs},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + _START_WITHIN
    while time.monotonic() < deadline:
        if is_podman(version()):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait()
    unavailable(f"podman system service did not answer at {SOCKET}: {log.read_text()[-300:]}")
