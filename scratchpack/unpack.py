"""Read an existing image and unpack its flattened filesystem safely.

``shrink`` and ``debug`` start from an image someone else built: in the local
engine, or in a file (a ``docker save`` archive, an OCI layout directory, an
OCI archive, or the OCI + ``manifest.json`` hybrid our writer and Docker 25
produce). :func:`open_image` finds its config and layers without unpacking
anything; :func:`unpack` applies the layers in order into an empty directory.

The layers are untrusted input, so unpacking never lets an entry reach the
host: names are normalised lexically (a ``..`` that climbs above the root is
refused), and every parent directory is resolved *inside* the root the way a
chrooted process would see it (a symlink ``evil -> /etc`` leads to
``ROOT/etc``), which is also how umoci and Docker's chrooted unpacker behave.
The final component is never followed: what is there is replaced. Devices,
fifos and sockets are skipped; ownership is recorded, not applied, so the same
code works without privileges. Blob and ``diff_id`` digests are checked while
streaming, so a corrupt archive fails instead of giving a silently wrong root.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from scratchpack.errors import InputError

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_INDEXES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
_MANIFESTS = {MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST}
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})$")
_CHUNK = 1 << 20
_MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)
_MAX_JSON = 64 << 20  # an index, manifest or config larger than this is not one
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MACHINE_TO_OCI = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


@dataclass(frozen=True)
class LayerRef:
    """Where one layer blob is: a file of its own, or a member of an image archive."""

    index: int  # 1-based, in application order
    media_type: str  # as declared (docker archives declare none: the plain-tar type)
    size: int  # bytes as stored (compressed if compressed)
    file: Path  # the blob, or the archive holding it
    member: str | None = None  # member name inside ``file`` when it is an archive
    digest: str | None = None  # the blob's digest when the format records one (OCI)
    diff_id: str | None = None  # the config's digest of the uncompressed tar


@dataclass(frozen=True)
class ImageSource:
    reference: str  # as the user gave it
    digest: str  # the image ID: the config's digest
    config: dict[str, Any]  # the image config JSON
    layers: list[LayerRef]
    format: str  # "docker-archive" | "oci-layout" | "oci-archive" | "engine"
    names: tuple[str, ...] = ()  # tags the source records (RepoTags, ref.name annotations)

    @property
    def layers_size(self) -> int:
        """Bytes :func:`unpack` reports through ``progress`` in total."""
        return sum(layer.size for layer in self.layers)


@dataclass
class UnpackReport:
    """What landed in the root. Keys are in-root absolute paths, symlinks in parents resolved."""

    files: int = 0  # regular files in the final tree (each hard link counted)
    dirs: int = 0  # directories in the final tree, the root excluded
    symlinks: int = 0
    hardlinks: int = 0  # hard-link entries created
    skipped_devices: int = 0  # character/block devices and fifos, never created
    whiteouts_applied: int = 0  # ``.wh.NAME`` and opaque-directory entries honoured
    bytes: int = 0  # size of the distinct regular files (inodes) in the final tree
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)  # (uid, gid) from the tar
    modes: dict[str, int] = field(default_factory=dict)  # permission bits from the tar
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # e.g. security.capability
    warnings: list[str] = field(default_factory=list)  # refused or unresolvable entries


# --------------------------------------------------------------------------- open


def open_image(reference: str, client: Any = None, *, workdir: Path) -> ImageSource:
    """Find the config and layers of ``reference`` without unpacking it.

    An existing path is read as an image file or directory, detected by its
    content; anything else is an image name or ID in the engine ``client``
    (a ``docker.DockerClient``), saved into ``workdir`` (never pulled). A
    gzip-compressed archive is decompressed into ``workdir`` so its layers can be
    read by random access.
    """
    if not reference.strip():
        raise InputError("no image given: expected an image name or an archive path")
    path = Path(reference).expanduser()
    if os.path.lexists(path):
        return _open_path(reference, path, workdir)
    if _looks_like_path(reference):
        raise InputError(f"{reference}: no such file or directory")
    if client is None:
        raise InputError(f"{reference}: no such file, and no engine to find an image of that name")
    return _open_engine(reference, client, workdir)


def _looks_like_path(reference: str) -> bool:
    return reference.startswith(("/", ".", "~")) or reference.endswith((".tar", ".tar.gz", ".tgz"))


def _open_path(reference: str, path: Path, workdir: Path) -> ImageSource:
    try:
        return _read_path(reference, path, workdir)
    except OSError as err:
        raise InputError(f"{reference}: cannot read it ({err.strerror or err})") from err


def _read_path(reference: str, path: Path, workdir: Path) -> ImageSource:
    if path.is_dir():
        if (path / "index.json").is_file():
            return _from_oci(reference, _DirReader(path), "oci-layout")
        if (path / "manifest.json").is_file():
            return _from_docker(reference, _DirReader(path), "docker-archive")
        raise InputError(
            f"{reference}: a directory with neither index.json (OCI layout) nor manifest.json"
        )
    with open(path, "rb") as stream:
        magic = stream.read(6)
    if magic.startswith(b"\x1f\x8b"):
        path = _gunzip(reference, path, workdir)
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        raise InputError(f"{reference}: a zstd-compressed archive; decompress it first")
    try:
        reader = _TarReader(path)
    except (tarfile.TarError, OSError) as err:
        raise InputError(f"{reference}: not an image archive (not a tar file)") from err
    if reader.has("index.json"):
        return _from_oci(reference, reader, "oci-archive")
    if reader.has("manifest.json"):
        return _from_docker(reference, reader, "docker-archive")
    raise InputError(
        f"{reference}: a tar file with neither index.json (OCI) nor manifest.json (docker save)"
    )


def _gunzip(reference: str, path: Path, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "image-archive.tar"
    try:
        with gzip.open(path, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(f"{reference}: a corrupt gzip file ({err})") from err
    return target


def _open_engine(reference: str, client: Any, workdir: Path) -> ImageSource:
    """``docker save`` the image into ``workdir``; check it exists first, so nothing pulls."""
    import docker.errors
    import requests.exceptions

    from scratchpack.engine import EngineError, _short

    try:
        image = client.images.get(reference)
        workdir.mkdir(parents=True, exist_ok=True)
        archive = workdir / "engine-image.tar"
        with open(archive, "wb") as out:
            for chunk in client.api.get_image(image.id, chunk_size=_CHUNK):
                out.write(chunk)
    except docker.errors.ImageNotFound as err:
        raise EngineError(f"no image {reference} in the local engine") from err
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        raise EngineError(f"cannot read {reference} from the engine: {_short(err)}") from err
    except OSError as err:
        raise InputError(f"cannot save {reference} into {workdir}: {err.strerror or err}") from err
    source = _open_path(reference, archive, workdir)
    names = tuple(image.attrs.get("RepoTags") or ()) or source.names
    return ImageSource(reference, source.digest, source.config, source.layers, "engine", names)


class _DirReader:
    """Files of an image directory (an OCI layout or an unpacked ``docker save``)."""

    def __init__(self, top: Path) -> None:
        self.top = top

    def has(self, name: str) -> bool:
        return (self.top / name).is_file()

    def path(self, name: str, reference: str) -> Path:
        """``name`` inside the directory: a manifest cannot send us elsewhere."""
        parts = _normalise(name)
        if not parts or ".." in name.split("/"):
            raise InputError(f"{reference}: refused the path {name!r}: outside the image")
        return self.top.joinpath(*parts)

    def read(self, name: str, reference: str) -> bytes:
        try:
            with open(self.path(name, reference), "rb") as stream:
                return stream.read(_MAX_JSON + 1)
        except OSError as err:
            raise InputError(f"{reference}: cannot read {name} ({err.strerror})") from err

    def locate(self, name: str, reference: str) -> tuple[Path, str | None, int]:
        path = self.path(name, reference)
        try:
            return path, None, path.stat().st_size
        except OSError as err:
            raise InputError(f"{reference}: {name} is missing") from err


class _TarReader:
    """Members of an image archive, read by random access (no extraction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with tarfile.open(path, "r:") as tar:
            self.members = {_clean(m.name): m for m in tar.getmembers()}

    def has(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, reference: str) -> bytes:
        with tarfile.open(self.path, "r:") as tar:
            stream = self._extract(tar, name, reference)
            return stream.read(_MAX_JSON + 1)

    def locate(self, name: str, reference: str) -> tuple[Path, str | None, int]:
        with tarfile.open(self.path, "r:") as tar:
            stream = self._extract(tar, name, reference)
            size = stream.seek(0, io.SEEK_END)
        return self.path, self.members[_clean(name)].name, size

    def _extract(self, tar: tarfile.TarFile, name: str, reference: str) -> IO[bytes]:
        member = self.members.get(_clean(name))
        stream = None
        with contextlib.suppress(KeyError, tarfile.TarError):
            stream = tar.extractfile(member) if member is not None else None
        if stream is None:
            raise InputError(f"{reference}: {name} is missing from the archive")
        return stream


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one in its place: metadata is untrusted input."""
    return value if isinstance(value, dict) else {}


def _clean(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _json(reader: _DirReader | _TarReader, name: str, reference: str) -> Any:
    data = reader.read(name, reference)
    if len(data) > _MAX_JSON:
        raise InputError(f"{reference}: {name} is too large to be image metadata")
    try:
        return json.loads(data)
    except ValueError as err:
        raise InputError(f"{reference}: {name} is not valid JSON ({err})") from err


def _blob_name(digest: Any, reference: str) -> str:
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise InputError(f"{reference}: invalid digest {digest!r}")
    return f"blobs/{match[1]}/{match[2]}"


def _verified_config(data: bytes, digest: str | None, reference: str) -> tuple[str, dict]:
    """The config's digest (the image ID) and its JSON, checked against the manifest."""
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest is not None and digest.startswith("sha256:") and digest != actual:
        raise InputError(f"{reference}: the image config does not match its digest {digest}")
    try:
        config = json.loads(data)
    except ValueError as err:
        raise InputError(f"{reference}: the image config is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise InputError(f"{reference}: the image config is not a JSON object")
    return digest or actual, config


def _diff_ids(config: dict, count: int, reference: str) -> list[str | None]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != count:
        listed = len(diff_ids) if isinstance(diff_ids, list) else 0
        raise InputError(f"{reference}: the config lists {listed} layers, the manifest {count}")
    return [d if isinstance(d, str) else None for d in diff_ids]


def _from_docker(reference: str, reader: _DirReader | _TarReader, kind: str) -> ImageSource:
    entries = _json(reader, "manifest.json", reference)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise InputError(f"{reference}: manifest.json lists no image")
    if len(entries) > 1:
        tags = [t for e in entries if isinstance(e, dict) for t in e.get("RepoTags") or ()]
        listed = ", ".join(map(str, tags)) or "untagged"
        raise InputError(
            f"{reference}: holds {len(entries)} images ({listed}); save one image per archive"
        )
    entry = entries[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise InputError(f"{reference}: manifest.json has no Config or Layers")
    digest, config = _verified_config(reader.read(config_name, reference), None, reference)
    diff_ids = _diff_ids(config, len(layer_names), reference)
    layers = []
    for number, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True), 1):
        if not isinstance(name, str):
            raise InputError(f"{reference}: manifest.json names layer {number} oddly: {name!r}")
        file, member, size = reader.locate(name, reference)
        layers.append(LayerRef(number, MEDIA_DOCKER_LAYER, size, file, member, None, diff_id))
    names = tuple(t for t in entry.get("RepoTags") or () if isinstance(t, str))
    return ImageSource(reference, digest, config, layers, kind, names)


def _from_oci(reference: str, reader: _DirReader | _TarReader, kind: str) -> ImageSource:
    index = _json(reader, "index.json", reference)
    manifest_descriptor = _choose_manifest(reader, index, reference)
    manifest = _json(reader, _blob_name(manifest_descriptor.get("digest"), reference), reference)
    config_descriptor = manifest.get("config") if isinstance(manifest, dict) else None
    descriptors = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(config_descriptor, dict) or not isinstance(descriptors, list):
        raise InputError(f"{reference}: the image manifest has no config or layers")
    config_digest = config_descriptor.get("digest")
    data = reader.read(_blob_name(config_digest, reference), reference)
    digest, config = _verified_config(data, config_digest, reference)
    diff_ids = _diff_ids(config, len(descriptors), reference)
    layers = []
    for number, (descriptor, diff_id) in enumerate(zip(descriptors, diff_ids, strict=True), 1):
        if not isinstance(descriptor, dict):
            raise InputError(f"{reference}: layer {number} of the manifest is not a descriptor")
        blob_digest = descriptor.get("digest")
        file, member, size = reader.locate(_blob_name(blob_digest, reference), reference)
        media_type = str(descriptor.get("mediaType") or MEDIA_DOCKER_LAYER)
        layers.append(LayerRef(number, media_type, size, file, member, blob_digest, diff_id))
    annotations = _obj(manifest_descriptor.get("annotations"))
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name"
    )
    names = (str(name),) if name else ()
    return ImageSource(reference, digest, config, layers, kind, names)


def _choose_manifest(reader: _DirReader | _TarReader, index: Any, reference: str) -> dict:
    """The one image manifest of the index (nested indexes followed, attestations ignored).

    Several images: the one for this machine's architecture, if exactly one is.
    """
    candidates: list[dict] = []
    pending, seen = [index], 0
    while pending:
        document = pending.pop()
        seen += 1
        manifests = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(manifests, list) or seen > 64:
            raise InputError(f"{reference}: index.json lists no manifests")
        for descriptor in manifests:
            if not isinstance(descriptor, dict):
                continue
            media_type = descriptor.get("mediaType")
            if media_type in _INDEXES:
                name = _blob_name(descriptor.get("digest"), reference)
                pending.append(_json(reader, name, reference))
                continue
            annotations = _obj(descriptor.get("annotations"))
            platform_ = _obj(descriptor.get("platform"))
            if (
                annotations.get("vnd.docker.reference.type") == "attestation-manifest"
                or platform_.get("os") == "unknown"
                or (media_type is not None and media_type not in _MANIFESTS)
            ):
                continue
            candidates.append(descriptor)
    if not candidates:
        raise InputError(f"{reference}: index.json lists no image manifest")
    if len(candidates) > 1:
        arch = _MACHINE_TO_OCI.get(platform.machine(), platform.machine())
        native = [c for c in candidates if _obj(c.get("platform")).get("architecture") == arch]
        if len(native) != 1:
            raise InputError(
                f"{reference}: holds {len(candidates)} images; keep one (skopeo copy can select it)"
            )
        return native[0]
    return candidates[0]


# ------------------------------------------------------------------------- unpack


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes, counts and reports what is read through it."""

    def __init__(self, inner: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self.sha256.update(data)
        if self.progress is not None and count:
            self.progress(count)
        return count

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return "sha256:" + self.sha256.hexdigest()


_ZSTD = b"\x28\xb5\x2f\xfd"
_DECOMPRESSORS: dict[bytes, Callable[[IO[bytes]], IO[bytes]]] = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    b"BZh": lambda raw: bz2.BZ2File(raw),
    b"\xfd7zXZ\x00": lambda raw: lzma.LZMAFile(raw),  # noqa: SIM115 (entered by the caller)
}


def unpack(
    source: ImageSource, destination: Path, progress: Callable[[int], None] | None = None
) -> UnpackReport:
    """Apply the layers of ``source`` in order into the empty directory ``destination``.

    ``progress(n)`` is called with the number of blob bytes just read (compressed,
    as stored), adding up to ``source.layers_size``: ``ByteProgress.advance`` fits.
    On error the destination is left half-written: unpack into a temporary
    directory and remove it.
    """
    destination = Path(destination)
    if not destination.is_dir() or any(destination.iterdir()):
        raise InputError(f"{destination}: not an empty directory")
    report = UnpackReport()
    unpacker = _Unpacker(destination, report)
    with contextlib.ExitStack() as archives_stack:
        archives: dict[Path, tarfile.TarFile] = {}
        for layer in source.layers:
            where = f"{source.reference}: layer {layer.index}/{len(source.layers)}"
            if layer.size == 0:
                continue  # an empty blob: nothing to apply
            if layer.member is not None and layer.file not in archives:
                archives[layer.file] = archives_stack.enter_context(tarfile.open(layer.file, "r:"))
            with (
                _open_blob(layer, archives, where) as blob,
                _layer_tar(blob, layer, where, progress) as tar,
            ):
                unpacker.added = set()
                for member in tar:
                    unpacker.apply(tar, member, where)
    unpacker.finish()
    return report


@contextlib.contextmanager
def _open_blob(
    layer: LayerRef, archives: dict[Path, tarfile.TarFile], where: str
) -> Iterator[IO[bytes]]:
    stream: IO[bytes] | None = None
    with contextlib.suppress(OSError, KeyError, tarfile.TarError):
        if layer.member is None:
            stream = open(layer.file, "rb")  # noqa: SIM115 (closed below)
        else:
            stream = archives[layer.file].extractfile(layer.member)
    if stream is None:
        raise InputError(f"{where}: cannot open its blob {layer.file}")
    with stream:
        yield stream


@contextlib.contextmanager
def _layer_tar(
    blob: IO[bytes], layer: LayerRef, where: str, progress: Callable[[int], None] | None
) -> Iterator[tarfile.TarFile]:
    """The layer as a streaming tar; its blob digest and diff_id are checked once read."""
    try:
        magic = blob.read(6)
        blob.seek(0)
    except OSError as err:
        raise InputError(f"{where}: cannot read it ({err})") from err
    if magic.startswith(_ZSTD) or "zstd" in layer.media_type:
        raise InputError(
            f"{where} is zstd-compressed ({layer.media_type}), which scratchpack cannot read; "
            "recompress it: skopeo copy --dest-compress-format gzip"
        )
    raw = _Hashing(blob, progress)
    decompress = next((f for m, f in _DECOMPRESSORS.items() if magic.startswith(m)), None)
    try:
        with contextlib.ExitStack() as stack:
            plain = raw
            if decompress is not None:
                plain = _Hashing(stack.enter_context(decompress(raw)))  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                yield tar
            diff_id, blob_digest = plain.drain(), raw.drain()
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as err:
        raise InputError(f"{where} is not a readable tar ({layer.media_type}): {err}") from err
    if layer.digest and layer.digest.startswith("sha256:") and layer.digest != blob_digest:
        raise InputError(f"{where} does not match its digest {layer.digest}: a corrupt blob")
    if layer.diff_id and layer.diff_id.startswith("sha256:") and layer.diff_id != diff_id:
        raise InputError(f"{where} does not match its diff_id {layer.diff_id}: a corrupt layer")


class _Refused(Exception):
    """An entry that cannot be placed safely; skipped with a warning."""


def _normalise(name: str) -> list[str] | None:
    """Components of an entry name inside the root; None when ``..`` climbs out of it.

    A leading ``/`` is dropped: layer names are relative to the root anyway.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


class _Unpacker:
    """Applies tar entries to a root whose every path is resolved inside it."""

    def __init__(self, top: Path, report: UnpackReport) -> None:
        self.top = os.path.realpath(top)
        self.report = report
        self.added: set[str] = set()  # in-root paths the current layer wrote

    def host(self, parts: list[str]) -> str:
        return os.path.join(self.top, *parts)

    def resolve(self, parts: list[str], create: bool) -> list[str] | None:
        """Real in-root components of directory ``parts``, symlinks followed inside the root.

        ``..`` and absolute targets stop at the root, as after ``chroot``; every
        prefix tried is already a real directory, so the kernel follows nothing.
        Missing directories are created (root-owned, 0755, like Docker) when
        ``create``; otherwise None.
        """
        pending = list(reversed(parts))
        real: list[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if real:
                    real.pop()
                continue
            host = self.host([*real, part])
            try:
                info = os.lstat(host)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(host, 0o700)  # final modes are set once every layer is applied
                real.append(part)
                self.record(real, 0, 0, 0o755, {})
                continue
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise _Refused("too many levels of symbolic links")
                target = os.readlink(host)
                if target.startswith("/"):
                    real = []
                pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise _Refused(f"/{'/'.join([*real, part])} is not a directory")
            real.append(part)
        return real

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> None:
        parts = _normalise(member.name)
        if parts is None:
            self.warn(f"{where}: refused {member.name!r}: it climbs out of the root")
            return
        if not parts:
            if member.isdir():
                self.record([], member.uid, member.gid, member.mode, member.pax_headers)
            return
        *dirs, name = parts
        try:
            if name == _OPAQUE:
                self.opaque(self.resolve(dirs, create=True) or [])
                self.report.whiteouts_applied += 1
            elif name.startswith(_WHITEOUT + _WHITEOUT):
                pass  # aufs bookkeeping (.wh..wh.plnk, ...), not content
            elif name.startswith(_WHITEOUT):
                self.whiteout(dirs, name[len(_WHITEOUT) :])
            elif member.ischr() or member.isblk() or member.isfifo():
                self.report.skipped_devices += 1
            elif member.isdir() or member.isreg() or member.issym() or member.islnk():
                self.place(tar, member, dirs, name, where)
            else:
                self.warn(f"{where}: skipped {member.name!r}: unsupported tar type {member.type!r}")
        except _Refused as reason:
            self.warn(f"{where}: skipped {member.name!r}: {reason}")
        except ValueError as err:  # a NUL byte in a name
            self.warn(f"{where}: skipped {member.name!r}: {err}")
        except OSError as err:
            raise InputError(
                f"{where}: cannot unpack {member.name!r}: {err.strerror or err}"
            ) from err

    def place(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dirs: list[str], name: str, where: str
    ) -> None:
        parent = self.resolve(dirs, create=True)
        assert parent is not None
        path = [*parent, name]
        host = self.host(path)
        mode = member.mode
        if member.isdir():
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.lstat(host).st_mode):
                    self.remove(host)
            if not os.path.lexists(host):
                os.mkdir(host, 0o700)
        elif member.islnk():
            if not self.hardlink(member.linkname, host, where):
                return
            mode = os.lstat(host).st_mode
        elif member.issym():
            if not member.linkname:
                raise _Refused("a symbolic link to nothing")
            self.remove(host)
            os.symlink(member.linkname, host)
            mode = 0o777
        else:
            self.remove(host)
            source = tar.extractfile(member)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(host, flags, 0o600), "wb") as out:
                if source is not None:
                    shutil.copyfileobj(source, out, _CHUNK)
                out.flush()  # an unprivileged write after the chmod would clear setuid
                os.fchmod(out.fileno(), member.mode & 0o7777)
        self.record(path, member.uid, member.gid, mode, member.pax_headers)

    def hardlink(self, linkname: str, host: str, where: str) -> bool:
        """Link ``host`` to an already-unpacked file of the root; False (warned) if absent."""
        target_parts = _normalise(linkname)
        if not target_parts:
            raise _Refused(f"its link target {linkname!r} is outside the root")
        parent = self.resolve(target_parts[:-1], create=False)
        target = None if parent is None else self.host([*parent, target_parts[-1]])
        try:
            info = os.lstat(target) if target is not None else None
        except FileNotFoundError:
            info = None
        if target is None or info is None:
            self.warn(f"{where}: skipped hard link {host[len(self.top) :]}: no {linkname}")
            return False
        if stat.S_ISDIR(info.st_mode):
            raise _Refused(f"a hard link to the directory {linkname!r}")
        with contextlib.suppress(FileNotFoundError):
            existing = os.lstat(host)
            if (existing.st_dev, existing.st_ino) == (info.st_dev, info.st_ino):
                return True
        self.remove(host)
        os.link(target, host, follow_symlinks=False)
        self.report.hardlinks += 1
        return True

    def whiteout(self, dirs: list[str], name: str) -> None:
        """``.wh.NAME``: delete NAME as the lower layers left it."""
        if name in ("", ".", ".."):
            raise _Refused("a whiteout without a name")
        parent = self.resolve(dirs, create=False)
        self.report.whiteouts_applied += 1
        if parent is not None and "/" + "/".join([*parent, name]) not in self.added:
            self.remove(self.host([*parent, name]))

    def opaque(self, directory: list[str]) -> None:
        """``.wh..wh..opq``: the directory keeps only what this layer put in it."""
        with os.scandir(self.host(directory)) as entries:
            children = list(entries)
        for child in children:
            key = "/" + "/".join([*directory, child.name])
            if key not in self.added:
                self.remove(child.path)
            elif child.is_dir(follow_symlinks=False):
                self.opaque([*directory, child.name])

    @staticmethod
    def remove(host: str) -> None:
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(host)
        else:
            os.unlink(host)

    def record(self, path: list[str], uid: int, gid: int, mode: int, pax: dict[str, str]) -> None:
        key = "/" + "/".join(path)
        self.report.owners[key] = (uid, gid)
        self.report.modes[key] = stat.S_IMODE(mode)
        xattrs = {
            name.removeprefix("SCHILY.xattr."): value.encode("utf-8", "surrogateescape")
            for name, value in pax.items()
            if name.startswith("SCHILY.xattr.")
        }
        if xattrs:
            self.report.xattrs[key] = xattrs
        else:
            self.report.xattrs.pop(key, None)
        self.added.add(key)

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)

    def finish(self) -> None:
        """Count the final tree, give directories their modes, forget removed paths."""
        report = self.report
        present = {"/"}
        inodes: set[tuple[int, int]] = set()
        directories: list[tuple[str, str]] = []
        pending = [(self.top, "")]
        while pending:
            host, key = pending.pop()
            with os.scandir(host) as entries:
                for entry in entries:
                    child = f"{key}/{entry.name}"
                    present.add(child)
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        report.dirs += 1
                        pending.append((entry.path, child))
                        directories.append((entry.path, child))
                    elif stat.S_ISLNK(info.st_mode):
                        report.symlinks += 1
                    elif stat.S_ISREG(info.st_mode):
                        report.files += 1
                        if (info.st_dev, info.st_ino) not in inodes:
                            inodes.add((info.st_dev, info.st_ino))
                            report.bytes += info.st_size
        for host, key in reversed(directories):  # children before their parents
            os.chmod(host, report.modes.get(key, 0o755))
        for table in (report.owners, report.modes, report.xattrs):
            for key in [key for key in table if key not in present]:
                del table[key]


# ------------------------------------------------------------------------ config

_SUMMARY_FIELDS = (
    "Entrypoint",
    "Cmd",
    "Env",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
)


def image_config_summary(source: ImageSource) -> dict[str, Any]:
    """The run-time settings a rebuilt image carries over, every field present."""
    return summarize_config(source.config)


def summarize_config(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`image_config_summary` of an image config JSON (``{"config": ..., ...}``).

    Absent and empty values are None; ``ExposedPorts`` and ``Volumes`` (JSON
    objects used as sets) become sorted lists of their keys.
    """
    source_config = config
    runtime = source_config.get("config")
    runtime = runtime if isinstance(runtime, dict) else {}
    summary: dict[str, Any] = {}
    for key in _SUMMARY_FIELDS:
        value = copy.deepcopy(runtime.get(key))
        if key in ("ExposedPorts", "Volumes") and isinstance(value, dict):
            value = sorted(value)
        summary[key] = None if value in (None, "", [], {}) else value
    for key in ("architecture", "os"):
        summary[key] = source_config.get(key) or None
    return summary


def unpack_into(
    reference: str, client: Any, workdir: Path, show_progress: bool = False
) -> tuple[ImageSource, Path, UnpackReport]:
    """Open ``reference`` and apply its layers into ``workdir/root`` (``workdir`` is temporary)."""
    from scratchpack.progress import ByteProgress

    (workdir / "source").mkdir()
    source = open_image(reference, client, workdir=workdir / "source")
    root = workdir / "root"
    root.mkdir()
    progress = ByteProgress("unpacking", source.layers_size, enabled=show_progress)
    report = unpack(source, root, progress.advance)
    progress.done()
    return source, root, report
