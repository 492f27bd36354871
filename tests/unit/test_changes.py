"""What an update changes: packages between two locks, layers between two images."""

from __future__ import annotations

import pytest

from scratchpack.image.changes import image_changes
from scratchpack.image.model import BytesBlob, Descriptor, Image, Layer
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.changes import ChangeKind, lock_changes
from scratchpack.packages.lock import Lock, PlatformLock


def _ref(name: str, version: str) -> PackageRef:
    return PackageRef(name, version, "amd64", f"pool/main/{name}.deb", 1, "0" * 64)


def _lock(*packages: tuple[str, str], platform: str = "linux/amd64") -> Lock:
    refs = tuple(_ref(name, version) for name, version in packages)
    return Lock("bookworm", ("curl",), {platform: PlatformLock("amd64", refs)})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([("libssl3", "3.0.20-1~deb12u2")], [("libssl3", "3.0.20-1~deb12u2")], []),
        (
            [("libssl3", "3.0.20-1~deb12u2")],
            [("libssl3", "3.0.22-1~deb12u2")],
            [("libssl3", ChangeKind.UPGRADED, "3.0.20-1~deb12u2", "3.0.22-1~deb12u2")],
        ),
        # Debian's ordering, not the strings': ~ sorts before anything, epochs first.
        (
            [("a", "1.0")],
            [("a", "1.0~rc1")],
            [("a", ChangeKind.DOWNGRADED, "1.0", "1.0~rc1")],
        ),
        ([("a", "9.0")], [("a", "1:1.0")], [("a", ChangeKind.UPGRADED, "9.0", "1:1.0")]),
        ([], [("libnew1", "1")], [("libnew1", ChangeKind.ADDED, None, "1")]),
        ([("libold1", "1")], [], [("libold1", ChangeKind.REMOVED, "1", None)]),
    ],
)
def test_lock_changes(old, new, expected) -> None:
    changes = lock_changes(_lock(*old), _lock(*new))
    assert [(c.name, c.kind, c.old, c.new) for c in changes] == expected
    assert all(change.platform == "linux/amd64" for change in changes)


def test_a_platform_only_one_lock_has_is_all_added() -> None:
    changes = lock_changes(_lock(("a", "1")), _lock(("a", "1"), platform="linux/arm64"))
    assert [(c.platform, c.kind) for c in changes] == [
        ("linux/amd64", ChangeKind.REMOVED),
        ("linux/arm64", ChangeKind.ADDED),
    ]


def _layer(name: str, size: int) -> Layer:
    digest = "sha256:" + name * 64
    return Layer(
        Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, size),
        digest,
        BytesBlob(b""),
    )


def _image(config: bytes, *layers: Layer) -> Image:
    return Image(config, layers)


def test_a_rebuilt_image_with_nothing_new_uploads_nothing() -> None:
    old = _image(b"{}", _layer("a", 10), _layer("b", 20))
    changes = image_changes(old, _image(b"{}", _layer("a", 10), _layer("b", 20)))
    assert changes.identical and changes.upload_bytes == 0 and not changes.dropped


def test_one_new_layer_is_what_a_push_uploads_with_the_config() -> None:
    old = _image(b'{"a": 1}', _layer("a", 10), _layer("b", 20))
    new = _image(b'{"a": 2}', _layer("a", 10), _layer("c", 25))
    changes = image_changes(old, new)
    assert [layer.kept for layer in changes.layers] == [True, False]
    assert [layer.digest[-1] for layer in changes.dropped] == ["b"]
    assert changes.upload_bytes == 25 + len(b'{"a": 2}')
    assert not changes.identical
    assert changes.to_json()["upload_bytes"] == changes.upload_bytes


def test_without_a_previous_image_every_blob_is_new_and_counted_once() -> None:
    twice = _layer("a", 10)
    changes = image_changes(None, _image(b"{}", twice, twice))
    assert changes.upload_bytes == 10 + 2
    assert not any(layer.kept for layer in changes.layers)
