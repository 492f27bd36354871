"""ld.so.cache reading, checked against caches the real ldconfig writes and the real loader.

The fixture is a small root (loader, libc, a program needing libz) whose cache
``ldconfig -r`` builds, with libz in a plain directory and in two glibc-hwcaps
levels. ``chroot ROOT ld.so --list`` is the oracle: the same loader, run on the
same root, by the test — scratchpack itself executes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scratchpack.ld.ldconfig import parse_cache, read_cache
from scratchpack.ld.loaders import cpu_x86_64_levels
from scratchpack.ld.rootfs import RootFS

MULTIARCH = "/lib/x86_64-linux-gnu"
LDSO = f"{MULTIARCH}/ld-linux-x86-64.so.2"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(LDSO) and shutil.which("gcc") and shutil.which("ldconfig")),
    reason="needs Debian's x86-64 glibc, gcc and ldconfig",
)


@pytest.fixture(scope="module")
def hwcaps_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    libz = Path(os.path.realpath(f"{MULTIARCH}/libz.so.1"))
    (root / MULTIARCH.lstrip("/")).mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(f"{MULTIARCH}/{name}", root / MULTIARCH.lstrip("/") / name)
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to(LDSO)  # absolute: must stay in the root
    for sub in ("opt/lib", "opt/lib/glibc-hwcaps/x86-64-v2", "opt/lib/glibc-hwcaps/x86-64-v3"):
        (root / sub).mkdir(parents=True)
        shutil.copy2(libz, root / sub / libz.name)
    source = root / "main.c"
    source.write_text(
        "#include <stdio.h>\nextern const char *zlibVersion(void);\n"
        "int main(void) { puts(zlibVersion()); return 0; }\n"
    )
    subprocess.run(
        ["gcc", "-o", str(root / "main"), str(source), str(libz)], check=True, capture_output=True
    )
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/lib\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True, capture_output=True)
    return root


def _deps(root: Path, *args: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scratchpack",
            "deps",
            "--json",
            "--root",
            str(root),
            *args,
            "/main",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LD_LIBRARY_PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


def _libz(result: dict) -> str:
    return next(lib["path"] for lib in result["libraries"] if lib["soname"] == "libz.so.1")


def test_cache_lists_hwcaps_entries_with_their_levels(hwcaps_root: Path) -> None:
    cache = read_cache(RootFS(hwcaps_root))
    assert cache is not None
    entries = cache.entries["libz.so.1"]
    assert {entry.hwcaps_subdir for entry in entries} == {"x86-64-v2", "x86-64-v3", None}
    assert all(entry.flags == 0x0303 for entry in entries)


def test_cache_picks_the_best_supported_level(hwcaps_root: Path) -> None:
    cache = read_cache(RootFS(hwcaps_root))
    assert cache is not None
    flags = frozenset({0x0303})
    best = cache.lookup("libz.so.1", flags, {"x86-64-v3": 2, "x86-64-v2": 1})
    assert best is not None and "/glibc-hwcaps/x86-64-v3/" in best
    only_v2 = cache.lookup("libz.so.1", flags, {"x86-64-v2": 1})
    assert only_v2 is not None and "/glibc-hwcaps/x86-64-v2/" in only_v2
    assert cache.lookup("libz.so.1", flags, {}) == "/opt/lib/libz.so.1"
    assert cache.lookup("libz.so.1", frozenset({0x0A03}), {}) is None  # another architecture


def test_deps_follows_the_cache_and_hwcaps_choice(hwcaps_root: Path) -> None:
    assert "/glibc-hwcaps/x86-64-v3/" in _libz(_deps(hwcaps_root, "--hwcaps", "x86-64-v3"))
    assert _libz(_deps(hwcaps_root, "--hwcaps", "none")) == "/opt/lib/libz.so.1"
    result = _deps(hwcaps_root, "--hwcaps", "none")
    assert result["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
    assert [lib["path"] for lib in result["libraries"]] == [
        "/opt/lib/libz.so.1",
        f"{MULTIARCH}/libc.so.6",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_auto_hwcaps_matches_the_real_loader_in_a_chroot(hwcaps_root: Path) -> None:
    listing = subprocess.run(
        ["chroot", str(hwcaps_root), LDSO, "--list", "/main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loader_libz = next(
        line.split("=>")[1].split("(")[0].strip() for line in listing.splitlines() if "libz" in line
    )
    assert _libz(_deps(hwcaps_root)) == loader_libz
    levels = cpu_x86_64_levels()
    if "x86-64-v3" in levels:
        assert "/x86-64-v3/" in loader_libz


def test_parse_cache_rejects_unknown_formats() -> None:
    assert parse_cache(b"not a cache at all") is None
    assert parse_cache(b"") is None
