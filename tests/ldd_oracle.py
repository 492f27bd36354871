"""The real loader as an oracle: run glibc's ``ldd`` and read what it maps.

Used only by tests: scratchpack itself never executes what it analyses.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

from scratchpack.ld.rootfs import RootFS

_ARROW = re.compile(r"^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?\s*$")
_BARE = re.compile(r"^\s*(\S+) \(0x[0-9a-f]+\)\s*$")


@dataclass
class LddResult:
    """What ``ldd`` printed for one file, paths made real for comparison."""

    dynamic: bool
    paths: set[str] = field(default_factory=set)  # real paths, interpreter included
    missing: set[str] = field(default_factory=set)
    error: str | None = None


def real(path: str) -> str:
    return os.path.realpath(path)


def run_ldd(path: str, env: dict[str, str] | None = None, root: str | None = None) -> LddResult:
    """``ldd PATH``, or the root's own ``ldd`` in ``chroot ROOT`` (paths then in-root)."""
    command = ["ldd", path] if root is None else ["chroot", root, "/usr/bin/ldd", path]
    resolve = real if root is None else RootFS(root).realpath
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    out = proc.stdout
    if "not a dynamic executable" in out + proc.stderr or "statically linked" in out:
        return LddResult(dynamic=False)
    result = LddResult(dynamic=True)
    if proc.returncode != 0 and "error while loading" in proc.stderr:
        result.error = proc.stderr.strip()
    for line in out.splitlines():
        arrow = _ARROW.match(line)
        if arrow:
            name, target = arrow.groups()
            if target.strip() == "not found":
                result.missing.add(name)
            elif target.startswith("/"):
                result.paths.add(resolve(target.split(" (0x")[0]) or target)
            continue
        bare = _BARE.match(line)
        if bare and bare.group(1).startswith("/"):
            result.paths.add(resolve(bare.group(1)) or bare.group(1))
    return result
