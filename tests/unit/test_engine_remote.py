"""DOCKER_HOST read as the docker CLI reads it: ssh:// and tcp:// with TLS, and what they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchpack.engine.client import Engine, _check_mounts, where
from scratchpack.engine.remote import (
    EngineAddress,
    Scheme,
    SshRelay,
    engine_address,
    remote_refusal,
    ssh_command,
    tls_config,
)
from scratchpack.errors import EngineError, EngineUnreachable, InputError


def test_addresses_as_the_cli_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert engine_address() == EngineAddress(Scheme.UNIX, "/var/run/docker.sock")
    assert not engine_address().remote
    assert engine_address("ssh://me@builder") == EngineAddress(Scheme.SSH, "builder", None, "me")
    assert engine_address("ssh://builder:2222").port == 2222
    assert engine_address("ssh://[fd00::1]:22").host == "[fd00::1]"
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    assert engine_address("tcp://10.0.0.5") == EngineAddress(Scheme.TCP, "10.0.0.5", 2376)
    monkeypatch.delenv("DOCKER_TLS_VERIFY")
    assert engine_address("tcp://10.0.0.5").port == 2375
    assert engine_address("tcp://h:2376").remote


@pytest.mark.parametrize(
    "value",
    [
        "ssh://-oProxyCommand=touch%20x",  # an ssh option where the host goes
        "ssh://-oProxyCommand=x@host",
        "ssh://a b@host",
        "ssh://host:notaport",
        "ssh://",
        "npipe:////./pipe/docker_engine",
        "tcp://me@host:2376",
        "builder:2376",
    ],
)
def test_addresses_that_are_refused(value: str) -> None:
    with pytest.raises(InputError, match="DOCKER_HOST"):
        engine_address(value)


def test_a_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError) as refused:
        engine_address("ssh://me:hunter2@builder")
    assert "hunter2" not in str(refused.value) and "holds a password" in str(refused.value)
    monkeypatch.setenv("DOCKER_HOST", "ssh://me:hunter2@builder")
    assert "hunter2" not in where()
    monkeypatch.setenv("DOCKER_HOST", "ssh://me@builder:2222")
    assert where() == "ssh://me@builder:2222"


def test_ssh_runs_dial_stdio_never_prompting() -> None:
    argv = ssh_command(EngineAddress(Scheme.SSH, "builder", 2222, "me"), Path("/t/control"))
    assert argv[0] == "ssh" and "BatchMode=yes" in argv
    assert argv[argv.index("-l") + 1] == "me" and argv[argv.index("-p") + 1] == "2222"
    assert "ControlPath=/t/control" in argv
    assert argv[-5:] == ["--", "builder", "docker", "system", "dial-stdio"]


def test_tls_as_the_cli_chooses_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    address = EngineAddress(Scheme.TCP, "builder", 2376)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    assert tls_config(address) is None  # the cert path alone turns nothing on (nor off)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    with pytest.raises(EngineUnreachable, match=f"DOCKER_CERT_PATH {tmp_path} has no ca.pem"):
        tls_config(address)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config = tls_config(address)
    assert config.verify is True and config.ca_cert == str(tmp_path / "ca.pem")
    assert config.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


def test_what_needs_this_machine_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/docker.sock")
    assert remote_refusal("x") is None
    _check_mounts({"volumes": {"/usr/lib/strace": {"bind": "/t", "mode": "ro"}}})
    monkeypatch.setenv("DOCKER_HOST", "ssh://me@builder")
    refusal = remote_refusal("the probe reaches 127.0.0.1")
    assert refusal is not None and "ssh://me@builder" in refusal
    with pytest.raises(EngineError, match="mounts /usr/lib/strace from this machine"):
        _check_mounts({"volumes": {"/usr/lib/strace": {"bind": "/t", "mode": "ro"}}})
    _check_mounts({"volumes": {"named-volume": {"bind": "/data"}}})  # the engine's own


def test_without_ssh_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://me@builder.invalid")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnreachable) as refused:
        Engine.connect()
    assert str(refused.value) == (
        "cannot reach a Docker engine at ssh://me@builder.invalid (no ssh on PATH: "
        "ssh:// runs the system's ssh, e.g. apt-get install openssh-client)"
    )


def test_the_relay_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho 'ssh: no route to host' >&2\nexit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    relay = SshRelay(EngineAddress(Scheme.SSH, "builder"))
    import socket

    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(relay.path))
        assert client.recv(10) == b""  # ssh ended: the connection closes
    assert relay.last_words() == "ssh: no route to host"
    relay.close()
    assert not relay.directory.exists()
    assert relay.janitor.poll() is not None
    assert all(process.poll() is not None for process in relay.processes)
