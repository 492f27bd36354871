"""Agreement with the real loader: ``deps --json`` must equal ``ldd`` on this machine.

For every ELF regular file in /usr/bin and /usr/sbin, and a few hundred shared
libraries under /usr/lib, the closure (as real paths, interpreter included) and
the missing names must be what glibc's ``ldd`` reports. ``ldd`` runs the
machine's own loader, so this test is skipped where that loader is not glibc.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scratchpack.ld.rootfs import RootFS
from tests import cli
from tests.ldd_oracle import LddResult, real, run_ldd

LIBRARY_SAMPLE = 400


def _elf_files(directory: str, recursive: bool = False, suffix: str = "") -> list[str]:
    found: list[str] = []
    walker = os.walk(directory) if recursive else [(directory, [], os.listdir(directory))]
    for top, _dirs, names in walker:
        for name in sorted(names):
            if suffix and suffix not in name:
                continue
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as stream:
                    if stream.read(4) == b"\x7fELF":
                        found.append(path)
            except OSError:
                continue
    return sorted(found)


def _sample_libraries() -> list[str]:
    libraries = _elf_files("/usr/lib", recursive=True, suffix=".so")
    step = max(1, len(libraries) // LIBRARY_SAMPLE)
    return libraries[::step][:LIBRARY_SAMPLE]


CLEANED_ENV = ("LD_LIBRARY_PATH", "LD_PRELOAD")


def _clean_env() -> dict[str, str]:
    return cli.child_env(unset=CLEANED_ENV)


def _ours(paths: list[str], root: str | None = None) -> dict[str, dict]:
    options = ["--root", root] if root else []
    proc = cli.scratchpack("deps", "--json", *options, *paths, unset=CLEANED_ENV, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    return {item["path"]: item for item in json.loads(proc.stdout)}


def _compare(
    path: str, ours: dict, theirs: LddResult, real: Callable[[str], str | None] = real
) -> str | None:
    """A readable description of the difference, or None when they agree."""
    if ours["static"] or not theirs.dynamic:
        if ours["static"] == (not theirs.dynamic):
            return None
        return f"{path}: static={ours['static']} but ldd says dynamic={theirs.dynamic}"
    mine = {real(lib["path"]) for lib in ours["libraries"]}
    if ours["interpreter"] and ours["interpreter"] not in ours["missing"]:
        mine.add(real(ours["interpreter"]))
    expected = set(theirs.paths)
    if not ours["interpreter"]:
        # ldd always maps a loader; a library given as argument names none itself.
        expected = {p for p in expected if p in mine or "ld-linux" not in p}
    lines = []
    if theirs.error:
        lines.append(f"  ldd failed: {theirs.error}")
    if mine - expected:
        lines.append(f"  only scratchpack: {sorted(mine - expected)}")
    if expected - mine:
        lines.append(f"  only ldd:         {sorted(expected - mine)}")
    if set(ours["missing"]) != theirs.missing:
        lines.append(
            f"  missing: scratchpack {sorted(ours['missing'])} ldd {sorted(theirs.missing)}"
        )
    return f"{path}:\n" + "\n".join(lines) if lines else None


def _agreement(paths: list[str], root: str | None = None) -> None:
    if not paths:
        pytest.skip("no ELF files found")
    ours = _ours(paths, root)
    env = _clean_env()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda p: run_ldd(p, env, root), paths)
        theirs = dict(zip(paths, results, strict=True))
    resolve = real if root is None else RootFS(root).realpath
    differences = [d for p in paths if (d := _compare(p, ours[p], theirs[p], resolve)) is not None]
    assert not differences, (
        f"{len(differences)} of {len(paths)} files disagree with ldd:\n" + "\n".join(differences)
    )


pytestmark = pytest.mark.skipif(
    not os.path.exists("/lib64/ld-linux-x86-64.so.2") or not os.path.exists("/usr/bin/ldd"),
    reason="needs an x86-64 glibc host with ldd",
)


def test_every_executable_in_usr_bin_and_sbin_agrees_with_ldd() -> None:
    _agreement(_elf_files("/usr/bin") + _elf_files("/usr/sbin"))


def test_shared_libraries_under_usr_lib_agree_with_ldd() -> None:
    libraries = _sample_libraries()
    assert len(libraries) >= 100, "expected a few hundred shared libraries under /usr/lib"
    _agreement(libraries)


@pytest.fixture(scope="module")
def debian_root(debian_root_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debootstrapped Debian 12 root (nginx, curl, python3), unpacked for chroot."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = tmp_path_factory.mktemp("debian") / "root"
    root.mkdir()
    subprocess.run(
        ["tar", "-xf", str(debian_root_tar), "-C", str(root), "--exclude=./dev/*"], check=True
    )
    return root


def test_a_debian_root_agrees_with_its_own_ldd(debian_root: Path) -> None:
    """--root semantics at scale: every program of another root, against that root's ldd."""
    paths = [
        "/" + os.path.relpath(path, debian_root)
        for directory in ("usr/bin", "usr/sbin")
        for path in _elf_files(str(debian_root / directory))
    ]
    assert len(paths) >= 50, paths
    _agreement(paths, str(debian_root))
