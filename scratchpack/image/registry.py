"""Push an image (or an image index) straight to a registry through the distribution API.

No engine is involved: an engine push recompresses the layers and so changes the
manifest digest, while pushing the layout's own bytes keeps the digest the layout
(and anything that refers to it: a signature, an SBOM, a deployment pin) names.

The flow is the distribution spec's, the one ``docker push`` uses: per blob
``HEAD`` (exists: skip), ``POST .../blobs/uploads/`` and one monolithic ``PUT`` of
the file with ``?digest=``; then ``PUT .../manifests/<tag>`` with the manifest bytes
exactly as stored. This module is that flow; the credentials are
:mod:`~scratchpack.image.registry_auth`'s, the HTTP client (auth challenges,
retries, bounds, deadlines, TLS) is :mod:`~scratchpack.image.registry_transport`'s.
Loopback registries are insecure by default, as docker has it (:func:`push_image`
decides, so a test can treat one as remote). An image someone wrote earlier (a layout,
an OCI or docker archive: ``scratchpack push``, :func:`push_layout`) is read by the
readers, every blob hashed before anything is sent, and goes up with the attestations
its ``index.json`` lists about it (:func:`open_source`, :func:`push_opened`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from scratchpack.errors import EXIT_PUSH, InputError, printable
from scratchpack.image.attest import (
    MAX_REFERRERS,
    PREDICATE_ANNOTATION,
    Attachable,
    StoredArtifact,
    fallback_tag,
    merged_index,
    referrer_descriptors,
)
from scratchpack.image.digest import Digest, HashingReader, sha256_digest
from scratchpack.image.documents import MAX_DOCUMENT, json_object, parse_json
from scratchpack.image.media import MediaType, media_type
from scratchpack.image.model import Blob, BytesBlob, Descriptor, Image, ImageIndex
from scratchpack.image.readers import Referrer, SourceImage, referrer_of
from scratchpack.image.reference import Reference
from scratchpack.image.registry_auth import (
    Credentials,
    PushError,
    credentials_from_docker_config,
    default_docker_config,
)
from scratchpack.image.registry_transport import (
    DEFAULT_RETRIES,
    MAX_ANSWER_BODY,
    Answer,
    RegistryClient,
    follow,
    quiet_insecure,
    upload_deadline,
)
from scratchpack.image.registry_transport import is_loopback as _is_loopback
from scratchpack.notes import warn

MAX_STATEMENT = 4 << 20  # an in-toto statement read back from a registry

__all__ = [
    "EXIT_PUSH",
    "Credentials",
    "PushError",
    "PushResult",
    "credentials_from_docker_config",
    "default_docker_config",
    "fetch_attachments",
    "open_source",
    "parse_reference",
    "push_image",
    "push_layout",
    "push_opened",
]


@dataclass(frozen=True)
class PushResult:
    """What a push did: the full reference, the manifest digest the registry now serves."""

    reference: str
    manifest_digest: str
    blobs_uploaded: int
    blobs_skipped: int
    referrers: tuple[str, ...] = ()  # per subject: "referrers API" or the fallback tag written
    not_attached: tuple[str, ...] = ()  # push_layout: the layout's artifacts left behind, why
    attached: tuple[str, ...] = ()  # the artifact manifests attached, by digest


# --- references ---------------------------------------------------------------


def parse_reference(ref: str) -> tuple[str, str, str]:
    """Split ``[REGISTRY/]NAME[:TAG]`` into (registry, repository, tag) by docker's rules.

    Unwritten registries are ``docker.io``, where one-component names get
    docker's ``library/`` prefix; see :class:`scratchpack.image.reference.Reference`.
    """
    return Reference.parse(ref).push_target()


def _short(digest: str) -> str:
    """``sha256:0123456789ab…`` (a tag stays whole)."""
    return f"{digest[:19]}…" if digest.startswith("sha") else digest


def _human_size(size: int) -> str:
    """Decimal units, like docker's progress."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


# --- the push ---------------------------------------------------------------------


def _push_blob(
    client: RegistryClient, digest: str, size: int, blob: Blob, progress: Callable[[str], None]
) -> bool:
    """Upload one blob unless the registry has it; True if it was uploaded."""
    name = client.repository
    answer = client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    if answer.status == 200:
        progress(f"exists {_short(digest)}")
        return False
    if answer.status != 404:
        client.fail(answer, f"HEAD blob {_short(digest)}")
    progress(f"uploading {_short(digest)} ({_human_size(size)})")
    answer = client.request("POST", f"/v2/{name}/blobs/uploads/")
    if answer.status != 202:
        client.fail(answer, "starting a blob upload")
    location = answer.headers.get("Location")
    if not location:
        raise PushError(f"{client.registry} started an upload without a Location header")
    location = follow(answer.url, location)
    separator = "&" if urlsplit(location).query else "?"
    url = f"{location}{separator}{urlencode({'digest': digest})}"
    with contextlib.ExitStack() as stack:

        def body() -> BinaryIO:  # streamed; reopened if a 401 or a 307 sends it again
            return stack.enter_context(blob.open())

        answer = client.request(
            "PUT",
            url,
            body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            deadline=upload_deadline(size),
            doing=f"the upload of blob {_short(digest)}",
        )
    if answer.status != 201:
        client.fail(answer, f"uploading blob {_short(digest)}")
    return True


@dataclass(frozen=True)
class _Manifest:
    """A manifest to put: where (a digest, or the tag), its bytes as stored, its media type."""

    where: str
    data: bytes
    media_type: object


def _blobs_of(images: Sequence[Image]) -> dict[str, tuple[int, Blob]]:
    """Every layer and config blob of ``images``, once each, by digest."""
    blobs: dict[str, tuple[int, Blob]] = {}
    for one in images:
        for layer in one.layers:
            blobs.setdefault(layer.digest, (layer.size, layer.blob))
        blobs.setdefault(one.image_id, (len(one.config_bytes), BytesBlob(one.config_bytes)))
    return blobs


def _manifests_of(image: Image | ImageIndex, images: Sequence[Image], tag: str) -> list[_Manifest]:
    """The images' manifests by digest, then the tag's (the index, or the one image's)."""
    manifests = [
        _Manifest(
            one.manifest_descriptor.digest, one.manifest_bytes, one.manifest_descriptor.media_type
        )
        for one in images
    ]
    if isinstance(image, ImageIndex):
        manifests.append(_Manifest(tag, image.index_bytes, image.descriptor.media_type))
    else:
        manifests[-1] = _Manifest(tag, image.manifest_bytes, image.manifest_descriptor.media_type)
    return manifests


def _put_manifest(client: RegistryClient, manifest: _Manifest) -> Answer:
    answer = client.request(
        "PUT",
        f"/v2/{client.repository}/manifests/{manifest.where}",
        body=lambda: manifest.data,
        headers={"Content-Type": str(manifest.media_type)},
    )
    if answer.status != 201:
        client.fail(answer, f"PUT manifest {_short(manifest.where)}")
    return answer


def _upload(
    client: RegistryClient,
    blobs: dict[str, tuple[int, Blob]],
    manifests: list[_Manifest],
    report: Callable[[str], None],
) -> tuple[int, int, Answer]:
    """Blobs, then manifests, each step retried: (uploaded, skipped, the last manifest's answer)."""
    uploaded = skipped = 0
    with quiet_insecure():
        client.retrying("GET /v2/", client.connect)
        for digest, (size, blob) in blobs.items():
            # An upload cut off or refused for a while starts again from its POST.
            step = functools.partial(_push_blob, client, digest, size, blob, report)
            if client.retrying(f"uploading blob {_short(digest)}", step):
                uploaded += 1
            else:
                skipped += 1
        for manifest in manifests:
            step = functools.partial(_put_manifest, client, manifest)
            answer = client.retrying(f"PUT manifest {_short(manifest.where)}", step)
    return uploaded, skipped, answer


def push_image(
    image: Image | ImageIndex,
    reference: str,
    credentials: Credentials | None = None,
    insecure: bool = False,
    progress: Callable[[str], None] | None = None,
    timeout: float = 60,
    ca_file: str | Path | None = None,
    retries: int = DEFAULT_RETRIES,
    attachments: Sequence[Attachable] = (),
) -> PushResult:
    """Push ``image`` (or an image index and its images) as ``reference``; no engine needed.

    Its blobs are streamed from where they are (the writer hashed them as it
    wrote them); the manifest goes up byte for byte, so the registry's digest
    is the image's, and a registry that reports another one is an error. An
    index's images go up by digest first, then the index under the tag.
    ``insecure`` allows plain HTTP / unverified HTTPS (always allowed for
    loopback registries, as docker does); ``ca_file`` trusts a private CA.
    ``progress`` receives one line per blob. ``attachments`` (attestations
    whose subjects are the images) go up after them: see :func:`_attach`.
    Raises :class:`PushError` (exit 5), or
    :class:`~scratchpack.errors.InputError` for a malformed reference.
    """
    registry, repository, tag = parse_reference(reference)
    images = image.images if isinstance(image, ImageIndex) else (image,)
    blobs = _blobs_of(images)
    manifests = _manifests_of(image, images, tag)
    top_digest = image.digest if isinstance(image, ImageIndex) else image.manifest_descriptor.digest
    report = progress or (lambda _line: None)
    insecure = insecure or _is_loopback(registry)
    client = RegistryClient(
        registry, repository, credentials, insecure, ca_file, timeout, retries, report
    )
    try:
        uploaded, skipped, answer = _upload(client, blobs, manifests, report)
        echoed = answer.headers.get("Docker-Content-Digest")
        if echoed and echoed != top_digest:
            raise PushError(
                f"{registry} stored the manifest as {client.redact(echoed, 100)}, not "
                f"{top_digest}: it rewrote the manifest"
            )
        referrers = _attach(client, attachments, report) if attachments else ()
    finally:
        client.close()
    report(f"pushed {top_digest} as {registry}/{repository}:{tag}")
    return PushResult(
        f"{registry}/{repository}:{tag}",
        top_digest,
        uploaded,
        skipped,
        tuple(referrers),
        attached=tuple(one.digest for one in attachments),
    )


def push_layout(layout_dir: str | Path, reference: str, *args: Any, **kwargs: Any) -> PushResult:
    """Push the image (or image index) of an OCI layout directory that this process did not
    write, with its attestations; an unreadable or corrupt layout is a :class:`PushError`.

    (Images the writer just made need no checking pass: :func:`push_image` them.)
    """
    layout = Path(layout_dir)
    if not (layout / "oci-layout").is_file() or not (layout / "index.json").is_file():
        raise PushError(f"{layout}: not an OCI image layout (no oci-layout or index.json)")
    try:
        opened = open_source(layout, layout)
    except InputError as err:
        raise PushError(str(err)) from None
    return push_opened(opened, reference, *args, **kwargs)


@dataclass(frozen=True)
class OpenedSource:
    """An image read from a layout or an archive, checked, with what goes up beside it."""

    image: Image | ImageIndex
    attachments: tuple[StoredArtifact, ...] = ()
    left: tuple[str, ...] = ()  # artifacts that stay behind, one printable line each


def open_source(source: Path, workdir: Path) -> OpenedSource:
    """The image (an index: every platform) of an OCI layout, an OCI archive or a docker
    archive, every blob hashed against its name before anything is sent, and the
    artifacts ``index.json`` lists about its images. ``workdir`` (private) takes what a
    gzip-compressed archive decompresses to. Unreadable or corrupt: an :class:`InputError`.
    """
    from scratchpack.image.readers import (
        SourceFormat,
        docker_archive_image,
        oci_images,
        open_reader,
    )

    where = printable(str(source))  # readers name it in their messages
    try:
        reader, kind = open_reader(where, source, workdir)
        if kind is SourceFormat.DOCKER_ARCHIVE:
            image: Image | ImageIndex = docker_archive_image(where, reader).image
            _check_layers(where, (image,))
            return OpenedSource(image)
        index = _index_json(where, reader.blob)
        stored_index = _top_index(index)
        sources = oci_images(where, reader, kind, every=stored_index is not None)
        images = tuple(one.image for one in sources)
        _check_layers(where, images)
        if stored_index is None:
            images = (_as_stored(where, reader.blob, sources[0]),)
        image = ImageIndex(images) if stored_index is not None else images[0]
        _warn_respelled(where, sources, stored_index, image)
        subjects = frozenset(one.manifest_descriptor.digest for one in images)
        found, left = _attachments(where, reader.blob, index, subjects)
    except OSError as err:
        raise InputError(f"{where}: cannot read it ({err.strerror or err})") from err
    return OpenedSource(image, tuple(found), tuple(left))


@dataclass(frozen=True)
class _StoredImage(Image):
    """An image whose manifest goes up as its layout stored it (another tool's spelling:
    annotations, key order, Docker's media type), so its digest, which the layout's
    attestations name, is kept."""

    stored_manifest: bytes = b""
    stored_media_type: str = str(MediaType.OCI_MANIFEST)

    @property
    def manifest_bytes(self) -> bytes:
        return self.stored_manifest

    @cached_property
    def manifest_descriptor(self) -> Descriptor:
        data = self.stored_manifest
        return Descriptor(self.stored_media_type, sha256_digest(data), len(data))


def _as_stored(where: str, locate: Locate, source: SourceImage) -> Image:
    """``source``'s image, its manifest the stored bytes when they differ from the canonical
    ones (read again, bounded, checked against the digest the index names)."""
    image, named = source.image, source.manifest_digest
    if named is None or named == image.manifest_descriptor.digest:
        return image
    data = bytes(_layout_blob(locate, Digest.parse(named, where), None, MAX_DOCUMENT))
    manifest = json_object(parse_json(data, f"{where}: {named}"), f"{where}: {named}")
    kind = media_type(manifest.get("mediaType"))
    manifest_kind = kind if kind is not None and kind.is_manifest else MediaType.OCI_MANIFEST
    return _StoredImage(
        image.config_bytes,
        image.layers,
        where=image.where,
        stored_manifest=data,
        stored_media_type=str(manifest_kind),
    )


def _warn_respelled(
    where: str, sources: Sequence[SourceImage], stored_index: str | None, pushed: Image | ImageIndex
) -> None:
    """An index goes up as its canonical form: where that changes a digest the layout
    names, say so (the platforms' attestations then stay behind, each named)."""
    if not isinstance(pushed, ImageIndex):
        return
    spelled = [(one.manifest_digest, one.image.manifest_descriptor.digest) for one in sources]
    for named, derived in [*spelled, (stored_index, pushed.digest)]:
        if named and named != derived:
            warn(f"{where}: {named} is not in canonical form: it goes up as {derived}")


def _top_index(index: dict[str, Any]) -> str | None:
    """The digest of the image index ``index.json`` lists (a multi-platform image), if any."""
    for one in _listed(index):
        kind = media_type(one.get("mediaType")) if isinstance(one, dict) else None
        if kind is not None and kind.is_index:
            return str(Digest.parse(one.get("digest"), "index.json: the image index"))
    return None


def push_opened(opened: OpenedSource, reference: str, *args: Any, **kwargs: Any) -> PushResult:
    """:func:`push_image` of an opened source with its attestations (and any given)."""
    for line in opened.left:
        warn(line)
    attachments = [*kwargs.pop("attachments", ()), *opened.attachments]
    result = push_image(opened.image, reference, *args, attachments=attachments, **kwargs)
    return dataclasses.replace(result, not_attached=opened.left)


def _check_layers(where: str, images: Sequence[Image]) -> None:
    """Every layer blob hashed against its digest and size: a corrupt one sends nothing."""
    checked: set[str] = set()
    for image in images:
        for layer in image.layers:
            if layer.digest in checked:
                continue
            checked.add(layer.digest)
            with layer.blob.open() as stream:
                reader = HashingReader(stream, Digest.parse(layer.digest).algorithm)
                actual = reader.drain()
            if actual != layer.digest or reader.size != layer.size:
                raise InputError(
                    f"{where}: the layer blob {layer.digest} is corrupt: its content hashes "
                    f"to {actual} ({reader.size} bytes)"
                )


# --- a layout's own attestations -------------------------------------------------------------

MAX_ARTIFACT_MANIFEST = 4 << 20  # an artifact manifest of a layout
MAX_ARTIFACT_BLOB = 64 << 20  # each blob of an artifact: a statement, an SBOM, a signature
MAX_ARTIFACT_LAYERS = 16
_INDEX_ENTRIES = 1024  # index.json entries looked at
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}")
_PREDICATE_TYPE = re.compile(r"[\x21-\x7e]{1,256}")

Locate = Callable[[str], tuple[Blob, int]]  # a name in a layout or archive: its blob, its size


def _index_json(where: str, locate: Locate) -> dict[str, Any]:
    """``index.json`` of a layout or archive, bounded."""
    data = _located_bytes(locate, "index.json", MAX_DOCUMENT, where)
    return json_object(parse_json(data, f"{where}: index.json"), f"{where}: index.json")


def _listed(index: dict[str, Any]) -> list[Any]:
    listed = index.get("manifests")
    return listed[:_INDEX_ENTRIES] if isinstance(listed, list) else []


def layout_attachments(layout: Path, subject: str) -> tuple[list[StoredArtifact], list[str]]:
    """The artifacts a layout directory's ``index.json`` lists about the image ``subject``,
    read and hash-checked; and one printable line for each other artifact, left behind."""
    from scratchpack.image.readers import open_reader

    reader, _kind = open_reader(str(layout), layout, layout)
    return _attachments(str(layout), reader.blob, _index_json(str(layout), reader.blob), {subject})


def _attachments(
    where: str, locate: Locate, index: dict[str, Any], subjects: Set[str]
) -> tuple[list[StoredArtifact], list[str]]:
    """The artifacts ``index.json`` lists beside the images whose ``subject`` is one of them;
    one printable line for each other artifact. A layout is another party's: one junk
    entry costs its own artifact, never the push; an entry naming a digest an earlier one
    named is the same content, and is not read again."""
    found: list[StoredArtifact] = []
    left: list[str] = []
    blobs = _LayoutBlobs(locate)
    seen: set[str] = set()
    for number, descriptor in enumerate(_listed(index), 1):
        named = descriptor.get("digest") if isinstance(descriptor, dict) else None
        if isinstance(named, str):
            if named in seen:
                continue
            seen.add(named)
        what = f"the artifact {named}" if isinstance(named, str) else f"index.json entry {number}"
        try:
            artifact = _layout_artifact(blobs, descriptor, subjects)
        except InputError as err:
            left.append(printable(f"{where}: {what} is not pushed: {err}"))
            continue
        if artifact is not None:
            found.append(artifact)
    return found, left


def _layout_artifact(
    blobs: _LayoutBlobs, descriptor: Any, subjects: Set[str]
) -> StoredArtifact | None:
    """One ``index.json`` entry: an artifact about one of ``subjects``, None for an image or
    an index; anything else an :class:`InputError` saying why it stays behind."""
    if not isinstance(descriptor, dict):
        raise InputError("not a descriptor")
    kind = media_type(descriptor.get("mediaType"))
    if kind is not None and kind.is_index:
        return None  # the index of platforms: pushed as the image
    digest = Digest.parse(descriptor.get("digest"), "its digest")
    data = _layout_blob(blobs.locate, digest, descriptor.get("size"), MAX_ARTIFACT_MANIFEST)
    manifest = json_object(parse_json(bytes(data), "its manifest"), "its manifest")
    if not {"subject", "artifactType"} & (manifest.keys() | descriptor.keys()):
        return None  # an image: the pushed one, or one this push leaves alone
    if manifest.get("mediaType", descriptor.get("mediaType")) != str(MediaType.OCI_MANIFEST):
        raise InputError("not an OCI image manifest")
    about = manifest.get("subject")
    about = Digest.parse(about.get("digest") if isinstance(about, dict) else None, "its subject")
    if str(about) not in subjects:
        pushed = next(iter(subjects)) if len(subjects) == 1 else "any of the pushed images"
        raise InputError(f"it is about {about}, not the pushed image {pushed}")
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise InputError("an artifact manifest without a config or layers")
    if len(layers) > MAX_ARTIFACT_LAYERS:
        raise InputError(f"more than {MAX_ARTIFACT_LAYERS} layers")
    artifact_type = manifest.get("artifactType", config.get("mediaType"))
    if not isinstance(artifact_type, str) or not _MEDIA_TYPE.fullmatch(artifact_type):
        raise InputError("its artifactType is not a media type")
    checked = tuple(blobs.checked(one) for one in (config, *layers))
    return StoredArtifact(
        str(digest), bytes(data), str(about), artifact_type, _predicate(layers), checked
    )


def _predicate(layers: list[Any]) -> str | None:
    """The in-toto predicate type the first layer's annotation names, if it is a clean one."""
    annotations = layers[0].get("annotations") if layers and isinstance(layers[0], dict) else None
    named = annotations.get(PREDICATE_ANNOTATION) if isinstance(annotations, dict) else None
    return named if isinstance(named, str) and _PREDICATE_TYPE.fullmatch(named) else None


@dataclass(frozen=True)
class _LayoutBlobs:
    """The blobs of a layout's artifacts, each read and hashed once however many artifacts
    name it: a hostile layout names one 64 MB blob in every layer of every entry."""

    locate: Locate
    outcomes: dict[str, int | InputError] = dataclasses.field(default_factory=dict)

    def checked(self, descriptor: Any) -> tuple[str, int, Blob]:
        """A blob of an artifact: in the layout or archive, its size and hash as named."""
        if not isinstance(descriptor, dict):
            raise InputError("a blob that is not a descriptor")
        digest = Digest.parse(descriptor.get("digest"), "a blob")
        size = descriptor.get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_ARTIFACT_BLOB:
            raise InputError(
                f"the blob {digest} has no size, or more than {MAX_ARTIFACT_BLOB} bytes"
            )
        outcome = self.outcomes.get(str(digest))
        if outcome is None:
            try:
                outcome = _read_blob(self.locate, digest, MAX_ARTIFACT_BLOB, keep=False)[1]
            except InputError as err:
                outcome = err
            self.outcomes[str(digest)] = outcome
        if isinstance(outcome, InputError):
            raise InputError(str(outcome))
        if outcome != size:
            raise InputError(f"the blob {digest} has {outcome} bytes, not {size}")
        return str(digest), size, self.locate(digest.blob_path)[0]


def _layout_blob(
    locate: Locate, digest: Digest, size: Any, limit: int, keep: bool = True
) -> bytearray:
    """The blob's bytes (``keep``), read within ``limit`` and checked against its digest
    and, when named, its size."""
    data, read = _read_blob(locate, digest, limit, keep)
    if isinstance(size, int) and size != read:
        raise InputError(f"the blob {digest} has {read} bytes, not {size}")
    return data


def _read_blob(locate: Locate, digest: Digest, limit: int, keep: bool) -> tuple[bytearray, int]:
    """The blob's bytes (``keep``) and its size, read within ``limit``, hash-checked."""
    hasher = digest.hasher()
    data = bytearray()
    read = 0
    with locate(digest.blob_path)[0].open() as stream:
        while chunk := stream.read(min(1 << 20, limit + 1 - read)):
            read += len(chunk)
            hasher.update(chunk)
            if keep:
                data += chunk
            if read > limit:
                raise InputError(f"the blob {digest} is larger than {limit} bytes")
    if hasher.hexdigest() != digest.hex:
        raise InputError(f"the blob {digest} does not match its digest")
    return data, read


def _located_bytes(locate: Locate, name: str, limit: int, where: str) -> bytes:
    blob, size = locate(name)
    if size > limit:
        raise InputError(f"{where}: {name} is larger than {limit} bytes")
    with blob.open() as stream:
        return stream.read(limit + 1)


# --- attestations: OCI 1.1 referrers ------------------------------------------------------

_INDEX_ACCEPT = f"{MediaType.OCI_INDEX}"
_MANIFEST_ACCEPT = ", ".join(
    str(kind)
    for kind in (
        MediaType.OCI_MANIFEST,
        MediaType.OCI_INDEX,
        MediaType.DOCKER_MANIFEST,
        MediaType.DOCKER_LIST,
    )
)


def _attach(
    client: RegistryClient, attachments: Sequence[Attachable], report: Callable[[str], None]
) -> list[str]:
    """Each artifact's blobs and manifest (by digest); then, per subject, the referrers API
    if the registry has it, else the OCI 1.1 fallback: the index under ``sha256-<hex>``,
    read, added to, put back. What was used, per subject."""
    with quiet_insecure():
        blobs = {
            digest: (size, blob) for one in attachments for digest, size, blob in one.stored_blobs()
        }
        for digest, (size, blob) in blobs.items():
            step = functools.partial(_push_blob, client, digest, size, blob, report)
            client.retrying(f"uploading blob {_short(digest)}", step)
        indexed: set[str] = set()
        for one in attachments:
            manifest = _Manifest(one.digest, one.manifest_bytes, MediaType.OCI_MANIFEST)
            step = functools.partial(_put_manifest, client, manifest)
            answer = client.retrying(f"PUT manifest {_short(one.digest)}", step)
            if answer.headers.get("OCI-Subject") == one.subject_digest:
                indexed.add(one.subject_digest)  # an OCI 1.1 registry indexed it itself
        used = []
        for subject in dict.fromkeys(one.subject_digest for one in attachments):
            if subject in indexed or _has_referrers_api(client, subject):
                used.append("referrers API")
                continue
            mine = [one for one in attachments if one.subject_digest == subject]
            step = functools.partial(_update_fallback, client, subject, mine)
            used.append(client.retrying(f"the referrers tag of {_short(subject)}", step))
    return used


def _has_referrers_api(client: RegistryClient, subject: str) -> bool:
    answer = client.request(
        "GET",
        f"/v2/{client.repository}/referrers/{subject}",
        headers={"Accept": _INDEX_ACCEPT},
    )
    if answer.status == 200:
        return True
    if answer.status in (404, 405, 400):  # 2.8 answers 404: no such endpoint
        return False
    client.fail(answer, f"GET referrers of {_short(subject)}")


def _update_fallback(client: RegistryClient, subject: str, added: Sequence[Attachable]) -> str:
    """The tag ``sha256-<hex>``'s index with ``added`` in it (what it listed is kept)."""
    tag = fallback_tag(subject)
    existing = _read_index(client, tag) or []
    data = merged_index(existing, added)
    _put_manifest(client, _Manifest(tag, data, MediaType.OCI_INDEX))
    return f"tag {tag}"


def _read_index(client: RegistryClient, where: str) -> list[dict[str, object]] | None:
    """A referrers index (the fallback tag's, or the API's answer), bounded; None: absent."""
    path = (
        f"/v2/{client.repository}/manifests/{where}"
        if not where.startswith("referrers/")
        else f"/v2/{client.repository}/{where}"
    )
    answer = client.request("GET", path, headers={"Accept": _INDEX_ACCEPT})
    if answer.status == 404:
        return None
    if answer.status != 200:
        client.fail(answer, f"GET {where}")
    what = f"{client.registry}/{client.repository}: the referrers index {where}"
    if answer.cut:
        raise PushError(f"{what} is larger than {len(answer.body)} bytes: refused")
    try:
        document = parse_json(answer.body, what)
        return referrer_descriptors(document, what)  # type: ignore[return-value]
    except InputError as err:
        raise PushError(str(err)) from None


def fetch_attachments(
    reference: str, insecure: bool = False, timeout: float = 60, retries: int = DEFAULT_RETRIES
) -> tuple[tuple[str, ...], tuple[Referrer, ...], str]:
    """The manifest digests of ``reference`` (an index: its platforms' too), the artifacts
    that refer to them (referrers API, else the fallback tag), and how they were found."""
    registry, repository, tag = parse_reference(reference)
    insecure = insecure or _is_loopback(registry)
    credentials = credentials_from_docker_config(registry)  # docker login's, if any
    client = RegistryClient(registry, repository, credentials, insecure, None, timeout, retries)
    client.actions = "pull"
    try:
        with quiet_insecure():
            client.retrying("GET /v2/", client.connect)
            manifests = _subjects(client, tag)
            found: list[Referrer] = []
            ways = []
            for subject in manifests:
                listed = _read_index(client, f"referrers/{subject}")
                way = "referrers API"
                if listed is None:
                    way = f"tag {fallback_tag(subject)}"
                    listed = _read_index(client, fallback_tag(subject)) or []
                if listed:
                    ways.append(way)
                found += [_referrer(client, one) for one in listed[:MAX_REFERRERS]]
    finally:
        client.close()
    return manifests, tuple(found), ", ".join(dict.fromkeys(ways))


def _fetch_verified(client: RegistryClient, path: str, digest: str, limit: int) -> bytes:
    """A manifest or blob by digest, bounded, its bytes checked against the digest."""
    parsed = Digest.parse(digest, f"{client.registry}: a digest")
    answer = client.request(
        "GET", f"/v2/{client.repository}/{path}/{digest}",
        headers={"Accept": _MANIFEST_ACCEPT}, limit=limit,
    )  # fmt: skip
    if answer.status != 200:
        client.fail(answer, f"GET {path} {_short(digest)}")
    if answer.cut:
        raise PushError(f"{client.registry}: {path} {digest} is larger than {limit} bytes")
    hasher = parsed.hasher()
    hasher.update(answer.body)
    if hasher.hexdigest() != parsed.hex:
        raise PushError(f"{client.registry}: {path} {digest} does not match its digest")
    return answer.body


def _subjects(client: RegistryClient, tag: str) -> tuple[str, ...]:
    """The tag's manifest digest, and for an index each listed manifest's."""
    answer = client.request(
        "GET", f"/v2/{client.repository}/manifests/{tag}", headers={"Accept": _MANIFEST_ACCEPT}
    )
    if answer.status != 200:
        client.fail(answer, f"GET manifest {tag}")
    if answer.cut:
        raise PushError(f"{client.registry}: the manifest of {tag} is too large")
    digest = sha256_digest(answer.body)
    try:
        document = json_object(parse_json(answer.body, f"{tag}"), f"{tag}")
    except InputError as err:
        raise PushError(str(err)) from None
    listed = document.get("manifests")
    if not isinstance(listed, list):
        return (digest,)
    platforms = [one.get("digest") for one in listed[:MAX_REFERRERS] if isinstance(one, dict)]
    return (digest, *(str(Digest.parse(one, f"{tag}: an index entry")) for one in platforms))


def _referrer(client: RegistryClient, descriptor: dict[str, object]) -> Referrer:
    """One listed referrer's manifest, fetched and checked; a statement's document too."""
    digest = str(descriptor.get("digest"))
    data = _fetch_verified(client, "manifests", digest, MAX_ANSWER_BODY)
    where = f"{client.registry}/{client.repository}@{digest}"
    try:
        manifest = json_object(parse_json(data, where), where)

        def read_layer(layer: dict[str, object]) -> bytes | None:
            if manifest.get("artifactType") != "application/vnd.in-toto+json":
                return None  # an SBOM: its presence is what is checked
            return _fetch_verified(client, "blobs", str(layer.get("digest")), MAX_STATEMENT)

        found = referrer_of(digest, manifest, read_layer, where)
    except InputError as err:
        raise PushError(str(err)) from None
    return dataclasses.replace(found, size=len(data))
