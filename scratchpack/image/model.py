"""One image model for every reader and writer, in the spirit of go-containerregistry's v1.

An :class:`Image` is its config bytes and its :class:`Layer` s; its manifest is
derived from them. A layer knows its descriptor (the blob as stored), its
``diff_id`` (the uncompressed tar) and where its bytes are (a :class:`Blob`):
a file of a blob store or layout, or a member of an archive. Readers return
images; writers (OCI layout, archive, engine load, registry push) take them
and stream each blob from where it is, so no blob is hashed twice or held
whole in memory.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import zstandard as zstd

from scratchpack.errors import InputError
from scratchpack.image.config import ConfigFile
from scratchpack.image.digest import Digest, HashingReader, sha256_digest
from scratchpack.image.documents import canonical_json
from scratchpack.image.media import Compression, MediaType, Platform
from scratchpack.image.tarread import ForwardReader, check_ended

_CHUNK = 1 << 20
# A zstd frame names the window its decoder must hold: 128 MiB at most (zstd's own
# default limit, what `zstd --ultra -22` and `--long` write), never the 2 GiB allowed.
MAX_ZSTD_WINDOW = 1 << 27
# Compressed bytes per decoder step: a zstd block (3-byte header, 1 byte of RLE) may
# expand 32768-fold, so a step makes at most 32 MiB however hostile the stream.
_ZSTD_STEP = 1 << 10


@dataclass(frozen=True)
class Descriptor:
    """What a manifest or index says of a blob: its media type, digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {
            "mediaType": str(self.media_type),
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        if self.platform is not None:
            document["platform"] = self.platform.to_json()
        return document


class Blob(Protocol):
    """Where a blob's bytes are; opened as often as a writer needs them."""

    def open(self) -> contextlib.AbstractContextManager[BinaryIO]: ...


@dataclass(frozen=True)
class FileBlob:
    """A blob that is a file of its own (a blob store, an OCI layout directory)."""

    path: Path

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        # O_NOFOLLOW: a blob name that is a symlink in someone's layout is not followed.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags)
        except OSError as err:
            raise InputError(f"{self.path}: cannot open the blob ({err.strerror})") from err
        with os.fdopen(fd, "rb") as stream:
            if not _is_regular(stream):
                raise InputError(f"{self.path}: the blob is not a regular file")
            os.set_blocking(fd, True)
            yield stream  # type: ignore[misc]


@dataclass(frozen=True)
class MemberBlob:
    """A blob stored inside an uncompressed tar archive, at ``offset`` for ``size`` bytes."""

    archive: Path
    offset: int
    size: int

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        with open(self.archive, "rb") as stream:
            yield _Window(stream, self.offset, self.size)  # type: ignore[misc]


@dataclass(frozen=True)
class BytesBlob:
    """A small blob held in memory (configs, manifests, generated test layers)."""

    data: bytes

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        import io

        yield io.BytesIO(self.data)


@dataclass(frozen=True)
class Layer:
    """One layer: its blob as stored, and the digest of its uncompressed tar."""

    descriptor: Descriptor
    diff_id: str
    blob: Blob = field(compare=False)
    uncompressed_size: int | None = None  # known when scratchpack wrote it
    # True when scratchpack computed the digest from these very bytes (it wrote or
    # copied them): writers then stream the blob without hashing it again.
    hashed: bool = False

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @contextlib.contextmanager
    def open_plain(self, where: str) -> Iterator[IO[bytes]]:
        """The layer's tar bytes, decompressed (bounded as :meth:`open_tar`'s), unchecked:
        for a reader that checks the diff_id itself (the engine, given a plain layer)."""
        with self.blob.open() as stored:
            head = stored.read(6)
            try:
                with _decompressed(_Prefixed(head, stored), Compression.sniff(head)) as plain:
                    yield plain  # type: ignore[misc]
            except (EOFError, lzma.LZMAError, OSError, zlib.error) as err:
                raise InputError(f"{where} cannot be decompressed: {err}") from err

    def plain_size(self, where: str) -> int:
        """Bytes of the layer's tar: known when scratchpack wrote it, else counted."""
        if self.uncompressed_size is not None:
            return self.uncompressed_size
        with self.open_plain(where) as plain:
            return sum(len(chunk) for chunk in iter(lambda: plain.read(_CHUNK), b""))

    @contextlib.contextmanager
    def open_tar(
        self, where: str, progress: Callable[[int], None] | None = None, verify: bool = True
    ) -> Iterator[tarfile.TarFile]:
        """The layer as a streaming tar, decompressed; digests checked once it is read.

        The blob's digest and the diff_id are computed while the tar is read and
        compared at its end (the rest of the blob is drained first), so a layer
        that does not match its descriptor or its config fails, whatever the
        algorithm (sha256 or sha512) the document chose.
        """
        blob_digest = Digest.parse(self.digest, f"{where}: its digest")
        diff_id = Digest.parse(self.diff_id, f"{where}: its diff_id")
        with self.blob.open() as stored:
            head = stored.read(6)
            raw = HashingReader(
                _Prefixed(head, stored), blob_digest.algorithm, progress, limit=self.size
            )
            compression = Compression.sniff(head)
            try:
                with _decompressed(raw, compression) as plain_stream:
                    plain = HashingReader(plain_stream, diff_id.algorithm)  # type: ignore[arg-type]
                    forward = ForwardReader(plain)
                    with tarfile.open(fileobj=forward, mode="r:") as tar:  # type: ignore[call-overload]
                        yield tar
                    check_ended(forward)
                    forward.detach()  # what it read ahead is hashed; the rest is read here
                    got_diff_id = plain.drain()
                    got_digest = raw.drain()
            except (
                tarfile.TarError, EOFError, lzma.LZMAError, OSError, zlib.error, zstd.ZstdError
            ) as err:  # fmt: skip
                raise InputError(
                    f"{where} is not a readable tar ({self.descriptor.media_type}): {err}"
                ) from err
        if not verify:
            return
        if got_digest != str(blob_digest) or raw.size != self.size:
            raise InputError(f"{where} does not match its digest {self.digest}: a corrupt blob")
        if got_diff_id != str(diff_id):
            raise InputError(f"{where} does not match its diff_id {self.diff_id}: a corrupt layer")


@dataclass(frozen=True)
class Image:
    """An image: config bytes and layers. The manifest is derived, canonically."""

    config_bytes: bytes
    layers: tuple[Layer, ...]
    manifest_media_type: MediaType = MediaType.OCI_MANIFEST
    where: str = field(default="the image", compare=False)  # what errors call it

    @cached_property
    def config(self) -> ConfigFile:
        return ConfigFile.parse(self.config_bytes, self.where)

    @property
    def image_id(self) -> str:
        """Docker's image ID: the digest of the config bytes."""
        return self.config_descriptor.digest

    @cached_property
    def config_descriptor(self) -> Descriptor:
        media = (
            MediaType.DOCKER_CONFIG
            if self.manifest_media_type is MediaType.DOCKER_MANIFEST
            else MediaType.OCI_CONFIG
        )
        return Descriptor(media, sha256_digest(self.config_bytes), len(self.config_bytes))

    @cached_property
    def manifest_bytes(self) -> bytes:
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": str(self.manifest_media_type),
                "config": self.config_descriptor.to_json(),
                "layers": [layer.descriptor.to_json() for layer in self.layers],
            }
        )

    @cached_property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor(
            self.manifest_media_type, sha256_digest(self.manifest_bytes), len(self.manifest_bytes)
        )

    @property
    def platform(self) -> Platform:
        return self.config.platform

    @property
    def size(self) -> int:
        """Bytes of the layers uncompressed, where known; else as stored."""
        return sum(
            layer.uncompressed_size if layer.uncompressed_size is not None else layer.size
            for layer in self.layers
        )


@dataclass(frozen=True)
class ImageIndex:
    """Several images of one name, one per platform: an OCI image index over their manifests.

    Like :class:`Image`, the document is derived canonically, so the same images
    give the same index digest.
    """

    images: tuple[Image, ...]

    @cached_property
    def index_bytes(self) -> bytes:
        manifests = []
        for image in self.images:
            entry = image.manifest_descriptor.to_json()
            entry["platform"] = image.platform.to_json()
            manifests.append(entry)
        return canonical_json(
            {"schemaVersion": 2, "mediaType": str(MediaType.OCI_INDEX), "manifests": manifests}
        )

    @cached_property
    def descriptor(self) -> Descriptor:
        return Descriptor(
            MediaType.OCI_INDEX, sha256_digest(self.index_bytes), len(self.index_bytes)
        )

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return sum(image.size for image in self.images)


# -- helpers --------------------------------------------------------------------------------


def _is_regular(stream: IO[bytes]) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)


class _Window:
    """``size`` bytes of ``stream`` from ``offset``: a tar member read in place."""

    def __init__(self, stream: IO[bytes], offset: int, size: int) -> None:
        self.stream = stream
        self.offset = offset
        self.remaining = size
        stream.seek(offset)

    def read(self, count: int = -1) -> bytes:
        if count < 0 or count > self.remaining:
            count = self.remaining
        data = self.stream.read(count)
        self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:  # an upload body's Content-Length (requests asks len())
        return self.remaining


class _Prefixed:
    """A stream whose first bytes were already read (to sniff the compression)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def read(self, count: int = -1) -> bytes:
        if self.head:
            if count < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:count], self.head[count:]
            if len(data) < count:
                data += self.rest.read(count - len(data))
            return data
        return self.rest.read(count)


@contextlib.contextmanager
def _decompressed(raw: IO[bytes], compression: Compression) -> Iterator[IO[bytes]]:
    if compression is Compression.GZIP:
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream
    elif compression is Compression.BZIP2:
        with bz2.BZ2File(raw) as stream:
            yield stream
    elif compression is Compression.XZ:
        with lzma.LZMAFile(raw) as stream:
            yield stream
    elif compression is Compression.ZSTD:
        yield _ZstdReader(raw)  # type: ignore[misc]
    else:
        yield raw


class _ZstdReader:
    """A zstd stream's frames decompressed in bounded steps; a truncated frame is an error.

    python-zstandard's ``stream_reader`` bounds its output but ends quietly inside a
    cut frame; a decompression object says where a frame ends, and fed at most
    :data:`_ZSTD_STEP` bytes at a time its output stays bounded too. Skippable
    frames (``zstd:chunked``'s table of contents) are frames that decompress to nothing.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.decoder = zstd.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
        self.frame = self.decoder.decompressobj()
        self.in_frame = False  # bytes of the current frame were fed, its end not seen
        self.chunk = b""  # compressed bytes read; those before ``fed`` were decompressed
        self.fed = 0
        self.out = b""
        self.position = 0  # of self.out, already returned
        self.ended = False

    def read(self, count: int = -1) -> bytes:
        if count < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        while self.position == len(self.out) and not self.ended:
            self.out, self.position = self._step(), 0
        data = self.out[self.position : self.position + count]
        self.position += len(data)
        return data

    def readable(self) -> bool:
        return True

    def _step(self) -> bytes:
        if self.fed == len(self.chunk):
            self.chunk, self.fed = self.raw.read(_CHUNK), 0
            if not self.chunk:
                self.ended = True
                if self.in_frame:
                    raise EOFError("the zstd stream ends inside a frame (a truncated blob)")
                return b""
        piece = self.chunk[self.fed : self.fed + _ZSTD_STEP]
        self.fed += len(piece)
        try:
            data = self.frame.decompress(piece)
        except zstd.ZstdError as err:
            raise zstd.ZstdError(_zstd_reason(err)) from None
        self.in_frame = True
        if self.frame.eof:  # the frame ended in this piece: its rest starts the next one
            self.fed -= len(self.frame.unused_data)
            self.frame = self.decoder.decompressobj()
            self.in_frame = False
        return data


def _zstd_reason(err: Exception) -> str:
    text = str(err)
    if "too much memory" in text:
        return f"a zstd frame asks for a window over {MAX_ZSTD_WINDOW >> 20} MiB: refused ({text})"
    return text
