"""Trace the files a program in an image really uses: strace, brought in read-only.

``scratchpack shrink IMAGE --trace`` runs the original image (its entrypoint,
command, environment, working directory and user) with its program under
strace and keeps every file the program and its children opened, executed or
stat'ed successfully. Images hold no tools, so the tracer comes from the host:
:func:`package_tracer` packages the host's ``strace`` with its closure into a
directory, which is bind-mounted read-only at :data:`TRACER_MOUNT` and started
through *its own* loader::

    /.scratchpack-tracer/<libdir>/ld-linux-x86-64.so.2 \\
        --library-path /.scratchpack-tracer/<libdir> /.scratchpack-tracer/usr/bin/strace \\
        -D -f -qq -y -s 4096 -e trace=%file,%process,fchdir -e signal=none \\
        -e status=successful --seccomp-bpf -o /.scratchpack-trace-out/trace.log -- ARGV...

so the image's libc (glibc, musl or none) never matters. ``--library-path`` is
an option of ``ld.so``, not ``LD_LIBRARY_PATH``: the traced program inherits
none of it. ``-D`` keeps the program itself as the container's PID 1 (strace
runs as a detached grandchild), so ``docker stop`` delivers the image's
StopSignal to the program exactly as without tracing, its shutdown is traced
too, and the container's exit status is the program's.

Known blind spots: files the kernel opens without a system call (a program's
``PT_INTERP`` loader, a script's ``#!`` interpreter) are added by reading the
executed files back from the stopped container; ``/etc/ld.so.preload`` of the
image would also be loaded into the tracer; set-id programs run without their
privileges under ptrace.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import posixpath
import re
import shlex
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.assemble import RootPlan, write_tree
from scratchpack.errors import EXIT_TRACE, InputError, ScratchpackError
from scratchpack.ld.loaders import HwcapsChoice
from scratchpack.ld.resolve import Resolver

if TYPE_CHECKING:
    from scratchpack.engine import Engine


TRACER_MOUNT = "/.scratchpack-tracer"
OUTPUT_MOUNT = "/.scratchpack-trace-out"
LOG_NAME = "trace.log"
PROBE_HOST = "127.0.0.1"
STOP_GRACE = 10  # seconds docker waits after the StopSignal before SIGKILL

# Paths a trace never reports: kernel file systems and the tracer's own mounts.
EXCLUDED_PREFIXES = ("/proc", "/sys", "/dev", TRACER_MOUNT, OUTPUT_MOUNT)
# Variables that would change how the tracer's own loader starts strace; the
# traced program still gets them (strace -E puts them back).
_TRACER_UNSAFE_ENV = ("LD_PRELOAD", "LD_AUDIT")


class TraceError(ScratchpackError):
    """The trace could not be taken: no strace, a tracer that cannot start, a bad probe."""

    exit_code = EXIT_TRACE


class TraceTimeout(TraceError):
    """The traced program neither finished nor got ready for its probes in time."""


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
    probes: list[str]  # one line per probe: "8080/tcp GET / -> HTTP/1.0 200 OK"
    log_lines: int  # lines strace wrote


@dataclass(frozen=True)
class TracerTree:
    """strace and its closure in a host directory, and how to start it once mounted."""

    root: Path  # host directory holding the tree (bind-mount it read-only at ``mount``)
    strace: str  # in-container path of the strace executable
    loader: str | None  # in-container path of its loader; None for a static strace
    library_path: str  # ':'-separated in-container library directories (for --library-path)
    version: tuple[int, int]  # strace's version, which decides the options
    mount: str = TRACER_MOUNT

    @property
    def command(self) -> list[str]:
        """The command prefix that starts strace through its own loader."""
        if self.loader is None:
            return [self.strace]
        return [self.loader, "--library-path", self.library_path, self.strace]

    def options(self, log: str, env: Iterable[str] = ()) -> list[str]:
        """strace's options, writing to ``log``; ``env`` are ``-E`` settings for the program."""
        options = ["-D", "-f", "-qq", "-y", "-s", "4096"]
        options += ["-e", "trace=%file,%process,fchdir", "-e", "signal=none"]
        if self.version >= (5, 2):  # -e status= appeared in strace 5.2
            options += ["-e", "status=successful"]
        if self.version >= (5, 3):  # so did --seccomp-bpf in 5.3: stop only on traced calls
            options.append("--seccomp-bpf")
        for setting in env:
            options += ["-E", setting]
        return [*options, "-o", log]


# -- packaging the tracer ----------------------------------------------------------


def find_strace() -> str:
    """The host's strace, or a :class:`TraceError` saying how to get it."""
    found = shutil.which("strace") or (
        "/usr/bin/strace" if os.path.isfile("/usr/bin/strace") else None
    )
    if found is None:
        raise TraceError(
            "--trace needs strace on this machine: install Debian's strace (apt-get install strace)"
        )
    return os.path.abspath(found)


def strace_version(strace: str) -> tuple[int, int]:
    """``strace -V``'s version as (major, minor)."""
    try:
        completed = subprocess.run(
            [strace, "-V"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TraceError(f"{strace} does not run: {err}") from err
    match = re.search(r"version\s+(\d+)\.(\d+)", completed.stdout)
    if completed.returncode != 0 or match is None:
        raise TraceError(f"{strace} -V does not say which strace it is; install Debian's strace")
    return int(match.group(1)), int(match.group(2))


def package_tracer(destination: Path) -> TracerTree:
    """Copy the host's strace, its loader and libraries under ``destination`` (new or empty).

    Every file keeps its host path (and the symlinks on its way), so the tree
    mounted at :data:`TRACER_MOUNT` holds e.g. ``usr/bin/strace`` and
    ``usr/lib/x86_64-linux-gnu/libc.so.6``. The command refers to the files'
    real paths: an absolute symlink such as ``/lib64/ld-linux-x86-64.so.2``
    would point into the image, not into the tree.
    """
    strace = find_strace()
    version = strace_version(strace)
    resolver = Resolver(None, library_path="", hwcaps=HwcapsChoice("none"))
    try:
        closure = resolver.resolve(strace)
    except InputError as err:
        raise TraceError(f"cannot package the tracer: {err}") from err
    if closure.missing:
        names = ", ".join(item.soname for item in closure.missing)
        raise TraceError(f"cannot package the tracer: {strace} misses {names}")
    plan = RootPlan()
    try:
        strace_path = plan.add_path(resolver.root, strace, "tracer")
        loader = None
        if not closure.static and closure.interpreter:
            loader = plan.add_path(resolver.root, closure.interpreter, "tracer")
        directories: list[str] = []
        for library in closure.libraries:
            directory = posixpath.dirname(plan.add_path(resolver.root, library.path, "tracer"))
            if directory not in directories:
                directories.append(directory)
    except InputError as err:
        raise TraceError(f"cannot package the tracer: {err}") from err
    destination = Path(destination).absolute()  # a bind mount needs an absolute source
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise TraceError(f"{destination}: not empty; the tracer needs a new or empty directory")
    write_tree(plan.sorted_entries(), str(destination))
    destination.chmod(0o755)  # the mount's top: any user of the image must get through
    mount = TRACER_MOUNT
    return TracerTree(
        root=destination,
        strace=mount + strace_path,
        loader=None if loader is None else mount + loader,
        library_path=":".join(mount + directory for directory in directories),
        version=version,
    )


@contextlib.contextmanager
def packaged_tracer() -> Iterator[TracerTree]:
    """:func:`package_tracer` into a temporary directory, removed afterwards."""
    top = tempfile.mkdtemp(prefix="scratchpack-tracer-")
    try:
        yield package_tracer(Path(top) / "tree")
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- running the image under the tracer ---------------------------------------------


def trace_image(
    engine: Engine,
    image: str,
    config: dict[str, Any],
    tracer: TracerTree,
    probe_cmd: list[str] | None = None,
    trace_args: list[str] | None = None,
    timeout: float = 60,
    progress: Callable[[str], None] | None = None,
) -> TraceResult:
    """Run ``image`` as configured, under strace, and return the paths its programs used.

    ``config`` is the image's configuration (``Entrypoint``, ``Cmd``, ``Env``,
    ``WorkingDir``, ``User``, ``ExposedPorts``, ``StopSignal``); ``trace_args``
    replaces ``Cmd``. A program that exposes no TCP port runs to completion.
    Otherwise every exposed TCP port is published on 127.0.0.1 (a free port
    the engine picks) and, once the program accepts connections on it, gets
    ``GET / HTTP/1.0``; ``probe_cmd`` runs instead (on the host, once, after
    the ports are ready): ``{host}`` in its arguments becomes ``127.0.0.1``,
    ``{port}`` the host port of the lowest exposed port and ``{port:N}`` the one
    of container port N (also in ``$SCRATCHPACK_PROBE_HOST`` and
    ``$SCRATCHPACK_PROBE_PORT``). Then the container is stopped as ``docker
    stop`` would (its StopSignal, SIGKILL after 10 s).

    ``timeout`` bounds the run until the program exits or its probes are done:
    past it the container is removed and :class:`TraceTimeout` raised. The
    container and the log directory are removed in every case, Ctrl-C included.
    """
    import docker.errors
    import requests.exceptions

    from scratchpack.engine import EngineError

    say = progress or (lambda _message: None)
    info = engine.image(image)  # never a pull: a clear error for a missing image
    _check_architecture(image, info.architecture)
    argv = _argv(config, trace_args)
    if not argv:
        raise TraceError(f"{image} has no Entrypoint or Cmd: nothing to trace (give the command)")
    ports = _tcp_ports(config)
    if probe_cmd is not None and not probe_cmd:
        raise TraceError("the probe command is empty")
    if probe_cmd is not None and not ports and any("{port" in arg for arg in probe_cmd):
        raise TraceError(f"the probe command uses {{port}} but {image} exposes no TCP port")
    workdir = config.get("WorkingDir") or "/"
    environment, restore = _environment(config.get("Env") or [])
    log = f"{OUTPUT_MOUNT}/{LOG_NAME}"
    entrypoint = [*tracer.command, *tracer.options(log, restore), "--", *argv]

    client = engine.client
    out_dir = tempfile.mkdtemp(prefix="scratchpack-trace-")
    name = f"scratchpack-trace-{uuid.uuid4().hex[:12]}"  # found again even if Ctrl-C hits create
    container = None
    try:
        os.chmod(out_dir, 0o777)  # strace writes the log as the image's user
        create: dict[str, Any] = {
            "entrypoint": entrypoint,
            "environment": environment,
            "volumes": {
                str(tracer.root): {"bind": tracer.mount, "mode": "ro"},
                out_dir: {"bind": OUTPUT_MOUNT, "mode": "rw"},
            },
            "detach": True,
            "name": name,
            "labels": {"scratchpack.trace": image},
        }
        if config.get("WorkingDir"):
            create["working_dir"] = config["WorkingDir"]
        if config.get("User"):
            create["user"] = config["User"]
        if config.get("StopSignal"):
            create["stop_signal"] = config["StopSignal"]
        if ports:
            create["ports"] = {f"{port}/tcp": (PROBE_HOST, None) for port in ports}
        say(f"tracing {image}: {shlex.join(argv)}")
        try:
            container = client.containers.create(info.id, **create)
            container.start()
        except docker.errors.APIError as err:
            raise EngineError(f"cannot start {image} under the tracer: {_short(err)}") from err

        deadline = time.monotonic() + timeout
        probes: list[str] = []
        stopped = False
        if ports or probe_cmd is not None:
            published = _published(container, ports)
            waiting = _timeout_message(image, timeout, ports)
            ready = _wait_ready(container, published, deadline, waiting, say)
            if ready is not None:  # None: the program exited before it was ready
                if probe_cmd is not None:
                    probes.append(_run_probe_cmd(probe_cmd, published, deadline, image, timeout))
                else:
                    for port, host_port in published.items():
                        if port in ready:
                            probes.append(_http_probe(port, host_port))
                        else:
                            probes.append(f"{port}/tcp not listening")
                for line in probes:
                    say(f"probe {line}")
                container.reload()
                if container.status == "running":
                    say(f"stopping {image} ({config.get('StopSignal') or 'SIGTERM'})")
                    container.stop(timeout=STOP_GRACE)
                    stopped = True
            deadline = max(deadline, time.monotonic() + STOP_GRACE + 20)
        try:
            status = container.wait(timeout=max(1.0, deadline - time.monotonic()))
        except requests.exceptions.RequestException as err:
            raise TraceTimeout(_timeout_message(image, timeout, ports)) from err
        exit_code = None if stopped else int(status.get("StatusCode", -1))

        text = _read_log(Path(out_dir) / LOG_NAME)
        parsed = _parse(text, workdir)
        if not parsed.started:
            raise TraceError(
                f"the tracer could not start {argv[0]} in {image}: {_tracer_message(container)}"
            )
        paths = set(parsed.paths)
        paths.update(_interpreters(container, parsed.executed))
        result = TraceResult(
            paths=frozenset(paths),
            exit_code=exit_code,
            probes=probes,
            log_lines=text.count("\n"),
        )
        say(f"traced {len(result.paths)} paths ({result.log_lines} log lines)")
        return result
    except docker.errors.APIError as err:
        raise EngineError(f"the engine failed while tracing {image}: {_short(err)}") from err
    finally:
        with contextlib.suppress(Exception):
            (container or client.containers.get(name)).remove(force=True)
        shutil.rmtree(out_dir, ignore_errors=True)


def _check_architecture(image: str, architecture: str) -> None:
    names = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
    here = names.get(platform.machine(), platform.machine())
    if architecture and here and architecture != here:
        raise TraceError(f"{image} is a {architecture} image; this {here} machine cannot trace it")


def _argv(config: dict[str, Any], trace_args: list[str] | None) -> list[str]:
    """Entrypoint + Cmd, as docker would run them (trace_args replace Cmd)."""

    def words(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return [str(item) for item in value]

    command = words(config.get("Cmd")) if trace_args is None else list(trace_args)
    return words(config.get("Entrypoint")) + command


def _tcp_ports(config: dict[str, Any]) -> list[int]:
    ports: set[int] = set()
    for key in config.get("ExposedPorts") or {}:
        number, _, protocol = str(key).partition("/")
        if (protocol or "tcp").lower() == "tcp" and number.isdigit():
            ports.add(int(number))
    return sorted(ports)


def _environment(env: list[str]) -> tuple[list[str], list[str]]:
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


def _published(container: Any, ports: list[int]) -> dict[int, int]:
    """Container port -> host port on 127.0.0.1, as the engine published them."""
    container.reload()
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    published: dict[int, int] = {}
    for port in ports:
        for binding in bindings.get(f"{port}/tcp") or []:
            if binding.get("HostPort"):
                published[port] = int(binding["HostPort"])
                break
    if ports and not published and container.status == "running":
        raise TraceError("the engine published none of the exposed ports on 127.0.0.1")
    return published


def _wait_ready(
    container: Any,
    published: dict[int, int],
    deadline: float,
    timeout_message: str,
    say: Callable[[str], None],
) -> set[int] | None:
    """The ports that accept connections; None when the program exited first.

    Once one port is ready, the others get a few more seconds: images often
    EXPOSE ports a given configuration does not open. Past the deadline with
    no port ready: :class:`TraceTimeout`.
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
        container.reload()
        if container.status not in ("created", "running"):
            return None
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


def _http_probe(port: int, host_port: int) -> str:
    """``GET / HTTP/1.0`` (SlimToolkit's default probe); the status line, read to the end."""
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
    if not line:
        return f"{port}/tcp GET / -> no answer"
    if not line.startswith("HTTP/"):
        return f"{port}/tcp GET / -> not HTTP"
    return f"{port}/tcp GET / -> {line}"


def _run_probe_cmd(
    probe_cmd: list[str], published: dict[int, int], deadline: float, image: str, timeout: float
) -> str:
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
            capture_output=True,
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
    return f"{shlex.join(command)} -> exit {completed.returncode}"


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


def _read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tracer_message(container: Any) -> str:
    """strace's own complaint from the container's output, or its last line."""
    try:
        output = container.logs(stdout=True, stderr=True, tail=50).decode("utf-8", "replace")
    except Exception:  # the engine lost the container: nothing better to say
        output = ""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "strace:" in line or "ld-linux" in line or "ptrace" in line:
            return line
    return lines[-1] if lines else "no output (is ptrace allowed by the engine's seccomp profile?)"


def _interpreters(container: Any, executed: Iterable[str]) -> set[str]:
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
        head = _read_head(container, path)
        if head is None:
            continue
        interpreter = _elf_interpreter(head) or _shebang(head)
        if interpreter and interpreter.startswith("/"):
            cleaned = _clean(interpreter)
            if not _excluded(cleaned):
                found.add(cleaned)
                pending.append(cleaned)
    return found


_HEAD = 64 * 1024  # PT_INTERP and #! lines live in the first bytes
_WHOLE = 4 << 20  # files up to this size are read whole (the response ends cleanly)


def _read_head(container: Any, path: str) -> bytes | None:
    """The first bytes of ``path`` in the container, symlinks followed; None if unreadable."""
    import docker.errors

    for _hop in range(40):
        try:
            chunks, stat = container.get_archive(path, chunk_size=65536)
        except docker.errors.DockerException:
            return None
        limit = None if int(stat.get("size") or 0) <= _WHOLE else _HEAD + 16384
        data = bytearray()
        try:
            for chunk in chunks:
                data += chunk
                if limit is not None and len(data) >= limit:
                    break
        except docker.errors.DockerException:
            return None
        finally:
            with contextlib.suppress(Exception):
                chunks.close()
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tar:
                member = tar.next()
        except tarfile.TarError:
            return None
        if member is None:
            return None
        if member.issym() or member.islnk():
            target = stat.get("linkTarget") or posixpath.join(
                posixpath.dirname(path), member.linkname
            )
            path = target
            continue
        if not member.isfile():
            return None
        start = member.offset_data
        return bytes(data[start : start + min(member.size, _HEAD)])
    return None


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


def _short(err: BaseException) -> str:
    text = str(getattr(err, "explanation", None) or err)
    return " ".join(text.split())[:300]


# -- reading strace's log ----------------------------------------------------------

# Where the path arguments are, per system call: (dirfd index or None, path index, role).
# Roles: "use" (the path must be there), "open" ("create" when O_CREAT/O_TMPFILE),
# "create" (the path may be new: its directory must be there), "exec", "cwd".
_PATH_ARGS: dict[str, tuple[tuple[int | None, int, str], ...]] = {
    "open": ((None, 0, "open"),),
    "openat": ((0, 1, "open"),),
    "openat2": ((0, 1, "open"),),
    "creat": ((None, 0, "create"),),
    "execve": ((None, 0, "exec"),),
    "execveat": ((0, 1, "exec"),),
    "chdir": ((None, 0, "cwd"),),
    "mkdir": ((None, 0, "create"),),
    "mkdirat": ((0, 1, "create"),),
    "mknod": ((None, 0, "create"),),
    "mknodat": ((0, 1, "create"),),
    "rename": ((None, 0, "use"), (None, 1, "create")),
    "renameat": ((0, 1, "use"), (2, 3, "create")),
    "renameat2": ((0, 1, "use"), (2, 3, "create")),
    "link": ((None, 0, "use"), (None, 1, "create")),
    "linkat": ((0, 1, "use"), (2, 3, "create")),
    "symlink": ((None, 1, "create"),),
    "symlinkat": ((1, 2, "create"),),
    "inotify_add_watch": ((None, 1, "use"),),
    "fanotify_mark": ((3, 4, "use"),),
}
_PLAIN_PATH = (
    "stat", "lstat", "stat64", "lstat64", "oldstat", "oldlstat", "statfs", "statfs64", "access",
    "readlink", "truncate", "truncate64", "chmod", "chown", "chown32", "lchown", "lchown32",
    "utime", "utimes", "getxattr", "lgetxattr", "setxattr", "lsetxattr", "listxattr",
    "llistxattr", "removexattr", "lremovexattr", "unlink", "rmdir", "chroot", "uselib", "acct",
    "swapon", "swapoff",
)  # fmt: skip
_AT_PATH = (
    "newfstatat", "fstatat64", "statx", "faccessat", "faccessat2", "readlinkat", "fchmodat",
    "fchmodat2", "fchownat", "futimesat", "utimensat", "unlinkat", "name_to_handle_at",
    "open_tree",
)  # fmt: skip
_PATH_ARGS.update({name: ((None, 0, "use"),) for name in _PLAIN_PATH})
_PATH_ARGS.update({name: ((0, 1, "use"),) for name in _AT_PATH})
_FORKS = ("clone", "clone3", "fork", "vfork")
_RELEVANT = frozenset((*_PATH_ARGS, *_FORKS, "fchdir"))

_PREFIX = re.compile(r"^\s*(?:\[pid\s+(\d+)\]\s*|(\d+)\s+)?(.*?)\s*$", re.DOTALL)
_UNFINISHED = re.compile(r"^(?P<head>.*?)\s*<unfinished \.\.\.>$", re.DOTALL)
_RESUMED = re.compile(r"^<\.\.\.\s+(?P<name>[\w]+)\s+resumed>\s?(?P<tail>.*)$", re.DOTALL)
_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\(")
_FD = re.compile(r"^(AT_FDCWD|-?\d+)(?:<(.*)>)?$", re.DOTALL)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"v": b"\v", b"f": b"\f"}


@dataclass
class _Parsed:
    paths: set[str] = field(default_factory=set)
    executed: set[str] = field(default_factory=set)
    started: bool = False  # the traced program's first execve is there


@dataclass
class _Event:
    pid: int | None
    name: str
    args: list[str]
    ret: str


def parse_strace(text: str, workdir: str = "/") -> frozenset[str]:
    """Every absolute path a successful system call of the trace used.

    ``text`` is strace output with ``-f``: ``-o FILE`` lines (``PID call(...) =
    ret``) or stderr lines (``[pid N] call(...)``); ``<unfinished ...>`` /
    ``<... call resumed>`` pairs are joined, failed calls (``= -1 ...``) skipped.
    Only path arguments count (both names of rename/link, the new name of a
    symlink; paths a call may create bring their directory). Relative paths
    resolve against the caller's working directory: ``AT_FDCWD</dir>`` and
    ``3</dir>`` (``-y``) when strace decorated them, else the directory tracked
    per process (``chdir``, ``fchdir``, inherited over fork, shared by
    ``CLONE_FS`` threads; ``workdir`` at the start). A path relative to an
    undecorated directory descriptor is skipped. Paths are cleaned of ``//``
    and ``.`` but keep ``..`` (a symlink may precede it); ``/``, ``/proc``,
    ``/sys``, ``/dev`` and the tracer's mounts are left out.
    """
    return frozenset(_parse(text, workdir).paths)


def _parse(text: str, workdir: str = "/") -> _Parsed:
    events = list(_events(text))
    parents: dict[int | None, tuple[int | None, bool]] = {}
    for event in events:
        if event.name in _FORKS and _succeeded(event.ret):
            child = _leading_int(event.ret)
            if child is not None and child not in parents:
                parents[child] = (event.pid, "CLONE_FS" in ",".join(event.args))

    parsed = _Parsed()
    cwd_of_group: dict[int, str] = {}
    group_of: dict[int | None, int] = {}
    root_group: list[int] = []
    start = _clean(workdir if workdir.startswith("/") else "/" + workdir)

    def group(pid: int | None) -> int:
        known = group_of.get(pid)
        if known is not None:
            return known
        parent = parents.get(pid)
        if parent is not None and parent[0] != pid and parent[0] in group_of:
            parent_group = group_of[parent[0]]
            if parent[1]:  # CLONE_FS: one working directory for both
                group_of[pid] = parent_group
                return parent_group
            inherited = cwd_of_group[parent_group]
        else:
            inherited = cwd_of_group[root_group[0]] if root_group else start
        new = len(cwd_of_group)
        cwd_of_group[new] = inherited
        group_of[pid] = new
        if not root_group:
            root_group.append(new)
        return new

    def keep(path: str) -> None:
        if not _excluded(path):
            parsed.paths.add(path)

    for event in events:
        if not _succeeded(event.ret):
            continue
        number = group(event.pid)
        if event.name == "fchdir" and event.args:
            directory = _fd_path(event.args[0])
            if directory is not None:
                cwd_of_group[number] = directory
            continue
        specs = _PATH_ARGS.get(event.name)
        if specs is None:
            continue
        for dirfd_index, path_index, role in specs:
            if path_index >= len(event.args):
                continue
            raw = _string(event.args[path_index])
            if not raw:
                continue
            base = cwd_of_group[number]
            if dirfd_index is not None and dirfd_index < len(event.args):
                fd = _FD.match(event.args[dirfd_index])
                if fd is None:
                    continue
                decorated = _unescape(fd.group(2)) if fd.group(2) is not None else None
                if decorated is not None and not decorated.startswith("/"):
                    decorated = None
                if fd.group(1) == "AT_FDCWD":
                    if decorated is not None:
                        base = _clean(decorated)
                        cwd_of_group[number] = base  # strace read it from /proc: the truth
                elif decorated is not None:
                    base = _clean(decorated)
                elif not raw.startswith("/"):
                    continue  # relative to a directory descriptor we cannot name
            path = _clean(raw if raw.startswith("/") else base + "/" + raw)
            if role == "open":
                flags = event.args[path_index + 1] if path_index + 1 < len(event.args) else ""
                role = "create" if "O_CREAT" in flags or "O_TMPFILE" in flags else "use"
            keep(path)
            if role == "create":
                keep(posixpath.dirname(path))
            elif role == "exec":
                if not _excluded(path):
                    parsed.executed.add(path)
                parsed.started = True
            elif role == "cwd":
                cwd_of_group[number] = path
    return parsed


def _events(text: str) -> Iterator[_Event]:
    """Complete calls in log order, unfinished/resumed halves joined."""
    pending: dict[int | None, tuple[str, str]] = {}
    for line in text.splitlines():
        match = _PREFIX.match(line)
        if match is None:
            continue
        pid_text = match.group(1) or match.group(2)
        pid = int(pid_text) if pid_text else None
        body = match.group(3)
        if not body or body.startswith(("---", "+++", "strace:")):
            continue
        call_name = _CALL.match(body)
        if call_name is not None and call_name.group(1) not in _RELEVANT:
            continue  # wait4, exit, ...: neither a path nor a process of interest
        unfinished = _UNFINISHED.match(body)
        if unfinished is not None:
            head = unfinished.group("head")
            name = _CALL.match(head)
            if name is not None:
                pending[pid] = (name.group(1), head)
            continue
        resumed = _RESUMED.match(body)
        if resumed is not None:
            name = resumed.group("name")
            if pending.get(pid, ("",))[0] != name:
                # execve by a thread resumes under the leader's pid: take any pending one.
                pid = next((other for other, (n, _h) in pending.items() if n == name), -1)
            if pid not in pending:
                continue
            _name, head = pending.pop(pid)
            body = head + resumed.group("tail")
        call = _split_call(body)
        if call is not None:
            yield _Event(pid, *call)


def _split_call(text: str) -> tuple[str, list[str], str] | None:
    """``name(arg, arg) = ret`` into its parts, respecting strings, brackets and ``<...>``."""
    match = _CALL.match(text)
    if match is None:
        return None
    args: list[str] = []
    depth = 0
    index = start = match.end()
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index = _skip_string(text, index)
            continue
        if char == "<" and index > 0 and (text[index - 1].isalnum() or text[index - 1] == "_"):
            index = _skip_decoration(text, index)
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                if char != ")":
                    return None
                args.append(text[start:index].strip())
                rest = text[index + 1 :]
                returned = re.match(r"\s*=\s*(.*)$", rest, re.DOTALL)
                if returned is None:
                    return None
                if args == [""]:
                    args = []
                return match.group(1), args, returned.group(1).strip()
            depth -= 1
        elif char == "," and depth == 0:
            args.append(text[start:index].strip())
            start = index + 1
        index += 1
    return None


def _skip_string(text: str, index: int) -> int:
    index += 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == '"':
            return index + 1
        else:
            index += 1
    return index


def _skip_decoration(text: str, index: int) -> int:
    """Past the ``>`` that closes a ``-y`` decoration (``->`` in socket names is no end)."""
    index += 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == ">" and text[index - 1] != "-":
            return index + 1
        index += 1
    return index


def _string(arg: str) -> str | None:
    """A complete quoted string argument, unescaped; None for NULL, pointers, truncated text."""
    if len(arg) < 2 or arg[0] != '"' or arg[-1] != '"' or _skip_string(arg, 0) != len(arg):
        return None
    return _unescape(arg[1:-1])


def _unescape(text: str) -> str:
    """strace's C escapes (``\\"``, ``\\n``, ``\\342``, ``\\x41``) back to the file name."""
    if "\\" not in text:
        return text

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code[:1] == b"x" and len(code) > 1:
            return bytes([int(code[1:], 16)])
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return _SIMPLE_ESCAPES.get(code, code)

    raw = _ESCAPE.sub(one, text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _fd_path(arg: str) -> str | None:
    match = _FD.match(arg)
    if match is None or match.group(2) is None:
        return None
    path = _unescape(match.group(2))
    return _clean(path) if path.startswith("/") else None


def _succeeded(ret: str) -> bool:
    return bool(ret) and not ret.startswith(("-", "?"))


def _leading_int(ret: str) -> int | None:
    match = re.match(r"(\d+)", ret)
    return int(match.group(1)) if match else None


def _clean(path: str) -> str:
    """Absolute ``path`` without empty and ``.`` components (``..`` stays: links may precede it)."""
    parts = [part for part in path.split("/") if part and part != "."]
    return "/" + "/".join(parts)


def _excluded(path: str) -> bool:
    normal = posixpath.normpath(path)
    if normal in ("/", "//"):
        return True
    return any(normal == prefix or normal.startswith(prefix + "/") for prefix in EXCLUDED_PREFIXES)
