"""``open_images``: each platform's image of a multi-platform index, artifacts and attestations
skipped, while ``open_image`` keeps choosing one; hostile indexes stay bounded."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import InputError
from scratchpack.image.media import MediaType, Platform
from scratchpack.image.readers import SourceFormat, open_image, open_images
from tests.imagekit import d, f, layer, sha, write_docker_archive, write_oci

OCI_MANIFEST = MediaType.OCI_MANIFEST.value


class Layout:
    """An OCI layout written piece by piece: blobs, manifests, a nested index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs/sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes, media: str) -> dict[str, Any]:
        (self.path / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        return {"mediaType": media, "digest": sha(data), "size": len(data)}

    def manifest(self, architecture: str, data: bytes, config_media: str | None = None) -> dict:
        """An image of ``architecture`` holding one layer; its descriptor, with no platform."""
        config = json.dumps(
            {"architecture": architecture, "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [sha(data)]}}
        ).encode()  # fmt: skip
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(config, config_media or MediaType.OCI_CONFIG.value),
            "layers": [self.blob(data, MediaType.OCI_LAYER.value)],
        }
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)

    def index(self, manifests: list[dict], nested: bool = True) -> Path:
        """index.json naming ``manifests``, through a nested index like our writer's."""
        document = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value}
        if nested:
            inner = self.blob(
                json.dumps({**document, "manifests": manifests}).encode(),
                MediaType.OCI_INDEX.value,
            )
            manifests = [inner]
        (self.path / "index.json").write_text(json.dumps({**document, "manifests": manifests}))
        return self.path


def on(descriptor: dict, architecture: str, **more: Any) -> dict:
    return {**descriptor, "platform": {"architecture": architecture, "os": "linux"}, **more}


def two_platforms(path: Path) -> Path:
    """amd64 and arm64 images, an attestation, an SBOM artifact and an unknown/unknown one."""
    out = Layout(path)
    amd64 = out.manifest("amd64", layer(f("amd64", b"x86")))
    arm64 = out.manifest("arm64", layer(f("arm64", b"arm")))
    sbom = out.manifest("amd64", layer(f("sbom.json")), "application/spdx+json")
    attestation = out.manifest("amd64", layer(f("att")))
    return out.index(
        [
            on(amd64, "amd64"),
            on(arm64, "arm64", platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
            on(amd64, "amd64"),  # named twice: one image
            on(sbom, "amd64"),  # an artifact: its config is no image config
            {**attestation, "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                            "vnd.docker.reference.digest": amd64["digest"]}},
            {**attestation, "platform": {"architecture": "unknown", "os": "unknown"}},
            attestation,  # no platform, among several: not an image of the index
        ]
    )  # fmt: skip


def _tar(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        for child in sorted(directory.rglob("*")):
            if child.is_file():
                data = child.read_bytes()
                info = tarfile.TarInfo(str(child.relative_to(directory)))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.parametrize("archive", [False, True])
def test_each_platform_of_an_index_is_an_image(tmp_path: Path, archive: bool) -> None:
    layout = two_platforms(tmp_path / "layout")
    reference = _tar(layout, tmp_path / "oci.tar") if archive else layout
    sources = open_images(str(reference), tmp_path / "work")
    assert [str(source.image.platform) for source in sources] == ["linux/amd64", "linux/arm64"]
    assert {source.format for source in sources} == {
        SourceFormat.OCI_ARCHIVE if archive else SourceFormat.OCI_LAYOUT
    }
    assert [len(source.image.layers) for source in sources] == [1, 1]


def test_open_image_still_chooses_the_native_one(tmp_path: Path) -> None:
    if Platform.host() not in (Platform("amd64"), Platform("arm64", variant="v8")):
        pytest.skip("this machine is neither amd64 nor arm64")
    out = Layout(tmp_path / "layout")
    amd64 = out.manifest("amd64", layer(f("amd64", b"x86")))
    arm64 = out.manifest("arm64", layer(f("arm64", b"arm")))
    layout = out.index([on(amd64, "amd64"), on(arm64, "arm64")])
    source = open_image(str(layout), tmp_path / "work")
    assert source.image.platform.architecture == Platform.host().architecture  # type: ignore[union-attr]


def test_one_image_is_one_platform_whatever_its_source_says(tmp_path: Path) -> None:
    data = [layer(d("etc"), f("etc/a"))]
    for reference in (
        write_oci(tmp_path / "single", data),  # a descriptor with no platform: the one image
        write_docker_archive(tmp_path / "saved.tar", data),
    ):
        (source,) = open_images(str(reference), tmp_path / "work")
        assert str(source.image.platform) == "linux/amd64"


def test_an_index_of_artifacts_only_holds_no_image(tmp_path: Path) -> None:
    out = Layout(tmp_path / "layout")
    sbom = out.manifest("amd64", layer(f("sbom.json")), "application/spdx+json")
    sig = out.manifest("arm64", layer(f("sig")), "application/vnd.dev.cosign.simplesigning.v1")
    out.index([on(sbom, "amd64"), on(sig, "arm64")])
    with pytest.raises(InputError, match="lists no image manifest") as caught:
        open_images(str(out.path), tmp_path / "work")
    assert "\n" not in str(caught.value)


def test_a_hostile_index_stays_bounded_and_checked(tmp_path: Path) -> None:
    out = Layout(tmp_path / "fan")
    one = out.manifest("amd64", layer(f("a")))
    out.index([on(one, "amd64")] * 300)  # more descriptors than an index may name
    with pytest.raises(InputError, match="more than 256 images"):
        open_images(str(out.path), tmp_path / "work")
    forged = Layout(tmp_path / "forged")
    good = forged.manifest("amd64", layer(f("a")))
    other = forged.manifest("arm64", layer(f("b")))
    forged.index([on(good, "amd64"), on({**other, "digest": good["digest"]}, "arm64")])
    (forged.path / "blobs/sha256" / good["digest"][7:]).write_bytes(b'{"evil": 1}')
    with pytest.raises(InputError, match="does not match its digest"):
        open_images(str(forged.path), tmp_path / "work")


def test_a_missing_path_is_still_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_images(str(tmp_path / "absent.tar"), tmp_path / "work")
    with pytest.raises(InputError, match="no image given"):
        open_images("  ", tmp_path / "work")
