"""A Docker engine of the test's own, to kill and pause without touching the system's.

It runs in a network namespace of its own (``unshare --net``): a second dockerd
in the host's namespace would take the system engine's docker0 bridge away,
and every later container start would fail. Its data and state live in a
temporary directory; it answers on a unix socket there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import unavailable


class PrivateEngine:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.data = top / "data"
        self.exec_root = top / "exec"
        self.socket = top / "docker.sock"
        self.pidfile = top / "docker.pid"
        self.log = top / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def start(self) -> PrivateEngine:
        for tool in ("dockerd", "unshare"):
            if shutil.which(tool) is None:
                unavailable(f"{tool} is missing")
        if os.geteuid() != 0:
            unavailable("a private engine needs root")
        self.top.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "unshare", "--net", "dockerd",
                    "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                    "-H", self.host, "--pidfile", str(self.pidfile),
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.answers():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-2000:]
        unavailable(f"the private engine did not start: {tail}")
        raise AssertionError("unreachable")

    def answers(self) -> bool:
        done = subprocess.run(
            ["docker", "-H", self.host, "info", "--format", "{{.ID}}"],
            capture_output=True,
            timeout=20,
            check=False,
        )
        return done.returncode == 0

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid  # unshare execs dockerd: the same process

    def kill(self) -> None:
        """SIGKILL the engine, as a crash would; its containerd goes too, so that it
        can start again in a fresh network namespace (containers are then stopped)."""
        os.kill(self.pid(), signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)
        self._kill_containerd()

    def _kill_containerd(self) -> None:
        subprocess.run(["pkill", "-9", "-f", str(self.exec_root)], capture_output=True, check=False)
        time.sleep(0.5)
        # The killed containerd may linger as a zombie nobody reaps: its pid file
        # would make the next dockerd wait for it instead of starting a new one.
        with contextlib.suppress(FileNotFoundError):
            (self.exec_root / "containerd" / "containerd.pid").unlink()

    def pause(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def docker(self, *args: str) -> str:
        done = subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # What a killed engine left: its containerd and shims, its mounts.
        subprocess.run(["pkill", "-9", "-f", str(self.exec_root)], capture_output=True, check=False)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if str(self.top) in line.split()[1]
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.top, ignore_errors=True)
