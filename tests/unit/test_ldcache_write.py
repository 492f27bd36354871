"""ld.so.cache writing, checked against glibc's own ldconfig and loader.

Oracles: ``ldconfig -p -C FILE`` reads what we write; ``ldconfig -r ROOT`` builds a
cache for the same root, whose listing (which ldconfig prints in file order) ours must
equal line for line; and the root's own ld.so, run in a chroot, must find every
library through the binary search of our cache, and run the program.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scratchpack.ld.ldcache_write import CacheRecord, _layout, render_cache, sort_records
from scratchpack.ld.ldconfig import parse_cache

MULTIARCH = "/lib/x86_64-linux-gnu"
LDSO = f"{MULTIARCH}/ld-linux-x86-64.so.2"
X86_64 = 0x0303  # FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
V2_FLAGS = {"sse4_2", "popcnt", "ssse3", "cx16"}

needs_ldconfig = pytest.mark.skipif(shutil.which("ldconfig") is None, reason="needs ldconfig")


def _synthetic_names() -> list[str]:
    """200 names that exercise libcmp: digit runs of different lengths (some overflowing
    C's int), bytes below and above the digits, prefixes, and a non-ASCII byte."""
    names = [f"libx{a}.so.{b}" for a in range(1, 41) for b in (1, 2, 10)]
    names += [f"libx.so.{b}" for b in range(37)]
    names += [f"libx{a}.so" for a in range(1, 31)]
    names += ["libx.so", "libx-1.so", "libx_1.so", "libX1.so", "libx1a.so", "libx1.2.so"]
    names += ["libx1.so.1.2", "libxa.so.1", "libé.so.1", "libx999999.so.1", "libx10a.so.1"]
    names += ["libx2147483648.so.1", "libx4294967299.so.7"]  # overflow C's int
    assert len(names) == len(set(names)) == 200
    return names


NAMES = _synthetic_names()


def _run(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        check=check,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"},
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root without a cache: loader and libc, libfoo in /opt/foo, the 200 synthetic
    libraries in /opt/x (libh.so.1 also in glibc-hwcaps/x86-64-v2), and programs:
    /main needs libfoo, /many needs all 200, /hw needs libh."""
    if os.geteuid() != 0 or not shutil.which("chroot"):
        pytest.skip("chroot (and ldconfig -r) need root")
    if not (shutil.which("gcc") and shutil.which("ldconfig") and os.path.exists(LDSO)):
        pytest.skip("needs gcc, ldconfig and Debian's x86-64 glibc")
    build = tmp_path_factory.mktemp("build")
    root = tmp_path_factory.mktemp("root")
    multiarch = root / MULTIARCH.lstrip("/")
    multiarch.mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(f"{MULTIARCH}/{name}", multiarch / name)
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to(LDSO)  # absolute: stays in the root
    (build / "foo.c").write_text('const char *foo(void) { return "hello from libfoo"; }\n')
    (build / "n.c").write_text("int n(void) { return 1; }\n")
    (build / "main.c").write_text(
        "#include <stdio.h>\nconst char *foo(void);\nint main(void) { puts(foo()); return 0; }\n"
    )
    (build / "empty.c").write_text("int main(void) { return 0; }\n")
    foo_dir, x_dir = root / "opt/foo", root / "opt/x"
    v2_dir = x_dir / "glibc-hwcaps/x86-64-v2"
    for directory in (foo_dir, v2_dir):
        directory.mkdir(parents=True)
    soname = "-Wl,-soname,libfoo.so.1"
    _run("gcc", "-shared", "-fPIC", soname, "-o", foo_dir / "libfoo.so.1", build / "foo.c")
    _run("gcc", "-shared", "-fPIC", "-s", "-o", build / "n.so", build / "n.c")  # no SONAME
    for name in [*NAMES, "libh.so.1"]:
        shutil.copyfile(build / "n.so", x_dir / name)  # copies: ld.so merges hard links
    shutil.copyfile(build / "n.so", v2_dir / "libh.so.1")
    link = ["-Wl,--no-as-needed", f"-L{x_dir}"]
    _run("gcc", "-o", root / "main", build / "main.c", foo_dir / "libfoo.so.1")
    _run("gcc", "-o", root / "many", build / "empty.c", *link, *(f"-l:{n}" for n in NAMES))
    _run("gcc", "-o", root / "hw", build / "empty.c", *link, "-l:libh.so.1")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/foo\n/opt/x\n")
    return root


def _records() -> list[CacheRecord]:
    """What the root holds, as the builder would record it (not read from any cache)."""
    records = [CacheRecord(name, f"/opt/x/{name}", X86_64) for name in [*NAMES, "libh.so.1"]]
    records += [
        CacheRecord("libh.so.1", "/opt/x/glibc-hwcaps/x86-64-v2/libh.so.1", X86_64, "x86-64-v2"),
        CacheRecord("libfoo.so.1", "/opt/foo/libfoo.so.1", X86_64),
        CacheRecord("libc.so.6", f"{MULTIARCH}/libc.so.6", X86_64),
        CacheRecord("ld-linux-x86-64.so.2", LDSO, X86_64),
    ]
    return records


@contextmanager
def _cache(root: Path, data: bytes) -> Iterator[None]:
    path = root / "etc/ld.so.cache"
    path.write_bytes(data)
    try:
        yield
    finally:
        path.unlink()


def _listing(path: Path) -> list[str]:
    """``ldconfig -p`` entry lines, in the order of the file."""
    out = _run("ldconfig", "-p", "-C", path).stdout.splitlines()
    header = re.match(r"(\d+) libs found in cache", out[0])
    assert header is not None, out[0]
    entries = [line for line in out[1:] if line.startswith("\t")]
    assert len(entries) == int(header.group(1))
    return entries


def _list_deps(root: Path, program: str) -> dict[str, str]:
    """``name => path`` lines of the root's own loader, run in the root."""
    proc = _run("chroot", root, LDSO, "--list", program)
    found = {}
    for line in proc.stdout.splitlines():
        if "=>" in line:
            name, _, rest = line.strip().partition(" => ")
            found[name] = rest.split(" (0x")[0]
    return found


def _missing(root: Path, program: str) -> str:
    """The library the loader fails on (``--list`` stops at the first one it misses)."""
    proc = _run("chroot", root, LDSO, "--list", program, check=False)
    assert proc.returncode != 0
    match = re.search(r"error while loading shared libraries: (\S+): cannot open", proc.stderr)
    assert match is not None, proc.stderr
    return match.group(1)


def test_round_trip_through_the_reader() -> None:
    records = _records()
    cache = parse_cache(render_cache(records))
    assert cache is not None
    got = {
        (name, entry.path, entry.flags, entry.hwcaps_subdir)
        for name, entries in cache.entries.items()
        for entry in entries
    }
    assert got == {(r.name, r.path, r.flags, r.hwcaps_subdir) for r in records}
    assert sum(len(entries) for entries in cache.entries.values()) == len(records)


def test_same_records_in_any_order_give_the_same_bytes() -> None:
    records = _records()
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert render_cache(shuffled) == render_cache(records)


def test_first_duplicate_wins() -> None:
    first = CacheRecord("libfoo.so.1", "/opt/a/libfoo.so.1", X86_64)
    second = CacheRecord("libfoo.so.1", "/opt/b/libfoo.so.1", X86_64)
    other_arch = CacheRecord("libfoo.so.1", "/opt/c/libfoo.so.1", 0x0A03)
    cache = parse_cache(render_cache([first, second, other_arch]))
    assert cache is not None
    # ldconfig's order: flags descending.
    assert [e.path for e in cache.entries["libfoo.so.1"]] == [other_arch.path, first.path]


@needs_ldconfig
def test_ldconfig_lists_every_record(tmp_path: Path) -> None:
    path = tmp_path / "ld.so.cache"
    records = _records()
    path.write_bytes(render_cache(records))
    out = _run("ldconfig", "-p", "-C", path).stdout
    assert out.startswith(f"{len(records)} libs found in cache")
    assert "Cache generated by: scratchpack" in out
    for r in records:
        hwcap = f', hwcap: "{r.hwcaps_subdir}"' if r.hwcaps_subdir else ""
        assert f"\t{r.name} (libc6,x86-64{hwcap}) => {r.path}\n" in out


def test_order_and_entries_match_the_cache_ldconfig_builds(root: Path, tmp_path: Path) -> None:
    # ldconfig -r chroots, so -C names a file inside the root.
    _run("ldconfig", "-X", "-r", root, "-C", "/etc/ld.so.cache.ldconfig")
    theirs = root / "etc/ld.so.cache.ldconfig"
    try:
        ours = tmp_path / "ld.so.cache"
        ours.write_bytes(render_cache(_records()))
        assert _listing(ours) == _listing(theirs)
    finally:
        theirs.unlink()


def test_loader_finds_a_library_only_through_the_cache(root: Path) -> None:
    assert _missing(root, "/main") == "libfoo.so.1"
    without = _run("chroot", root, "/main", check=False)
    assert without.returncode != 0 and "libfoo.so.1: cannot open" in without.stderr
    with _cache(root, render_cache(_records())):
        deps = _list_deps(root, "/main")
        assert deps["libfoo.so.1"] == "/opt/foo/libfoo.so.1"
        assert deps["libc.so.6"] == f"{MULTIARCH}/libc.so.6"
        assert _run("chroot", root, "/main").stdout == "hello from libfoo\n"


def test_loader_binary_search_finds_every_name(root: Path) -> None:
    with _cache(root, render_cache(_records())):
        deps = _list_deps(root, "/many")
    assert {name: deps.get(name) for name in NAMES} == {name: f"/opt/x/{name}" for name in NAMES}
    # The check has teeth: the same entries sorted by plain strcmp make the search miss.
    wrong = sorted(sort_records(_records()), key=lambda r: r.name.encode())
    with _cache(root, _layout(wrong)):
        assert _missing(root, "/many") in NAMES


def test_loader_prefers_the_hwcaps_entry(root: Path) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = next(
        (line.split(":")[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")),
        [],
    )
    if not V2_FLAGS.issubset(flags):
        pytest.skip("CPU does not support x86-64-v2")
    with _cache(root, render_cache(_records())):
        assert _list_deps(root, "/hw")["libh.so.1"] == "/opt/x/glibc-hwcaps/x86-64-v2/libh.so.1"
    plain = [r for r in _records() if r.hwcaps_subdir is None]
    with _cache(root, render_cache(plain)):
        assert _list_deps(root, "/hw")["libh.so.1"] == "/opt/x/libh.so.1"
