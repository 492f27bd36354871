"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write beside ``path`` and rename onto it only if the block succeeds.

    A failed or interrupted run leaves no half-written file (and never a
    truncated copy of the user's old one). The file gets the mode a plain
    ``open`` would give it (0666 less the umask), not mkstemp's 0600.
    """
    fd, staging = tempfile.mkstemp(prefix=".scratchpack-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, path)
    except BaseException:
        os.unlink(staging)
        raise
