"""An engine image applied as ``docker save`` streams it: no copy of the export on disk.

``shrink`` of an engine image used to save the whole export (every layer, as
large as the image) into the work directory and then read it back. The
export is a tar whose members come in lexical order, so most of it can be
applied as it arrives:

- Docker's own format: one directory per layer, named by a v1 ID, holding
  ``json`` (which names the parent's v1 ID) before ``layer.tar``; the config
  ``<image id>.json`` among them; ``manifest.json`` last.
- The OCI format of newer engines: ``blobs/sha256/<digest>``, where an
  uncompressed layer's digest is its diff_id.

A layer that comes next in the image's order (its parent was the last one
applied, or its digest is the next diff_id) goes straight from the stream
into the root; any other is spooled into the work directory until its turn.
Every layer is hashed as it passes and must equal the diff_id the engine
listed for its place, and the config must hash to the image ID. A stream this
cannot apply in one pass (a layer stored twice as a link, compressed blobs)
raises :class:`NotStreamable`, and the caller reads the image saved instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from scratchpack.errors import InputError
from scratchpack.image.digest import Digest, HashingReader, HashingWriter
from scratchpack.image.documents import MAX_DOCUMENT, parse_json
from scratchpack.image.media import MediaType
from scratchpack.image.model import Descriptor, Image, Layer
from scratchpack.image.readers import ImageSaver, SourceFormat, SourceImage, open_image
from scratchpack.image.tarread import ForwardReader, check_ended
from scratchpack.image.unpack import UnpackReport, unpack, unpack_tars
from scratchpack.inroot import components

_CHUNK = 1 << 20
_MAX_V1_JSON = 1 << 20  # a layer's v1 json: a few hundred bytes


class NotStreamable(Exception):
    """The export is not in a form this reader applies in one pass; read it saved."""


@dataclass(frozen=True)
class StreamedImage:
    """What the stream gave: the config (checked against the image ID) and the layers' sizes."""

    config_bytes: bytes
    layer_sizes: tuple[int, ...]  # bytes of each layer's tar, in the image's order
    report: UnpackReport


def unpack_saved_stream(
    stream: BinaryIO,
    image_id: str,
    diff_ids: tuple[str, ...],
    destination: Path,
    spool: Path,
    where: str,
    progress: Callable[[int], None] | None = None,
    max_bytes: int | None = None,
    lazy: Path | None = None,
) -> StreamedImage:
    """Apply the ``docker save`` archive read from ``stream`` into ``destination``.

    ``image_id`` and ``diff_ids`` are what the engine says of the image (its
    inspect), against which the stream is checked. Out-of-order layers go to
    files in ``spool``, which must exist. :class:`NotStreamable` leaves
    ``destination`` half-written: empty it before reading the image another way.
    ``lazy``: as for :func:`~scratchpack.image.unpack.unpack`.
    """
    if len(set(diff_ids)) != len(diff_ids):
        raise NotStreamable("a layer occurs twice in the image")
    reader = _SavedStream(image_id, diff_ids, spool, where, progress)
    report = unpack_tars(reader.layers(stream), destination, max_bytes, lazy=lazy)
    assert reader.config is not None  # layers() ends with both or raises
    return StreamedImage(reader.config, tuple(reader.sizes), report)


class _SavedStream:
    """Walks the export once, yielding each layer as a tar when its turn comes."""

    def __init__(
        self,
        image_id: str,
        diff_ids: tuple[str, ...],
        spool: Path,
        where: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.image_id = Digest.parse(image_id, f"{where}: its image ID")
        self.diff_ids = diff_ids
        self.spool = spool
        self.where = where
        self.progress = progress
        self.parents: dict[str, str | None] = {}  # v1 ID -> its parent's, from <id>/json
        self.spooled: dict[str, tuple[Path, str, int]] = {}  # key -> (file, digest, size)
        self.last: str | None = None  # key of the layer applied last
        self.sizes: list[int] = []
        self.config: bytes | None = None

    @property
    def applied(self) -> int:
        return len(self.sizes)

    def layer_where(self) -> str:
        return f"{self.where}: layer {self.applied + 1}/{len(self.diff_ids)}"

    def layers(
        self, stream: BinaryIO
    ) -> Iterator[tuple[str, contextlib.AbstractContextManager[tarfile.TarFile]]]:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as outer:
                for member in outer:
                    yield from self._member(outer, member)
        except tarfile.TarError as err:
            raise InputError(f"{self.where}: the export is not a readable tar: {err}") from err
        if self.applied != len(self.diff_ids) or self.config is None:
            missing = "its config" if self.config is None else "some of its layers"
            raise NotStreamable(f"the export did not hold {missing} in a form read in one pass")

    def _member(
        self, outer: tarfile.TarFile, member: tarfile.TarInfo
    ) -> Iterator[tuple[str, contextlib.AbstractContextManager[tarfile.TarFile]]]:
        parts = components(member.name)
        key: str | None = None
        if len(parts) == 2 and parts[1] == "json" and member.isreg():
            self.parents[parts[0]] = self._parent(outer, member)
        elif len(parts) == 2 and parts[1] == "layer.tar":
            key = parts[0]
        elif len(parts) == 3 and parts[0] == "blobs":
            digest = f"{parts[1]}:{parts[2]}"
            if digest == str(self.image_id):
                self._take_config(outer, member)
            elif digest in self.diff_ids:
                key = digest
        elif len(parts) == 1 and parts[0] == f"{self.image_id.hex}.json":
            self._take_config(outer, member)
        if key is None:
            return
        if not member.isreg():
            raise NotStreamable(f"{member.name} is not stored as a file")
        if self._is_next(key):
            yield self.layer_where(), self._from_stream(outer, member, key)
            yield from self._ready()
        else:
            self._spool(outer, member, key)

    def _is_next(self, key: str) -> bool:
        if self.applied >= len(self.diff_ids):
            return False
        if key.startswith(("sha256:", "sha512:")):
            return key == self.diff_ids[self.applied]
        if key not in self.parents:
            return False
        return self.parents[key] == self.last and (self.last is not None or self.applied == 0)

    def _ready(self) -> Iterator[tuple[str, contextlib.AbstractContextManager[tarfile.TarFile]]]:
        """The spooled layers whose turn has come, in order."""
        while True:
            key = next((k for k in self.spooled if self._is_next(k)), None)
            if key is None:
                return
            yield self.layer_where(), self._from_spool(key)

    def _parent(self, outer: tarfile.TarFile, member: tarfile.TarInfo) -> str | None:
        data = self._small(outer, member, _MAX_V1_JSON)
        document = parse_json(data, f"{self.where}: {member.name}")
        parent = document.get("parent") if isinstance(document, dict) else None
        return parent if isinstance(parent, str) and parent else None

    def _take_config(self, outer: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        data = self._small(outer, member, MAX_DOCUMENT)
        hasher = self.image_id.hasher()
        hasher.update(data)
        if hasher.hexdigest() != self.image_id.hex:
            raise InputError(f"{self.where}: its config does not match its ID {self.image_id}")
        self.config = data

    def _small(self, outer: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
        if not member.isreg() or member.size > limit:
            raise InputError(f"{self.where}: {member.name} is too large to be image metadata")
        source = outer.extractfile(member)
        return source.read() if source is not None else b""

    def _check(self, key: str, digest: str, size: int, where: str) -> None:
        expected = self.diff_ids[self.applied]
        if digest != expected:
            raise InputError(f"{where} does not match its diff_id {expected}: a corrupt layer")
        self.sizes.append(size)
        self.last = key

    @contextlib.contextmanager
    def _from_stream(
        self, outer: tarfile.TarFile, member: tarfile.TarInfo, key: str
    ) -> Iterator[tarfile.TarFile]:
        where = self.layer_where()
        algorithm = Digest.parse(self.diff_ids[self.applied], where).algorithm
        source = outer.extractfile(member)
        assert source is not None  # a regular file
        hashing = HashingReader(source, algorithm, self.progress)  # type: ignore[arg-type]
        forward = ForwardReader(hashing)
        try:
            with tarfile.open(fileobj=forward, mode="r:") as tar:  # type: ignore[call-overload]
                yield tar
            check_ended(forward)
            forward.detach()  # what it read ahead is hashed; the rest is read here
            digest = hashing.drain()  # the end-of-archive blocks and any padding count too
        except tarfile.TarError as err:
            raise InputError(f"{where} is not a readable tar: {err}") from err
        self._check(key, digest, hashing.size, where)

    def _spool(self, outer: tarfile.TarFile, member: tarfile.TarInfo, key: str) -> None:
        """Keep a layer that came before its turn, hashed as it is written."""
        algorithm = "sha512" if key.startswith("sha512:") else "sha256"
        path = self.spool / f"layer-{len(self.spooled) + len(self.sizes)}.tar"
        source = outer.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(path, flags, 0o600), "wb") as out:
            writer = HashingWriter(out, algorithm)  # type: ignore[arg-type]
            while chunk := source.read(_CHUNK):
                writer.write(chunk)
                if self.progress is not None:
                    self.progress(len(chunk))
        self.spooled[key] = (path, writer.digest, writer.size)

    @contextlib.contextmanager
    def _from_spool(self, key: str) -> Iterator[tarfile.TarFile]:
        path, digest, size = self.spooled.pop(key)
        where = self.layer_where()
        self._check(key, digest, size, where)  # hashed when spooled: the file is ours since
        try:
            with open(path, "rb") as stored, tarfile.open(fileobj=stored, mode="r:") as tar:
                yield tar
        except tarfile.TarError as err:
            raise InputError(f"{where} is not a readable tar: {err}") from err
        finally:
            path.unlink(missing_ok=True)


# -- what shrink reads ---------------------------------------------------------------------


class Progress(Protocol):
    total: int
    done_bytes: int

    def advance(self, count: int) -> None: ...


class ImageStreamer(ImageSaver, Protocol):
    """What an engine offers: an image's inspect, and its export as a stream."""

    def image(self, reference: str) -> Any: ...  # with .id, .tags, .size, .diff_ids

    def saved_stream(self, image_id: str) -> contextlib.AbstractContextManager[BinaryIO]: ...


@dataclass(frozen=True)
class _Streamed:
    """The blob of a layer that was applied as it streamed: its bytes were not kept."""

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        raise RuntimeError("a streamed layer's bytes were not kept: read the image saved")
        yield  # pragma: no cover - a generator, for contextmanager


def open_and_unpack(
    reference: str,
    workdir: Path,
    destination: Path,
    engine: ImageStreamer | None,
    progress: Progress | None = None,
    max_bytes: int | None = None,
    lazy: bool = False,
) -> tuple[SourceImage, UnpackReport]:
    """The image ``reference`` names, read and its layers applied into ``destination``.

    An engine image streams into the root (:func:`unpack_saved_stream`), its
    layers never kept; a file, or an export that cannot stream, is read in
    place as :func:`~scratchpack.image.readers.open_image` reads it. With
    ``lazy`` regular files wait in ``workdir`` (:mod:`scratchpack.lazyroot`)
    until a RootFS of ``LazyRoot(destination, report.lazy)`` looks them up.
    """
    contents = workdir / "contents" if lazy else None
    if contents is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    advance = progress.advance if progress is not None else None
    if engine is not None and not os.path.lexists(Path(reference).expanduser()):
        info = engine.image(reference)  # a clear error for a missing image: nothing pulls
        if progress is not None:
            progress.total = int(info.size)
        spool = workdir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        try:
            with engine.saved_stream(info.id) as stream:
                streamed = unpack_saved_stream(
                    stream,
                    info.id,
                    tuple(info.diff_ids),
                    destination,
                    spool,
                    reference,
                    advance,
                    max_bytes,
                    contents,
                )
        except NotStreamable:
            shutil.rmtree(destination)
            destination.mkdir()
            if progress is not None:
                progress.done_bytes = 0  # read again from the start
        else:
            layers = tuple(
                Layer(Descriptor(MediaType.OCI_LAYER, diff_id, size), diff_id, _Streamed())
                for diff_id, size in zip(info.diff_ids, streamed.layer_sizes, strict=True)
            )
            image = Image(streamed.config_bytes, layers, where=reference)
            image.config  # noqa: B018 - parse and check it now, naming the image
            names = tuple(info.tags)
            return SourceImage(reference, SourceFormat.ENGINE, image, names), streamed.report
    source = open_image(reference, workdir, engine)
    if progress is not None:
        progress.total = source.layers_size
    return source, unpack(source.image, destination, reference, advance, max_bytes, contents)
