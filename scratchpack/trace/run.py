"""Run an image with its program under the packaged tracer, and collect what it touched.

The original image runs with its own configuration (entrypoint, command,
environment, working directory, user); strace is started through its own
loader from a read-only mount::

    /.scratchpack-tracer/<libdir>/ld-linux-x86-64.so.2 \\
        --library-path /.scratchpack-tracer/<libdir> /.scratchpack-tracer/usr/bin/strace \\
        -D -f -qq -y -s 4096 -e trace=%file,%process,fchdir,bind,rt_sigaction,... \\
        -e signal=none -e status=successful --seccomp-bpf \\
        -o /.scratchpack-trace-out/trace.log -- ARGV...

``--library-path`` is an option of ``ld.so``, not ``LD_LIBRARY_PATH``: the
traced program inherits none of it. ``-D`` keeps the program itself as the
container's PID 1 (strace runs as a detached grandchild), so ``docker stop``
delivers the image's StopSignal to the program exactly as without tracing,
its shutdown is traced too, and the container's exit status is the program's.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from scratchpack.engine.client import Confinement
from scratchpack.engine.remote import remote_refusal
from scratchpack.errors import (
    OUTPUT_TAIL_LINES,
    ContainerTimeout,
    EngineError,
    EngineLost,
    EngineTimeout,
    output_tail,
)
from scratchpack.image.config import RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.trace.parse import (
    ParsedLog,
    bind_of,
    clean_path,
    excluded,
    lines_of,
    loopback_only,
    parse_log,
)
from scratchpack.trace.tracer import LOG_DIR, LOG_NAME, TraceError, TracerTree, TraceTimeout

if TYPE_CHECKING:
    from scratchpack.engine.client import RunningContainer, TracingEngine

PROBE_HOST = "127.0.0.1"
MAX_LOG = 2 << 30  # a trace log this long is not a run anyone can keep files for
STOP_GRACE = 10  # seconds docker waits after the StopSignal before SIGKILL
# Variables that would change how the tracer's own loader starts strace; the
# traced program still gets them (strace -E puts them back).
_TRACER_UNSAFE_ENV = ("LD_PRELOAD", "LD_AUDIT")


PROBE_OUTPUT_LINES = 20  # of a probe command's output, kept for the report
_BIND_POLL = 2.0  # seconds between looks at the log for binds while waiting for ports
_BIND_SCAN_LIMIT = 64 << 20  # a log longer than this is not scanned while running (binds, handlers)


class TraceNetwork(str, Enum):
    """``--trace-network``: where the traced container is attached.

    On ``bridge`` the program reaches what any container on the default bridge
    reaches: other networks, and the host's services listening on its bridge
    address (172.17.0.1) or on any other host address; not the host's 127.0.0.1.
    Docker 20.10 offers nothing narrower that the probes can still reach
    (measured): an ``internal`` network ignores published ports and filters only
    forwarded traffic, so the host's services stay reachable at its gateway
    address, which is the host's own; with ``inhibit_ipv4`` the host has no
    route to the container at all. Only a host firewall rule could let the host
    in and keep the program out, and scratchpack does not touch the firewall.
    """

    BRIDGE = "bridge"  # the default bridge, exposed ports published on 127.0.0.1
    HOST = "host"  # the host's network: ports probed on 127.0.0.1 as they are
    NONE = "none"  # no network: nothing probed, the program must end by itself


class Ending(str, Enum):
    """How the traced program's run ended."""

    EXITED = "exited"  # by itself
    STOPPED = "stopped"  # after its probes, by its StopSignal (SIGKILL after the grace)
    # After its probes, at once by SIGKILL: as its container's PID 1 it has no handler
    # for its StopSignal, which the kernel then drops; docker stop would only wait
    # out the grace before the same SIGKILL.
    KILLED = "killed"


class ProbeKind(str, Enum):
    TCP = "tcp"  # a connection (the port speaks first, or not HTTP)
    HTTP = "http"  # GET / answered with an HTTP status line
    COMMAND = "command"  # --probe-cmd
    ABSENT = "absent"  # an exposed port nothing listened on: not a probe, reported


@dataclass(frozen=True)
class Probe:
    """One probe of the traced program and what came of it."""

    target: str  # "8080/tcp", or the probe command as run
    kind: ProbeKind
    passed: bool
    summary: str  # "GET / -> HTTP/1.0 200 OK", "exit 2"
    output: str = ""  # the probe command's output (its last lines)

    @property
    def line(self) -> str:
        return f"{self.target} {self.summary}"

    @property
    def target_key(self) -> str:
        """The same for the same probe in every run (a command's ports differ)."""
        return "probe command" if self.kind is ProbeKind.COMMAND else self.target

    @property
    def outcome(self) -> tuple[object, ...]:
        return (self.kind, self.passed, self.summary, self.output)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind.value,
            "passed": self.passed,
            "summary": self.summary,
            "output": self.output,
        }


@dataclass(frozen=True)
class TraceResult:
    """What a trace saw.

    ``paths`` are absolute in-container paths as the programs named them
    (symlinks not resolved, ``..`` kept). They can include files the programs
    created at run time and files the engine provides (``/etc/hosts``,
    ``/etc/resolv.conf``, ``/etc/hostname``): keep those the image holds.
    """

    paths: frozenset[str]  # absolute in-image paths used successfully
    exit_code: int | None  # the program's status; None when the trace stopped it after probing
    probes: tuple[Probe, ...]
    log_lines: int  # lines strace wrote
    network: TraceNetwork = TraceNetwork.BRIDGE
    output: str = ""  # the program's standard output
    ending: Ending = Ending.EXITED
    stop_signal: str = "SIGTERM"  # the image's StopSignal, as sent or as it would be
    # The last lines it wrote, standard error among them, fit for a terminal: what a
    # failed --verify shows (memcached's "can't find the user" is on stderr).
    output_tail: tuple[str, ...] = ()

    @property
    def failed_probes(self) -> list[Probe]:
        return [probe for probe in self.probes if not probe.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "ended": self.ending.value,
            "stop_signal": self.stop_signal,
            "network": self.network.value,
            "probes": [probe.to_json() for probe in self.probes],
        }


def trace_image(
    engine: TracingEngine,
    image: str,
    config: RuntimeConfig,
    tracer: TracerTree,
    probe_cmd: list[str] | None = None,
    trace_args: list[str] | None = None,
    timeout: float = 60,
    progress: Callable[[str], None] | None = None,
    network: TraceNetwork = TraceNetwork.BRIDGE,
    confinement: Confinement | None = None,
) -> TraceResult:
    """Run ``image`` as configured, under strace, and return the paths its programs used.

    ``config`` is the image's configuration (Entrypoint, Cmd, Env, WorkingDir,
    User, ExposedPorts, StopSignal); ``trace_args`` replaces Cmd. A program that
    exposes no TCP port runs to completion. Otherwise every exposed TCP port is
    published on 127.0.0.1 (a free port the engine picks; with ``network`` host
    the port itself) and, once the program accepts connections on it, is probed:
    a connection, and ``GET / HTTP/1.0`` unless the port speaks first; the probe
    is HTTP only where the answer is. A program that binds an exposed port to
    127.0.0.1 inside its own network is reported at once (:class:`TraceError`),
    since no probe can reach it there. ``probe_cmd`` runs
    instead (on the host, once, after the ports are ready): ``{host}`` in its
    arguments becomes ``127.0.0.1``, ``{port}`` the host port of the lowest
    exposed port and ``{port:N}`` the one of container port N (also in
    ``$SCRATCHPACK_PROBE_HOST`` and ``$SCRATCHPACK_PROBE_PORT``). Then the
    container is stopped as ``docker stop`` would (its StopSignal, SIGKILL
    after 10 s).

    The container is confined (``confinement``, by default
    :class:`~scratchpack.engine.client.Confinement`'s limits): no new privileges,
    only the capabilities a root program needs, bounded processes and memory.
    strace needs nothing more: it traces its own children, which the engine's
    seccomp profile allows without ``CAP_SYS_PTRACE``.

    ``timeout`` bounds the run until the program exits or its probes are done:
    past it the container is removed and :class:`TraceTimeout` raised. The
    container and the log directory are removed in every case, Ctrl-C included.
    """
    refusal = remote_refusal(
        "--trace and --verify mount this machine's strace into the traced container and probe "
        "its ports on this machine's 127.0.0.1"
    )
    if refusal is not None:  # the mount would name the engine host's files, or none
        raise EngineError(refusal)
    say = progress or (lambda _message: None)
    info = engine.image(image)  # never a pull: a clear error for a missing image
    _check_architecture(image, info.architecture)
    argv = config.argv(trace_args)
    if not argv:
        raise TraceError(f"{image} has no Entrypoint or Cmd: nothing to trace (give the command)")
    ports = _tcp_ports(config)
    if probe_cmd is not None and not probe_cmd:
        raise TraceError("the probe command is empty")
    if network is TraceNetwork.NONE:
        if probe_cmd is not None:
            raise TraceError("--probe-cmd needs a network to reach the program: not with none")
        ports = []  # nothing can reach them: the program must end by itself
    if probe_cmd is not None and not ports and any("{port" in arg for arg in probe_cmd):
        raise TraceError(f"the probe command uses {{port}} but {image} exposes no TCP port")
    workdir = config.working_dir or "/"
    log = f"{LOG_DIR}/{LOG_NAME}"
    create = _create_options(image, config, tracer, argv, ports, log, network, confinement)
    say(f"tracing {image}: {shlex.join(argv)}")
    try:
        return _run_traced(engine, image, info.id, create, config, tracer, argv, ports,
                           probe_cmd, timeout, workdir, log, say, network)  # fmt: skip
    except (EngineLost, EngineTimeout) as err:
        raise type(err)(f"{err}, which traced {image}") from err


def _create_options(
    image: str,
    config: RuntimeConfig,
    tracer: TracerTree,
    argv: list[str],
    ports: list[int],
    log: str,
    network: TraceNetwork,
    confinement: Confinement | None,
) -> dict[str, Any]:
    """The traced container: the image's own settings, strace in front, confined."""
    environment, restore = _environment(config.env)
    create: dict[str, Any] = {
        "entrypoint": [*tracer.command, *tracer.options(log, restore), "--", *argv],
        "environment": environment,
        # The tracer comes in read-only; nothing of the host is writable in there.
        "volumes": {str(tracer.root): {"bind": tracer.mount, "mode": "ro"}},
        "detach": True,
        "labels": {"scratchpack.trace": image},
        **(confinement or Confinement()).options(config.user),
    }
    if config.working_dir:
        create["working_dir"] = config.working_dir
    if config.user:
        create["user"] = config.user
    if config.stop_signal:
        create["stop_signal"] = config.stop_signal
    if network is not TraceNetwork.BRIDGE:
        create["network_mode"] = network.value
    elif ports:
        create["ports"] = {f"{port}/tcp": (PROBE_HOST, None) for port in ports}
    return create


def _run_traced(
    engine: TracingEngine,
    image: str,
    image_id: str,
    create: dict[str, Any],
    config: RuntimeConfig,
    tracer: TracerTree,
    argv: list[str],
    ports: list[int],
    probe_cmd: list[str] | None,
    timeout: float,
    workdir: str,
    log: str,
    say: Callable[[str], None],
    network: TraceNetwork,
) -> TraceResult:
    stop_signal = signal_name(config.stop_signal) or config.stop_signal or "SIGTERM"
    with engine.container(image_id, **create) as container:
        # The log's directory lives in the container's own layer, writable by any
        # user of the image; the log leaves it through the engine's archive API.
        container.put_directory(LOG_DIR, 0o1777)
        container.start()
        deadline = time.monotonic() + timeout
        probes: list[Probe] = []
        ending = Ending.EXITED
        if ports or probe_cmd is not None:
            if network is TraceNetwork.HOST:
                published = {port: port for port in ports}
            else:
                published = _published(container, ports)
            waiting = _timeout_message(image, timeout, ports)
            # On the host's network a loopback bind is reachable: nothing to watch.
            watch = (
                _LoopbackWatch(container, log, image, published)
                if network is TraceNetwork.BRIDGE
                else None
            )
            ready = _wait_ready(container, published, deadline, waiting, say, watch)
            if ready is not None:  # None: the program exited before it was ready
                probes = _probes(probe_cmd, published, ready, deadline, image, timeout)
                for probe in probes:
                    say(f"probe {probe.line}")
                if container.status() == "running":
                    ending = _stop(container, log, workdir, stop_signal, image, say)
            deadline = max(deadline, time.monotonic() + STOP_GRACE + 20)
        try:
            status = container.wait(
                max(1.0, deadline - time.monotonic()), _timeout_message(image, timeout, ports)
            )
        except ContainerTimeout as err:
            raise TraceTimeout(str(err)) from err
        exit_code = status if ending is Ending.EXITED else None
        parsed = _read_log(container, log, workdir, image)
        if not parsed.started:
            raise TraceError(
                f"the tracer could not start {argv[0]} in {image}: {_tracer_message(container)}"
            )
        paths = set(parsed.paths)
        paths.update(_interpreters(container, parsed.executed))
        output = container.logs(stderr=False)
        tail = output_tail(container.logs(tail=OUTPUT_TAIL_LINES))
    result = TraceResult(
        paths=frozenset(paths),
        exit_code=exit_code,
        probes=tuple(probes),
        log_lines=parsed.lines,
        network=network,
        output=output,
        ending=ending,
        stop_signal=stop_signal,
        output_tail=tail,
    )
    say(f"traced {len(result.paths)} paths ({result.log_lines} log lines)")
    return result


def _probes(
    probe_cmd: list[str] | None,
    published: dict[int, int],
    ready: set[int],
    deadline: float,
    image: str,
    timeout: float,
) -> list[Probe]:
    """The user's probe command once, or each published port probed (absent if not ready)."""
    if probe_cmd is not None:
        return [_run_probe_cmd(probe_cmd, published, deadline, image, timeout)]
    return [
        _port_probe(port, host_port)
        if port in ready
        else Probe(f"{port}/tcp", ProbeKind.ABSENT, True, "not listening")
        for port, host_port in published.items()
    ]


def _stop(
    container: RunningContainer,
    log: str,
    workdir: str,
    stop_signal: str,
    image: str,
    say: Callable[[str], None],
) -> Ending:
    """Stop the program as ``docker stop`` would, or kill it when the signal cannot reach it.

    A container's PID 1 gets only the signals it has a handler for, blocks
    (kept pending) or reads with signalfd or sigwait: any other is dropped by
    the kernel, so ``docker stop`` would wait out the whole grace for nothing
    and then kill.
    The log so far says which is the case; a signal whose name strace writes
    differently (real-time ones) always gets the grace.
    """
    known = stop_signal in signal.Signals.__members__ and not stop_signal.startswith("SIGRT")
    if (
        known
        and stop_signal != "SIGKILL"
        and not _init_receives(container, log, workdir, stop_signal)
    ):
        say(f"killing {image}: as its container's PID 1 it has no handler for {stop_signal}")
        container.stop(0)
        return Ending.KILLED
    say(f"stopping {image} ({stop_signal})")
    container.stop(STOP_GRACE)
    return Ending.STOPPED


def _init_receives(container: RunningContainer, log: str, workdir: str, name: str) -> bool:
    """Whether the running program's PID 1 can receive signal ``name``; True when unsure."""
    try:
        with container.open_file(log) as (member, stream):
            if stream is None or member.size > _BIND_SCAN_LIMIT:
                return True  # not a log to read in the moment the stop waits for
            return parse_log(lines_of(stream), workdir).init_receives(name)
    except (EngineLost, EngineTimeout):
        raise
    except EngineError:
        return True  # no log yet (the tracer never started): stop it as docker would


def signal_name(value: str | None) -> str | None:
    """A StopSignal (``SIGTERM``, ``TERM``, ``15``) as strace names it; None if unknown."""
    text = (value or "SIGTERM").strip().upper()
    try:
        member = (
            signal.Signals(int(text))
            if text.isdigit()
            else signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        )
    except (KeyError, ValueError):
        return None
    return member.name


def _read_log(container: RunningContainer, log: str, workdir: str, image: str) -> ParsedLog:
    """strace's log, streamed out of the stopped container and parsed as it comes.

    The traced program could have put anything there: only a regular file is
    read (a link is not followed, a FIFO never blocks), up to :data:`MAX_LOG`.
    """
    with container.open_file(log) as (member, stream):
        if stream is None:
            raise TraceError(
                f"the trace log of {image} is not a regular file: it was tampered with"
            )
        if member.size > MAX_LOG:
            raise TraceError(
                f"the trace log of {image} has {member.size / 1e6:.0f} MB, more than "
                f"{MAX_LOG / 1e6:.0f} MB: trace a shorter run (--trace-args, --probe-cmd)"
            )
        return parse_log(lines_of(stream), workdir)


def _check_architecture(image: str, architecture: str) -> None:
    host = Platform.host()
    here = host.architecture if host is not None else ""
    if architecture and here and architecture != here:
        raise TraceError(f"{image} is a {architecture} image; this {here} machine cannot trace it")


def _tcp_ports(config: RuntimeConfig) -> list[int]:
    ports: set[int] = set()
    for key in config.exposed_ports:
        number, _, protocol = str(key).partition("/")
        if (protocol or "tcp").lower() == "tcp" and number.isdigit():
            ports.add(int(number))
    return sorted(ports)


def _environment(env: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The container's environment, and the ``-E`` settings that restore it for the program."""
    environment: list[str] = []
    restore: list[str] = []
    for item in env:
        name, sep, value = item.partition("=")
        if name in _TRACER_UNSAFE_ENV and sep and value:
            environment.append(f"{name}=")  # empty for strace's loader ...
            restore.append(item)  # ... and back for the traced program
        else:
            environment.append(item)
    return environment, restore


def _published(container: RunningContainer, ports: list[int]) -> dict[int, int]:
    """Container port -> host port on 127.0.0.1, as the engine published them."""
    attrs = container.attrs()
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    published: dict[int, int] = {}
    for port in ports:
        for binding in bindings.get(f"{port}/tcp") or []:
            if binding.get("HostPort"):
                published[port] = int(binding["HostPort"])
                break
    if ports and not published and (attrs.get("State") or {}).get("Status") == "running":
        raise TraceError("the engine published none of the exposed ports on 127.0.0.1")
    return published


def _wait_ready(
    container: RunningContainer,
    published: dict[int, int],
    deadline: float,
    timeout_message: str,
    say: Callable[[str], None],
    watch: _LoopbackWatch | None = None,
) -> set[int] | None:
    """The ports that accept connections; None when the program exited first.

    Once one port is ready, the others get a few more seconds: images often
    EXPOSE ports a given configuration does not open. Past the deadline with
    no port ready: :class:`TraceTimeout`. ``watch`` looks at the log for a
    loopback bind every few seconds while no port is ready.
    """
    if not published:
        return set()
    say("waiting for " + ", ".join(f"{port}/tcp" for port in published))
    ready: set[int] = set()
    first_ready: float | None = None
    while True:
        for port, host_port in published.items():
            if port not in ready and _accepting(host_port):
                ready.add(port)
                if first_ready is None:
                    first_ready = time.monotonic()
        now = time.monotonic()
        if len(ready) == len(published) or (first_ready is not None and now - first_ready > 5):
            return ready
        if container.status() not in ("created", "running"):
            return None
        if watch is not None and not ready:
            watch.check()
        if now >= deadline:
            if ready:
                return ready
            raise TraceTimeout(timeout_message)
        time.sleep(0.25)


def _accepting(host_port: int) -> bool:
    """Whether something accepts on the port (a proxy that closes at once does not count)."""
    try:
        with socket.create_connection((PROBE_HOST, host_port), timeout=1) as sock:
            sock.settimeout(0.3)
            try:
                return bool(sock.recv(1, socket.MSG_PEEK))
            except TimeoutError:
                return True  # connected and waiting for a request: a server
    except OSError:
        return False


class _LoopbackWatch:
    """Reads the running program's log for a ``bind()`` of an exposed port to 127.0.0.1.

    Such a program waits for connections no probe can make (the container's own
    loopback), so the trace would wait out its timeout; this says so at once.
    """

    def __init__(
        self, container: RunningContainer, log: str, image: str, published: dict[int, int]
    ):
        self.container = container
        self.log = log
        self.image = image
        self.ports = set(published)
        self.next_look = time.monotonic() + _BIND_POLL / 2
        self.given_up = False

    def check(self) -> None:
        if self.given_up or time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + _BIND_POLL
        binds: list[tuple[str, int]] = []
        try:
            with self.container.open_file(self.log) as (member, stream):
                if stream is None or member.size > _BIND_SCAN_LIMIT:
                    self.given_up = True
                    return
                for line in lines_of(stream):
                    bound = bind_of(line)
                    if bound is not None:
                        binds.append(bound)
        except EngineError:
            return  # the log is not there yet, or the container just ended
        local = {
            port: address for port, address in loopback_only(binds).items() if port in self.ports
        }
        if local:
            where = ", ".join(f"{address}:{port}" for port, address in sorted(local.items()))
            raise TraceError(
                f"{self.image} listens on {where} inside its container, where no probe can "
                "reach it: make it listen on 0.0.0.0 (--trace-args), or trace with "
                "--trace-network host"
            )


def _port_probe(port: int, host_port: int) -> Probe:
    """A connection, then ``GET / HTTP/1.0`` (SlimToolkit's default) unless the port speaks.

    An HTTP status line makes it an HTTP probe (failed on a 5xx); any other
    answer, or none, leaves it a TCP probe that passed: redis answers ``GET``
    with ``-ERR``, PostgreSQL closes the connection.
    """
    target = f"{port}/tcp"
    banner = _banner(host_port)
    if banner is None:
        return Probe(target, ProbeKind.TCP, False, "connect -> refused")
    if banner:
        return Probe(target, ProbeKind.TCP, True, f"connect -> it spoke first: {banner}")
    line = _http_status_line(host_port)
    if line.startswith("HTTP/"):
        status = line.split()[1] if len(line.split()) > 1 else ""
        return Probe(target, ProbeKind.HTTP, not status.startswith("5"), f"GET / -> {line}")
    how = "not HTTP" if line else "no answer to GET /"
    return Probe(target, ProbeKind.TCP, True, f"connect -> connected ({how})")


def _banner(host_port: int) -> str | None:
    """What the port says before it is asked ('' for nothing); None if it refuses."""
    try:
        with socket.create_connection((PROBE_HOST, host_port), timeout=5) as sock:
            sock.settimeout(0.5)
            try:
                data = sock.recv(256)
            except TimeoutError:
                return ""
    except OSError:
        return None
    text = data.split(b"\n", 1)[0].decode("latin-1").strip()
    return "".join(char if char.isprintable() else "?" for char in text)[:80] or ""


def _http_status_line(host_port: int) -> str:
    """``GET / HTTP/1.0``, read to the end; the answer's first line ('' for none)."""
    request = (
        f"GET / HTTP/1.0\r\nHost: {PROBE_HOST}:{host_port}\r\n"
        "User-Agent: scratchpack-trace\r\nAccept: */*\r\n\r\n"
    ).encode("ascii")
    answer = b""
    for _attempt in range(3):
        answer = b""
        try:
            with socket.create_connection((PROBE_HOST, host_port), timeout=10) as sock:
                sock.sendall(request)
                while len(answer) < (1 << 20):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
        except OSError:
            pass
        if answer:
            break
        time.sleep(0.5)
    line = answer.split(b"\n", 1)[0].strip().decode("latin-1")
    return "".join(char if char.isprintable() else "?" for char in line)[:120]


def _run_probe_cmd(
    probe_cmd: list[str], published: dict[int, int], deadline: float, image: str, timeout: float
) -> Probe:
    first = min(published) if published else None

    def port_of(match: re.Match[str]) -> str:
        wanted = int(match.group(1)) if match.group(1) else first
        if wanted is None or wanted not in published:
            raise TraceError(f"the probe command asks for {match.group(0)}, which is not published")
        return str(published[wanted])

    command = [
        re.sub(r"\{port(?::(\d+))?\}", port_of, arg).replace("{host}", PROBE_HOST)
        for arg in probe_cmd
    ]
    env = dict(os.environ, SCRATCHPACK_PROBE_HOST=PROBE_HOST)
    if first is not None:
        env["SCRATCHPACK_PROBE_PORT"] = str(published[first])
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
    except FileNotFoundError as err:
        raise TraceError(f"the probe command {command[0]} is not found") from err
    except subprocess.TimeoutExpired as err:
        raise TraceTimeout(
            f"the probe command {shlex.join(command)} did not finish within the {timeout:g} s "
            f"trace timeout of {image}"
        ) from err
    output = completed.stdout.decode("utf-8", "replace").rstrip().splitlines()
    return Probe(
        shlex.join(command),
        ProbeKind.COMMAND,
        completed.returncode == 0,
        f"-> exit {completed.returncode}",
        "\n".join(output[-PROBE_OUTPUT_LINES:]),
    )


def _timeout_message(image: str, timeout: float, ports: list[int]) -> str:
    if ports:
        listed = ", ".join(f"{port}/tcp" for port in ports)
        return (
            f"{image} did not accept connections on {listed} within {timeout:g} s of tracing; "
            "raise the timeout or give a probe"
        )
    return (
        f"{image} did not exit within {timeout:g} s of tracing and exposes no port to probe; "
        "raise the timeout or give arguments that make it finish"
    )


def _tracer_message(container: RunningContainer) -> str:
    """strace's own complaint from the container's output, or its last line."""
    try:
        output = container.logs(tail=50)
    except EngineError:  # the engine lost the container: nothing better to say
        output = ""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "strace:" in line or "ld-linux" in line or "ptrace" in line:
            return line
    return lines[-1] if lines else "no output (is ptrace allowed by the engine's seccomp profile?)"


def _interpreters(container: RunningContainer, executed: Iterable[str]) -> set[str]:
    """The loaders (``PT_INTERP``) and ``#!`` interpreters of the executed files.

    The kernel opens them itself, so strace never shows them; they are read
    back from the stopped container (``docker cp``'s API).
    """
    found: set[str] = set()
    pending = sorted(set(executed))
    seen: set[str] = set()
    while pending and len(seen) < 512:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        head = container.read_head(path)
        if head is None:
            continue
        interpreter = _elf_interpreter(head) or _shebang(head)
        if interpreter and interpreter.startswith("/"):
            cleaned = clean_path(interpreter)
            if not excluded(cleaned):
                found.add(cleaned)
                pending.append(cleaned)
    return found


def _elf_interpreter(head: bytes) -> str | None:
    """``PT_INTERP`` of an ELF file from its first bytes."""
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    wide = head[4] == 2
    if wide:
        if len(head) < 64:
            return None
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + (56 if wide else 32) > len(head):
            return None
        (p_type,) = struct.unpack_from(order + "I", head, offset)
        if p_type != 3:  # PT_INTERP
            continue
        if wide:
            (p_offset,) = struct.unpack_from(order + "Q", head, offset + 8)
            (p_filesz,) = struct.unpack_from(order + "Q", head, offset + 32)
        else:
            (p_offset,) = struct.unpack_from(order + "I", head, offset + 4)
            (p_filesz,) = struct.unpack_from(order + "I", head, offset + 16)
        if p_offset + p_filesz > len(head):
            return None
        raw = head[p_offset : p_offset + p_filesz].split(b"\0", 1)[0]
        return raw.decode("utf-8", "surrogateescape") or None
    return None


def _shebang(head: bytes) -> str | None:
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return words[0].decode("utf-8", "surrogateescape") if words else None
