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
decides, so a test can treat one as remote).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from scratchpack.errors import EXIT_PUSH, InputError
from scratchpack.image.attest import (
    MAX_REFERRERS,
    Artifact,
    fallback_tag,
    merged_index,
    referrer_descriptors,
)
from scratchpack.image.digest import Digest, HashingReader, sha256_digest
from scratchpack.image.documents import json_object, parse_json
from scratchpack.image.media import MediaType
from scratchpack.image.model import Blob, BytesBlob, Image, ImageIndex
from scratchpack.image.readers import Referrer, referrer_of
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

MAX_STATEMENT = 4 << 20  # an in-toto statement read back from a registry

__all__ = [
    "EXIT_PUSH",
    "Credentials",
    "PushError",
    "PushResult",
    "credentials_from_docker_config",
    "default_docker_config",
    "fetch_attachments",
    "parse_reference",
    "push_image",
    "push_layout",
]


@dataclass(frozen=True)
class PushResult:
    """What a push did: the full reference, the manifest digest the registry now serves."""

    reference: str
    manifest_digest: str
    blobs_uploaded: int
    blobs_skipped: int
    referrers: tuple[str, ...] = ()  # per subject: "referrers API" or the fallback tag written


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
    attachments: Sequence[Artifact] = (),
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
        f"{registry}/{repository}:{tag}", top_digest, uploaded, skipped, tuple(referrers)
    )


def push_layout(layout_dir: str | Path, reference: str, *args: Any, **kwargs: Any) -> PushResult:
    """Push the one image of an OCI layout directory that this process did not write.

    Bytes read from disk are checked before anything is sent: every blob is
    hashed against its name, so a corrupt layout pushes nothing. (Images the
    writer just made need no such pass: :func:`push_image` them.)
    """
    from scratchpack.image.readers import open_path

    layout = Path(layout_dir)
    if not (layout / "oci-layout").is_file() or not (layout / "index.json").is_file():
        raise PushError(f"{layout}: not an OCI image layout (no oci-layout or index.json)")
    try:
        image = open_path(str(layout), layout, layout).image
        for layer in image.layers:
            with layer.blob.open() as stream:
                reader = HashingReader(stream, Digest.parse(layer.digest).algorithm)
                actual = reader.drain()
            if actual != layer.digest or reader.size != layer.size:
                raise PushError(
                    f"{layout}: the layer blob {layer.digest} is corrupt: its content hashes "
                    f"to {actual} ({reader.size} bytes)"
                )
    except InputError as err:
        raise PushError(str(err)) from None
    return push_image(image, reference, *args, **kwargs)


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
    client: RegistryClient, attachments: Sequence[Artifact], report: Callable[[str], None]
) -> list[str]:
    """Each artifact's blobs and manifest (by digest); then, per subject, the referrers API
    if the registry has it, else the OCI 1.1 fallback: the index under ``sha256-<hex>``,
    read, added to, put back. What was used, per subject."""
    with quiet_insecure():
        blobs = {sha256_digest(data): data for one in attachments for data in one.blobs()}
        for digest, data in blobs.items():
            step = functools.partial(_push_blob, client, digest, len(data), BytesBlob(data), report)
            client.retrying(f"uploading blob {_short(digest)}", step)
        indexed: set[str] = set()
        for one in attachments:
            manifest = _Manifest(one.digest, one.manifest_bytes, MediaType.OCI_MANIFEST)
            step = functools.partial(_put_manifest, client, manifest)
            answer = client.retrying(f"PUT manifest {_short(one.digest)}", step)
            if answer.headers.get("OCI-Subject") == one.subject.digest:
                indexed.add(one.subject.digest)  # an OCI 1.1 registry indexed it itself
        used = []
        for subject in dict.fromkeys(one.subject.digest for one in attachments):
            if subject in indexed or _has_referrers_api(client, subject):
                used.append("referrers API")
                continue
            mine = [one for one in attachments if one.subject.digest == subject]
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


def _update_fallback(client: RegistryClient, subject: str, added: Sequence[Artifact]) -> str:
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
