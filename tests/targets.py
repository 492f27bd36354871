"""Small FROM-scratch targets the engine tests build: a static C program, an image of files.

Never pulled: the engine starts empty, so a target is compiled here and built
``FROM scratch`` (``pull=False``).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.conftest import unavailable

# The program alone, as the image's entrypoint: no shell, no tools.
TARGET_DOCKERFILE = 'FROM scratch\nCOPY target /target\nENTRYPOINT ["/target"]\n'


def static_program(work: Path, source: str, name: str = "target") -> Path:
    """``source`` compiled with ``gcc -static`` into ``work/name``: no shell, no library."""
    gcc = shutil.which("gcc")
    if gcc is None:
        unavailable("gcc is missing: apt-get install gcc libc6-dev")
    (work / f"{name}.c").write_text(source)
    compiled = subprocess.run(
        [gcc, "-static", "-O2", "-o", str(work / name), str(work / f"{name}.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if compiled.returncode != 0:
        unavailable(f"gcc -static failed (libc6-dev missing?): {compiled.stderr.strip()}")
    return work / name


def scratch_image(client: Any, tag: str, files: Mapping[str, Path], dockerfile: str) -> str | None:
    """Build ``dockerfile`` (FROM scratch) with ``files`` (name in the context -> host path)
    as ``tag`` in the engine of ``client``; the image's ID when the engine says it."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        text = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for name, path in files.items():
            tar.add(path, arcname=name)
    context.seek(0)
    image_id = None
    for chunk in client.api.build(
        fileobj=context, custom_context=True, tag=tag, pull=False, rm=True, decode=True
    ):
        assert "error" not in chunk, chunk
        image_id = chunk.get("aux", {}).get("ID", image_id)
    return image_id
