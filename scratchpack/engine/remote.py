"""An engine on another machine: ``DOCKER_HOST=ssh://USER@HOST`` or ``tcp://HOST:2376`` with TLS.

Read as the docker CLI reads them. ``ssh://`` runs the system's ``ssh`` (the
user's keys, agent, ``~/.ssh/config`` and ``known_hosts``; in batch mode, so it
never prompts on a terminal scratchpack may hold in raw mode) with
``docker system dial-stdio`` on the other side, once per connection, and the
SDK talks to a unix socket in a private directory that relays each connection
to one such ``ssh``: a real socket, so the attach stream of ``debug --attach``
is relayed and half-closed like a local one, without paramiko. ``tcp://`` is
TLS when ``DOCKER_TLS_VERIFY`` is set, with ``ca.pem``, ``cert.pem`` and
``key.pem`` from ``DOCKER_CERT_PATH`` (``~/.docker`` by default), the server
always verified; ``DOCKER_CERT_PATH`` alone does not turn TLS on (the CLI's
rule, where the SDK would speak TLS unverified).

Such an engine does not share this machine's files or its loopback address:
what needs either says so (:func:`remote_refusal`); images and files read from
containers travel over the connection.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scratchpack.errors import EngineUnreachable, InputError, printable
from scratchpack.owner import prefix

DEFAULT_HOST = "unix:///var/run/docker.sock"
SSH_CONNECT_TIMEOUT = 30  # seconds ssh may take to reach the host
SSH_PERSIST = 10  # seconds the shared ssh connection outlives its last use (a killed run's)
_STDERR_LIMIT = 64 * 1024  # of ssh's messages, kept to say why a connection failed
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")


class Scheme(enum.Enum):
    UNIX = "unix"
    SSH = "ssh"
    TCP = "tcp"


@dataclass(frozen=True)
class EngineAddress:
    """Where ``DOCKER_HOST`` says the engine is."""

    scheme: Scheme
    host: str  # a socket path for unix, a host name or address otherwise
    port: int | None = None
    user: str | None = None

    @property
    def remote(self) -> bool:
        """Whether the engine may be on another machine (its files and 127.0.0.1 not ours)."""
        return self.scheme is not Scheme.UNIX

    @property
    def shown(self) -> str:
        """The address for messages: never a password, whatever ``DOCKER_HOST`` held."""
        if self.scheme is Scheme.UNIX:
            return f"unix://{self.host}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme.value}://{user}{self.host}{port}"


def engine_address(value: str | None = None) -> EngineAddress:
    """``DOCKER_HOST`` (or ``value``) read, validated; :class:`InputError` if it is not usable."""
    raw = (os.environ.get("DOCKER_HOST", "") if value is None else value).strip() or DEFAULT_HOST
    scheme_word, sep, rest = raw.partition("://")
    if not sep:
        raise InputError(f"DOCKER_HOST {printable(hidden(raw))} is not an engine address")
    try:
        scheme = Scheme(scheme_word.lower())
    except ValueError:
        raise InputError(
            f"DOCKER_HOST {printable(hidden(raw))}: scratchpack reaches engines by unix://, "
            "ssh:// and tcp:// only"
        ) from None
    if scheme is Scheme.UNIX:
        return EngineAddress(scheme, rest or "/var/run/docker.sock")
    return _network_address(scheme, raw)


def _network_address(scheme: Scheme, raw: str) -> EngineAddress:
    shown = printable(hidden(raw))
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise InputError(f"DOCKER_HOST {shown} has no usable port") from None
    host = parts.hostname or ""
    if ":" in host:  # urlsplit drops the brackets of an IPv6 address
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        raise InputError(f"DOCKER_HOST {shown} names no usable host")
    user = parts.username
    if scheme is Scheme.TCP and user is not None:
        raise InputError(f"DOCKER_HOST {shown}: a tcp:// address has no user")
    if user is not None and not _USER.fullmatch(user):
        raise InputError(f"DOCKER_HOST {shown} names no usable user")
    if parts.password is not None:
        raise InputError(
            f"DOCKER_HOST {shown} holds a password: ssh:// takes keys (ssh-agent, ~/.ssh) only"
        )
    if scheme is Scheme.TCP and port is None:
        port = 2376 if os.environ.get("DOCKER_TLS_VERIFY") else 2375
    return EngineAddress(scheme, host, port, user)


def hidden(raw: str) -> str:
    """``raw`` without what could be a password (``user:secret@``)."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:…@", raw)


def remote_refusal(needs: str) -> str | None:
    """Why ``needs`` (this machine's files or 127.0.0.1) is impossible with the engine, or None."""
    try:
        address = engine_address()
    except InputError:
        return None  # connecting says what is wrong with it
    if not address.remote:
        return None
    return (
        f"{needs}, which the engine at {address.shown} (DOCKER_HOST) cannot reach from another "
        "machine: use an engine on this machine (unset DOCKER_HOST) or run scratchpack there"
    )


# -- tcp:// with TLS ---------------------------------------------------------------------------


def tls_config(address: EngineAddress) -> Any:
    """The SDK's TLS settings for a tcp:// engine, as the docker CLI chooses them; None for none."""
    if address.scheme is not Scheme.TCP or not os.environ.get("DOCKER_TLS_VERIFY"):
        return None
    from docker.tls import TLSConfig

    directory = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    files = [directory / name for name in ("ca.pem", "cert.pem", "key.pem")]
    for file in files:
        if not file.is_file():
            raise EngineUnreachable(
                f"cannot reach a Docker engine at {address.shown} with TLS: DOCKER_CERT_PATH "
                f"{printable(str(directory))} has no {file.name}"
            )
    ca, cert, key = (str(file) for file in files)
    return TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True)


def tls_words(err: BaseException) -> str | None:
    """A TLS failure in ``err``'s chain, in words; None if there is none."""
    import ssl

    from scratchpack.errors import exception_chain

    for item in exception_chain(err):
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"TLS: the engine's certificate did not verify ({item.verify_message})"
        if isinstance(item, ssl.SSLError):
            words = str(item.reason or item.strerror or "the handshake failed")
            return f"TLS: {words.lower().replace('_', ' ')}"
    return None


# -- ssh:// --------------------------------------------------------------------------------------


def ssh_command(address: EngineAddress, control: Path | None = None) -> list[str]:
    """``ssh`` running the engine's ``dial-stdio`` on the host: its stdin and stdout are the API.

    With ``control`` the connections share one ssh connection (the first one's,
    kept :data:`SSH_PERSIST` seconds after the last ends): each SDK connection is
    then a new channel, not a new handshake (measured: 0.55 s each on loopback).
    """
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    argv += ["-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"]
    if control is not None:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}"]
        argv += ["-o", f"ControlPersist={SSH_PERSIST}"]
    if address.user:
        argv += ["-l", address.user]
    if address.port is not None:
        argv += ["-p", str(address.port)]
    return [*argv, "--", address.host.strip("[]"), "docker", "system", "dial-stdio"]


# Waits for its stdin to close (scratchpack ending, ``os._exit`` and SIGKILL included),
# then ends the shared ssh connection and removes the relay's directory.
_JANITOR = (
    'PATH="$PATH:/usr/bin:/bin"; cat >/dev/null; '
    '"$1" -o ControlPath="$2" -O exit -- "$3" 2>/dev/null; rm -rf -- "$4"'
)


class SshRelay:
    """A unix socket whose every connection is relayed by an ``ssh`` of its own to the engine.

    The ``ssh`` processes run in a session of their own, so Ctrl-C reaches
    scratchpack alone and its cleanup can still talk to the engine; each one
    ends when its connection closes (also when this process dies). Their
    messages are kept to say why a connection failed (:meth:`last_words`). A
    small ``sh`` (the janitor) outlives this process to end the shared ssh
    connection and remove the directory: the command leaves by ``os._exit``,
    where nothing of Python's own runs.
    """

    def __init__(self, address: EngineAddress) -> None:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise EngineUnreachable(
                f"cannot reach a Docker engine at {address.shown} (no ssh on PATH: ssh:// runs "
                "the system's ssh, e.g. apt-get install openssh-client)"
            )
        self.ssh = ssh
        self.address = address
        # Named as the runs' other temporary entries: ``prune`` removes it if the janitor could not.
        self.directory = Path(tempfile.mkdtemp(prefix=prefix("ssh")))
        self.path = self.directory / "engine.sock"
        self.stderr = self.directory / "ssh.log"
        self.control = self.directory / "control"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(str(self.path))
            self.listener.listen(16)
            self.janitor = subprocess.Popen(
                ["/bin/sh", "-c", _JANITOR, "janitor", self.ssh, str(self.control),
                 self.address.host.strip("[]"), str(self.directory)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except OSError as err:  # a TMPDIR too long for a socket's path, no /bin/sh
            self.listener.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise EngineUnreachable(
                f"cannot reach a Docker engine at {address.shown} (cannot relay to ssh: "
                f"{err.strerror or err})"
            ) from err
        threading.Thread(target=self._serve, name="scratchpack-ssh", daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _serve(self) -> None:
        while not self.closed:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection, self.lock, open(self.stderr, "ab") as log:
                if self.closed:
                    return
                self.processes = [p for p in self.processes if p.poll() is None]
                try:
                    self.processes.append(
                        subprocess.Popen(
                            [self.ssh, *ssh_command(self.address, self.control)[1:]],
                            stdin=connection.fileno(),
                            stdout=connection.fileno(),
                            stderr=log,
                            start_new_session=True,
                        )
                    )
                except OSError as err:  # no ssh: the connection closes, the reason is logged
                    log.write(f"ssh: {err.strerror or err}\n".encode())

    def last_words(self) -> str | None:
        """ssh's last message (why it could not connect, or what the host answered), if any."""
        try:
            with open(self.stderr, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _STDERR_LIMIT))
                lines = log.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        said = [line.strip() for line in lines if line.strip()]
        return printable(said[-1].rstrip(".")) if said else None

    def close(self) -> None:
        """Stop relaying: the listener, every ssh still running, the directory."""
        with self.lock:
            self.closed = True
            with contextlib.suppress(OSError):
                self.listener.close()
            for process in self.processes:
                if process.poll() is None:
                    process.terminate()
            for process in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            self.processes = []
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.janitor.communicate(timeout=10)  # its stdin closed: it cleans up now
        shutil.rmtree(self.directory, ignore_errors=True)
