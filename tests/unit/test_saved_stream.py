"""An engine's export applied as it streams (``scratchpack.image.saved``), on in-memory tars.

Each case writes a ``docker save`` stream member by member in the lexical order
the engine uses, with v1 IDs chosen so that the layers come in a given order,
and checks the root against the same layers unpacked the ordinary way.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.saved import NotStreamable, StreamedImage, unpack_saved_stream
from tests.imagekit import config_bytes, d, f, layer, one_line, sha, snapshot, sym, unpack_layers

LAYERS = [
    layer(d("etc"), f("etc/a", b"base"), f("etc/gone", b"x"), d("usr"), sym("lib", "usr/lib")),
    layer(d("usr/lib"), f("usr/lib/libx.so.1", b"lib"), f("etc/.wh.gone")),
    layer(f("etc/a", b"top", mode=0o600), f("lib/libx.so.1", b"again")),
]


def v1_stream(
    layers: list[bytes],
    ids: list[str],
    *,
    config: bytes | None = None,
    link_layer: int | None = None,
    omit: int | None = None,
) -> bytes:
    """Docker 20.10's export: ``<v1 id>/json`` (with parent) and ``layer.tar``, lexically."""
    config = config if config is not None else config_bytes(layers)
    members: dict[str, bytes | str] = {f"{sha(config_bytes(layers))[7:]}.json": config}
    for number, (data, v1) in enumerate(zip(layers, ids, strict=True)):
        parent = {"parent": ids[number - 1]} if number else {}
        members[f"{v1}/VERSION"] = b"1.0"
        members[f"{v1}/json"] = json.dumps({"id": v1, **parent}).encode()
        if omit == number:
            continue
        if link_layer == number:
            members[f"{v1}/layer.tar"] = f"../{ids[0]}/layer.tar"
        else:
            members[f"{v1}/layer.tar"] = data
    members["manifest.json"] = b"[]"
    return _tar(members)


def oci_stream(layers: list[bytes]) -> bytes:
    """A newer engine's export: every blob under blobs/sha256, named by its digest."""
    config = config_bytes(layers)
    members: dict[str, bytes | str] = {"index.json": b"{}", "oci-layout": b"{}"}
    for data in [*layers, config]:
        members[f"blobs/sha256/{sha(data)[7:]}"] = data
    return _tar(members)


def _tar(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(members):
            value = members[name]
            info = tarfile.TarInfo(name)
            if isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buffer.getvalue()


def apply(tmp_path: Path, stream: bytes, layers: list[bytes] = LAYERS) -> StreamedImage:
    root, spool = tmp_path / "root", tmp_path / "spool"
    root.mkdir()
    spool.mkdir()
    image_id = sha(config_bytes(layers))
    diff_ids = tuple(sha(data) for data in layers)
    streamed = unpack_saved_stream(io.BytesIO(stream), image_id, diff_ids, root, spool, "img")
    assert not list(spool.iterdir()), "a spooled layer stayed behind"
    return streamed


@pytest.mark.parametrize(
    "ids",
    [
        ["a1", "b2", "c3"],  # in order: every layer straight from the stream
        ["c3", "b2", "a1"],  # the top layer first: two spooled
        ["b2", "a1", "c3"],  # the base in the middle
        ["c3", "a1", "b2"],
    ],
    ids=["in-order", "reversed", "base-second", "top-first"],
)
def test_every_order_gives_the_root_of_an_ordinary_unpack(tmp_path: Path, ids: list[str]) -> None:
    expected_root, expected = unpack_layers(tmp_path, *LAYERS)
    streamed = apply(tmp_path, v1_stream(LAYERS, [x * 32 for x in ids]))
    assert snapshot(tmp_path / "root") == snapshot(expected_root)
    assert streamed.report.owners == expected.owners
    assert streamed.config_bytes == config_bytes(LAYERS)
    assert streamed.layer_sizes == tuple(len(data) for data in LAYERS)


def test_the_oci_form_of_newer_engines(tmp_path: Path) -> None:
    expected_root, _ = unpack_layers(tmp_path, *LAYERS)
    apply(tmp_path, oci_stream(LAYERS))
    assert snapshot(tmp_path / "root") == snapshot(expected_root)


def test_progress_counts_every_layer_byte(tmp_path: Path) -> None:
    heard: list[int] = []
    root, spool = tmp_path / "root", tmp_path / "spool"
    root.mkdir()
    spool.mkdir()
    stream = v1_stream(LAYERS, ["c" * 64, "a" * 64, "b" * 64])
    unpack_saved_stream(
        io.BytesIO(stream),
        sha(config_bytes(LAYERS)),
        tuple(sha(x) for x in LAYERS),
        root,
        spool,
        "img",
        heard.append,
    )
    assert sum(heard) == sum(len(x) for x in LAYERS)


def test_a_layer_that_is_not_its_diff_id_fails(tmp_path: Path) -> None:
    tampered = [LAYERS[0], layer(f("usr/evil", b"x")), LAYERS[2]]
    stream = v1_stream(tampered, ["a" * 64, "b" * 64, "c" * 64])
    with pytest.raises(InputError) as err:
        apply(tmp_path, stream)  # the engine said LAYERS' diff_ids
    assert "layer 2/3 does not match its diff_id" in one_line(err)


def test_a_spooled_layer_is_checked_too(tmp_path: Path) -> None:
    tampered = [LAYERS[0], LAYERS[1], layer(f("usr/evil", b"x"))]
    stream = v1_stream(tampered, ["b" * 64, "c" * 64, "a" * 64])  # the top layer comes first
    with pytest.raises(InputError) as err:
        apply(tmp_path, stream)
    assert "layer 3/3 does not match its diff_id" in one_line(err)


def test_a_config_that_is_not_the_image_id_fails(tmp_path: Path) -> None:
    stream = v1_stream(LAYERS, ["a" * 64, "b" * 64, "c" * 64], config=b'{"os":"linux"}')
    with pytest.raises(InputError) as err:
        apply(tmp_path, stream)
    assert "config does not match its ID" in one_line(err)


def test_a_truncated_export_is_one_clear_error(tmp_path: Path) -> None:
    whole = v1_stream(LAYERS, ["a" * 64, "b" * 64, "c" * 64])
    with pytest.raises(InputError) as err:
        apply(tmp_path, whole[: len(whole) // 2])
    assert "not a readable tar" in one_line(err)


@pytest.mark.parametrize("case", ["linked-layer", "missing-layer", "twice"])
def test_what_cannot_stream_says_so(tmp_path: Path, case: str) -> None:
    ids = ["a" * 64, "b" * 64, "c" * 64]
    layers = LAYERS
    if case == "linked-layer":  # an engine stores a repeated layer once, as a link
        stream = v1_stream(LAYERS, ids, link_layer=2)
    elif case == "missing-layer":
        stream = v1_stream(LAYERS, ids, omit=1)
    else:
        layers = [LAYERS[0], LAYERS[0]]
        stream = v1_stream(layers, ids[:2])
    with pytest.raises(NotStreamable):
        apply(tmp_path, stream, layers)
