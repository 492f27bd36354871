"""``attestations``: what is attached to an image, and whether it is about that image.

IMAGE is an OCI layout, an OCI archive (whose ``index.json`` lists the artifacts
beside the image, as ``build --attest -o`` and ``shrink --attest -o`` write them) or a
registry reference, whose referrers come from the referrers API or, on registries
without it, from the OCI 1.1 fallback tag ``sha256-<hex>``. Each artifact's ``subject`` must be one
of the image's manifests and each in-toto statement must name that manifest's
digest among its subjects; an image without an SBOM is said, and a provenance's inputs
(binaries, packages, the source image of a shrink) are listed. Everything read is
another party's: bounded, digests checked, shown escaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from scratchpack.errors import InputError, printable
from scratchpack.image.attest import ArtifactType, check_statement
from scratchpack.image.readers import Referrer, open_attachments
from scratchpack.publish import publication


class Verdict(str, Enum):
    """What the check of one attached artifact found."""

    OK = "ok"
    NO_SUBJECT = "no-subject"  # listed beside the image, but refers to nothing
    OTHER_SUBJECT = "other-subject"  # its manifest's subject is not one of the image's
    STATEMENT_MISMATCH = "statement-mismatch"  # the statement's subjects omit its image
    UNCHECKED = "unchecked"  # a statement too large to read back
    MALFORMED = "malformed"  # not an in-toto Statement v1: one verdict, the others still given


@dataclass(frozen=True)
class Attached:
    """One artifact attached to the image, as listed and as checked."""

    artifact_type: str
    digest: str
    size: int
    subject: str | None
    predicate_type: str | None
    verdict: Verdict
    inputs: tuple[tuple[str, str], ...] = ()  # a provenance's: what the image was made from

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "artifact_type": self.artifact_type,
            "digest": self.digest,
            "size": self.size,
            "subject": self.subject,
            "predicate_type": self.predicate_type,
            "verdict": self.verdict.value,
        }
        if self.inputs:
            document["inputs"] = [{"name": name, "digest": digest} for name, digest in self.inputs]
        return document


@dataclass(frozen=True)
class AttestationsResult:
    image: str
    source: str  # "file" (layout or archive) or "registry"
    manifests: tuple[str, ...]  # the image's manifest digests (an index: each platform's too)
    attached: tuple[Attached, ...]
    found_by: str = ""  # registry: "referrers API" or the fallback tag

    @property
    def has_sbom(self) -> bool:
        sboms = {ArtifactType.SPDX.value, ArtifactType.CYCLONEDX.value}
        return any(
            one.artifact_type in sboms and one.verdict is Verdict.OK for one in self.attached
        )

    @property
    def problems(self) -> tuple[Attached, ...]:
        return tuple(one for one in self.attached if one.verdict not in (Verdict.OK,))

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "source": self.source,
            "found_by": self.found_by or None,
            "manifests": list(self.manifests),
            "sbom": self.has_sbom,
            "verified": not self.problems,
            "attached": [one.to_json() for one in self.attached],
        }


def run_attestations(image: str, insecure: bool = False) -> AttestationsResult:
    """The artifacts attached to ``image`` (a path, else a registry reference), checked."""
    if not image.strip():
        raise InputError("no image given: expected an OCI layout, an archive or REGISTRY/REPO:TAG")
    if os.path.lexists(Path(image).expanduser()) or image.startswith(("/", ".", "~")):
        with publication() as staged:
            manifests, referrers = open_attachments(image, staged.scratch())
        source, found_by = "file", ""
    else:
        from scratchpack.image.registry import fetch_attachments

        manifests, referrers, found_by = fetch_attachments(image, insecure=insecure)
        source = "registry"
    attached = tuple(_checked(one, manifests) for one in referrers)
    return AttestationsResult(image, source, manifests, attached, found_by)


def _checked(referrer: Referrer, manifests: tuple[str, ...]) -> Attached:
    if referrer.subject is None:
        verdict = Verdict.NO_SUBJECT
    elif referrer.subject not in manifests:
        verdict = Verdict.OTHER_SUBJECT
    else:
        verdict = Verdict.OK
    predicate, inputs = None, ()
    if referrer.artifact_type == ArtifactType.IN_TOTO.value:
        if referrer.document is None:
            verdict = Verdict.UNCHECKED if verdict is Verdict.OK else verdict
        else:
            where = f"the statement {referrer.digest}"
            try:
                found = check_statement(referrer.document, referrer.subject or "", where)
            except InputError:  # anyone who may push may attach junk: it hides nothing else
                return Attached(
                    referrer.artifact_type,
                    referrer.digest,
                    referrer.size,
                    referrer.subject,
                    None,
                    Verdict.MALFORMED,
                )
            predicate, inputs = found.predicate_type, found.inputs
            if verdict is Verdict.OK and not found.matches:
                verdict = Verdict.STATEMENT_MISMATCH
    return Attached(
        referrer.artifact_type,
        referrer.digest,
        referrer.size,
        referrer.subject,
        predicate,
        verdict,
        inputs,
    )


def problem_line(result: AttestationsResult) -> str | None:
    """The one line of a failed check: the first artifact that is not about the image."""
    if not result.problems:
        return None
    first = result.problems[0]
    words = {
        Verdict.NO_SUBJECT: "names no subject",
        Verdict.OTHER_SUBJECT: f"is about {first.subject}, not this image",
        Verdict.STATEMENT_MISMATCH: "is a statement whose subjects do not name its image",
        Verdict.UNCHECKED: "could not be read back to check",
        Verdict.MALFORMED: "is not an in-toto Statement v1",
    }
    more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
    return printable(
        f"{result.image}: the attached {first.artifact_type} {first.digest} "
        f"{words[first.verdict]}{more}"
    )


def report_text(result: AttestationsResult) -> str:
    lines = [printable(f"{result.image}: {', '.join(result.manifests[:4])}")]
    if result.found_by:
        lines.append(f"found through {result.found_by}")
    if not result.attached:
        lines.append("nothing attached")
    for one in result.attached:
        kind = f" {one.predicate_type}" if one.predicate_type else ""
        lines.append(
            printable(
                f"  {one.artifact_type}{kind} {one.digest} ({one.size} bytes): {one.verdict.value}"
            )
        )
        lines.extend(printable(f"    from {name} {digest}") for name, digest in one.inputs)
    lines.append("SBOM attached" if result.has_sbom else "no SBOM attached")
    return "\n".join(lines) + "\n"
