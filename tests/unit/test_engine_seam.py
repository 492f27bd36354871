"""``build`` takes its engine: a recorder stands in for Docker where the writer's image is verified.

The writer makes the image; ``--verify`` loads it into the given engine under a
throw-away name, runs it and untags it. A failed check publishes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scratchpack.commands.build import BuildRequest, run_build
from scratchpack.commands.common import EngineMode, VerifyRequest
from scratchpack.engine.client import RunResult
from scratchpack.errors import VerifyError
from scratchpack.image.config import ImageConfig
from scratchpack.plan.image_plan import BuildOptions


class RecordingEngine:
    """What ``--verify`` asks of an engine, answered with a fixed exit status."""

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.calls: list[tuple[str, ...]] = []

    def load(self, image: Any, tag: str) -> str:
        self.calls.append(("load", tag))
        return str(image.image_id)

    def run(self, image: str, command: Any = None, **_options: Any) -> RunResult:
        self.calls.append(("run", image, *command))
        return RunResult(self.exit_code, "ran\n")

    def untag(self, reference: str) -> None:
        self.calls.append(("untag", reference))


def _request(output: Path) -> BuildRequest:
    return BuildRequest(
        options=BuildOptions(binaries=("/bin/true",)),
        config=ImageConfig(entrypoint=None),
        tag="seam:test",
        engine_mode=EngineMode.NONE,
        output=output,
        verify=VerifyRequest(("--version",)),
    )


@pytest.mark.parametrize("exit_code", [0, 3])
def test_build_verifies_in_the_engine_it_is_given(tmp_path: Path, exit_code: int) -> None:
    engine = RecordingEngine(exit_code)
    output = tmp_path / "seam.tar"
    if exit_code:
        with pytest.raises(VerifyError, match="exited 3"):
            run_build(_request(output), engine)  # type: ignore[arg-type]
    else:
        result = run_build(_request(output), engine)  # type: ignore[arg-type]
        assert result.verify is not None and result.verify.exit_code == 0
    throwaway = engine.calls[0][1]
    assert throwaway.startswith("scratchpack-verify/")
    assert engine.calls == [
        ("load", throwaway),
        ("run", throwaway, "--version"),
        ("untag", throwaway),
    ]
    published = [] if exit_code else ["seam.tar"]
    assert sorted(path.name for path in tmp_path.iterdir()) == published
