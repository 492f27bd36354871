"""``push SOURCE REGISTRY/REPO:TAG``: an image written earlier, with its attestations, pushed.

``build --attest -o`` and ``shrink --attest -o`` write the image and its SBOM and
provenance into an OCI layout or archive; a CI run scans that, then pushes it later.
``skopeo copy`` would drop the attestations; this pushes the image (an index: every
platform) byte for byte, then its artifacts through the referrers API or the
``sha256-<hex>`` fallback tag. The source is another party's: read through
:mod:`~scratchpack.image.readers` with their bounds, every blob hashed before anything
is sent (a corrupt source is bad input, exit 2, and nothing goes up); an archive is only
ever decompressed into a private temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.errors import InputError, printable
from scratchpack.publish import publication

if TYPE_CHECKING:
    from scratchpack.image.registry import Credentials, PushResult


@dataclass(frozen=True)
class PushRequest:
    """What to push where, and who logs in (``credentials`` resolved by the command line)."""

    source: str  # as given: a layout directory or an archive
    reference: str
    insecure: bool = False
    retries: int = 5
    user: str | None = None  # --registry-user: the password comes from stdin
    password_stdin: bool = False
    credentials: Credentials | None = None


def check_request(request: PushRequest) -> None:
    """Everything that can be said before any file is read or password asked for."""
    from scratchpack.image.registry import parse_reference
    from scratchpack.image.registry_auth import check_login_options

    if not request.source.strip() or not os.path.lexists(Path(request.source).expanduser()):
        raise InputError(
            printable(f"{request.source}: no such file or directory (an OCI layout or archive)")
        )
    parse_reference(request.reference)
    check_login_options(request.user, request.password_stdin)


def registry_of(request: PushRequest) -> str:
    """The registry the credentials are for: the reference's, nothing else."""
    from scratchpack.image.registry import parse_reference

    return parse_reference(request.reference)[0]


@dataclass(frozen=True)
class PushCommandResult:
    """What went up: the registry's answer, and the attestations carried or left behind."""

    source: str
    push: PushResult

    def to_json(self) -> dict[str, Any]:
        push = self.push
        return {
            "source": self.source,
            "reference": push.reference,
            "digest": push.manifest_digest,
            "blobs_uploaded": push.blobs_uploaded,
            "blobs_skipped": push.blobs_skipped,
            "attestations": list(push.attached),
            "attached_by": list(push.referrers),
            "not_attached": list(push.not_attached),
        }


def run_push(
    request: PushRequest, progress: Callable[[str], None] | None = None
) -> PushCommandResult:
    """Read and check the source in a private scratch directory, then push it."""
    from scratchpack.image.registry import open_source, push_opened

    with publication() as staged:
        opened = open_source(Path(request.source).expanduser(), staged.scratch())
        result = push_opened(
            opened,
            request.reference,
            request.credentials,
            insecure=request.insecure,
            progress=progress,
            retries=request.retries,
        )
    return PushCommandResult(printable(request.source), result)


def report_text(result: PushCommandResult) -> str:
    push = result.push
    lines = [
        f"Pushed {push.reference} {push.manifest_digest}",
        f"image blobs: {push.blobs_uploaded} uploaded, {push.blobs_skipped} already there",
    ]
    if push.attached:
        how = ", ".join(dict.fromkeys(push.referrers))
        lines.append(f"attestations: {len(push.attached)} attached through {how}")
        lines.extend(f"  {digest}" for digest in push.attached)
    else:
        lines.append("attestations: none in the source")
    lines.extend(f"left behind: {line}" for line in push.not_attached)
    return "\n".join(lines) + "\n"
