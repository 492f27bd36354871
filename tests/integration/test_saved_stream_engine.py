"""A real engine's export applied as it streams: the same root as an ordinary unpack.

The engine names each layer's directory in its export by a v1 ID, so the
layers of a many-layer image arrive in an order of its own; whatever it is,
the root must be the one the layers give in the image's order, and the whole
export must never be written into the work directory. An image that repeats
a layer cannot stream and is read saved, to the same root.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from scratchpack.engine.client import Engine
from scratchpack.image.media import MediaType
from scratchpack.image.model import BytesBlob, Descriptor, Image, Layer
from scratchpack.image.readers import SourceFormat
from scratchpack.image.saved import open_and_unpack
from tests.imagekit import config_bytes, d, f, layer, sha, snapshot, sym, unpack_layers

pytestmark = pytest.mark.engine

# No whiteouts here: Docker 20.10 cannot export a loaded layer holding one (it reopens
# ``.wh.NAME`` in the merged tree); test_saved_stream.py covers them without an engine.
LAYERS = [
    layer(d("etc"), f("etc/a", b"base"), d("usr"), sym("lib", "usr/lib")),
    *(layer(d("usr"), f(f"usr/file{n}", bytes([n]) * 1000)) for n in range(6)),
    layer(d("usr/lib"), f("usr/lib/libx.so.1", b"lib")),
    layer(f("etc/a", b"top", mode=0o600), f("lib/libx.so.1", b"again")),
]


@pytest.fixture
def loaded(docker_client: Any) -> Iterator[Any]:
    tags: list[str] = []

    def load(layers: list[bytes]) -> str:
        described = tuple(
            Layer(Descriptor(MediaType.OCI_LAYER, sha(data), len(data)), sha(data), BytesBlob(data))
            for data in layers
        )
        tag = f"scratchpack-test/streamed:{uuid.uuid4().hex[:8]}"
        Engine.from_client(docker_client).load(Image(config_bytes(layers), described), tag)
        tags.append(tag)
        return tag

    yield load
    for tag in tags:
        with contextlib.suppress(docker.errors.DockerException):
            docker_client.images.remove(tag, force=True)


@pytest.mark.parametrize("repeated", [False, True], ids=["streamed", "repeated-layer-read-saved"])
def test_the_export_streams_into_the_root(
    tmp_path: Path, docker_client: Any, loaded: Any, repeated: bool
) -> None:
    layers = [*LAYERS, LAYERS[1]] if repeated else LAYERS
    tag = loaded(layers)
    expected_root, expected = unpack_layers(tmp_path, *layers)
    work, root = tmp_path / "work", tmp_path / "root"
    root.mkdir()
    source, report = open_and_unpack(tag, work, root, Engine.from_client(docker_client))
    assert snapshot(root) == snapshot(expected_root)
    assert report.owners == expected.owners and report.bytes == expected.bytes
    assert source.format is SourceFormat.ENGINE and tag in source.names
    assert source.image.config.diff_ids == tuple(sha(data) for data in layers)
    saved = [p.name for p in work.rglob("*") if p.is_file()]
    assert saved == (["engine-image.tar"] if repeated else []), saved
