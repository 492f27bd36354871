"""Attestations: an image's SBOM and SLSA provenance as OCI 1.1 artifacts that refer to it.

Each document is the one layer of an artifact manifest whose ``subject`` is the
image manifest and whose config is the empty ``{}``: the shape registries with
the referrers API index, that the ``sha256-<hex>`` tag fallback lists, and that
Trivy (``--sbom-sources oci``) and policy engines look for. Everything here is
derived canonically from its inputs (no clock, no random), so the same build
makes the same artifacts and the same digests. Reading them back needs the
checks here too: :func:`check_statement`, :func:`referrer_descriptors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

from scratchpack import __version__
from scratchpack.errors import InputError
from scratchpack.image.digest import Digest, sha256_digest
from scratchpack.image.documents import canonical_json
from scratchpack.image.media import MediaType
from scratchpack.image.model import Descriptor, Image, ImageIndex

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://scratchpack.invalid/build/v1"
BUILDER_ID = "scratchpack"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
# BuildKit's words for "this manifest attests that one": readers that know them skip it.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION = "attestation-manifest"
MAX_REFERRERS = 256  # descriptors a referrers index (API or fallback tag) may list


class ArtifactType(str, Enum):
    """What an attached document is, as its manifest's ``artifactType`` says."""

    SPDX = "application/spdx+json"
    CYCLONEDX = "application/vnd.cyclonedx+json"
    IN_TOTO = "application/vnd.in-toto+json"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def for_sbom(cls, sbom_format: str) -> ArtifactType:
        return cls.SPDX if sbom_format == "spdx" else cls.CYCLONEDX


def empty_descriptor() -> Descriptor:
    return Descriptor(EMPTY_MEDIA_TYPE, sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG))


@dataclass(frozen=True)
class Artifact:
    """One attached document: an artifact manifest with the document as its one layer."""

    artifact_type: ArtifactType
    document: bytes
    subject: Descriptor  # the image manifest it is about
    predicate_type: str | None = None  # of an in-toto statement

    @cached_property
    def layer(self) -> Descriptor:
        annotations = ((PREDICATE_ANNOTATION, self.predicate_type),) if self.predicate_type else ()
        return Descriptor(
            str(self.artifact_type), sha256_digest(self.document), len(self.document), annotations
        )

    @cached_property
    def manifest_bytes(self) -> bytes:
        subject = Descriptor(self.subject.media_type, self.subject.digest, self.subject.size)
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": str(MediaType.OCI_MANIFEST),
                "artifactType": str(self.artifact_type),
                "config": empty_descriptor().to_json(),
                "layers": [self.layer.to_json()],
                "subject": subject.to_json(),
            }
        )

    @cached_property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    def descriptor_json(self) -> dict[str, Any]:
        """Its entry in ``index.json`` or a referrers index: marked as an attestation."""
        annotations = {REFERENCE_TYPE: ATTESTATION, REFERENCE_DIGEST: self.subject.digest}
        if self.predicate_type:
            annotations[PREDICATE_ANNOTATION] = self.predicate_type
        return {
            "mediaType": str(MediaType.OCI_MANIFEST),
            "digest": self.digest,
            "size": len(self.manifest_bytes),
            "artifactType": str(self.artifact_type),
            "annotations": annotations,
        }

    def blobs(self) -> list[bytes]:
        """The blobs it needs besides its manifest: the empty config and the document."""
        return [EMPTY_CONFIG, self.document]


@dataclass(frozen=True)
class Attested:
    """An image (or index) with the artifacts attached to its images, written together."""

    artifact: Image | ImageIndex
    attachments: tuple[Artifact, ...]


def unwrap(thing: Image | ImageIndex | Attested) -> tuple[Image | ImageIndex, tuple[Artifact, ...]]:
    if isinstance(thing, Attested):
        return thing.artifact, thing.attachments
    return thing, ()


# -- provenance -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """One input of the build: a binary, a package, the lock file; by SHA-256."""

    name: str
    sha256: str
    uri: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "digest": {"sha256": self.sha256}}
        if self.uri:
            document["uri"] = self.uri
        if self.version:
            document["annotations"] = {"version": self.version}
        return document


@dataclass(frozen=True)
class BuildFacts:
    """What the provenance says of a build: its options, its inputs, its time if pinned."""

    parameters: Mapping[str, Any]
    dependencies: tuple[Dependency, ...]
    epoch: int | None = None  # SOURCE_DATE_EPOCH when set: the one timestamp it carries


def statement(subject_name: str, subject_digest: str, facts: BuildFacts) -> bytes:
    """An in-toto Statement v1 of SLSA provenance v1 about one image manifest."""
    digest = Digest.parse(subject_digest, "the subject")
    details: dict[str, Any] = {
        "builder": {"id": BUILDER_ID, "version": {"scratchpack": __version__}},
    }
    if facts.epoch is not None:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(facts.epoch))
        details["metadata"] = {"startedOn": moment, "finishedOn": moment}
    dependencies = sorted(facts.dependencies, key=lambda one: (one.name, one.sha256))
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": dict(facts.parameters),
                "resolvedDependencies": [one.to_json() for one in dependencies],
            },
            "runDetails": details,
        },
    }
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("ascii")


def attestations(
    image: Image, name: str, sbom: bytes, sbom_format: str, facts: BuildFacts
) -> tuple[Artifact, Artifact]:
    """The SBOM and the provenance of one image, each an artifact whose subject it is."""
    subject = image.manifest_descriptor
    provenance = statement(name, subject.digest, facts)
    return (
        Artifact(ArtifactType.for_sbom(sbom_format), sbom, subject),
        Artifact(ArtifactType.IN_TOTO, provenance, subject, SLSA_PROVENANCE),
    )


# -- reading back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementCheck:
    """What a statement says: its predicate type and whether its subject is the image."""

    predicate_type: str
    subjects: tuple[str, ...]  # "sha256:HEX" each
    matches: bool


def check_statement(data: bytes, image_digest: str, where: str) -> StatementCheck:
    """Parse an in-toto statement (bounded by the caller) and compare its subjects."""
    from scratchpack.image.documents import json_object, parse_json

    document = json_object(parse_json(data, where, kind="an in-toto statement"), where)
    if document.get("_type") != STATEMENT_TYPE:
        raise InputError(f"{where}: not an in-toto Statement v1 (_type is not {STATEMENT_TYPE})")
    predicate_type = document.get("predicateType")
    subjects = document.get("subject")
    if not isinstance(predicate_type, str) or not isinstance(subjects, list) or not subjects:
        raise InputError(f"{where}: a statement without a predicateType or a subject")
    named: list[str] = []
    for subject in subjects[:MAX_REFERRERS]:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digests, dict):
            raise InputError(f"{where}: a statement subject without a digest")
        for algorithm, value in sorted(digests.items()):
            named.append(str(Digest.parse(f"{algorithm}:{value}", f"{where}: a subject")))
    return StatementCheck(predicate_type, tuple(named), image_digest in named)


def referrer_descriptors(index: Any, where: str) -> list[dict[str, Any]]:
    """The descriptors of a referrers index (the API's or the fallback tag's), checked."""
    from scratchpack.image.documents import json_object

    document = json_object(index, where)
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise InputError(f"{where}: a referrers index without manifests")
    if len(manifests) > MAX_REFERRERS:
        raise InputError(f"{where}: lists more than {MAX_REFERRERS} referrers")
    found = []
    for descriptor in manifests:
        if not isinstance(descriptor, dict):
            raise InputError(f"{where}: a referrer that is not a descriptor")
        Digest.parse(descriptor.get("digest"), f"{where}: a referrer")
        found.append(descriptor)
    return found


def merged_index(existing: Sequence[dict[str, Any]], added: Sequence[Artifact]) -> bytes:
    """The fallback tag's index: what it listed, and each artifact not already in it."""
    manifests = list(existing)
    listed = {descriptor.get("digest") for descriptor in manifests}
    for artifact in added:
        if artifact.digest not in listed:
            manifests.append(artifact.descriptor_json())
            listed.add(artifact.digest)
    return canonical_json(
        {"schemaVersion": 2, "mediaType": str(MediaType.OCI_INDEX), "manifests": manifests}
    )


def fallback_tag(subject_digest: str) -> str:
    """OCI 1.1's tag for the referrers of ``subject_digest``: ``sha256-<hex>``."""
    digest = Digest.parse(subject_digest, "the subject")
    return f"{digest.algorithm}-{digest.hex}"
