"""``scratchpack debug --attach``: a shell next to a running shell-less container.

A *sidecar* container joins the target's pid and network namespaces (and its IPC
namespace when the target's is shareable), so ``ps`` shows the target's processes,
``netstat``/``wget`` see its interfaces and ``/proc/1/root`` is the target's root
file system (the target's pid 1 as seen in the shared pid namespace). The target is
never touched: nothing is exec'd in it and nothing is copied into it. This works on
a plain Docker Engine; Docker's own ``docker debug`` needs Docker Desktop.

Decisions, with what was measured (Docker 20.10, Debian 12, kernel 6.x):

- ``CAP_SYS_PTRACE``: opening ``/proc/1/root`` is a ptrace "read" access check. A
  root sidecar with Docker's default capabilities passes it only when the target
  runs as root with no more capabilities than the default set. A target running as
  another user (``--user 1000``), with added capabilities (``--cap-add NET_ADMIN``)
  or non-dumpable gives "Permission denied" unless the sidecar has
  ``CAP_SYS_PTRACE``, so the sidecar always gets it (it also lets ``strace``-like
  tools in a custom ``--image`` work). It gives the sidecar no power over the host
  as long as the target's namespaces are its own: next to a ``--pid=host`` target
  the sidecar read and wrote, through ``/proc/<host pid>/root``, host files the
  target could not. So a target that shares the host's pid, network or IPC
  namespace (directly or through ``container:ID``), or is privileged, is refused
  unless the user passes ``--allow-host-access`` (:func:`host_access`). Tools from
  ``--package`` are known, so their sidecar gets only what they need
  (:func:`sidecar_plan`): ``CAP_SYS_PTRACE`` for strace/ltrace/gdb, or to open the
  ``/proc/1/root`` of a target running as another user; ``NET_RAW``/``NET_ADMIN``
  for tcpdump; ``--as-target-user`` runs it as the target's numeric ``User``.
- IPC: the engine refuses to join a ``private`` IPC namespace (the default:
  "non-shareable IPC"), so the sidecar joins the target's only when the target's
  ``IpcMode`` is ``shareable``, ``host`` or ``container:...``. POSIX shared memory
  is reachable anyway as ``/proc/1/root/dev/shm``.
- Cleanup: ``attach`` force-removes the sidecar in ``finally`` (Ctrl-C included)
  and turns SIGTERM and SIGHUP (unless ignored) into ``SystemExit`` while it runs.
  The sidecar is also created with ``AutoRemove``, so the daemon removes it when
  it exits even if this process is killed; a killed client's script (no TTY) sees
  EOF on its stdin (``StdinOnce``) and ends. Only a SIGKILLed *interactive*
  client leaves its shell running, as with ``docker run -it --rm`` (the engine
  does not close a TTY's input when the client goes away): remove it with
  ``docker rm -f $(docker ps -q --filter label=org.scratchpack.debug-target)``.
  The exit status comes from a ``wait?condition=removed`` request made *before*
  the start (the daemon sends the headers once the wait is registered), as
  ``docker run --rm`` does, so the automatic removal cannot lose it; Podman
  answers that one with 0, so there it is ``condition=next-exit``
  (:mod:`scratchpack.engine.dialect`).
- Output and input go through one hijacked attach connection opened before the
  start, relayed with ``select`` (no threads, no polling): the terminal in raw mode
  for interactive sessions, a buffer of multiplexed frames otherwise.

Nothing here pulls: images must exist locally (``images.get`` first), containers
are created, never ``containers.run``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import requests.exceptions

from scratchpack.engine.client import Engine, short
from scratchpack.engine.dialect import (
    DOCKER,
    PODMAN_INSPECT,
    Dialect,
    created_ipc_mode,
    missing_command,
)
from scratchpack.errors import EngineError, EngineLost, InputError, Terminated
from scratchpack.owner import OWNER_LABEL, owner

# Sidecars carry the ID of the container they debug.
TARGET_LABEL = "org.scratchpack.debug-target"

DEFAULT_SHELL = ("sh",)
_CHUNK = 65536


@dataclass(frozen=True)
class SidecarAccess:
    """What the sidecar may do beyond joining the target's namespaces.

    ``capabilities`` None: a tools image of unknown tools gets ``CAP_SYS_PTRACE``
    (see the module's notes). A set: the tools' own needs
    (:func:`scratchpack.plan.debug.tool_capabilities`), plus ``CAP_SYS_PTRACE``
    when the target runs as another user than the sidecar, whose ``/proc/1/root``
    is a ptrace access check. ``as_target_user``: run as the target's ``User``.
    """

    capabilities: frozenset[str] | None = None
    as_target_user: bool = False
    environment: tuple[str, ...] = ()  # KEY=VALUE for the sidecar


@dataclass(frozen=True)
class AttachResult:
    exit_code: int
    output: str | None  # combined stdout and stderr of a non-interactive run


# --------------------------------------------------------------------------- tools


def _local_image(client: docker.DockerClient, reference: str) -> Any:
    """A local image or ``None``; never a pull."""
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as err:
        raise EngineError(f"cannot inspect image {reference}: {short(err)}") from err


# --------------------------------------------------------------------------- attach


def attach(
    engine: Engine,
    container: str,
    tools: str,
    shown: str,
    command: Sequence[str] | None = None,
    interactive: bool | None = None,
    allow_host_access: bool = False,
    access: SidecarAccess | None = None,
) -> AttachResult:
    """Run ``command`` (default: a shell) in a sidecar next to a running ``container``.

    ``tools`` is the local image (an ID) to take the tools from, ``shown`` its
    name in messages. ``interactive`` (default: no command and stdin is a
    terminal) relays the terminal to a shell on a TTY and returns its exit status
    with ``output=None``. Otherwise the command runs to completion and its combined
    output is returned; with no command, stdin is the shell's script
    (``scratchpack debug --attach C < script.sh``). A target that shares one of
    the host's namespaces, or is privileged, is an :class:`InputError` unless
    ``allow_host_access`` (see :func:`host_access`).
    """
    try:
        return _attach(
            engine.client,
            engine.dialect,
            container,
            tools,
            shown,
            command,
            interactive,
            allow_host_access,
            access or SidecarAccess(),
        )
    except requests.exceptions.RequestException as err:
        raise EngineLost(f"lost the Docker engine: {short(err)}") from err


def _attach(
    client: docker.DockerClient,
    dialect: Dialect,
    container: str,
    image_ref: str,
    shown: str,
    command: Sequence[str] | None,
    interactive: bool | None,
    allow_host_access: bool,
    access: SidecarAccess,
) -> AttachResult:
    target = _running_target(client, container)
    plan = sidecar_plan(access, str(target.attrs.get("Config", {}).get("User") or ""), container)
    if not allow_host_access:
        _refuse_host_access(client, dialect, container, target)
    _check_architecture(client, image_ref, target)

    in_fd = _fileno(sys.stdin)
    if interactive is None:
        interactive = command is None and in_fd is not None and os.isatty(in_fd)
    argv = list(command) if command else list(DEFAULT_SHELL)
    # stdin goes to the sidecar for a session and for a script (no command); a
    # command does not read ours (like `docker run` without -i), so a caller's
    # `while read` loop keeps its input.
    feed = in_fd if (interactive or command is None) else None  # StdinOnce follows OpenStdin

    sidecar: str | None = None
    waiter = None
    sock = None
    with _exit_on_signals():
        try:
            sidecar = _create_sidecar(
                client, dialect, image_ref, target, argv, interactive, feed, plan
            )
            waiter = _register_wait(client.api, sidecar, dialect.exit_wait)
            sock = _attach_socket(client.api, sidecar, feed is not None, shown, argv)
            raw = getattr(sock, "_sock", sock)
            _start(client, sidecar, shown, argv)
            output = None
            if interactive:
                _session(client.api, sidecar, raw, feed)
                # On a TTY the attach also ends when the user detaches (ctrl-p
                # ctrl-q) or our stdin closes: a sidecar never outlives its session.
                with contextlib.suppress(docker.errors.APIError):
                    if client.api.inspect_container(sidecar)["State"]["Running"]:
                        client.api.kill(sidecar)
            else:
                chunks: list[bytes] = []
                _relay(raw, feed, chunks.append)
                output = _demultiplex(b"".join(chunks)).decode("utf-8", "replace")
            return AttachResult(_exit_status(waiter), output)
        except docker.errors.APIError as err:
            raise EngineError(f"cannot run a sidecar next to {container}: {short(err)}") from err
        finally:
            if sock is not None:  # the SDK's wrapper, then the socket itself
                for closable in (sock, getattr(sock, "_sock", sock)):
                    with contextlib.suppress(OSError):
                        closable.close()
            if sidecar is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    client.api.remove_container(sidecar, force=True)
            if waiter is not None:
                waiter.close()


def _refuse_host_access(
    client: docker.DockerClient, dialect: Dialect, container: str, target: Any
) -> None:
    """A target in the host's namespaces (or privileged) would lend the sidecar the host."""
    shared = host_access(client, target.attrs, dialect)
    if shared is not None:
        raise InputError(
            f"container {container} {shared}: a sidecar there, with CAP_SYS_PTRACE, "
            "could read and write the host's files (through /proc/PID/root) or take over "
            "its processes; give --allow-host-access to attach anyway"
        )


def _create_sidecar(
    client: docker.DockerClient,
    dialect: Dialect,
    image_ref: str,
    target: Any,
    argv: list[str],
    interactive: bool,
    feed: int | None,
    plan: SidecarPlan,
) -> str:
    """The sidecar in the target's pid and network namespaces (IPC where it is shareable).

    An engine whose ``IpcMode`` cannot be believed (Podman) gets no IPC join at all.
    """
    ipc = str(target.attrs["HostConfig"].get("IpcMode") or "")
    shareable_ipc = dialect.reports_ipc_mode and (
        ipc in ("shareable", "host") or ipc.startswith("container:")
    )
    return client.api.create_container(
        image_ref,
        entrypoint=argv,
        name=f"scratchpack-debug-{target.name}-{uuid.uuid4().hex[:8]}",
        labels={TARGET_LABEL: target.id, OWNER_LABEL: owner()},
        tty=interactive,
        stdin_open=feed is not None,
        user=plan.user,
        environment=list(plan.environment) or None,
        host_config=client.api.create_host_config(
            pid_mode=f"container:{target.id}",
            network_mode=f"container:{target.id}",
            ipc_mode=f"container:{target.id}" if shareable_ipc else None,
            cap_add=list(plan.capabilities) or None,
            auto_remove=True,
        ),
    )["Id"]


@dataclass(frozen=True)
class SidecarPlan:
    """The user, capabilities and environment the sidecar is created with."""

    user: str | None  # None: the tools image's (root)
    capabilities: tuple[str, ...]
    environment: tuple[str, ...] = ()


def sidecar_plan(access: SidecarAccess, target_user: str, container: str) -> SidecarPlan:
    """The sidecar's user and capabilities for a target running as ``target_user``.

    ``--as-target-user`` takes the target's ``User`` as it is, so it must be
    numeric: a name means the target's own ``/etc/passwd``, which the sidecar's
    root does not have.
    """
    user = None
    if access.as_target_user and not runs_as_root(target_user):
        if not re.fullmatch(r"\d+(:\d+)?", target_user):
            raise InputError(
                f"container {container} runs as {target_user!r}, a name only its own "
                "/etc/passwd knows: --as-target-user needs a numeric UID[:GID] (docker run "
                "--user 1000:1000); without it the sidecar runs as root"
            )
        user = target_user
    if access.capabilities is None:
        return SidecarPlan(user, ("SYS_PTRACE",), access.environment)
    needed = set(access.capabilities)
    if user is None and not runs_as_root(target_user):
        needed.add("SYS_PTRACE")  # root opening another user's /proc/1/root
    return SidecarPlan(user, tuple(sorted(needed)), access.environment)


def runs_as_root(user: str) -> bool:
    """Whether a container's ``User`` (``""``, ``root``, ``0``, ``0:0``…) is root."""
    return user.partition(":")[0] in ("", "0", "root")


def _running_target(client: docker.DockerClient, container: str) -> Any:
    try:
        target = client.containers.get(container)
    except docker.errors.NotFound as err:
        raise EngineError(f"no container {container}") from err
    except docker.errors.APIError as err:
        raise EngineError(f"cannot inspect container {container}: {short(err)}") from err
    status = target.attrs.get("State", {}).get("Status", "unknown")
    if status != "running":
        raise EngineError(
            f"container {container} is not running (status {status}): "
            "a sidecar needs a running process"
        )
    return target


_HOST_NAMESPACES = (("PidMode", "pid"), ("NetworkMode", "network"), ("IpcMode", "IPC"))
_JOIN_LIMIT = 16  # containers followed through "container:ID" modes


# Capabilities with which a container reaches past its namespaces (mounts, modules).
_HOST_CAPABILITIES = frozenset({"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO"})


def host_access(
    client: docker.DockerClient, attrs: dict[str, Any], dialect: Dialect = DOCKER
) -> str | None:
    """Why a sidecar beside this container would reach the host, or None.

    The sidecar joins the target's pid, network and IPC namespaces with
    ``CAP_SYS_PTRACE``: in the host's pid namespace ``/proc/PID/root`` is every
    host process's root (measured: host files read and written that the target
    itself could not), in the host's network namespace every host-only service
    is at hand. A mode ``container:ID`` is followed to the container it names.
    A privileged container has every capability and the host's devices, which
    ``CAP_SYS_PTRACE`` would let the sidecar take over; so does one given
    ``SYS_ADMIN``, ``SYS_MODULE`` or ``ALL``. A joined container that is gone
    cannot be checked, yet the target still holds its namespaces: that refuses
    too (fail closed). Where the engine misreports ``IpcMode`` (Podman), the
    ``--ipc`` of the command that created the container counts instead.
    """
    pending = [attrs]
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        config = dict(current.get("HostConfig") or {})
        if not dialect.reports_ipc_mode:
            config["IpcMode"] = _created_ipc_mode(client, str(current.get("Id") or ""))
        if config.get("Privileged") is True:
            return "is privileged (--privileged), or joins one that is"
        added = {str(cap).upper().removeprefix("CAP_") for cap in config.get("CapAdd") or ()}
        if added & _HOST_CAPABILITIES:
            return f"has {', '.join(sorted(added & _HOST_CAPABILITIES))} (--cap-add), or joins one"
        for key, name in _HOST_NAMESPACES:
            mode = str(config.get(key) or "")
            if mode == "host":
                return f"shares the host's {name} namespace (--{key[:-4].lower()}=host)"
            if mode.startswith("ns:"):  # Podman: a namespace by path, perhaps the host's
                return f"joins the {name} namespace at {mode[3:]}: unknowable"
            joined = mode.partition(":")[2] if mode.startswith("container:") else ""
            if not joined or joined in seen:
                continue
            if len(seen) >= _JOIN_LIMIT:
                return "joins namespaces through too many containers to follow"
            seen.add(joined)
            try:
                pending.append(client.api.inspect_container(joined))
            except docker.errors.NotFound:
                return f"joins the namespaces of container {joined}, which is gone: unknowable"
            except docker.errors.APIError as err:
                raise EngineError(f"cannot inspect container {joined}: {short(err)}") from err
    return None


def _created_ipc_mode(client: docker.DockerClient, container_id: str) -> str:
    """The ``--ipc`` a container was created with, from Podman's own record ("" if none)."""
    api = client.api
    try:
        response = api._get(api.base_url + PODMAN_INSPECT.format(quote(container_id, safe="")))
        native = api._result(response, True)
    except docker.errors.APIError as err:
        raise EngineError(f"cannot inspect container {container_id}: {short(err)}") from err
    return created_ipc_mode(native if isinstance(native, dict) else {}) or ""


def _check_architecture(client: docker.DockerClient, image_ref: str, target: Any) -> None:
    target_image = _local_image(client, str(target.attrs.get("Image") or ""))
    tools_image = _local_image(client, image_ref)
    if target_image is None or tools_image is None:
        return  # the target's image was deleted: nothing to compare with
    want = target_image.attrs.get("Architecture") or ""
    have = tools_image.attrs.get("Architecture") or ""
    if want and have and want != have:
        raise EngineError(
            f"the tools image is {have} but the container runs {want}: "
            f"give --image with a {want} image"
        )


def _register_wait(api: docker.APIClient, container_id: str, condition: str) -> requests.Response:
    """Ask for the exit status before the start; returns once the daemon has registered it.

    ``condition`` is the engine's (:attr:`Dialect.exit_wait`): ``removed`` on Docker,
    ``next-exit`` on Podman, which answers ``removed`` with 0 whatever the status.
    """
    response = api._post(
        api._url("/containers/{0}/wait", container_id),
        params={"condition": condition},
        stream=True,
        timeout=None,
    )
    api._raise_for_status(response)
    return response


def _exit_status(waiter: requests.Response) -> int:
    try:
        body = json.loads(waiter.content or b"{}")
    except ValueError:
        body = {}
    error = (body.get("Error") or {}).get("Message")
    if error:
        raise EngineError(f"the engine lost the sidecar: {error}")
    return int(body.get("StatusCode", -1))


def _attach_socket(
    api: docker.APIClient, container_id: str, stdin: bool, image: str, argv: list[str]
) -> Any:
    """The attach connection, opened before the start (Podman runs ``runc create`` here)."""
    try:
        return api.attach_socket(
            container_id, params={"stdin": int(stdin), "stdout": 1, "stderr": 1, "stream": 1}
        )
    except docker.errors.APIError as err:
        raise _refused(err, image, argv) from err


def _start(client: docker.DockerClient, container_id: str, image: str, argv: list[str]) -> None:
    try:
        client.api.start(container_id)
    except docker.errors.APIError as err:
        raise _refused(err, image, argv) from err


def _refused(err: docker.errors.APIError, image: str, argv: list[str]) -> EngineError:
    """The engine's refusal to run the sidecar, in one line: a missing command said plainly.

    Docker refuses at the start, Podman already when the attach connection is opened.
    """
    text = short(err)
    missing = missing_command(text)
    if missing:
        return EngineError(f"{image} has no {argv[0]!r} to run ({missing})")
    return EngineError(f"cannot start the sidecar from {image}: {text}")


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


# --------------------------------------------------------------------------- relay


def _relay(
    sock: socket.socket,
    in_fd: int | None,
    sink: Callable[[bytes], None],
    wake_fd: int | None = None,
    on_wake: Callable[[], None] | None = None,
) -> None:
    """Copy ``in_fd`` to ``sock`` and ``sock`` to ``sink`` until the socket's EOF.

    EOF on ``in_fd`` half-closes the socket (the daemon then closes the sidecar's
    stdin); ``wake_fd`` becoming readable calls ``on_wake`` (window resizes).
    """
    sock.setblocking(False)
    pending = b""
    while True:
        wanted = [sock.fileno()]
        if in_fd is not None and not pending:
            wanted.append(in_fd)
        if wake_fd is not None:
            wanted.append(wake_fd)
        readable, writable, _ = select.select(wanted, [sock.fileno()] if pending else [], [])
        if wake_fd is not None and wake_fd in readable:
            os.read(wake_fd, 512)
            if on_wake is not None:
                on_wake()
        if sock.fileno() in readable:
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                return
            if data:
                sink(data)
        if in_fd is not None and in_fd in readable:
            try:
                data = os.read(in_fd, _CHUNK)
            except OSError:  # EIO: the terminal hung up
                data = b""
            if data:
                pending = data
            else:
                in_fd = None
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
        if pending and sock.fileno() in writable:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                pending = pending[sock.send(pending) :]


def _demultiplex(data: bytes) -> bytes:
    """The payloads of the attach stream's frames (8-byte header: stream, 0, 0, 0, size)."""
    out = []
    offset = 0
    while offset + 8 <= len(data):
        (size,) = struct.unpack(">L", data[offset + 4 : offset + 8])
        out.append(data[offset + 8 : offset + 8 + size])
        offset += 8 + size
    return b"".join(out)


def _session(
    api: docker.APIClient, container_id: str, sock: socket.socket, in_fd: int | None
) -> None:
    """Relay the terminal: raw mode, window size now and on SIGWINCH, restored after."""
    import termios
    import tty

    out_fd = _fileno(sys.stdout)
    if out_fd is None:
        out_fd = 1
    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
    tty_fd = next((fd for fd in (in_fd, out_fd) if fd is not None and os.isatty(fd)), None)

    def resize() -> None:
        if tty_fd is None:
            return
        with contextlib.suppress(OSError, docker.errors.APIError):
            columns, lines = os.get_terminal_size(tty_fd)
            if columns and lines:
                api.resize(container_id, height=lines, width=columns)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view) :]

    saved = None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    try:
        if in_fd is not None and os.isatty(in_fd):
            saved = termios.tcgetattr(in_fd)
            tty.setraw(in_fd)
        with _on_signal(signal.SIGWINCH, lambda *_: _poke(wake_w)):
            resize()
            _relay(sock, in_fd, write, wake_r, resize)
    finally:
        if saved is not None and in_fd is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        os.close(wake_r)
        os.close(wake_w)


def _poke(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"\0")


@contextlib.contextmanager
def _on_signal(
    signum: int, handler: Callable[..., Any], unless_ignored: bool = False
) -> Iterator[None]:
    """Install ``handler`` for ``signum`` meanwhile (only the main thread can)."""
    if threading.current_thread() is not threading.main_thread() or (
        unless_ignored and signal.getsignal(signum) == signal.SIG_IGN
    ):
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit`` meanwhile, so ``finally`` removes the sidecar.

    A signal the caller ignores (``nohup``) stays ignored.
    """

    def leave(signum: int, _frame: Any) -> None:
        raise Terminated(signum)

    with (
        _on_signal(signal.SIGTERM, leave, unless_ignored=True),
        _on_signal(signal.SIGHUP, leave, unless_ignored=True),
    ):
        yield
