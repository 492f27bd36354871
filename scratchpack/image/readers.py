"""Readers: an image someone else made, as an :class:`~scratchpack.image.model.Image`.

``shrink`` and ``debug`` start from images in the local engine or in files: a
``docker save`` archive (or its unpacked directory), an OCI layout directory,
an OCI archive, or the OCI + ``manifest.json`` hybrid our writer and Docker 25
produce. The format is told by the content, not the name. Nothing is unpacked
here: layers are located (a file of a layout, a member of an archive, read in
place) and their digests checked when they are read. :func:`open_image` gives
one image (of an index, the native one); :func:`open_images` each platform's.

Everything in these files is untrusted: names cannot lead out of the
directory or archive (no ``..``, no symlinks followed on the host, links
inside an archive resolved inside it), documents are bounded in size and
depth, indexes cannot fan out or refer to themselves without end, and every
digest a document states (sha256 or sha512) is checked against the bytes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from scratchpack.errors import InputError
from scratchpack.image.digest import Digest, HashingReader
from scratchpack.image.documents import MAX_DOCUMENT, json_object, parse_json
from scratchpack.image.media import (
    CONTAINERD_NAME,
    REF_NAME,
    Compression,
    MediaType,
    Platform,
    media_type,
)
from scratchpack.image.model import Blob, Descriptor, FileBlob, Image, Layer, MemberBlob
from scratchpack.inroot import components, inside

_CHUNK = 1 << 20
_MAX_MEMBERS = 1 << 16  # an image archive holds a few files per layer, not a file system
_MAX_MANIFESTS = 256  # descriptors an index (with the indexes it nests) may name
_MAX_LINK_HOPS = 8
_IMAGE_CONFIGS = frozenset({MediaType.OCI_CONFIG.value, MediaType.DOCKER_CONFIG.value})


class SourceFormat(str, Enum):
    DOCKER_ARCHIVE = "docker-archive"
    OCI_LAYOUT = "oci-layout"
    OCI_ARCHIVE = "oci-archive"
    ENGINE = "engine"


@dataclass(frozen=True)
class SourceImage:
    """An image read from somewhere, with what the source says of it."""

    reference: str  # as the user gave it
    format: SourceFormat
    image: Image
    names: tuple[str, ...] = ()  # tags the source records (RepoTags, ref.name annotations)
    manifest_digest: str | None = None  # an OCI layout's or archive's, as its index names it

    @property
    def digest(self) -> str:
        """The image ID: the digest of the config."""
        return self.image.image_id

    @property
    def layers_size(self) -> int:
        return sum(layer.size for layer in self.image.layers)


class ImageSaver(Protocol):
    """What an engine offers a reader: an image saved as a ``docker save`` archive."""

    def save_image(self, reference: str, destination: Path) -> tuple[str, ...]: ...


def open_image(reference: str, workdir: Path, engine: ImageSaver | None = None) -> SourceImage:
    """The image ``reference`` names: an existing path (read by content), else an engine image.

    An engine image is saved into ``workdir`` (never pulled); a gzip-compressed
    archive is decompressed there so its layers can be read in place.
    """
    if not reference.strip():
        raise InputError("no image given: expected an image name or an archive path")
    path = Path(reference).expanduser()
    if os.path.lexists(path):
        return open_path(reference, path, workdir)
    if reference.startswith(("/", ".", "~")) or reference.endswith((".tar", ".tar.gz", ".tgz")):
        raise InputError(f"{reference}: no such file or directory")
    if engine is None:
        raise InputError(f"{reference}: no such file, and no engine to find an image of that name")
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "engine-image.tar"
    names = engine.save_image(reference, archive)
    source = open_path(reference, archive, workdir)
    return SourceImage(reference, SourceFormat.ENGINE, source.image, names or source.names)


def open_images(
    reference: str, workdir: Path, engine: ImageSaver | None = None
) -> tuple[SourceImage, ...]:
    """Every platform's image ``reference`` holds: each image of a multi-platform index
    (artifacts, attestations and manifests naming no platform skipped), else its one image.

    For what compares each platform on its own (``outdated``); :func:`open_image`
    keeps choosing one, for what runs or rewrites an image.
    """
    path = Path(reference).expanduser()
    if not reference.strip() or not os.path.lexists(path):
        return (open_image(reference, workdir, engine),)
    try:
        return _read_path(reference, path, workdir, every=True)
    except OSError as err:
        raise InputError(f"{reference}: cannot read it ({err.strerror or err})") from err


def open_path(reference: str, path: Path, workdir: Path) -> SourceImage:
    try:
        (source,) = _read_path(reference, path, workdir, every=False)
    except OSError as err:
        raise InputError(f"{reference}: cannot read it ({err.strerror or err})") from err
    return source


def _read_path(reference: str, path: Path, workdir: Path, every: bool) -> tuple[SourceImage, ...]:
    """The image (or with ``every``, each platform's image) of a file or directory."""
    reader, kind = open_reader(reference, path, workdir)
    if kind is SourceFormat.DOCKER_ARCHIVE:
        return (docker_archive_image(reference, reader),)
    return oci_images(reference, reader, kind, every)


def open_reader(reference: str, path: Path, workdir: Path) -> tuple[BlobReader, SourceFormat]:
    """The files of a layout, an archive or a docker save, and which of those it is."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        reader: BlobReader = _DirReader(path, reference)
        if reader.has("index.json"):
            return reader, SourceFormat.OCI_LAYOUT
        if reader.has("manifest.json"):
            return reader, SourceFormat.DOCKER_ARCHIVE
        raise InputError(
            f"{reference}: a directory with neither index.json (OCI layout) nor manifest.json"
        )
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{reference}: not a regular file or a directory")
    with open(path, "rb") as stream:
        compression = Compression.sniff(stream.read(6))
    if compression is Compression.GZIP:
        path = _gunzip(reference, path, workdir)
    elif compression is not Compression.NONE:
        raise InputError(f"{reference}: a {compression.value}-compressed archive; decompress it")
    reader = _TarReader(path, reference)
    if reader.has("index.json"):
        return reader, SourceFormat.OCI_ARCHIVE
    if reader.has("manifest.json"):
        return reader, SourceFormat.DOCKER_ARCHIVE
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


# -- where the files are ------------------------------------------------------------------


class BlobReader(Protocol):
    reference: str

    def has(self, name: str) -> bool: ...

    def blob(self, name: str) -> tuple[Blob, int]: ...


def _parts(name: str, reference: str) -> list[str]:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise InputError(f"{reference}: refused the path {name!r}: outside the image")
    return parts


class _DirReader:
    """Files of an image directory; no symlink in it is followed (they could lead anywhere)."""

    def __init__(self, top: Path, reference: str) -> None:
        self.top = top
        self.reference = reference

    def _path(self, name: str) -> Path:
        path = self.top
        for part in _parts(name, self.reference):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                raise InputError(f"{self.reference}: {name} is missing") from None
            if stat.S_ISLNK(mode):
                raise InputError(
                    f"{self.reference}: {name} is a symbolic link; an image directory's files "
                    "must be in it"
                )
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise InputError(f"{self.reference}: {name} is not a regular file")
        return path

    def has(self, name: str) -> bool:
        try:
            self._path(name)
        except InputError:
            return False
        return True

    def blob(self, name: str) -> tuple[Blob, int]:
        path = self._path(name)
        return FileBlob(path), os.lstat(path).st_size


class _TarReader:
    """Members of an uncompressed image archive, read in place; links resolved inside it."""

    def __init__(self, path: Path, reference: str) -> None:
        self.path = path
        self.reference = reference
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if len(self.members) >= _MAX_MEMBERS:
                        raise InputError(f"{reference}: too many files for an image archive")
                    self.members["/".join(_clean(member.name))] = member
        except tarfile.TarError as err:
            raise InputError(f"{reference}: not an image archive (not a tar file: {err})") from err

    def has(self, name: str) -> bool:
        return "/".join(_clean(name)) in self.members

    def blob(self, name: str) -> tuple[Blob, int]:
        key = "/".join(_parts(name, self.reference))
        for _hop in range(_MAX_LINK_HOPS):
            member = self.members.get(key)
            if member is None:
                raise InputError(f"{self.reference}: {name} is missing from the archive")
            if member.isreg() and not member.issparse():
                return MemberBlob(self.path, member.offset_data, member.size), member.size
            if member.islnk():
                key = "/".join(_parts(member.linkname, self.reference))
            elif member.issym():
                base = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
                key = "/".join(_normalised(base + member.linkname, self.reference))
            else:
                raise InputError(f"{self.reference}: {name} is not a regular file")
        raise InputError(f"{self.reference}: {name}: too many links")


def _clean(name: str) -> list[str]:
    return components(name)


def _normalised(name: str, reference: str) -> list[str]:
    """``a/../b`` -> ``b``; refused if it climbs out of the archive."""
    parts = inside(name)
    if parts is None:
        raise InputError(f"{reference}: a link {name!r} leads out of the archive")
    return parts


def _read(reader: BlobReader, name: str, limit: int = MAX_DOCUMENT) -> bytes:
    blob, size = reader.blob(name)
    if size > limit:
        raise InputError(f"{reader.reference}: {name} is too large to be image metadata")
    with blob.open() as stream:
        return stream.read(limit + 1)


def _document(reader: BlobReader, name: str) -> Any:
    return parse_json(_read(reader, name), f"{reader.reference}: {name}")


def _verified(reader: BlobReader, descriptor: dict[str, Any], what: str) -> tuple[bytes, str]:
    """The bytes a descriptor names, checked against its digest and size."""
    digest = Digest.parse(descriptor.get("digest"), f"{reader.reference}: the {what} descriptor")
    data = _read(reader, digest.blob_path)
    hasher = digest.hasher()
    hasher.update(data)
    if hasher.hexdigest() != digest.hex:
        raise InputError(f"{reader.reference}: the {what} does not match its digest {digest}")
    size = descriptor.get("size")
    if isinstance(size, int) and size != len(data):
        raise InputError(f"{reader.reference}: the {what} has {len(data)} bytes, not {size}")
    return data, str(digest)


# -- OCI ----------------------------------------------------------------------------------


def oci_images(
    reference: str, reader: BlobReader, kind: SourceFormat, every: bool = False
) -> tuple[SourceImage, ...]:
    """The index's one image (the native one of several), or with ``every`` each platform's."""
    index = json_object(_document(reader, "index.json"), f"{reference}: index.json")
    candidates = _image_manifests(reader, index)
    if not every:
        if len(candidates) > 1:  # artifacts (attestations) beside the image are not images
            candidates = [one for one in candidates if _is_image(reader, one)] or candidates
        descriptor = _choose_manifest(reference, candidates)
        return (_oci_image(reference, reader, kind, descriptor, _manifest(reader, descriptor)),)
    if len(candidates) > 1:  # of several, an image says which platform it is for
        candidates = [one for one in candidates if isinstance(one.get("platform"), dict)]
    images: dict[str, SourceImage] = {}  # by manifest digest: one named twice is one image
    for descriptor in candidates:
        digest = str(Digest.parse(descriptor.get("digest"), f"{reference}: a manifest"))
        if digest in images:
            continue
        manifest = _manifest(reader, descriptor)
        if not _is_image_manifest(manifest):
            continue  # an artifact (a signature, an SBOM) packed as a manifest: not an image
        images[digest] = _oci_image(reference, reader, kind, descriptor, manifest)
    if not images:
        raise InputError(f"{reference}: index.json lists no image manifest")
    return tuple(images.values())


def _is_image_manifest(manifest: dict[str, Any]) -> bool:
    """Not an artifact: no ``artifactType``, and a config that is an image's (or unsaid)."""
    config = manifest.get("config")
    config_kind = config.get("mediaType") if isinstance(config, dict) else None
    if "artifactType" in manifest:
        return False
    return config_kind is None or config_kind in _IMAGE_CONFIGS


def _is_image(reader: BlobReader, descriptor: dict[str, Any]) -> bool:
    return "artifactType" not in descriptor and _is_image_manifest(_manifest(reader, descriptor))


def _manifest(reader: BlobReader, descriptor: dict[str, Any]) -> dict[str, Any]:
    """The image manifest a descriptor names, its digest checked."""
    reference = reader.reference
    data, _digest = _verified(reader, descriptor, "image manifest")
    return json_object(parse_json(data, f"{reference}: the manifest"), f"{reference}: manifest")


def _oci_image(
    reference: str,
    reader: BlobReader,
    kind: SourceFormat,
    descriptor: dict[str, Any],
    manifest: dict[str, Any],
) -> SourceImage:
    """The image one manifest of an OCI index describes, its blobs located and checked."""
    config_descriptor = manifest.get("config")
    layer_descriptors = manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layer_descriptors, list):
        raise InputError(f"{reference}: the image manifest has no config or layers")
    config_bytes, _ = _verified(reader, config_descriptor, "image config")
    layers = []
    for number, layer, diff_id in _numbered(
        reference, config_bytes, layer_descriptors, "the manifest"
    ):
        if not isinstance(layer, dict):
            raise InputError(f"{reference}: layer {number} of the manifest is not a descriptor")
        digest = Digest.parse(layer.get("digest"), f"{reference}: layer {number}")
        blob, size = reader.blob(digest.blob_path)
        declared = layer.get("size")
        if isinstance(declared, int) and declared != size:
            raise InputError(
                f"{reference}: layer {number} ({digest}) is corrupt: {size} bytes, not {declared}"
            )
        kind_of = str(layer.get("mediaType") or MediaType.OCI_LAYER)
        layers.append(Layer(Descriptor(kind_of, str(digest), size), diff_id, blob))
    annotations = descriptor.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    names = (name,) if isinstance(name, str) and name else ()
    image = _image(reference, config_bytes, tuple(layers))
    digest = str(Digest.parse(descriptor.get("digest"), f"{reference}: the manifest"))
    return SourceImage(reference, kind, image, names, digest)


def _image_manifests(reader: BlobReader, index: dict[str, Any]) -> list[dict[str, Any]]:
    """The image manifests of the index (nested indexes followed, attestations ignored).

    Each nested index is read once; at most :data:`_MAX_MANIFESTS` are looked at.
    """
    reference = reader.reference
    candidates: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = [index]
    seen: set[str] = set()
    looked = 0
    while pending:
        manifests = pending.pop().get("manifests")
        if not isinstance(manifests, list):
            raise InputError(f"{reference}: index.json lists no manifests")
        for descriptor in manifests:
            looked += 1
            if looked > _MAX_MANIFESTS:
                raise InputError(f"{reference}: its indexes name more than {_MAX_MANIFESTS} images")
            if not isinstance(descriptor, dict):
                continue
            kind = media_type(descriptor.get("mediaType"))
            if kind is not None and kind.is_index:
                digest = str(Digest.parse(descriptor.get("digest"), f"{reference}: an index"))
                if digest in seen:
                    continue  # an index naming itself or one already read
                seen.add(digest)
                data, _ = _verified(reader, descriptor, "nested index")
                pending.append(json_object(parse_json(data, f"{reference}: an index"), reference))
                continue
            annotations = descriptor.get("annotations")
            platform = descriptor.get("platform")
            annotations = annotations if isinstance(annotations, dict) else {}
            platform = platform if isinstance(platform, dict) else {}
            if (
                annotations.get("vnd.docker.reference.type") == "attestation-manifest"
                or platform.get("os") == "unknown"
                or (descriptor.get("mediaType") is not None and not (kind and kind.is_manifest))
            ):
                continue
            candidates.append(descriptor)
    if not candidates:
        raise InputError(f"{reference}: index.json lists no image manifest")
    return candidates


def _choose_manifest(reference: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The one image manifest; of several, the one for this machine's platform, if one is."""
    if len(candidates) == 1:
        return candidates[0]
    host = Platform.host()
    native = [
        candidate
        for candidate in candidates
        if host is not None
        and isinstance(candidate.get("platform"), dict)
        and host.matches(
            str(candidate["platform"].get("architecture")),
            candidate["platform"].get("variant"),
        )
    ]
    if len(native) != 1:
        raise InputError(
            f"{reference}: holds {len(candidates)} images; keep one (skopeo copy can select it)"
        )
    return native[0]


# -- docker save ---------------------------------------------------------------------------


def docker_archive_image(reference: str, reader: BlobReader) -> SourceImage:
    entries = _document(reader, "manifest.json")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise InputError(f"{reference}: manifest.json lists no image")
    if len(entries) > 1:
        tags = [
            t
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("RepoTags"), list)
            for t in e["RepoTags"]
            if isinstance(t, str)
        ]
        listed = ", ".join(tags[:5]) or "untagged"
        raise InputError(
            f"{reference}: holds {len(entries)} images ({listed}); save one image per archive"
        )
    entry = entries[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise InputError(f"{reference}: manifest.json has no Config or Layers")
    config_bytes = _read(reader, config_name)
    layers = []
    for number, name, diff_id in _numbered(reference, config_bytes, layer_names, "manifest.json"):
        if not isinstance(name, str):
            raise InputError(f"{reference}: manifest.json names layer {number} oddly")
        blob, size = reader.blob(name)
        layers.append(_docker_layer(blob, size, diff_id))
    tags = entry.get("RepoTags")
    names = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    return SourceImage(
        reference,
        SourceFormat.DOCKER_ARCHIVE,
        _image(reference, config_bytes, tuple(layers)),
        names,
    )


def _docker_layer(blob: Blob, size: int, diff_id: str) -> Layer:
    """A ``docker save`` layer: its archive records no blob digest, so one is found.

    An uncompressed layer (what the engine saves) is its own diff_id, checked
    when read; a compressed one is hashed here, once.
    """
    with blob.open() as stream:
        compression = Compression.sniff(stream.read(6))
    if compression is Compression.NONE:
        return Layer(Descriptor(MediaType.OCI_LAYER, diff_id, size), diff_id, blob)
    with blob.open() as stream:
        digest = HashingReader(stream).drain()
    # gzip and zstd have OCI types; bzip2 and xz (old docker saves) only Docker's generic one.
    compressed = compression in (Compression.GZIP, Compression.ZSTD)
    kind = compression.layer_media_type() if compressed else MediaType.DOCKER_LAYER
    return Layer(Descriptor(kind, digest, size), diff_id, blob)


def _numbered(
    reference: str, config_bytes: bytes, listed: list[Any], where: str
) -> Iterator[tuple[int, Any, str]]:
    """(number, what ``where`` lists, diff_id) of each layer; the two lists must agree."""
    diff_ids = _image(reference, config_bytes).config.diff_ids
    if len(diff_ids) != len(listed):
        raise InputError(
            f"{reference}: the config lists {len(diff_ids)} layers, {where} {len(listed)}"
        )
    for number, (item, diff_id) in enumerate(zip(listed, diff_ids, strict=True), 1):
        yield number, item, diff_id


def _image(reference: str, config_bytes: bytes, layers: tuple[Layer, ...] = ()) -> Image:
    """The image, its config checked now: a malformed config fails here, naming the source."""
    image = Image(config_bytes, layers, where=reference)
    image.config  # noqa: B018 - parse and check it once, here
    return image


# -- attestations beside the image ------------------------------------------------------------


@dataclass(frozen=True)
class Referrer:
    """An artifact manifest that refers to an image: what it is, and its one document."""

    digest: str  # of the artifact manifest
    size: int
    artifact_type: str
    subject: str | None  # the manifest digest its ``subject`` names
    document: bytes | None  # its first layer, read when it is small enough to check
    document_type: str = ""


MAX_ATTACHED_DOCUMENT = 16 << 20  # a statement or SBOM read back for checking


def referrer_of(
    digest: str,
    manifest: dict[str, Any],
    read_layer: Callable[[dict[str, Any]], bytes | None] | None,
    where: str,
) -> Referrer:
    """A parsed artifact manifest as a :class:`Referrer`; ``read_layer(descriptor)`` reads
    (bounded, checked) the document when the caller wants it."""
    subject = manifest.get("subject")
    subject_digest = (
        str(Digest.parse(subject.get("digest"), f"{where}: its subject"))
        if isinstance(subject, dict)
        else None
    )
    layers = manifest.get("layers")
    first = layers[0] if isinstance(layers, list) and layers else None
    artifact_type = manifest.get("artifactType")
    if not isinstance(artifact_type, str):
        config = manifest.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    if not isinstance(artifact_type, str) or not isinstance(first, dict):
        raise InputError(f"{where}: an artifact manifest without an artifactType or a layer")
    document = read_layer(first) if read_layer is not None else None
    kind = first.get("mediaType")
    return Referrer(digest, 0, artifact_type, subject_digest, document, str(kind or ""))


def open_attachments(reference: str, workdir: Path) -> tuple[tuple[str, ...], tuple[Referrer, ...]]:
    """The image manifest digests of an OCI layout or archive, and the artifacts its
    ``index.json`` lists beside them (anything naming a ``subject`` or an ``artifactType``)."""
    path = Path(reference).expanduser()
    if not os.path.lexists(path):
        raise InputError(f"{reference}: no such file or directory")
    try:
        reader, kind = open_reader(reference, path, workdir)
        if kind is SourceFormat.DOCKER_ARCHIVE:
            raise InputError(f"{reference}: a docker save archive holds no attestations")
        index = json_object(_document(reader, "index.json"), f"{reference}: index.json")
        images: list[str] = []
        referrers: list[Referrer] = []
        manifests = index.get("manifests")
        if not isinstance(manifests, list) or len(manifests) > _MAX_MANIFESTS:
            raise InputError(f"{reference}: index.json lists no manifests, or too many")
        for descriptor in manifests:
            found = _attached_or_image(reader, descriptor)
            if isinstance(found, Referrer):
                referrers.append(found)
            else:
                images += found
    except OSError as err:
        raise InputError(f"{reference}: cannot read it ({err.strerror or err})") from err
    if not images:
        raise InputError(f"{reference}: index.json lists no image manifest")
    return tuple(images), tuple(referrers)


def _attached_or_image(reader: BlobReader, descriptor: Any) -> Referrer | list[str]:
    """An index.json entry: an artifact, or the image manifest digests it is (an index:
    itself and its platforms' manifests, which their referrers name)."""
    where = reader.reference
    if not isinstance(descriptor, dict):
        raise InputError(f"{where}: index.json lists something that is not a descriptor")
    kind = media_type(descriptor.get("mediaType"))
    data, digest = _verified(reader, descriptor, "manifest")
    manifest = json_object(parse_json(data, f"{where}: a manifest"), f"{where}: a manifest")
    if kind is not None and kind.is_index:
        listed = manifest.get("manifests")
        listed = listed[:_MAX_MANIFESTS] if isinstance(listed, list) else []
        platforms = [one.get("digest") for one in listed if isinstance(one, dict)]
        return [digest, *(str(Digest.parse(one, f"{where}: an index")) for one in platforms)]
    if "subject" not in manifest and "artifactType" not in descriptor:
        return [digest] if _is_image_manifest(manifest) else []

    def read_layer(layer: dict[str, Any]) -> bytes:
        body, _ = _verified_limit(reader, layer, "attached document", MAX_ATTACHED_DOCUMENT)
        return body

    found = referrer_of(digest, manifest, read_layer, f"{where}: {digest}")
    return Referrer(
        found.digest, len(data), found.artifact_type, found.subject, found.document,
        found.document_type,
    )  # fmt: skip


def _verified_limit(
    reader: BlobReader, descriptor: dict[str, Any], what: str, limit: int
) -> tuple[bytes, str]:
    digest = Digest.parse(descriptor.get("digest"), f"{reader.reference}: the {what} descriptor")
    data = _read(reader, digest.blob_path, limit)
    hasher = digest.hasher()
    hasher.update(data)
    if hasher.hexdigest() != digest.hex:
        raise InputError(f"{reader.reference}: the {what} does not match its digest {digest}")
    return data, str(digest)
