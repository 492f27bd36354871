"""zstd layers with the real tools: skopeo's zstd images shrunk, ours read by skopeo and umoci.

The source image is our own ``build -o`` archive (never pulled); ``skopeo copy
--dest-compress-format zstd`` recompresses it. Docker 20.10 (this engine) reads
no zstd layer, by ``docker load`` or by pull: the test asserts that, and that
scratchpack hands it the layers decompressed. umoci 0.4.7 refuses the media type: asserted too.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from scratchpack.commands.build import BuildRequest, ImageTarget, run_build
from scratchpack.commands.common import EngineMode
from scratchpack.commands.shrink import ShrinkRequest, run_shrink
from scratchpack.image.config import ImageConfig
from scratchpack.image.media import Compression, MediaType
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import unpack
from scratchpack.plan.image_plan import BuildOptions
from tests.imagekit import snapshot, tool
from tests.unit.fake_engine import FakeEngine

PROGRAMS = ("/usr/bin/perl", "/bin/true")


def _build(output: Path, compression: Compression, tag: str = "zstd-it:src") -> Path:
    request = BuildRequest(
        options=BuildOptions(binaries=PROGRAMS),
        config=ImageConfig(entrypoint=None),
        tag=tag,
        target=ImageTarget(engine_mode=EngineMode.NONE, output=output, compression=compression),
    )
    run_build(request, FakeEngine())
    return output


def _layer_types(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_bytes())
    return [layer["mediaType"] for layer in manifest["layers"]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same image twice: our gzip OCI archive, and skopeo's zstd copy of it (a layout)."""
    skopeo = tool("skopeo")
    top = tmp_path_factory.mktemp("zstd-sources")
    gzipped = _build(top / "src.tar", Compression.GZIP)
    zstd_layout = top / "zstd"
    subprocess.run(
        [skopeo, "copy", "--dest-compress-format", "zstd",
         f"oci-archive:{gzipped}", f"oci:{zstd_layout}:src"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert _layer_types(zstd_layout) == [MediaType.OCI_LAYER_ZSTD.value]
    return gzipped, zstd_layout


def _shrink(source: Path, output: Path) -> float:
    started = time.monotonic()
    run_shrink(
        ShrinkRequest(str(source), "zstd-it:shrunk", output=output, engine_mode=EngineMode.NONE),
        FakeEngine(),
    )
    return time.monotonic() - started


def test_a_zstd_image_from_skopeo_shrinks_as_the_gzip_one_does(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    gzipped, zstd_layout = sources
    seconds = {
        name: _shrink(source, tmp_path / name)
        for name, source in (("gzip", gzipped), ("zstd", zstd_layout))
    }
    print(f"shrink seconds: gzip {seconds['gzip']:.2f}, zstd {seconds['zstd']:.2f}")
    trees = []
    for name in ("gzip", "zstd"):
        root = tmp_path / f"root-{name}"
        root.mkdir()
        unpack(open_image(str(tmp_path / name), tmp_path / f"w-{name}").image, root)
        trees.append(snapshot(root))
    assert trees[0] == trees[1] and trees[0]


def test_our_zstd_output_is_read_by_skopeo(tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    layout = _build(tmp_path / "layout", Compression.ZSTD)
    archive = _build(tmp_path / "image.tar", Compression.ZSTD)
    assert _layer_types(layout) == [MediaType.OCI_LAYER_ZSTD.value]
    for source in (f"oci:{layout}:src", f"oci-archive:{archive}"):
        inspected = subprocess.run(
            [skopeo, "inspect", source], check=True, capture_output=True, text=True
        )
        assert json.loads(inspected.stdout)["Layers"]
    # --dest-decompress makes skopeo decompress each layer: the result is the diff_id.
    plain = tmp_path / "plain"
    subprocess.run(
        [skopeo, "copy", "--dest-decompress", f"oci:{layout}:src", f"dir:{plain}"],
        check=True, capture_output=True,
    )  # fmt: skip
    diff_ids = open_image(str(layout), tmp_path / "w").image.config.diff_ids
    assert {f"sha256:{path.name}" for path in plain.iterdir()} >= set(diff_ids)


def test_umoci_refuses_zstd_layers_by_media_type(tmp_path: Path) -> None:
    """umoci 0.4.7 unpacks only tar and tar+gzip: it fails, naming the media type."""
    umoci = tool("umoci")
    layout = _build(tmp_path / "layout", Compression.ZSTD)
    done = subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{layout}:src", str(tmp_path / "bundle")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "tar+zstd" in done.stdout + done.stderr


@pytest.mark.engine
def test_the_engine_gets_zstd_layers_as_plain_tars(
    tmp_path: Path, sources: tuple[Path, Path]
) -> None:
    """Docker 20.10 cannot load zstd layers: scratchpack hands them over decompressed (the
    engine checks each against its diff_id), so a zstd image still reaches the engine."""
    import uuid

    docker = tool("docker")
    archive = _build(tmp_path / "image.tar", Compression.ZSTD, tag="zstd-it:load")
    done = subprocess.run([docker, "load", "-i", str(archive)], capture_output=True, text=True)
    if done.returncode == 0:  # a newer engine: it reads them itself
        subprocess.run([docker, "rmi", "zstd-it:load"], capture_output=True)
    else:
        assert "invalid tar header" in done.stderr
    from scratchpack.engine.client import Engine

    tag = f"scratchpack-test/zstd-load:{uuid.uuid4().hex[:12]}"
    image = open_image(f"{sources[1]}", tmp_path / "w").image  # skopeo's zstd layout
    assert all(str(layer.descriptor.media_type).endswith("+zstd") for layer in image.layers)
    engine = Engine.connect()
    try:
        engine.load(image, tag)
        ran = subprocess.run(
            [docker, "run", "--rm", "--pull=never", tag, "-e", "print 6*7"],  # perl's image
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ran.returncode == 0 and ran.stdout == "42", ran.stderr
        loaded = json.loads(subprocess.run(
            [docker, "image", "inspect", tag], capture_output=True, text=True, check=True
        ).stdout)[0]["RootFS"]["Layers"]  # fmt: skip
        assert loaded == [layer.diff_id for layer in image.layers]
    finally:
        subprocess.run([docker, "rmi", "--force", tag], capture_output=True)
