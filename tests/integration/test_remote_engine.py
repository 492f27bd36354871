"""Every engine command over ``DOCKER_HOST=ssh://``: the local engine, reached through an sshd.

The sshd is the test's own (tests/sshd.py) on a free loopback port, with a key
made here; ``ssh`` runs ``docker system dial-stdio`` on the other side, as it
would on a remote machine. Since that machine is this one, a bind mount would
work by accident: what must not assume a shared file system (``--trace``'s
mounted tracer, its probes of 127.0.0.1) is checked to say so instead.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.conftest import unavailable
from tests.sshd import Sshd, free_port

HELLO = REPO_ROOT / "samples/hello-world/hello-world"
TIMEOUT = 120
TLS_HOST = "tcp://127.0.0.1:2376"


@pytest.fixture(scope="module")
def sshd(docker_client, tmp_path_factory) -> Iterator[Sshd]:  # type: ignore[no-untyped-def]
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()
        assert server.own_processes() == [], "the test's sshd is left running"


@pytest.fixture(scope="module")
def made(docker_client) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """Tags the tests make: removed at the end, whatever happened."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)


def remote(sshd: Sshd, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
    return cli.scratchpack(
        *args, cwd=REPO_ROOT, env={**sshd.env, **env}, unset=cli.LOADER_ENV, timeout=TIMEOUT
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def hello(sshd: Sshd, made: list[str], docker_client) -> str:  # type: ignore[no-untyped-def]
    """hello-world built through the engine over ssh, verified by a run there."""
    tag = f"scratchpack-test/remote-hello:{uuid.uuid4().hex[:8]}"
    made.append(tag)
    started = time.monotonic()
    proc = remote(sshd, "build", HELLO, "--engine", "docker", "-t", tag, "--verify", "")
    assert proc.returncode == 0, proc.stderr
    print(f"build --verify over ssh: {time.monotonic() - started:.1f} s")
    assert docker_client.images.get(tag).attrs["Config"]["Entrypoint"] == ["/app/hello-world"]
    return tag


@pytest.mark.engine
def test_build_through_the_engine_and_verify(hello: str, docker_client) -> None:  # type: ignore[no-untyped-def]
    output = docker_client.containers.run(hello, remove=True, network_mode="none")
    assert b"Hello from scratchpack!" in output


@pytest.mark.engine
def test_shrink_reads_the_image_over_the_connection(
    sshd: Sshd, hello: str, made: list[str], docker_client
) -> None:  # type: ignore[no-untyped-def]
    tag = f"{hello}-small"
    made.append(tag)
    proc = remote(sshd, "shrink", hello, "-t", tag)
    assert proc.returncode == 0, proc.stderr
    output = docker_client.containers.run(tag, remove=True, network_mode="none")
    assert b"Hello from scratchpack!" in output


@pytest.mark.engine
def test_trace_says_why_not(sshd: Sshd, hello: str, made: list[str]) -> None:
    tag = f"{hello}-traced"
    made.append(tag)
    for option in ("--trace", "--verify"):
        proc = remote(sshd, "shrink", hello, "-t", tag, option)
        assert proc.returncode == 3
        assert one_line(proc) == (
            "scratchpack: --trace and --verify mount this machine's strace into the traced "
            "container and probe its ports on this machine's 127.0.0.1, which the engine at "
            f"{sshd.host} (DOCKER_HOST) cannot reach from another machine: use an engine on "
            "this machine (unset DOCKER_HOST) or run scratchpack there"
        )


@pytest.mark.engine
def test_debug_variant(sshd: Sshd, hello: str, made: list[str], docker_client) -> None:  # type: ignore[no-untyped-def]
    tag = f"{hello}-debug"
    made.append(tag)
    proc = remote(sshd, "debug", hello, "--debug-shell", "busybox", "-t", tag)
    assert proc.returncode == 0, proc.stderr
    shell = docker_client.containers.run(
        tag, ["-c", "/app/hello-world"], entrypoint=["/busybox/sh"], remove=True
    )
    assert b"Hello from scratchpack!" in shell


@pytest.fixture
def sleeper(docker_client, static_busybox: Path, made: list[str]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A running FROM-scratch container (busybox sleep): the target of --attach."""
    tag = f"scratchpack-test/remote-sleeper:{uuid.uuid4().hex[:8]}"
    made.append(tag)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b'FROM scratch\nCOPY busybox /busybox\nCMD ["/busybox", "sleep", "300"]\n'
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(static_busybox, arcname="busybox")
    context.seek(0)
    for chunk in docker_client.api.build(
        fileobj=context, custom_context=True, tag=tag, pull=False, rm=True, decode=True
    ):
        assert "error" not in chunk, chunk
    container = docker_client.containers.create(tag, name=f"remote-sleeper-{uuid.uuid4().hex[:8]}")
    try:
        container.start()
        yield container.name
    finally:
        container.remove(force=True)


@pytest.mark.engine
def test_debug_attach_over_ssh(sshd: Sshd, sleeper: str) -> None:
    proc = remote(sshd, "debug", "--attach", sleeper, "--", "sh", "-c", "ps; exit 7")
    assert proc.returncode == 7, proc.stderr
    assert "/busybox sleep 300" in proc.stdout


@pytest.mark.engine
def test_unreachable_and_refusing_hosts_say_why(sshd: Sshd) -> None:
    closed = f"ssh://root@127.0.0.1:{free_port()}"
    proc = remote(sshd, "build", HELLO, "--engine", "docker", "-t", "x:1", DOCKER_HOST=closed)
    assert proc.returncode == 3
    assert one_line(proc).startswith(f"scratchpack: cannot reach a Docker engine at {closed} (")
    assert "Connection refused" in proc.stderr
    stranger = sshd.host.replace("root@", "nobody@")
    proc = remote(sshd, "debug", "--attach", "web", DOCKER_HOST=stranger)
    assert proc.returncode == 3
    assert one_line(proc) == (
        f"scratchpack: cannot reach a Docker engine at {stranger} "
        "(nobody@127.0.0.1: Permission denied (publickey))"
    )
    with_password = sshd.host.replace("root@", "root:s3cret@")
    proc = remote(sshd, "prune", DOCKER_HOST=with_password)
    assert proc.returncode == 2 and "s3cret" not in proc.stderr
    assert "holds a password" in one_line(proc)


# -- tcp:// with TLS: a second engine of the test's own ------------------------------------------
# In a network namespace of its own (unshare --net), so the system engine's bridge is never
# touched; its TLS listener is that namespace's 127.0.0.1:2376, and scratchpack runs there too
# (nsenter --net). It has no bridge and no images: FROM scratch builds and --verify (no network)
# need neither.


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _certificates(top: Path) -> tuple[Path, Path]:
    """A CA, the server's certificate (127.0.0.1) and the client's: (server dir, client dir)."""
    server, client = top / "server", top / "client"
    server.mkdir()
    client.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", top / "ca-key.pem", "-out", top / "ca.pem",
             "-days", "1", "-subj", "/CN=scratchpack test CA")  # fmt: skip
    for directory, usage, name in (
        (server, "serverAuth", "127.0.0.1"),
        (client, "clientAuth", "c"),
    ):
        extensions = directory / "ext.cnf"
        extensions.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        _openssl("req", *ec, "-keyout", directory / "key.pem", "-out", directory / "req.pem",
                 "-subj", f"/CN={name}")  # fmt: skip
        _openssl("x509", "-req", "-in", directory / "req.pem", "-CA", top / "ca.pem",
                 "-CAkey", top / "ca-key.pem", "-CAcreateserial", "-days", "1",
                 "-extfile", extensions, "-out", directory / "cert.pem")  # fmt: skip
        shutil.copy(top / "ca.pem", directory / "ca.pem")
    return server, client


@pytest.fixture(scope="module")
def tls_engine(docker_client, tmp_path_factory) -> Iterator[tuple[int, Path]]:  # type: ignore[no-untyped-def]
    """(the pid whose network namespace holds the engine, its clients' DOCKER_CERT_PATH)."""
    for tool in ("dockerd", "unshare", "nsenter", "openssl", "ip"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is missing")
    top = tmp_path_factory.mktemp("tls-engine")
    server, client = _certificates(top)
    log = open(top / "dockerd.log", "ab")  # noqa: SIM115 - closed below
    dockerd = (
        f"ip link set lo up && exec dockerd --data-root {top}/data --exec-root {top}/exec "
        f"--pidfile {top}/docker.pid -H unix://{top}/docker.sock -H tcp://127.0.0.1:2376 "
        f"--tlsverify --tlscacert {server}/ca.pem --tlscert {server}/cert.pem "
        f"--tlskey {server}/key.pem --bridge none --iptables=false --ip6tables=false"
    )
    process = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", dockerd],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (top / "docker.sock").exists() or not _answers(top / "docker.sock"):
            if process.poll() is not None or time.monotonic() > deadline:
                unavailable(f"the TLS engine did not start: {(top / 'dockerd.log').read_text()}")
            time.sleep(0.2)
        yield process.pid, client
    finally:
        _stop_engine(process, top)
        log.close()


def _answers(sock: Path) -> bool:
    done = subprocess.run(
        ["docker", "-H", f"unix://{sock}", "version"], capture_output=True, check=False, timeout=20
    )
    return done.returncode == 0


def _stop_engine(process: subprocess.Popen[bytes], top: Path) -> None:
    """SIGTERM the engine (it stops its own containerd), then unmount and remove what it left."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(top))
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    shutil.rmtree(top, ignore_errors=True)


def in_namespace(pid: int, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
    """scratchpack run in the TLS engine's network namespace, ``DOCKER_HOST`` its listener."""
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", *cli.COMMAND, *map(str, args)],
        cwd=REPO_ROOT, env=cli.child_env({"DOCKER_HOST": TLS_HOST, **env}, cli.LOADER_ENV),
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


@pytest.mark.engine
def test_tls_build_verify_and_a_wrong_ca(tls_engine: tuple[int, Path], tmp_path: Path) -> None:
    pid, certificates = tls_engine
    tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certificates)}
    proc = in_namespace(pid, "build", HELLO, "--engine", "docker", "-t", "hello:tls",
                        "--verify", "", **tls)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = in_namespace(pid, "prune", **tls)
    assert proc.returncode == 0, proc.stderr
    # A CA that did not sign the engine's certificate: refused, in one line.
    other = tmp_path / "other"
    other.mkdir()
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", other / "key.pem", "-out", other / "ca.pem", "-days", "1",
             "-subj", "/CN=another CA")  # fmt: skip
    shutil.copy(other / "ca.pem", other / "cert.pem")
    attach = ("debug", "--attach", "web")  # connects first (prune goes on without an engine)
    proc = in_namespace(pid, *attach, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(other))
    assert proc.returncode == 3
    assert one_line(proc).startswith(
        f"scratchpack: cannot reach a Docker engine at {TLS_HOST} (TLS: the engine's "
        "certificate did not verify ("
    )
    # Without TLS the engine's TLS listener answers nothing usable.
    proc = in_namespace(pid, *attach)
    assert proc.returncode == 3
    assert one_line(proc).startswith(f"scratchpack: cannot reach a Docker engine at {TLS_HOST} (")
