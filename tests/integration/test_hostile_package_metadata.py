"""A small image whose dpkg database expands to more than memory should hold (issue 20).

Through the command, no engine: ``shrink`` of an OCI layout of a few hundred kB
whose ``/var/lib/dpkg/status`` unpacks to more than the bound is one line and
exit 2, not a MemoryError (exit 70).
"""

from __future__ import annotations

import time
from pathlib import Path

from scratchpack.errors import EXIT_USAGE
from tests import cli
from tests.imagekit import d, f, layer, write_oci


def test_shrink_of_an_image_with_a_huge_dpkg_status_is_one_line(
    tmp_path: Path, static_busybox: Path
) -> None:
    status = b"Package: x\n" + b"Description: " + b"a" * (65 << 20) + b"\n"
    image = layer(
        d("bin/"),
        f("bin/app", static_busybox.read_bytes(), mode=0o755),
        d("var/"),
        d("var/lib/"),
        d("var/lib/dpkg/"),
        d("var/lib/dpkg/info/"),
        f("var/lib/dpkg/status", status),
    )
    source = write_oci(tmp_path / "source", [image])
    del image, status
    blobs = sum(path.stat().st_size for path in (source / "blobs/sha256").iterdir())
    assert blobs < 4 << 20  # a small archive: the bomb is in the expansion
    start = time.monotonic()
    proc = cli.scratchpack(
        "shrink", source, "-t", "thin:1", "-o", tmp_path / "thin.tar", env=cli.NO_ENGINE
    )
    assert time.monotonic() - start < 60
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert any("/var/lib/dpkg/status" in line and "64 MiB" in line for line in lines), lines
