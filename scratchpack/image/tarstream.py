"""Tar archives written as a stream of chunks: layers, build contexts, image archives.

One serializer for every tar scratchpack makes. Members are written header by
header and chunk by chunk, so a generator of chunks can feed gzip, a file, or
an HTTP upload (the engine's build and load) without the archive ever existing
whole on disk or in memory, and without ``TarFile`` keeping every member in a
list. Headers come from :class:`tarfile.TarInfo` (PAX format), so the bytes
are those ``tarfile`` would write.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from scratchpack.errors import InputError, printable
from scratchpack.ld.rootfs import open_regular
from scratchpack.plan.entries import Entry, EntryKind

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20

Opener = Callable[[], contextlib.AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class Member:
    """A tar member: its header, and where its content comes from (regular files only)."""

    info: tarfile.TarInfo
    data: bytes | None = None  # small content held in memory
    source: str | None = None  # a host file read while writing
    opener: Opener | None = None  # any other stream (a blob)


def regular(name: str, size: int, mode: int = 0o644, mtime: int = 0) -> tarfile.TarInfo:
    """A normalised header: root-owned, no user names, a fixed mtime."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def directory(name: str, mode: int = 0o755, mtime: int = 0) -> tarfile.TarInfo:
    info = regular(name, 0, mode, mtime)
    info.type = tarfile.DIRTYPE
    return info


@dataclass(frozen=True)
class FileSpan:
    """A host file's whole content at its place in an archive, ``size`` bytes as planned.

    Left for the consumer to copy: a socket sends it with ``sendfile``, in the
    kernel, with no pass through Python's memory (:func:`pieces`).
    """

    source: str
    size: int


def chunks(members: Iterable[Member]) -> Iterator[bytes]:
    """The archive's bytes: each header, the content, its padding; then the end blocks."""
    for piece in pieces(members):
        if isinstance(piece, FileSpan):
            yield from span_chunks(piece)
        else:
            yield piece


def pieces(members: Iterable[Member]) -> Iterator[bytes | FileSpan]:
    """:func:`chunks`, with each host file's content left as a :class:`FileSpan`."""
    for member in members:
        info = member.info
        yield info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        if not info.isreg() or info.size == 0:
            continue
        if member.data is not None:
            if len(member.data) != info.size:
                raise ValueError(f"{info.name}: {len(member.data)} bytes for a size of {info.size}")
            yield member.data
        elif member.source is not None:
            yield FileSpan(member.source, info.size)
        else:
            yield from _copy(member, info)
        remainder = info.size % BLOCK
        if remainder:
            yield b"\0" * (BLOCK - remainder)
    yield b"\0" * (2 * BLOCK)


def span_chunks(span: FileSpan) -> Iterator[bytes]:
    """A span's bytes, read a megabyte at a time; an error if the file is not its size now."""
    with open_span(span) as stream:
        yield from _sized(stream, span.size, span.source)
        if stream.read(1):
            raise grew_since_planned(span.source)


def _sized(stream: BinaryIO, size: int, where: str) -> Iterator[bytes]:
    """``size`` bytes of ``stream``, a megabyte at a time; an error if it has fewer."""
    remaining = size
    while remaining:
        data = stream.read(min(CHUNK, remaining))
        if not data:
            raise shorter_than_planned(where)
        remaining -= len(data)
        yield data


def open_span(span: FileSpan) -> BinaryIO:
    """The planned file of ``span``, open for reading; one line naming it if it cannot be.

    A regular file only, opened without waiting: a FIFO or a device put in its place
    since it was planned is refused, never waited on. What fails here is the file's,
    never the engine's or the registry's the bytes were going to.
    """
    try:
        return os.fdopen(open_regular(span.source), "rb")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot read {printable(span.source)}: {reason}") from err


def shorter_than_planned(where: str) -> InputError:
    return InputError(f"{printable(where)}: shorter than when it was planned (changed meanwhile?)")


def grew_since_planned(where: str) -> InputError:
    return InputError(f"{printable(where)}: grew while it was written (changed meanwhile?)")


def _copy(member: Member, info: tarfile.TarInfo) -> Iterator[bytes]:
    """A member's content from its opener (a blob), checked to be its size."""
    if member.opener is None:
        raise ValueError(f"{info.name}: a regular file with no content")
    with member.opener() as stream:
        yield from _sized(stream, info.size, info.name)


def size(members: Iterable[Member]) -> int:
    """The exact length :func:`chunks` will produce, from the headers alone."""
    total = 2 * BLOCK
    for member in members:
        info = member.info
        total += len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        if info.isreg():
            total += -(-info.size // BLOCK) * BLOCK
    return total


def write(members: Iterable[Member], sink: BinaryIO) -> int:
    """Write the archive to ``sink``; returns its size."""
    size = 0
    for data in chunks(members):
        sink.write(data)
        size += len(data)
    return size


# -- plan entries as members (the writer's layers and the engine's build context) ----


def entry_info(entry: Entry, epoch: int, prefix: str = "") -> tarfile.TarInfo:
    """A plan entry's tar header, normalised: its mode and owner, no names, one mtime."""
    info = tarfile.TarInfo(prefix + entry.path.lstrip("/"))
    info.mtime = epoch
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.xattrs:
        # PAX SCHILY.xattr records: how Docker, containerd and GNU tar carry them.
        info.pax_headers = {
            f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")
            for name, value in entry.xattrs
        }
    if entry.kind is EntryKind.DIR:
        info.type = tarfile.DIRTYPE
    elif entry.kind is EntryKind.SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target or ""
        info.mode = 0o777
    elif entry.data is not None:
        info.size = len(entry.data)
    else:
        assert entry.source is not None
        info.size = os.stat(entry.source).st_size
    return info


def entry_members(entries: Iterable[Entry], epoch: int, prefix: str = "") -> Iterator[Member]:
    """The tar members of plan entries, in the order given."""
    for entry in entries:
        info = entry_info(entry, epoch, prefix)
        if entry.kind is EntryKind.FILE:
            yield Member(info, data=entry.data, source=entry.source)
        else:
            yield Member(info)
