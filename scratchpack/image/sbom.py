"""Software bills of materials for an image: SPDX 2.3 JSON and CycloneDX 1.5 JSON.

Every regular file of the image is listed with its SHA-1 and SHA-256, under the
Debian package it came from when the root's dpkg database knows it
(:mod:`scratchpack.plan.dpkg`); generated files (``/etc/passwd``, ``ld.so.cache``)
belong to the image alone. The documents are deterministic: the timestamp is
``created_epoch`` (``SOURCE_DATE_EPOCH``), the SPDX namespace and CycloneDX
serial number derive from the image digest, everything is sorted, and the same
inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scratchpack import __version__
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.dpkg import DpkgIndex, Package
from scratchpack.plan.entries import Entry, EntryKind

FORMATS = ("spdx", "cyclonedx")
NAMESPACE_BASE = "https://scratchpack.invalid"
NOASSERTION = "NOASSERTION"
_SPDX_IMAGE_ID = "SPDXRef-Image"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SbomFile:
    """One regular file of the image."""

    path: str  # absolute in-image path
    sha256: str
    sha1: str
    size: int
    package: Package | None


def sbom_files(entries: Iterable[Entry], index: DpkgIndex, root: RootFS) -> list[SbomFile]:
    """The regular files among ``entries``, hashed and matched to their packages, by path.

    A copied file is looked up under the in-root path it was copied from (its
    ``source`` less the root's top), which is its in-image path unless an
    ``--include SRC:DEST`` moved it; generated files have no package.
    """
    files: list[SbomFile] = []
    for entry in entries:
        if entry.kind is not EntryKind.FILE:
            continue
        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
        if entry.data is not None:
            sha256.update(entry.data)
            sha1.update(entry.data)
            size, package = len(entry.data), None
        else:
            assert entry.source is not None
            size = 0
            with open(entry.source, "rb") as stream:
                while chunk := stream.read(_CHUNK):
                    sha256.update(chunk)
                    sha1.update(chunk)
                    size += len(chunk)
            origin = _in_root(entry.source, root)
            package = index.owner(origin) if origin is not None else None
        files.append(SbomFile(entry.path, sha256.hexdigest(), sha1.hexdigest(), size, package))
    return sorted(files, key=lambda file: file.path)


def _in_root(host: str, root: RootFS) -> str | None:
    if root.is_host:
        return host
    if host.startswith(root.top + "/"):
        return host[len(root.top) :]
    return None


def render(
    fmt: str, files: list[SbomFile], image_name: str, image_digest: str, created_epoch: int
) -> bytes:
    """``render_spdx`` or ``render_cyclonedx`` by name (``spdx`` | ``cyclonedx``)."""
    if fmt == "spdx":
        return render_spdx(files, image_name, image_digest, created_epoch)
    if fmt == "cyclonedx":
        return render_cyclonedx(files, image_name, image_digest, created_epoch)
    raise ValueError(f"unknown SBOM format {fmt!r}: expected one of {', '.join(FORMATS)}")


def render_spdx(
    files: list[SbomFile], image_name: str, image_digest: str, created_epoch: int
) -> bytes:
    """An SPDX 2.3 JSON document: the image, its Debian packages and every file."""
    files = sorted(files, key=lambda file: file.path)
    packages = _packages(files)
    package_ids = _unique_ids("SPDXRef-Package-deb-", {_package_key(p): p for p in packages})
    file_ids = _unique_ids("SPDXRef-File-", {file.path: file for file in files})
    spdx_packages = [_spdx_image(image_name, image_digest)]
    relationships = [_relationship("SPDXRef-DOCUMENT", "DESCRIBES", _SPDX_IMAGE_ID)]
    for package in packages:
        spdx_id = package_ids[_package_key(package)]
        spdx_packages.append(_spdx_package(package, spdx_id))
        relationships.append(_relationship(_SPDX_IMAGE_ID, "CONTAINS", spdx_id))
    spdx_files = []
    for file in files:
        spdx_id = file_ids[file.path]
        spdx_files.append(_spdx_file(file, spdx_id))
        owner = _SPDX_IMAGE_ID if file.package is None else package_ids[_package_key(file.package)]
        relationships.append(_relationship(owner, "CONTAINS", spdx_id))
    digest_hex = _digest_hex(image_digest, files)
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_name,
        "documentNamespace": f"{NAMESPACE_BASE}/spdx/{_uri_safe(image_name)}-{digest_hex}",
        "creationInfo": {
            "created": _timestamp(created_epoch),
            "creators": [f"Tool: scratchpack-{__version__}"],
        },
        "packages": sorted(spdx_packages, key=lambda p: p["SPDXID"]),
        "files": spdx_files,  # already in path order
        "relationships": sorted(
            relationships,
            key=lambda r: (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]),
        ),
    }
    return _dump(document)


def _spdx_image(image_name: str, image_digest: str) -> dict[str, Any]:
    """The image as an SPDX package, its digest as the version when it has one."""
    image_package: dict[str, Any] = {
        "SPDXID": _SPDX_IMAGE_ID,
        "name": image_name,
        "downloadLocation": NOASSERTION,
        "supplier": NOASSERTION,
        "filesAnalyzed": True,  # it contains files (SPDX: a package with files analyzed them)
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
    }
    if image_digest:
        image_package["versionInfo"] = image_digest
    return image_package


def _spdx_package(package: Package, spdx_id: str) -> dict[str, Any]:
    """A Debian package as an SPDX package, with its purl."""
    entry: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": package.name,
        "versionInfo": package.version,
        "supplier": "Organization: Debian" if package.vendor == "debian" else NOASSERTION,
        "downloadLocation": NOASSERTION,
        # Its files in the image are listed and hashed; a package that
        # CONTAINS files must not say filesAnalyzed false (SPDX 2.3 §7.8).
        "filesAnalyzed": True,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": package.purl,
            }
        ],
    }
    if package.source and package.source != package.name:
        entry["sourceInfo"] = f"built from the {package.vendor} source package {package.source}"
    return entry


def _spdx_file(file: SbomFile, spdx_id: str) -> dict[str, Any]:
    return {
        "SPDXID": spdx_id,
        "fileName": "." + file.path,
        "checksums": [
            {"algorithm": "SHA1", "checksumValue": file.sha1},
            {"algorithm": "SHA256", "checksumValue": file.sha256},
        ],
        "licenseConcluded": NOASSERTION,
        "copyrightText": NOASSERTION,
    }


def render_cyclonedx(
    files: list[SbomFile], image_name: str, image_digest: str, created_epoch: int
) -> bytes:
    """A CycloneDX 1.5 JSON BOM: the image as metadata.component, a library per
    Debian package with its files nested as ``file`` components, and the files no
    package owns at the top level."""
    files = sorted(files, key=lambda file: file.path)
    digest_hex = _digest_hex(image_digest, files)
    by_package: dict[tuple[str, str], list[dict[str, Any]]] = {}
    components: list[dict[str, Any]] = []
    for file in files:
        component = _cyclonedx_file(file)
        if file.package is None:
            components.append(component)
        else:
            by_package.setdefault(_package_key(file.package), []).append(component)
    for package in _packages(files):
        components.append(_cyclonedx_library(package, by_package[_package_key(package)]))

    image: dict[str, Any] = {"type": "container", "bom-ref": "image", "name": image_name}
    if image_digest:
        image["version"] = image_digest
    document = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": uuid.uuid5(
            uuid.NAMESPACE_URL, f"{NAMESPACE_BASE}/cyclonedx/{_uri_safe(image_name)}-{digest_hex}"
        ).urn,
        "version": 1,
        "metadata": {
            "timestamp": _timestamp(created_epoch),
            "tools": {
                "components": [
                    {"type": "application", "name": "scratchpack", "version": __version__}
                ]
            },
            "component": image,
        },
        "components": sorted(components, key=lambda c: c["bom-ref"]),
        "dependencies": [
            {
                "ref": "image",
                "dependsOn": sorted(c["bom-ref"] for c in components if c["type"] == "library"),
            }
        ],
    }
    return _dump(document)


def _cyclonedx_file(file: SbomFile) -> dict[str, Any]:
    return {
        "type": "file",
        "bom-ref": f"file:{file.path}",
        "name": file.path,
        "hashes": [
            {"alg": "SHA-1", "content": file.sha1},
            {"alg": "SHA-256", "content": file.sha256},
        ],
    }


def _cyclonedx_library(package: Package, files: list[dict[str, Any]]) -> dict[str, Any]:
    """A Debian package as a ``library`` component, its files nested in it."""
    library: dict[str, Any] = {
        "type": "library",
        "bom-ref": package.purl,
        "name": package.name,
        "version": package.version,
        "purl": package.purl,
        "components": files,
    }
    if package.vendor == "debian":
        library["supplier"] = {"name": "Debian"}
    return library


def _packages(files: list[SbomFile]) -> list[Package]:
    unique = {_package_key(f.package): f.package for f in files if f.package is not None}
    return [unique[key] for key in sorted(unique)]


def _package_key(package: Package) -> tuple[str, str]:
    return (package.name, package.architecture)


def _unique_ids(prefix: str, items: dict[Any, Any]) -> dict[Any, str]:
    """SPDX IDs (letters, digits, '.', '-') from each key; keys that would share one get a
    hash of the key appended, so the IDs never depend on what else is in the document."""
    candidates = {key: prefix + _id_safe(key) for key in items}
    counts: dict[str, int] = {}
    for candidate in candidates.values():
        counts[candidate] = counts.get(candidate, 0) + 1
    return {
        key: candidate
        if counts[candidate] == 1
        else f"{candidate}-{hashlib.sha256(repr(key).encode()).hexdigest()[:12]}"
        for key, candidate in candidates.items()
    }


def _id_safe(key: Any) -> str:
    text = "-".join(key) if isinstance(key, tuple) else str(key)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "root"


def _uri_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "image"


def _digest_hex(image_digest: str, files: list[SbomFile]) -> str:
    """The digest's hex part; without a digest (no image built), a hash of the file list."""
    if image_digest:
        return _uri_safe(image_digest.rpartition(":")[2])
    listing = "".join(f"{file.path}\0{file.sha256}\n" for file in files)
    return hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()


def _timestamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _relationship(element: str, kind: str, related: str) -> dict[str, str]:
    return {"spdxElementId": element, "relationshipType": kind, "relatedSpdxElement": related}


def _dump(document: dict[str, Any]) -> bytes:
    # ASCII with \u escapes: valid JSON even for a file name that is not UTF-8.
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("ascii")
