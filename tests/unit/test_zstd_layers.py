"""zstd layers: read like gzip ones with the same bounds, written on request, the same bytes.

The attacks come first: a zstd bomb, a frame that asks for a huge window, a
truncated frame whose digests agree with it, a layer whose digest or diff_id
lies. Then what ``--compression`` writes: media types, round trips through
every compression, byte-identical output, and the engine's refusal of zstd.
"""

from __future__ import annotations

import dataclasses
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

from scratchpack.commands.build import BuildRequest, ImageTarget, run_build
from scratchpack.commands.common import EngineMode
from scratchpack.commands.shrink import ShrinkRequest, run_shrink
from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig
from scratchpack.image.digest import Digest
from scratchpack.image.layout import docker_archive_chunks
from scratchpack.image.media import Compression, MediaType
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import UnpackTooLarge, unpack
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.image_plan import BuildOptions
from tests.imagekit import busybox_entries, d, f, layer, snapshot, write_oci
from tests.unit.fake_engine import FakeEngine

LAYERS = [layer(d("bin"), f("bin/app", b"app" * 1000, mode=0o755))]
SKIPPABLE = b"\x50\x2a\x4d\x18"


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def skippable(payload: bytes) -> bytes:
    return SKIPPABLE + len(payload).to_bytes(4, "little") + payload


def unpack_error(tmp_path: Path, image: Path, **bounds: int) -> str:
    source = open_image(str(image), tmp_path / "w")
    root = tmp_path / "root"
    root.mkdir(parents=True)
    with pytest.raises(InputError) as error:
        unpack(source.image, root, **bounds)
    text = str(error.value)
    assert "\n" not in text and error.value.exit_code == 2
    return text


# -- attacks --------------------------------------------------------------------------------


def test_a_zstd_bomb_is_refused_like_a_gzip_bomb(tmp_path: Path) -> None:
    big = layer(f("zeros", b"\0" * (64 << 20)))
    blob = zst(big)
    assert len(blob) < 64 << 10  # 64 MiB in a few kB
    image = write_oci(tmp_path / "bomb", [big], blobs=[blob], media_type=MediaType.OCI_LAYER_ZSTD)
    with pytest.raises(UnpackTooLarge):
        unpack(open_image(str(image), tmp_path / "w").image, _empty(tmp_path), max_bytes=16 << 20)
    assert not any(p.stat().st_size for p in (tmp_path / "root").rglob("*") if p.is_file())


def test_a_frame_asking_for_a_huge_window_is_refused(tmp_path: Path) -> None:
    # Frame header: no single segment, window descriptor exponent 21 (2 GiB), then one
    # last raw block of 5 bytes: a decoder honouring it would reserve 2 GiB.
    for exponent in (21, 18):  # 2 GiB, 256 MiB: both past the 128 MiB bound
        block = (1 | 5 << 3).to_bytes(3, "little") + b"abcde"
        blob = b"\x28\xb5\x2f\xfd" + bytes([0, exponent << 3]) + block
        image = write_oci(tmp_path / f"w{exponent}", [b"abcde"], blobs=[blob])
        text = unpack_error(tmp_path / f"t{exponent}", image)
        assert "window over 128 MiB" in text and "not a readable tar" in text


def test_a_truncated_frame_is_refused_even_when_its_digests_agree(tmp_path: Path) -> None:
    big = layer(f("data", bytes(range(256)) * 4096))
    cut = zst(big)[:-40]
    image = write_oci(tmp_path / "cut", [big], blobs=[cut], media_type=MediaType.OCI_LAYER_ZSTD)
    assert "ends inside a frame" in unpack_error(tmp_path, image)


def test_a_zstd_layer_whose_digest_or_diff_id_lies_is_refused(tmp_path: Path) -> None:
    other = layer(f("other", b"other"))
    lying_diff_id = write_oci(tmp_path / "diff", [other], blobs=[zst(LAYERS[0])])
    assert "does not match its diff_id" in unpack_error(tmp_path / "a", lying_diff_id)
    # The blob changed after its digest was taken: only the trailing skippable frame,
    # so it still decompresses to the very tar its diff_id names.
    tampered = write_oci(tmp_path / "digest", LAYERS, blobs=[zst(LAYERS[0]) + skippable(b"aaaa")])
    (blob,) = [p for p in (tampered / "blobs/sha256").iterdir() if p.read_bytes().endswith(b"aaaa")]
    blob.write_bytes(blob.read_bytes()[:-4] + b"bbbb")
    assert "does not match its digest" in unpack_error(tmp_path / "b", tampered)


def test_garbage_after_the_magic_is_one_clear_line(tmp_path: Path) -> None:
    image = write_oci(tmp_path / "junk", LAYERS, blobs=[b"\x28\xb5\x2f\xfd" + b"\xff" * 64])
    assert "not a readable tar" in unpack_error(tmp_path, image)


# -- reading --------------------------------------------------------------------------------


def test_zstd_chunked_frames_and_skippable_metadata_are_read(tmp_path: Path) -> None:
    """zstd:chunked: a frame per file, a table of contents in skippable frames at the end
    (and one first, which a stream may also have)."""
    data = LAYERS[0]
    frames = [zst(data[start : start + 1024]) for start in range(0, len(data), 1024)]
    blob = skippable(b"{}") + b"".join(frames) + skippable(b'{"toc": []}') + skippable(b"\0" * 40)
    assert Compression.sniff(blob[:6]) is Compression.ZSTD
    image = write_oci(tmp_path / "chunked", LAYERS, blobs=[blob], media_type="x")
    root = _empty(tmp_path)
    unpack(open_image(str(image), tmp_path / "w").image, root)
    assert (root / "bin/app").read_bytes() == b"app" * 1000


def test_media_types_for_oci_and_docker_manifests() -> None:
    assert Compression.ZSTD.layer_media_type() is MediaType.OCI_LAYER_ZSTD
    assert Compression.GZIP.layer_media_type() is MediaType.OCI_LAYER_GZIP
    assert Compression.NONE.layer_media_type() is MediaType.OCI_LAYER
    docker = MediaType.DOCKER_MANIFEST
    assert Compression.ZSTD.layer_media_type(docker).value.endswith("rootfs.diff.tar.zstd")
    assert Compression.GZIP.layer_media_type(docker) is MediaType.DOCKER_LAYER_GZIP
    assert (
        MediaType.DOCKER_LAYER_ZSTD.is_layer and MediaType.OCI_LAYER_NONDISTRIBUTABLE_ZSTD.is_layer
    )
    with pytest.raises(InputError):
        BlobStore(Path("/nonexistent"), Compression.XZ)


# -- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_each_compression_round_trips_to_the_same_diff_id(
    tmp_path: Path, compression: Compression
) -> None:
    written = _written(tmp_path / "store", compression)
    (stored,) = written.layers
    assert stored.descriptor.media_type is compression.layer_media_type()
    assert Compression.sniff(stored.blob.path.read_bytes()[:6]) is compression  # type: ignore[attr-defined]
    reference = _written(tmp_path / "gzip", Compression.GZIP)
    assert stored.diff_id == reference.layers[0].diff_id
    root = _empty(tmp_path)
    unpack(written, root)
    assert (root / "bin/busybox").read_bytes() == Path(_busybox()).read_bytes()


def test_zstd_output_is_byte_identical_and_its_frame_carries_no_size_or_checksum(
    tmp_path: Path,
) -> None:
    first, second = (_written(tmp_path / name, Compression.ZSTD) for name in ("a", "b"))
    assert first.manifest_bytes == second.manifest_bytes
    blob = first.layers[0].blob.path.read_bytes()  # type: ignore[attr-defined]
    assert blob == second.layers[0].blob.path.read_bytes()  # type: ignore[attr-defined]
    descriptor = blob[4]  # content size flag (bits 7-6), checksum flag (bit 2): all clear
    assert descriptor & 0b1100_0100 == 0
    params = zstandard.get_frame_parameters(blob)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN and not params.has_checksum


def test_the_engine_is_handed_zstd_layers_as_plain_tars(tmp_path: Path) -> None:
    """Docker 20.10 loads no zstd layer: the docker-load stream carries it decompressed,
    the tar whose digest is the config's diff_id, under the blob's own name."""
    import hashlib
    import io
    import tarfile

    image = _written(tmp_path / "store", Compression.ZSTD)
    stream = io.BytesIO(b"".join(docker_archive_chunks(image, "zstd:test")))
    with tarfile.open(fileobj=stream) as archive:
        (layer,) = image.layers
        member = archive.extractfile(Digest.parse(layer.digest).blob_path)
        assert member is not None
        plain = member.read()
    assert "sha256:" + hashlib.sha256(plain).hexdigest() == layer.diff_id
    assert not plain.startswith(b"\x28\xb5\x2f\xfd")  # a tar, not a zstd frame
    assert next(docker_archive_chunks(_written(tmp_path / "g", Compression.GZIP), "g:test"))


def test_build_and_shrink_write_the_compression_asked_for(tmp_path: Path) -> None:
    """Through the request objects: build -o a layout and an archive, shrink of the latter."""
    request = BuildRequest(
        options=BuildOptions(binaries=("/bin/true",)),
        config=ImageConfig(entrypoint=None),
        tag="zstd:test",
        target=ImageTarget(engine_mode=EngineMode.NONE, compression=Compression.ZSTD),
    )
    for output in (tmp_path / "layout", tmp_path / "image.tar"):
        target = dataclasses.replace(request.target, output=output)
        run_build(dataclasses.replace(request, target=target), FakeEngine())
        _assert_zstd(open_image(str(output), tmp_path / f"w-{output.name}").image)
    shrunk = tmp_path / "shrunk"
    run_shrink(
        ShrinkRequest(
            str(tmp_path / "image.tar"),
            "zstd:shrunk",
            output=shrunk,
            engine_mode=EngineMode.NONE,
            compression=Compression.ZSTD,
        ),
        FakeEngine(),
    )
    image = open_image(str(shrunk), tmp_path / "w-shrunk").image
    _assert_zstd(image)
    root = _empty(tmp_path)
    unpack(image, root)
    assert "/usr/bin/true" in snapshot(root) or "/bin/true" in snapshot(root)


# -- helpers --------------------------------------------------------------------------------


def _empty(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def _busybox() -> str:
    found = shutil.which("busybox")
    if found is None:
        pytest.skip("busybox is not installed")
    return found


def _written(top: Path, compression: Compression):  # type: ignore[no-untyped-def]
    store = BlobStore(top, compression)
    stored = store.write_layer(busybox_entries(Path(_busybox())), 0)
    runtime = {"Entrypoint": ["/bin/busybox"]}
    from scratchpack.image.media import Platform

    return assemble(store, [stored], runtime, Platform("amd64"), 0)


def _assert_zstd(image) -> None:  # type: ignore[no-untyped-def]
    for stored in image.layers:
        assert stored.descriptor.media_type == MediaType.OCI_LAYER_ZSTD.value
        with stored.blob.open() as stream:
            assert Compression.sniff(stream.read(6)) is Compression.ZSTD
        with stored.open_tar("a layer") as tar:
            assert all(isinstance(member, tarfile.TarInfo) for member in tar)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_shrink_into_the_engine_refuses_a_compression_of_the_writer(
    compression: str, tmp_path: Path
) -> None:
    """An engine image is the engine's to compress: the flag without -o is one line."""
    from click.testing import CliRunner

    from scratchpack.cli import cli

    done = CliRunner().invoke(
        cli, ["shrink", str(tmp_path / "image.tar"), "-t", "x:1", "--compression", compression]
    )
    assert done.exit_code == 2
    assert f"--compression {compression} is how the built-in writer writes layers" in done.output
