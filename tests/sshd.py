"""An sshd of the test's own on 127.0.0.1, and an ``ssh`` that reaches it with a key made here.

Nothing of the machine's or the user's ssh set-up is read or written: the
server has its own config, host key and authorized key in a temporary
directory (the system's sshd service is never started), and the client is a
wrapper ``ssh`` first on ``PATH`` that runs the real one with ``-F`` a config
of its own (its key, its known_hosts holding the server's key, no agent).
So ``DOCKER_HOST=ssh://root@127.0.0.1:PORT`` with :attr:`Sshd.env` reaches
the local engine through ``docker system dial-stdio``, as a remote one would be.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import unavailable

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd: it refuses to start without it


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sshd:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.config = top / "sshd_config"
        self.log = top / "sshd.log"

    @property
    def host(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a command needs to reach the engine over this sshd (added to the environment)."""
        return {"DOCKER_HOST": self.host, "PATH": f"{self.top / 'bin'}:{os.environ['PATH']}"}

    def start(self) -> Sshd:
        for tool in ("ssh", "ssh-keygen", "docker"):
            if shutil.which(tool) is None:
                unavailable(f"{tool} is missing")
        if not SSHD.is_file():
            unavailable("sshd is missing: apt-get install openssh-server")
        if os.geteuid() != 0:
            unavailable("the test's sshd logs in as root: run as root")
        self.top.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self._keys()
        for _attempt in range(3):  # a port taken between free_port and sshd's bind: again
            self.port = free_port()
            self._configure()
            if self._started():
                self._client()
                return self
        unavailable(f"the test's sshd did not start: {self.log.read_text(errors='replace')}")
        raise AssertionError("unreachable")

    def _keys(self) -> None:
        for name in ("host_key", "client_key"):
            key = str(self.top / name)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], check=True
            )
        shutil.copy(self.top / "client_key.pub", self.top / "authorized_keys")

    def _configure(self) -> None:
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.top / 'host_key'}\n"
            f"PidFile {self.top / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.top / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "AllowUsers root\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"  # the key lives under /tmp, which others may write
            "X11Forwarding no\n"
            "AllowTcpForwarding no\n"
        )

    def _started(self) -> bool:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return True
            time.sleep(0.05)
        return False

    def _client(self) -> None:
        host_key = (self.top / "host_key.pub").read_text().split()
        (self.top / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n"
        )
        (self.top / "ssh_config").write_text(
            "Host *\n"
            f"  IdentityFile {self.top / 'client_key'}\n"
            "  IdentitiesOnly yes\n"
            "  IdentityAgent none\n"
            f"  UserKnownHostsFile {self.top / 'known_hosts'}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
        )
        real_ssh = shutil.which("ssh")
        wrapper = self.top / "bin" / "ssh"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec {real_ssh} -F {self.top / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)

    def own_processes(self) -> list[int]:
        """The listener and its descendants (each connection's sshd, renamed ``sshd: root@…``)."""
        if self.process is None or self.process.poll() is not None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                    children.setdefault(parent, []).append(int(entry.name))
        found, pending = [], [self.process.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending += children.get(pid, [])
        return found

    def stop(self) -> None:
        """End the listener and every session it started, then remove the directory."""
        if self.process is not None and self.process.poll() is None:
            for pid in reversed(self.own_processes()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        shutil.rmtree(self.top, ignore_errors=True)
