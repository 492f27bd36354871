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
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from scratchpack.errors import EXIT_PUSH, InputError
from scratchpack.image.digest import Digest, HashingReader
from scratchpack.image.model import Blob, BytesBlob, Image, ImageIndex
from scratchpack.image.reference import Reference
from scratchpack.image.registry_auth import (
    Credentials,
    PushError,
    credentials_from_docker_config,
    default_docker_config,
)
from scratchpack.image.registry_transport import (
    DEFAULT_RETRIES,
    Answer,
    RegistryClient,
    follow,
    quiet_insecure,
    upload_deadline,
)
from scratchpack.image.registry_transport import is_loopback as _is_loopback

__all__ = [
    "EXIT_PUSH",
    "Credentials",
    "PushError",
    "PushResult",
    "credentials_from_docker_config",
    "default_docker_config",
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
) -> PushResult:
    """Push ``image`` (or an image index and its images) as ``reference``; no engine needed.

    Its blobs are streamed from where they are (the writer hashed them as it
    wrote them); the manifest goes up byte for byte, so the registry's digest
    is the image's, and a registry that reports another one is an error. An
    index's images go up by digest first, then the index under the tag.
    ``insecure`` allows plain HTTP / unverified HTTPS (always allowed for
    loopback registries, as docker does); ``ca_file`` trusts a private CA.
    ``progress`` receives one line per blob. Raises :class:`PushError` (exit
    5), or :class:`~scratchpack.errors.InputError` for a malformed reference.
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
    finally:
        client.close()
    report(f"pushed {top_digest} as {registry}/{repository}:{tag}")
    return PushResult(f"{registry}/{repository}:{tag}", top_digest, uploaded, skipped)


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
