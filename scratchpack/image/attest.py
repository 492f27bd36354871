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
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

from scratchpack import __version__
from scratchpack.errors import InputError
from scratchpack.image.config import source_date_epoch
from scratchpack.image.digest import Digest, sha256_digest
from scratchpack.image.documents import canonical_json
from scratchpack.image.media import MediaType
from scratchpack.image.model import Blob, BytesBlob, Descriptor, Image, ImageIndex

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://scratchpack.invalid/build/v1"
SHRINK_TYPE = "https://scratchpack.invalid/shrink/v1"
VARIANT_TYPE = "https://scratchpack.invalid/debug-variant/v1"
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
        return _attestation_descriptor(self)

    def blobs(self) -> list[bytes]:
        """The blobs it needs besides its manifest: the empty config and the document."""
        return [EMPTY_CONFIG, self.document]

    @property
    def subject_digest(self) -> str:
        return self.subject.digest

    def stored_blobs(self) -> list[tuple[str, int, Blob]]:
        """(digest, size, where) of each blob, as a push takes them."""
        return [(sha256_digest(data), len(data), BytesBlob(data)) for data in self.blobs()]


class Attachable(Protocol):
    """What a push attaches: a fresh :class:`Artifact`, or one read from a layout."""

    @property
    def digest(self) -> str: ...

    @property
    def manifest_bytes(self) -> bytes: ...

    @property
    def subject_digest(self) -> str: ...

    def descriptor_json(self) -> dict[str, Any]: ...

    def stored_blobs(self) -> list[tuple[str, int, Blob]]: ...


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact manifest found beside an image (a layout's), its bytes kept as they are."""

    digest: str
    manifest_bytes: bytes
    subject_digest: str
    artifact_type: str
    predicate_type: str | None
    blobs: tuple[tuple[str, int, Blob], ...]  # its config and layers, hash-checked

    def descriptor_json(self) -> dict[str, Any]:
        return _attestation_descriptor(self)

    def stored_blobs(self) -> list[tuple[str, int, Blob]]:
        return list(self.blobs)


def _attestation_descriptor(artifact: Artifact | StoredArtifact) -> dict[str, Any]:
    """An artifact's entry in ``index.json`` or a referrers index, marked as an attestation
    (BuildKit's words, so readers that know them do not take it for an image)."""
    annotations = {REFERENCE_TYPE: ATTESTATION, REFERENCE_DIGEST: artifact.subject_digest}
    if artifact.predicate_type:
        annotations[PREDICATE_ANNOTATION] = artifact.predicate_type
    return {
        "mediaType": str(MediaType.OCI_MANIFEST),
        "digest": artifact.digest,
        "size": len(artifact.manifest_bytes),
        "artifactType": str(artifact.artifact_type),
        "annotations": annotations,
    }


@dataclass(frozen=True)
class Attested:
    """An image (or index) with the artifacts attached to its images, written together."""

    artifact: Image | ImageIndex
    attachments: tuple[Artifact, ...]


def unwrap(thing: Image | ImageIndex | Attested) -> tuple[Image | ImageIndex, tuple[Artifact, ...]]:
    if isinstance(thing, Attested):
        return thing.artifact, thing.attachments
    return thing, ()


def attested(image: Image | ImageIndex, attached: tuple[Artifact, ...]) -> Any:
    """What the writers take: the image alone, or with its attestations beside it."""
    return Attested(image, attached) if attached else image


def attached_json(attached: Sequence[Artifact]) -> tuple[dict[str, str], ...]:
    """A command result's ``attestations``: each artifact's type, digest and subject."""
    return tuple(
        {
            "artifact_type": str(one.artifact_type),
            "digest": one.digest,
            "subject": one.subject.digest,
        }
        for one in attached
    )


# -- provenance -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """One input of the build: a binary, a package, the lock file, a source image; by SHA-256."""

    name: str
    sha256: str
    uri: str | None = None
    version: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()  # what else a reader needs to know of it
    algorithm: str = "sha256"  # of ``sha256``, the field: a layout may name sha512 manifests

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "digest": {self.algorithm: self.sha256}}
        if self.uri:
            document["uri"] = self.uri
        annotations = dict(self.annotations)
        if self.version:
            annotations["version"] = self.version
        if annotations:
            document["annotations"] = annotations
        return document


class DigestOf(str, Enum):
    """Which document of a source image a dependency's digest is the digest of."""

    MANIFEST = "manifest"  # what a registry, a layout or an archive names it by
    CONFIG = "config"  # an engine's image ID: the one digest every engine image has


def source_dependencies(
    reference: str,
    source_format: str,
    image_id: str,
    manifest_digest: str | None = None,
    repo_digests: Sequence[str] = (),
) -> tuple[Dependency, ...]:
    """The image ``shrink``/``debug`` started from: named as the user gave it, by its manifest
    digest where the source has one, else by its image ID; an engine's ``RepoDigests``
    (``NAME@sha256:...``, the registry manifests it was pulled as) each one more entry."""
    digest = Digest.parse(manifest_digest or image_id, f"the source {reference}")
    kind = DigestOf.MANIFEST if manifest_digest else DigestOf.CONFIG
    about = (("digestOf", kind.value), ("source", source_format))
    found = [Dependency(reference, digest.hex, annotations=about, algorithm=digest.algorithm)]
    if manifest_digest:
        config = Digest.parse(image_id, f"the source {reference}: its image ID")
        about = (("digestOf", DigestOf.CONFIG.value), ("source", source_format))
        found.append(
            Dependency(
                f"{reference} (config)", config.hex, annotations=about, algorithm=config.algorithm
            )
        )
    for pinned in sorted(set(repo_digests))[:MAX_REFERRERS]:
        name, _at, text = pinned.rpartition("@")
        try:
            repo = Digest.parse(text, f"the source {reference}: its RepoDigests")
        except InputError:
            continue  # the engine's word on where it pulled from: a bad one names nothing
        if name and repo.algorithm == "sha256":
            annotations = (("digestOf", DigestOf.MANIFEST.value), ("source", "RepoDigests"))
            found.append(Dependency(pinned, repo.hex, annotations=annotations))
    return tuple(found)


def pinned_epoch() -> int | None:
    """SOURCE_DATE_EPOCH when it is set (checked), else None: a provenance then says no time."""
    given = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return source_date_epoch() if given else None


@dataclass(frozen=True)
class BuildFacts:
    """What the provenance says of a build: its options, its inputs, its time if pinned."""

    parameters: Mapping[str, Any]
    dependencies: tuple[Dependency, ...]
    epoch: int | None = None  # SOURCE_DATE_EPOCH when set: the one timestamp it carries
    build_type: str = BUILD_TYPE  # build's, or shrink's (SHRINK_TYPE)


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
                "buildType": facts.build_type,
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
    return (
        Artifact(ArtifactType.for_sbom(sbom_format), sbom, subject),
        provenance(image, name, facts),
    )


def variant_provenance(
    variant: Image,
    name: str,
    made_from: Image,
    made_from_name: str,
    parameters: Mapping[str, Any],
    more: Sequence[Dependency] = (),
) -> Artifact:
    """A variant's provenance (``build --debug``'s TAG-debug): its input is the image it was
    made from, by that image's manifest digest (the subject of its own attestations)."""
    made = made_from.manifest_descriptor.digest
    dependencies = source_dependencies(made_from_name, "scratchpack", made_from.image_id, made)
    facts = BuildFacts(parameters, (*dependencies, *more), pinned_epoch(), VARIANT_TYPE)
    return provenance(variant, name, facts)


def provenance(image: Image, name: str, facts: BuildFacts) -> Artifact:
    """The SLSA provenance of one image alone (a variant's: what it was made from)."""
    subject = image.manifest_descriptor
    document = statement(name, subject.digest, facts)
    return Artifact(ArtifactType.IN_TOTO, document, subject, SLSA_PROVENANCE)


# -- reading back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementCheck:
    """What a statement says: its predicate type and whether its subject is the image."""

    predicate_type: str
    subjects: tuple[str, ...]  # "sha256:HEX" each
    matches: bool
    inputs: tuple[tuple[str, str], ...] = ()  # SLSA provenance: (name, "sha256:HEX") of each


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
    inputs = _inputs(document.get("predicate")) if predicate_type == SLSA_PROVENANCE else ()
    return StatementCheck(predicate_type, tuple(named), image_digest in named, inputs)


MAX_INPUT_NAME = 256  # characters of a dependency's name shown back


def _inputs(predicate: Any) -> tuple[tuple[str, str], ...]:
    """The resolved dependencies a provenance names: what the image was made from. Entries
    without a name or a valid digest are passed over; they hide nothing the subject check says."""
    definition = predicate.get("buildDefinition") if isinstance(predicate, dict) else None
    listed = definition.get("resolvedDependencies") if isinstance(definition, dict) else None
    found = []
    for one in listed[:MAX_REFERRERS] if isinstance(listed, list) else []:
        name = one.get("name") if isinstance(one, dict) else None
        digests = one.get("digest") if isinstance(one, dict) else None
        if not isinstance(name, str) or not isinstance(digests, dict):
            continue
        for algorithm, value in sorted(digests.items())[:1]:
            try:
                digest = Digest.parse(f"{algorithm}:{value}", "a dependency")
            except InputError:
                continue
            found.append((name[:MAX_INPUT_NAME], str(digest)))
    return tuple(found)


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


def merged_index(existing: Sequence[dict[str, Any]], added: Sequence[Attachable]) -> bytes:
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
