"""Writers of an :class:`~scratchpack.image.model.Image` to files: OCI layout, archives.

- :func:`write_layout`: an OCI image layout directory (``oci-layout``,
  ``index.json``, ``blobs/``) plus a ``manifest.json`` pointing into
  ``blobs/``, so ``docker load`` (20.10 and later), skopeo (``oci:``,
  ``oci-archive:``, ``docker-archive:``) and umoci all read it.
- :func:`archive_chunks`: the same as one deterministic tar, streamed.
- :func:`docker_archive_chunks`: a ``docker load`` archive naming only the tag
  it is given (no ``index.json``, whose annotations an engine with the
  containerd store would take as names), for loading into an engine.

Blobs are streamed from wherever the image's layers are: a blob store, an OCI
layout, a member of someone else's archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scratchpack.errors import InputError
from scratchpack.image import tarstream
from scratchpack.image.attest import Artifact, Attested, unwrap
from scratchpack.image.digest import Digest, HashingReader, sha256_digest
from scratchpack.image.documents import canonical_json
from scratchpack.image.media import CONTAINERD_NAME, REF_NAME, Compression, MediaType
from scratchpack.image.model import Image, ImageIndex, Layer
from scratchpack.image.reference import Reference
from scratchpack.image.writer import BlobStore

LAYOUT_MARKER = canonical_json({"imageLayoutVersion": "1.0.0"})


Written = Image | ImageIndex | Attested  # what the writers take: attestations ride along


def index_document(
    image: Image | ImageIndex, reference: str | None, attached: tuple[Artifact, ...] = ()
) -> bytes:
    """``index.json``: the one manifest (or image index), named by the OCI and containerd
    annotations; then each attached artifact, marked as an attestation, so that copying
    the layout keeps them and readers can tell them from images."""
    entry = (
        image.descriptor.to_json()
        if isinstance(image, ImageIndex)
        else image.manifest_descriptor.to_json()
    )
    if reference:
        parsed = Reference.parse(reference)
        entry["annotations"] = {REF_NAME: parsed.tag, CONTAINERD_NAME: str(parsed)}
    manifests = [entry, *(artifact.descriptor_json() for artifact in attached)]
    return canonical_json(
        {"schemaVersion": 2, "mediaType": str(MediaType.OCI_INDEX), "manifests": manifests}
    )


def docker_manifest(image: Image, tags: list[str]) -> bytes:
    """``manifest.json`` of ``docker load``: the config and layers as paths into ``blobs/``."""
    return canonical_json(
        [
            {
                "Config": Digest.parse(image.image_id).blob_path,
                "RepoTags": tags,
                "Layers": [Digest.parse(layer.digest).blob_path for layer in image.layers],
            }
        ]
    )


def _images(artifact: Image | ImageIndex) -> tuple[Image, ...]:
    return artifact.images if isinstance(artifact, ImageIndex) else (artifact,)


def _documents(written: Written) -> list[tuple[str, bytes]]:
    artifact, attached = unwrap(written)
    documents = []
    for image in _images(artifact):
        documents += [
            (Digest.parse(image.image_id).blob_path, image.config_bytes),
            (Digest.parse(image.manifest_descriptor.digest).blob_path, image.manifest_bytes),
        ]
    if isinstance(artifact, ImageIndex):
        documents.append((Digest.parse(artifact.digest).blob_path, artifact.index_bytes))
    for one in attached:
        for data in (*one.blobs(), one.manifest_bytes):
            documents.append((Digest.parse(sha256_digest(data)).blob_path, data))
    return documents


def _layers(written: Written) -> list[Layer]:
    """Every layer once: images of several platforms may share one (their data)."""
    artifact, _attached = unwrap(written)
    seen: dict[str, Layer] = {}
    for image in _images(artifact):
        for layer in image.layers:
            seen.setdefault(layer.digest, layer)
    return list(seen.values())


def _top_files(written: Written, reference: str | None, epoch: int) -> dict[str, tarstream.Member]:
    """oci-layout, index.json, and for one image the manifest.json of ``docker load``."""
    artifact, attached = unwrap(written)
    index = index_document(artifact, reference, attached)
    files = {
        "oci-layout": _bytes_member("oci-layout", LAYOUT_MARKER, epoch),
        "index.json": _bytes_member("index.json", index, epoch),
    }
    if isinstance(artifact, Image):
        tags = [str(Reference.parse(reference))] if reference else []
        files["manifest.json"] = _bytes_member(
            "manifest.json", docker_manifest(artifact, tags), epoch
        )
    return files


def write_layout(artifact: Written, directory: Path, reference: str | None) -> None:
    """Write an image (with a docker-load ``manifest.json``) or an image index as an OCI
    layout into ``directory``.

    Blobs already in ``directory`` (a :class:`BlobStore` there) stay where
    they are; others are copied in and checked against their digests.
    """
    store = BlobStore(directory)
    for layer in _layers(artifact):
        store.adopt(layer)
    for _name, data in _documents(artifact):
        store.put(data, "")
    for name, member in _top_files(artifact, reference, 0).items():
        assert member.data is not None
        (directory / name).write_bytes(member.data)


def archive_chunks(artifact: Written, reference: str | None, epoch: int) -> Iterator[bytes]:
    """The layout of :func:`write_layout` as one tar: sorted names, root-owned, one mtime."""
    return tarstream.chunks(_with_blobs(artifact, _top_files(artifact, reference, epoch), epoch))


def archive_size(artifact: Written, reference: str | None, epoch: int) -> int:
    """The exact size :func:`archive_chunks` will write."""
    files = _top_files(artifact, reference, epoch)
    return tarstream.size(list(_with_blobs(artifact, files, epoch)))


def docker_archive_chunks(image: Image, tag: str) -> Iterator[bytes]:
    """A ``docker load`` archive of ``image`` that names ``tag`` and nothing else.

    Docker 20.10 neither loads nor pulls zstd layers (its layer store reads gzip,
    bzip2, xz or plain tars only): a zstd layer goes decompressed, as a plain tar,
    which the engine checks against the config's diff_id as it checks any layer.
    """
    files = {"manifest.json": _bytes_member("manifest.json", docker_manifest(image, [tag]), 0)}
    members = _with_blobs(image, files, 0)
    zstd_layers = {layer.digest: layer for layer in image.layers if _is_zstd(layer)}
    if zstd_layers:
        members = (_plain_if_zstd(member, zstd_layers, tag) for member in members)
    return tarstream.chunks(members)


def _plain_if_zstd(
    member: tarstream.Member, zstd_layers: dict[str, Layer], tag: str
) -> tarstream.Member:
    """A zstd layer's member, replaced by its decompressed tar under the same name."""
    layer = next(
        (layer for digest, layer in zstd_layers.items() if member.info.name == _blob_name(digest)),
        None,
    )
    if layer is None:
        return member
    where = f"{tag}: layer {layer.digest}"
    info = tarstream.regular(member.info.name, layer.plain_size(where), mtime=0)
    return tarstream.Member(info, opener=lambda: layer.open_plain(where))


def _blob_name(digest: str) -> str:
    return Digest.parse(digest).blob_path


def _with_blobs(
    artifact: Written, files: dict[str, tarstream.Member], epoch: int
) -> Iterator[tarstream.Member]:
    for name, data in _documents(artifact):
        files[name] = _bytes_member(name, data, epoch)
    for layer in _layers(artifact):
        name = Digest.parse(layer.digest).blob_path
        info = tarstream.regular(name, layer.size, mtime=epoch)
        opener = layer.blob.open if layer.hashed else _checked(layer.blob, layer.digest, layer.size)
        files[name] = tarstream.Member(info, opener=opener)
    blobs = [name for name in files if name.startswith("blobs/")]
    directories = {"blobs", *(name.rsplit("/", 1)[0] for name in blobs)}
    for name in directories:
        files[name] = tarstream.Member(tarstream.directory(name, mtime=epoch))
    for name in sorted(files):
        yield files[name]


def _is_zstd(layer: Layer) -> bool:
    """Whether a layer's blob is zstd: by its media type, or by its first bytes."""
    if str(layer.descriptor.media_type).endswith(("+zstd", ".zstd")):
        return True
    with layer.blob.open() as stream:
        return Compression.sniff(stream.read(8)) is Compression.ZSTD


def _bytes_member(name: str, data: bytes, epoch: int) -> tarstream.Member:
    return tarstream.Member(tarstream.regular(name, len(data), mtime=epoch), data=data)


def _checked(blob: object, digest: str, size: int) -> tarstream.Opener:
    """An opener that checks, while streaming, that the blob is what its digest says."""
    import contextlib

    parsed = Digest.parse(digest)

    @contextlib.contextmanager
    def opener() -> Iterator[HashingReader]:
        with blob.open() as stream:  # type: ignore[attr-defined]
            reader = HashingReader(stream, parsed.algorithm, limit=size)
            yield reader  # type: ignore[misc]
            if reader.size == size and reader.digest != digest:
                raise InputError(f"a layer blob does not match its digest {digest}")

    return opener  # type: ignore[return-value]
