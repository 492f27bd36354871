"""``push_layout`` carries the layout's attestations: those whose subject is the pushed image go
up with it, hash-checked; anything else in a hostile layout is left behind, named in one line.

The attacks come first: an artifact about another image, a manifest that is not JSON, a
document whose bytes lie, a blob that is a symlink out of the layout, a descriptor that is
not one, a control character in an artifact type, a subject that is not a digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchpack.commands.attestations import run_attestations
from scratchpack.image.attest import Artifact, Attested, BuildFacts, attestations
from scratchpack.image.layout import write_layout
from scratchpack.image.model import FileBlob, Image
from scratchpack.image.registry import PushError, open_source, push_layout
from scratchpack.notes import collecting
from tests.fake_registry import (
    Servers,
    StoringRegistry,
    image_fixture,  # noqa: F401 (a fixture)
    servers_fixture,  # noqa: F401 (a fixture)
)

FACTS = BuildFacts({"tag": "app:1"}, ())
IN_TOTO = "application/vnd.in-toto+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layout(image: Image, directory: Path) -> tuple[Path, tuple[Artifact, ...]]:
    attached = attestations(image, "app:1", b'{"spdxVersion": "SPDX-2.3"}\n', "spdx", FACTS)
    write_layout(Attested(image, attached), directory, "app:1")
    return directory, attached


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    (layout / "blobs/sha256" / _sha(data)[7:]).write_bytes(data)
    return {"digest": _sha(data), "size": len(data)}


def _add(layout: Path, descriptor: Any) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))


def _artifact(layout: Path, subject: str, document: bytes = b"{}", **more: Any) -> dict[str, Any]:
    """An artifact manifest about ``subject`` stored in the layout: its descriptor."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": IN_TOTO,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **_blob(layout, b"{}")},
        "layers": [{"mediaType": IN_TOTO, **_blob(layout, document)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
        **more,
    }
    stored = _blob(layout, json.dumps(manifest).encode())
    return {"mediaType": OCI_MANIFEST, "artifactType": IN_TOTO, **stored}


def _push(layout: Path, address: str) -> tuple[Any, list[str]]:
    with collecting() as warnings:
        result = push_layout(layout, f"{address}/app:1", retries=0)
    return result, warnings.messages


# --- attacks ---------------------------------------------------------------------------------


def test_an_artifact_about_another_image_stays_behind(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    layout, attached = _layout(image, tmp_path / "layout")
    other = _artifact(layout, "sha256:" + "e" * 64)
    _add(layout, other)
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    result, warnings = _push(layout, address)
    assert other["digest"] not in registry.manifests
    assert {one.digest for one in attached} <= set(registry.manifests)
    (line,) = result.not_attached
    assert other["digest"] in line and "sha256:" + "e" * 64 in line and "\n" not in line
    assert warnings == [line]


def _hostile_entries(layout: Path, subject: str, outside: Path) -> list[Any]:
    declared = {"mediaType": OCI_MANIFEST, "artifactType": IN_TOTO}  # as BuildKit's are
    entries: list[Any] = [42, {**declared, "digest": "sha256:nothex"}]
    entries.append({**declared, **_blob(layout, b"{not json")})
    lying = _artifact(layout, subject, b'{"lie": 1}')
    manifest = json.loads((layout / "blobs/sha256" / lying["digest"][7:]).read_bytes())
    (layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]).write_bytes(b'{"lie": 2}')
    entries.append(lying)
    linked = _artifact(layout, subject, b'{"linked": 1}')
    manifest = json.loads((layout / "blobs/sha256" / linked["digest"][7:]).read_bytes())
    target = layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    outside.write_bytes(b'{"linked": 1}')
    target.unlink()
    os.symlink(outside, target)
    entries.append(linked)
    entries.append(_artifact(layout, subject, b"{}", artifactType="text/x\x1b[31m\nred"))
    entries.append(_artifact(layout, "sha256:" + "z" * 64))
    missing = _artifact(layout, subject, b'{"gone": 1}')
    manifest = json.loads((layout / "blobs/sha256" / missing["digest"][7:]).read_bytes())
    (layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]).unlink()
    entries.append(missing)
    return entries


def test_malformed_artifacts_are_named_and_left_behind(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    layout, attached = _layout(image, tmp_path / "layout")
    subject = image.manifest_descriptor.digest
    hostile = _hostile_entries(layout, subject, tmp_path / "outside.json")
    for entry in hostile:
        _add(layout, entry)
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    result, warnings = _push(layout, address)
    assert result.manifest_digest == subject
    pushed = {key for key in registry.manifests if key.startswith("sha256:")}
    assert pushed == {subject, *(one.digest for one in attached)}
    assert len(result.not_attached) == len(hostile) == len(warnings)
    for line in result.not_attached:
        assert "\n" not in line and "\x1b" not in line and "not pushed" in line
    assert b'{"lie": 2}' not in registry.blobs.values()
    assert b'{"linked": 1}' not in registry.blobs.values()


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each blob file is opened (each open is one read, one hash)."""
    opened: Counter[str] = Counter()
    real_open = FileBlob.open

    @contextlib.contextmanager
    def counted(self: FileBlob) -> Iterator[Any]:
        opened[self.path.name] += 1
        with real_open(self) as stream:
            yield stream

    monkeypatch.setattr(FileBlob, "open", counted)
    return opened


def _sharing(layout: Path, subject: str, shared: dict[str, Any], count: int) -> list[Any]:
    """``count`` artifacts, each listing the blob ``shared`` many times, each entry twice."""
    entries = []
    for number in range(count):
        document = {"mediaType": IN_TOTO, **_blob(layout, b'{"n": %d}' % number)}
        layers = [document, *[{"mediaType": IN_TOTO, **shared}] * 15]
        entries += [_artifact(layout, subject, layers=layers)] * 2
    return entries


def test_a_blob_many_entries_list_is_hashed_once(
    servers: Servers, image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries listing the same artifact, artifacts listing the same blob: every blob is
    read and hashed once, however often it is named (not 64 MB times 1024 entries times
    16 layers), and each artifact goes up once."""
    layout, attached = _layout(image, tmp_path / "layout")
    subject = image.manifest_descriptor.digest
    shared = _blob(layout, os.urandom(1 << 20))
    entries = _sharing(layout, subject, shared, 20)
    for entry in entries:
        _add(layout, entry)
    opened = _counting_opens(monkeypatch)
    source = open_source(layout, tmp_path / "work")
    assert not source.left and opened[shared["digest"][7:]] == 1
    assert all(opened[one["digest"][7:]] == 1 for one in entries)
    digests = [one.digest for one in source.attachments]
    assert len(digests) == len(set(digests)) == len(attached) + 20
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    _result, warnings = _push(layout, address)
    assert not warnings and {one["digest"] for one in entries} <= set(registry.manifests)


def test_a_corrupt_blob_many_entries_list_is_hashed_once(
    image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob that fails its check fails it once: each artifact listing it stays behind,
    named once, without reading it again."""
    layout, _attached = _layout(image, tmp_path / "layout")
    subject = image.manifest_descriptor.digest
    shared = _blob(layout, os.urandom(1 << 20))
    (layout / "blobs/sha256" / shared["digest"][7:]).write_bytes(os.urandom(1 << 20))
    entries = _sharing(layout, subject, shared, 5)
    for entry in entries:
        _add(layout, entry)
    opened = _counting_opens(monkeypatch)
    source = open_source(layout, tmp_path / "work")
    assert opened[shared["digest"][7:]] == 1 and len(source.left) == 5
    assert all("does not match its digest" in line for line in source.left)


# --- what goes up ----------------------------------------------------------------------------


@pytest.mark.parametrize("referrers_api", [True, False])
def test_the_layout_attestations_go_up_with_the_image(
    servers: Servers, image: Image, tmp_path: Path, referrers_api: bool
) -> None:
    layout, attached = _layout(image, tmp_path / "layout")
    registry = StoringRegistry(referrers_api=referrers_api)
    address, _handler = servers.serve("127.0.0.1", registry)
    result, warnings = _push(layout, address)
    assert not warnings and not result.not_attached
    digest = image.manifest_descriptor.digest
    way = "referrers API" if referrers_api else f"tag sha256-{digest[7:]}"
    assert result.referrers == (way,)
    for one in attached:  # the bytes of the layout, so the same digests
        assert registry.manifests[one.digest][1] == one.manifest_bytes
    found = run_attestations(f"{address}/app:1")
    assert found.has_sbom and not found.problems and len(found.attached) == 2


def test_a_layout_without_attestations_pushes_as_before(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    write_layout(image, tmp_path / "plain", "app:1")
    registry = StoringRegistry(referrers_api=False)
    address, _handler = servers.serve("127.0.0.1", registry)
    result, warnings = _push(tmp_path / "plain", address)
    assert result.referrers == () and not warnings
    assert not any(key.startswith("sha256-") for key in registry.manifests)


def test_junk_that_does_not_say_it_is_an_artifact_refuses_the_layout(
    servers: Servers, image: Image, tmp_path: Path
) -> None:
    """An entry that may be the image itself cannot be skipped: the layout is unreadable, in
    one line (readers' rule), and nothing is pushed."""
    layout, _attached = _layout(image, tmp_path / "layout")
    _add(layout, {"mediaType": OCI_MANIFEST, **_blob(layout, b"{not json")})
    registry = StoringRegistry(referrers_api=True)
    address, _handler = servers.serve("127.0.0.1", registry)
    with pytest.raises(PushError) as failed:
        _push(layout, address)
    assert "\n" not in str(failed.value) and not registry.manifests
