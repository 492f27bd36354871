"""A file system that fills: one line naming it, what was written, the space needed.

Small tmpfs mounts stand for a full output directory and a full TMPDIR; the
command must fail with exit 2 and one line, and leave nothing in either.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only: it is mounted here and unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def scratchpack(*args: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    return cli.scratchpack(
        *args, cwd=REPO_ROOT, env={"TMPDIR": str(tmpdir), **cli.NO_ENGINE}, timeout=300
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_full_output_directory(small: Path, tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = scratchpack("build", "/usr/bin/curl", "-t", "curl:full", "-o", str(small / "curl.tar"),
                       tmpdir=temporary)  # fmt: skip
    line = one_line(done)
    assert f"no space left on {small}" in line and "the image archive" in line
    assert "MB needed" in line
    assert os.listdir(small) == [] and os.listdir(temporary) == []


def test_a_full_tmpdir(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = scratchpack("build", "/usr/bin/curl", "-t", "curl:full", "-o", str(out / "curl.tar"),
                       tmpdir=small)  # fmt: skip
    line = one_line(done)
    assert f"no space left on {small}" in line and "layers" in line
    assert os.listdir(small) == [] and os.listdir(out) == []


def test_an_image_too_big_for_tmpdir_is_refused_while_unpacking(
    small: Path, tmp_path: Path
) -> None:
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True)
    archive = tmp_path / "curl.tar"
    built = scratchpack("build", "/usr/bin/curl", "-t", "curl:src", "-o", str(archive),
                        tmpdir=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    done = scratchpack("shrink", str(archive), "-t", "curl:thin", "-o", str(tmp_path / "t.tar"),
                       tmpdir=small)  # fmt: skip
    line = one_line(done)
    assert "unpacks to more than the free space" in line
    assert os.listdir(small) == []
