"""The commands take their engine: a fake in memory stands in for Docker.

``build`` verifies a written image in the engine it is given; ``shrink`` reads
an archive and writes the result to ``-o`` or into the engine; ``debug`` reads
an image of the engine and loads its variant back. Nothing is published unless
every step succeeded: a failure leaves no output and no tag.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchpack.commands.build import BuildRequest, run_build
from scratchpack.commands.common import DebugShell, EngineMode, VerifyRequest
from scratchpack.commands.debug import DebugImageRequest, run_debug
from scratchpack.commands.shrink import ShrinkRequest, run_shrink
from scratchpack.errors import EngineError, VerifyError
from scratchpack.image.config import ImageConfig
from scratchpack.image.readers import open_image
from scratchpack.plan.image_plan import BuildOptions
from tests.unit.fake_engine import FakeEngine, recorded


def _request(output: Path, verify: bool = True) -> BuildRequest:
    return BuildRequest(
        options=BuildOptions(binaries=("/bin/true",)),
        config=ImageConfig(entrypoint=None),
        tag="seam:test",
        engine_mode=EngineMode.NONE,
        output=output,
        verify=VerifyRequest(("--version",)) if verify else None,
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image of ``/bin/true``, written by the built-in writer without any engine."""
    output = tmp_path_factory.mktemp("source") / "true.tar"
    run_build(_request(output, verify=False), FakeEngine())
    return output


@pytest.mark.parametrize("exit_code", [0, 3])
def test_build_verifies_in_the_engine_it_is_given(tmp_path: Path, exit_code: int) -> None:
    engine = FakeEngine(exit_code)
    output = tmp_path / "seam.tar"
    if exit_code:
        with pytest.raises(VerifyError, match="exited 3"):
            run_build(_request(output), engine)
    else:
        result = run_build(_request(output), engine)
        assert result.verify is not None and result.verify.exit_code == 0
    throwaway = engine.calls[0][1]
    assert throwaway.startswith("scratchpack-verify/")
    assert engine.calls == [
        ("load", throwaway),
        ("run", throwaway, "--version"),
        ("untag", throwaway),
    ]
    assert engine.names == {}
    published = [] if exit_code else ["seam.tar"]
    assert sorted(path.name for path in tmp_path.iterdir()) == published


def test_shrink_of_an_archive_writes_the_output_and_asks_no_engine(
    archive: Path, tmp_path: Path
) -> None:
    engine = FakeEngine()
    output = tmp_path / "thin.tar"
    result = run_shrink(ShrinkRequest(str(archive), "thin:1", output=output), engine)
    assert result.engine is EngineMode.NONE and result.output == str(output)
    assert open_image(str(output), tmp_path / "read").image.image_id == result.image
    assert engine.calls == []


def test_shrink_of_an_archive_publishes_into_the_engine(archive: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    result = run_shrink(ShrinkRequest(str(archive), "thin:1"), engine)
    assert result.engine is EngineMode.DOCKER and result.output is None
    ((_, throwaway),) = recorded(engine, "load")
    assert throwaway.startswith("scratchpack-staging/")
    assert recorded(engine, "tag", "untag") == [
        ("tag", result.image, "thin:1"),
        ("untag", throwaway),
    ]
    assert engine.names == {"thin:1": result.image}
    assert engine.image("thin:1").size == result.size


def test_a_failed_load_into_the_engine_tags_nothing(archive: Path, tmp_path: Path) -> None:
    engine = FakeEngine(refuse_loads=True)
    with pytest.raises(EngineError, match="refused to load"):
        run_shrink(ShrinkRequest(str(archive), "thin:1"), engine)
    ((_, throwaway),) = recorded(engine, "load")
    assert recorded(engine, "tag", "untag") == [("untag", throwaway)]  # rolled back
    assert engine.names == {}


def test_debug_reads_an_image_of_the_engine_and_loads_its_variant(
    archive: Path, tmp_path: Path
) -> None:
    source = open_image(str(archive), tmp_path / "source").image
    engine = FakeEngine().holding(source, "app:1")
    request = DebugImageRequest("app:1", "app:1-debug", shell=DebugShell.BUSYBOX)
    result = run_debug(engine, request)
    assert result.tag == "app:1-debug" and result.shell is DebugShell.BUSYBOX
    assert recorded(engine, "save") == [("save", "app:1")]
    variant = engine.images[engine.names["app:1-debug"]]
    assert variant.image_id == result.image
    assert [layer.diff_id for layer in variant.layers[:-1]] == [
        layer.diff_id for layer in source.layers
    ]  # the source's layers, reused; the shell's layer on top
    assert engine.names["app:1"] == source.image_id
    assert not [name for name in engine.names if name.startswith("scratchpack-")]
