"""A build context sent while its last files are planned (issue 26).

An engine build sends the planned files while the package records are made in a
thread, then the records, then the Dockerfile. What is sent must be exactly the
context of the whole plan; the files go by ``sendfile`` and must still be the size
they were planned at; a context that cannot be finished is never finished (the
engine then builds nothing).
"""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from scratchpack.engine.context import context_chunks, context_stream, context_then
from scratchpack.engine.direct import DirectAPI
from scratchpack.errors import InputError
from scratchpack.image.tarstream import FileSpan
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan


def _file(path: str, source: Path | None = None, data: bytes = b"", uid: int = 0) -> Entry:
    if source is not None:
        return Entry(path, EntryKind.FILE, 0o644, Reason.LIBRARY, source=str(source), uid=uid)
    return Entry(path, EntryKind.FILE, 0o644, Reason.RECORD, data=data, uid=uid)


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [member.name for member in tar]


def _read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        stream = tar.extractfile(name)
        assert stream is not None
        return stream.read()


# -- what the records add to a plan --------------------------------------------------------


def _plan(*entries: Entry) -> RootPlan:
    plan = RootPlan()
    for entry in entries:
        plan.add(entry)
    return plan


@pytest.mark.parametrize(
    ("change", "added"),
    [
        ("nothing", []),
        ("a file beside", ["/var/lib/dpkg/status.d/x"]),
        ("a file replaced", None),  # sent already: the context cannot take it back
        ("a file dropped", None),
    ],
)
def test_what_a_later_stage_adds_is_told_apart_from_what_it_changes(
    change: str, added: list[str] | None
) -> None:
    sent = _plan(_file("/etc/a", data=b"a"))
    later = sent.copy()
    if change == "a file beside":
        later.add_generated("/var/lib/dpkg/status.d/x", b"x", Reason.RECORD)
    elif change == "a file replaced":
        later.add_generated("/etc/a", b"b", Reason.RECORD)
    elif change == "a file dropped":
        del later.entries["/etc/a"]
    found = sent.added_by(later)
    assert (None if found is None else [entry.path for entry in found if not entry.implied]) == (
        added
    )
    assert sent.entries["/etc/a"].data == b"a"  # the copy was added to, not the plan


# -- the context, in the order it is sent ----------------------------------------------------


def test_the_later_entries_follow_the_first_and_the_dockerfile_comes_last(tmp_path: Path) -> None:
    library = tmp_path / "libx.so"
    library.write_bytes(b"\x7fELF" * 1000)
    first = _plan(_file("/usr/lib/libx.so", library), _file("/home/app/conf", data=b"c", uid=7))
    asked: list[int] = []
    pieces: list[bytes | FileSpan] = []

    def records() -> list[Entry]:
        asked.append(len(pieces))
        return [_file("/var/lib/dpkg/status.d/x", data=b"Package: x\n")]

    context = context_then(first.sorted_entries(), "FROM scratch\n", records)
    assert context.size is None  # unknown: sent in chunks
    for piece in context.pieces:
        pieces.append(piece)
    later = next(
        n
        for n, piece in enumerate(pieces)
        if isinstance(piece, bytes) and piece[:10] == b"rootfs/var"
    )
    assert asked == [later]  # asked for once every piece of the first entries was taken
    whole = b"".join(context_chunks(type(context)(pieces)))
    assert _names(whole) == [
        "rootfs/home",
        "rootfs/home/app",
        "rootfs/usr",
        "rootfs/usr/lib",
        "rootfs/usr/lib/libx.so",
        "owned/0/conf",
        "rootfs/var/lib/dpkg/status.d/x",
        "Dockerfile",
    ]
    assert _read(whole, "rootfs/usr/lib/libx.so") == library.read_bytes()
    assert _read(whole, "Dockerfile") == b"FROM scratch\n"


def test_later_entries_owned_by_someone_are_refused() -> None:
    """The Dockerfile, made before them, copies the owned trees of the first entries only."""
    context = context_then([], "FROM scratch\n", lambda: [_file("/home/x", data=b"", uid=7)])
    with pytest.raises(ValueError, match="root's"):
        list(context.pieces)


# -- sent by sendfile, over a socket ---------------------------------------------------------


class _Receiver:
    """A one-request server on a unix socket: what arrived, and whether the body ended."""

    def __init__(self, path: Path) -> None:
        self.received = bytearray()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection, _ = self.server.accept()
        while not self._complete():
            data = connection.recv(1 << 16)
            if not data:
                break
            self.received.extend(data)
        if self._complete():
            connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        connection.close()
        self.server.close()

    def _complete(self) -> bool:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        if b"Content-Length: " in head:
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            return len(body) >= length
        return body.endswith(b"0\r\n\r\n")

    def body(self) -> tuple[bytes, bytes | None]:
        """The head, and the body decoded from its chunks (None if they never ended)."""
        self.thread.join(timeout=10)
        head, _, raw = bytes(self.received).partition(b"\r\n\r\n")
        if b"Transfer-Encoding: chunked" not in head:
            return head, raw
        decoded = bytearray()
        while raw:
            size_line, _, raw = raw.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                return head, bytes(decoded) if raw == b"\r\n" else None
            if len(raw) < size + 2:
                return head, None  # cut in the middle of a chunk
            decoded += raw[:size]
            assert raw[size : size + 2] == b"\r\n", "a chunk ends where its size says"
            raw = raw[size + 2 :]
        return head, None


def _entries(tmp_path: Path) -> list[Entry]:
    sources = []
    for number, size in enumerate((0, 1, 511, 512, 3 << 20)):
        source = tmp_path / f"f{number}"
        source.write_bytes(bytes([number + 1]) * size)
        sources.append(_file(f"/usr/lib/f{number}", source))
    return [*sources, _file("/etc/inline", data=b"in memory")]


@pytest.mark.parametrize("sized", [True, False])
def test_a_context_sent_by_sendfile_is_the_context_byte_for_byte(
    tmp_path: Path, sized: bool
) -> None:
    entries = _entries(tmp_path)
    receiver = _Receiver(tmp_path / "engine.sock")
    if sized:
        context = context_stream(entries, "FROM scratch\n")
    else:
        context = context_then(entries[:3], "FROM scratch\n", lambda: entries[3:])
    headers = {"Content-Length": str(context.size)} if context.size is not None else {}
    status, answer = DirectAPI(str(tmp_path / "engine.sock")).request(
        "POST", "/build", "while testing", body=context.pieces, headers=headers
    )
    assert status == 204 and b"".join(answer) == b""
    head, body = receiver.body()
    assert (b"Transfer-Encoding: chunked" in head) is not sized
    assert body is not None
    if sized:
        expected = context_stream(entries, "FROM scratch\n")
    else:
        expected = context_then(entries[:3], "FROM scratch\n", lambda: entries[3:])
    assert body == b"".join(context_chunks(expected))  # each entry once, in order
    for number, size in enumerate((0, 1, 511, 512, 3 << 20)):
        assert _read(body, f"rootfs/usr/lib/f{number}") == bytes([number + 1]) * size
    assert _read(body, "rootfs/etc/inline") == b"in memory"


@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_a_file_that_changed_since_it_was_planned_ends_the_context_unfinished(
    tmp_path: Path, change: str
) -> None:
    """The engine gets a body that never ends, and builds nothing; the user one line."""
    entries = _entries(tmp_path)
    receiver = _Receiver(tmp_path / "engine.sock")
    context = context_then(entries, "FROM scratch\n", list)
    changed = tmp_path / "f4"
    pieces = iter(context.pieces)

    def changing() -> object:
        for piece in pieces:
            if piece == FileSpan(str(changed), 3 << 20):  # planned at 3 MiB, now not
                changed.write_bytes(b"x" * ((1 << 20) if change == "shorter" else (4 << 20)))
            yield piece

    with pytest.raises(InputError, match=r"shorter than when|grew while") as error:
        DirectAPI(str(tmp_path / "engine.sock")).request(
            "POST", "/build", "while testing", body=changing()
        )
    assert str(changed) in str(error.value) and "\n" not in str(error.value)
    _, body = receiver.body()
    assert body is None  # no last chunk: the engine's read of the context fails


def test_an_unreadable_file_is_named_not_blamed_on_the_engine(tmp_path: Path) -> None:
    receiver = _Receiver(tmp_path / "engine.sock")
    gone = FileSpan(str(tmp_path / "gone"), 10)
    with pytest.raises(InputError, match=f"cannot read {tmp_path}/gone"):
        DirectAPI(str(tmp_path / "engine.sock")).request(
            "POST", "/build", "while testing", body=iter([b"x" * 512, gone])
        )
    assert receiver.body()[1] is None
