"""The wheel ships what a non-editable install needs, and the command line starts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests import cli

PIP_QUIET = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _run(*cmd: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **PIP_QUIET}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_wheel_ships_package_and_templates(repo_root: Path, tmp_path: Path) -> None:
    proc = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path, ".", cwd=repo_root
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(tmp_path.glob("scratchpack-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        entry_points = next(
            whl.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    expected_files = (
        "scratchpack/__init__.py",
        "scratchpack/cli.py",
        "scratchpack/templates/README.md",
    )
    for expected in expected_files:
        assert expected in names, sorted(names)
    assert not any(n.startswith(("tests/", "templates/")) for n in names), sorted(names)
    assert "scratchpack = scratchpack.entry:main" in entry_points


def test_python_dash_m_help() -> None:
    proc = cli.scratchpack("--help", env=PIP_QUIET, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Usage:" in proc.stdout


def test_console_script_help() -> None:
    # The entry point installed next to the interpreter running the tests (.venv/bin).
    script = Path(sys.executable).parent / "scratchpack"
    assert script.is_file(), f"{script} missing: pip install -e '.[test]' into this environment"
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Usage:" in proc.stdout
