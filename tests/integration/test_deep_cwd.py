"""Outputs from a working directory deeper than PATH_MAX (4096 bytes): no absolute paths."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"


def test_relative_outputs_from_a_very_deep_directory(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(HELLO.parent)], check=True)
    component = "d" * 200
    script = (
        f"cd {tmp_path} && for i in $(seq 25); do mkdir {component} && cd {component}; done"
        f" && exec {sys.executable} -m scratchpack build {HELLO} -t hello:deep -o out.tar"
        " --context ctx --sbom hello.spdx.json --engine none"
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    deep = tmp_path
    depth = 0
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(25):  # walk down by descriptors: the path is too long to name
            fd, parent = os.open(component, os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
            depth += 1
        names = sorted(os.listdir(fd))
        stream = os.fdopen(os.open("out.tar", os.O_RDONLY, dir_fd=fd), "rb")
        with stream, tarfile.open(fileobj=stream) as archive:
            assert "manifest.json" in archive.getnames()
    finally:
        os.close(fd)
    assert depth == 25 and len(str(deep)) + 25 * 201 > 4096
    assert names == ["ctx", "hello.spdx.json", "out.tar"]
