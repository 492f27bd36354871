"""How a streamed build context fails (issue 26): whose failure each is, and in what words.

The context is made while it is sent, so what goes wrong in the making — a planned file
gone, unreadable, replaced by a FIFO, the records' own error — happens in the middle of
the upload. Each must still be told as what it is (one line, the file named and escaped),
never as the engine's failure, on the local socket and through the SDK (tcp, ssh) alike;
and the SDK's upload goes in large chunks, as the local one does.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from scratchpack.engine.context import Context, context_chunks, context_stream
from scratchpack.engine.direct import DirectAPI
from scratchpack.errors import EngineLost, InputError
from scratchpack.image.tarstream import FileSpan
from scratchpack.plan.entries import Entry, EntryKind, Reason


class _Sink:
    """A TCP server that reads whatever comes until the client closes, and answers nothing."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection, _ = self.server.accept()
        while connection.recv(1 << 16):
            pass
        connection.close()
        self.server.close()


def _sdk_build(monkeypatch: pytest.MonkeyPatch, pieces: Any) -> None:
    """What Engine.build does on the SDK path (tcp/ssh engines), against a local sink."""
    import docker

    from scratchpack.engine.client import _translated

    sink = _Sink()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{sink.port}")
    api = docker.APIClient(base_url=f"tcp://127.0.0.1:{sink.port}", version="1.41")
    with _translated("while building t:1"):
        api.build(fileobj=context_chunks(Context(iter(pieces))), custom_context=True, tag="t:1")


def test_sdk_path_an_unreadable_file_is_named_not_blamed_on_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path says 'cannot read FILE'; the SDK path should too."""
    gone = FileSpan(str(tmp_path / "gone"), 10)
    with pytest.raises(InputError):  # was: EngineLost "lost the Docker engine at tcp://..."
        _sdk_build(monkeypatch, [b"x" * 512, gone])


def test_sdk_path_our_own_errors_and_the_resend_surface_unwrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an OSError: urllib3 and requests let it through as it is (the resend relies on it)."""

    class Resend(Exception):
        pass

    class Failing:
        def __iter__(self) -> Any:
            yield b"x" * 512
            raise Resend("again")

    with pytest.raises(Resend):
        _sdk_build(monkeypatch, Failing())  # type: ignore[arg-type]


def test_sdk_path_context_goes_in_few_large_chunks(tmp_path: Path) -> None:
    """requests sends each piece as its own HTTP chunk (one send, one TLS record): 300
    small files go in a few chunks, not ~900."""
    entries = []
    for number in range(300):
        source = tmp_path / f"f{number}"
        source.write_bytes(b"y" * 100)
        entries.append(
            Entry(f"/usr/lib/f{number}", EntryKind.FILE, 0o644, Reason.LIBRARY, source=str(source))
        )
    chunks = list(context_chunks(context_stream(entries, "FROM scratch\n")))
    assert len(chunks) <= 10, f"{len(chunks)} chunks for {sum(map(len, chunks))} bytes"


def test_cannot_read_escapes_a_hostile_file_name(tmp_path: Path) -> None:
    """A package's path, shown in an error, is escaped (errors.printable), not sent raw."""
    hostile = tmp_path / "x\x1b[2J\nscratchpack: all good"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "engine.sock"))
    server.listen(1)
    with pytest.raises(InputError) as error:
        DirectAPI(str(tmp_path / "engine.sock")).request(
            "POST", "/build", "while testing", body=iter([b"x" * 512, FileSpan(str(hostile), 9)])
        )
    server.close()
    assert "\x1b" not in str(error.value) and "\n" not in str(error.value)


def test_a_fifo_in_place_of_a_planned_file_does_not_block_the_upload(tmp_path: Path) -> None:
    """open() of a FIFO waits for a writer; rootfs.open_regular refuses it without waiting."""
    fifo = tmp_path / "planned"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "engine.sock"))
    server.listen(1)
    outcome: list[BaseException | None] = []

    def upload() -> None:
        try:
            DirectAPI(str(tmp_path / "engine.sock")).request(
                "POST", "/build", "while testing", body=iter([FileSpan(str(fifo), 10)])
            )
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    thread.join(timeout=3)
    blocked = thread.is_alive()
    if blocked:  # unblock it: a writer that closes at once
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=5)
    server.close()
    assert not blocked, "the upload waited on a FIFO's writer"
    assert isinstance(outcome[0], InputError) and not isinstance(outcome[0], EngineLost)


def test_an_oserror_of_the_records_is_not_called_an_unreachable_engine(tmp_path: Path) -> None:
    """The records are made inside the body's generator: what they raise is raised in the
    middle of the upload, where an OSError is otherwise the engine's."""
    from scratchpack.engine.context import context_then
    from scratchpack.errors import EngineError

    def records() -> list[Entry]:
        raise PermissionError(13, "Permission denied", "/var/lib/dpkg/status")

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "engine.sock"))
    server.listen(1)
    context = context_then([], "FROM scratch\n", records)
    with pytest.raises(BaseException) as error:
        DirectAPI(str(tmp_path / "engine.sock")).request(
            "POST", "/build", "while building t:1", body=context.pieces
        )
    server.close()
    assert not isinstance(error.value, EngineError), str(error.value)
