"""``scratchpack deps``: one test per rule of glibc's (and musl's) library search.

Every fixture is a tiny C library or program compiled into ``tmp_path``. Each test asserts
the exact closure (sonames, paths, load order, missing names, exit status) and, when the
case can be loaded on this host, that it is what the real loader reports through ``ldd``
(or, for ``--root`` trees, through the tree's own ld.so run chrooted in trace mode).
``ldd`` is the ground truth: every expectation below was checked against it on Debian 12.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cfixtures import (
    EM_AARCH64,
    GCC,
    HOST_INTERP,
    HOST_LIBC,
    X86_64_V2_FLAGS,
    assert_agrees_with_ldd,
    chroot_list,
    closure,
    compile_exe,
    compile_lib,
    compile_static,
    cpu_flags,
    deps_one,
    host_platform,
    is_host_glibc_x86_64,
    ldd,
    patch_byte,
    patch_machine,
    paths,
    run_deps,
    run_deps_raw,
)

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed")

# Cases that are also loaded by the host's loader need a Debian-like x86_64 glibc host.
host_glibc = pytest.mark.skipif(
    platform.machine() != "x86_64" or not is_host_glibc_x86_64(),
    reason="needs an x86_64 glibc host with libc at /lib/x86_64-linux-gnu",
)

LIBC = ("libc.so.6", HOST_LIBC)
HOST_LIBZ = "/lib/x86_64-linux-gnu/libz.so.1"


def lib(soname: str, path: os.PathLike[str] | str) -> tuple[str, str]:
    return (soname, str(path))


# --------------------------------------------------------------------------- 1. basic


@host_glibc
def test_basic_executable_needs_libc(tmp_path):
    """An ordinary program: libc from the default path, the PT_INTERP loader not repeated."""
    exe = compile_exe(tmp_path / "basic", "exe")
    # Binary given relative to the working directory: "path" echoes it as given.
    rc, obj = deps_one(["basic/exe"], cwd=tmp_path)
    assert rc == 0
    assert obj["path"] == "basic/exe"
    assert obj["interpreter"] == HOST_INTERP
    assert obj["static"] is False
    assert closure(obj) == [LIBC]
    assert obj["missing"] == []
    assert_agrees_with_ldd(obj, ldd(exe))

    # Without --json: same status, and the library's path is printed.
    proc = run_deps_raw([exe])
    assert proc.returncode == 0, proc.stderr
    assert HOST_LIBC in proc.stdout
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 2. RUNPATH


@host_glibc
def test_executable_runpath_does_not_serve_its_libraries(tmp_path):
    """exe RUNPATH=dirA; libA (dirA) needs libB (only in dirA): libB is not found."""
    dir_a = tmp_path / "dirA"
    compile_lib(dir_a, "libsp2a.so", needed=["libsp2b.so"])
    compile_lib(dir_a, "libsp2b.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp2a.so"], runpath=str(dir_a))

    rc, obj = deps_one([exe])
    assert rc == 1
    assert closure(obj) == [lib("libsp2a.so", dir_a / "libsp2a.so"), LIBC]
    assert obj["missing"] == ["libsp2b.so"]
    real = ldd(exe)
    assert real["missing"] == ["libsp2b.so"]
    assert_agrees_with_ldd(obj, real)

    # Without --json the status is the same and the missing name is reported.
    proc = run_deps_raw([exe])
    assert proc.returncode == 1
    assert "libsp2b.so" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@host_glibc
def test_several_binaries_one_object_each_worst_status(tmp_path):
    dir_a = tmp_path / "dirA"
    compile_lib(dir_a, "libspmba.so", needed=["libspmbb.so"])
    good = compile_exe(tmp_path, "good")
    bad = compile_exe(tmp_path, "bad", needed=["libspmba.so"], runpath=str(dir_a))
    rc, parsed, stderr = run_deps([good, bad])
    assert "Traceback" not in stderr
    assert rc == 1
    assert [o["path"] for o in parsed] == [str(good), str(bad)]
    assert closure(parsed[0]) == [LIBC] and parsed[0]["missing"] == []
    assert parsed[1]["missing"] == ["libspmbb.so"]


# --------------------------------------------------------------------------- 3. RPATH


@host_glibc
def test_rpath_is_inherited_through_an_intermediate_library(tmp_path):
    """exe RPATH=dirA; libA (dirA, no rpath) needs libB (dirA): found via the exe's RPATH."""
    dir_a = tmp_path / "dirA"
    compile_lib(dir_a, "libsp3a.so", needed=["libsp3b.so"])
    compile_lib(dir_a, "libsp3b.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp3a.so"], rpath=str(dir_a))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [
        lib("libsp3a.so", dir_a / "libsp3a.so"),
        LIBC,
        lib("libsp3b.so", dir_a / "libsp3b.so"),
    ]
    assert obj["missing"] == []
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 4. RUNPATH vs RPATH


@host_glibc
def test_requester_with_runpath_ignores_inherited_rpath(tmp_path):
    """exe RPATH=dirA; libA (dirA) has RUNPATH=dirR: its needs never use any RPATH.

    libB exists only in dirA (reachable only through the exe's RPATH) -> missing;
    libD is in dirR -> found through libA's own RUNPATH.
    """
    dir_a, dir_r = tmp_path / "dirA", tmp_path / "dirR"
    compile_lib(dir_a, "libsp4a.so", needed=["libsp4b.so", "libsp4d.so"], runpath=str(dir_r))
    compile_lib(dir_a, "libsp4b.so")
    compile_lib(dir_r, "libsp4d.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp4a.so"], rpath=str(dir_a))

    rc, obj = deps_one([exe])
    assert rc == 1
    assert closure(obj) == [
        lib("libsp4a.so", dir_a / "libsp4a.so"),
        LIBC,
        lib("libsp4d.so", dir_r / "libsp4d.so"),
    ]
    assert obj["missing"] == ["libsp4b.so"]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 5. breadth-first


@host_glibc
def test_breadth_first_order_decides_which_copy_is_loaded(tmp_path):
    """Two copies of libX: d1 (reached depth-first through libA -> libB) and d2 (reached at
    level 2 through libC). Breadth-first, libC asks for libX before libB does: d2 wins.

        exe (RUNPATH d0) needs libA, libC
        libA (d0, RUNPATH d1) needs libB          libC (d0, RUNPATH d2) needs libX
        libB (d1, RUNPATH d1) needs libX
    """
    d0, d1, d2 = tmp_path / "d0", tmp_path / "d1", tmp_path / "d2"
    compile_lib(d0, "libsp5a.so", needed=["libsp5b.so"], runpath=str(d1))
    compile_lib(d0, "libsp5c.so", needed=["libsp5x.so"], runpath=str(d2))
    compile_lib(d1, "libsp5b.so", needed=["libsp5x.so"], runpath=str(d1))
    compile_lib(d1, "libsp5x.so")
    compile_lib(d2, "libsp5x.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp5a.so", "libsp5c.so"], runpath=str(d0))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [
        lib("libsp5a.so", d0 / "libsp5a.so"),
        lib("libsp5c.so", d0 / "libsp5c.so"),
        LIBC,
        lib("libsp5b.so", d1 / "libsp5b.so"),
        lib("libsp5x.so", d2 / "libsp5x.so"),
    ]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 6. hwcaps


@host_glibc
def test_glibc_hwcaps_subdirectories(tmp_path):
    """A RUNPATH dir holding libH plainly and in glibc-hwcaps/x86-64-v{2,3,4}."""
    d = tmp_path / "d"
    compile_lib(d, "libsp6h.so")
    for level in ("x86-64-v2", "x86-64-v3", "x86-64-v4"):
        compile_lib(d / "glibc-hwcaps" / level, "libsp6h.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp6h.so"], runpath=str(d))

    def chosen(*extra):
        rc, obj = deps_one([*extra, exe])
        assert rc == 0
        assert closure(obj)[1:] == [LIBC]
        return closure(obj)[0][1]

    # auto (the default): what this machine's loader picks.
    auto = chosen()
    assert chosen("--hwcaps", "auto") == auto
    real = ldd(exe)
    assert dict(real["libraries"])["libsp6h.so"] == auto, real["raw"]
    if cpu_flags() >= X86_64_V2_FLAGS:
        assert "/glibc-hwcaps/x86-64-v" in auto
    # none: no glibc-hwcaps subdirectory at all.
    assert chosen("--hwcaps", "none") == str(d / "libsp6h.so")
    # An explicit list: only those levels are searched.
    assert chosen("--hwcaps", "x86-64-v2") == str(d / "glibc-hwcaps/x86-64-v2/libsp6h.so")
    assert chosen("--hwcaps", "x86-64-v3,x86-64-v2") == str(d / "glibc-hwcaps/x86-64-v3/libsp6h.so")


@host_glibc
def test_glibc_hwcaps_v2_copy_beats_plain_copy(tmp_path):
    """Only dir and dir/glibc-hwcaps/x86-64-v2: auto takes v2 (on a v2 CPU), none the plain."""
    if not cpu_flags() >= X86_64_V2_FLAGS:
        pytest.skip("this CPU does not support x86-64-v2")
    d = tmp_path / "d"
    compile_lib(d, "libsp6v.so")
    compile_lib(d / "glibc-hwcaps/x86-64-v2", "libsp6v.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp6v.so"], runpath=str(d))

    rc, obj = deps_one(["--hwcaps", "auto", exe])
    assert rc == 0
    assert closure(obj) == [lib("libsp6v.so", d / "glibc-hwcaps/x86-64-v2/libsp6v.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe))

    rc, obj = deps_one(["--hwcaps", "none", exe])
    assert rc == 0
    assert closure(obj) == [lib("libsp6v.so", d / "libsp6v.so"), LIBC]


@host_glibc
def test_legacy_tls_and_platform_subdirectories(tmp_path):
    """glibc 2.36 still searches DIR/tls/ and DIR/$PLATFORM/ (and hwcap names) before DIR.

    (Removed in glibc 2.37; the ldd comparison is what matters on other hosts.)
    """
    d = tmp_path / "d"
    plat = host_platform()
    compile_lib(d, "libsp6l.so")
    compile_lib(d / plat, "libsp6l.so")
    compile_lib(d, "libsp6t.so")
    compile_lib(d / "tls", "libsp6t.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp6l.so", "libsp6t.so"], runpath=str(d))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert_agrees_with_ldd(obj, ldd(exe))
    if os.confstr("CS_GNU_LIBC_VERSION") == "glibc 2.36":
        assert closure(obj) == [
            lib("libsp6l.so", d / plat / "libsp6l.so"),
            lib("libsp6t.so", d / "tls/libsp6t.so"),
            LIBC,
        ]


# --------------------------------------------------------------------------- 7. NODEFLIB


@host_glibc
def test_nodeflib_skips_default_dirs_and_their_cache_entries(tmp_path):
    """DF_1_NODEFLIB (ld ``-z nodefaultlib``): the requester's needs skip the default dirs
    and ld.so.cache entries inside them; even libc.so.6 is then "not found"."""
    if not os.path.exists(HOST_LIBZ):
        pytest.skip(f"{HOST_LIBZ} is not installed")
    exe = compile_exe(tmp_path, "exe", needed=["libz.so.1"], extra_flags=["-Wl,-z,nodefaultlib"])

    rc, obj = deps_one([exe])
    assert rc == 1
    assert closure(obj) == []
    assert obj["missing"] == ["libz.so.1", "libc.so.6"]
    assert obj["interpreter"] == HOST_INTERP
    real = ldd(exe)
    assert real["missing"] == ["libz.so.1", "libc.so.6"]
    assert_agrees_with_ldd(obj, real)


@host_glibc
def test_nodeflib_applies_only_to_the_flagged_object(tmp_path):
    """The NODEFLIB executable's library (found via RUNPATH) still finds libz in /lib."""
    if not os.path.exists(HOST_LIBZ):
        pytest.skip(f"{HOST_LIBZ} is not installed")
    dir_a = tmp_path / "dirA"
    compile_lib(dir_a, "libsp7a.so", needed=["libz.so.1"])
    exe = compile_exe(
        tmp_path,
        "exe",
        needed=["libsp7a.so"],
        runpath=str(dir_a),
        extra_flags=["-Wl,-z,nodefaultlib"],
        nostdlib=True,
    )
    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [lib("libsp7a.so", dir_a / "libsp7a.so"), ("libz.so.1", HOST_LIBZ), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 8. wrong machine


@host_glibc
def test_wrong_machine_and_wrong_class_candidates_are_skipped(tmp_path):
    """RUNPATH d1:d2:d3 -- d1 holds libW with e_machine=EM_AARCH64, d2 one with EI_CLASS
    patched to ELFCLASS32; both are skipped and d3's good copy is used."""
    good = compile_lib(tmp_path / "d3", "libsp8w.so")
    patch_machine(good, tmp_path / "d1/libsp8w.so", EM_AARCH64)
    patch_byte(good, tmp_path / "d2/libsp8w.so", 4, 1)  # EI_CLASS = ELFCLASS32
    runpath = ":".join(str(tmp_path / d) for d in ("d1", "d2", "d3"))
    exe = compile_exe(tmp_path, "exe", needed=["libsp8w.so"], runpath=runpath)

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [lib("libsp8w.so", good), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe))


@host_glibc
def test_wrong_osabi_or_byte_order_candidate_stops_the_search(tmp_path):
    """A candidate with a foreign OS ABI or byte order is a fatal load error for ld.so
    ("ELF file OS ABI invalid", "ELF file data encoding not little-endian"): the good copy
    later on the path is NOT used; deps reports the name missing, with a reason on stderr."""
    good = compile_lib(tmp_path / "good", "libspo.so")
    patch_byte(good, tmp_path / "osabi/libspo.so", 7, 9)  # EI_OSABI = FreeBSD
    patch_byte(good, tmp_path / "msb/libspo.so", 5, 2)  # EI_DATA = ELFDATA2MSB
    for bad, loader_says in (("osabi", "OS ABI invalid"), ("msb", "not little-endian")):
        exe = compile_exe(
            tmp_path, f"exe_{bad}", needed=["libspo.so"], runpath=f"{tmp_path / bad}:{good.parent}"
        )
        real = ldd(exe)
        assert loader_says in real["raw"], real["raw"]
        rc, parsed, stderr = run_deps([exe])
        assert "Traceback" not in stderr
        assert rc == 1, stderr
        (obj,) = parsed
        assert obj["missing"] == ["libspo.so"]
        assert str(good) not in paths(obj)
        assert "libspo.so" in stderr


@host_glibc
def test_same_file_under_two_names_is_loaded_once(tmp_path):
    """NEEDED libspi.so (a symlink) and libspi-real.so (its target, no SONAME): the loader
    sees the same device and inode and reuses the object loaded first."""
    d = tmp_path / "d"
    compile_lib(d, "libspi-real.so", soname="")
    os.symlink("libspi-real.so", d / "libspi.so")
    exe = compile_exe(tmp_path, "exe", needed=["libspi.so", "libspi-real.so"], runpath=str(d))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [lib("libspi.so", d / "libspi.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 9. tokens


@host_glibc
def test_origin_lib_and_platform_tokens(tmp_path):
    """$ORIGIN, ${ORIGIN}, $LIB (lib/x86_64-linux-gnu), $PLATFORM, ${LIB}, ${PLATFORM}.

    The loader does not normalise the expanded path: ``bin/../l2`` is opened as is.
    """
    plat = host_platform()
    t, t2 = tmp_path / "t", tmp_path / "t2"
    compile_lib(tmp_path / "bin/l1", "libsp9o.so")
    compile_lib(tmp_path / "l2", "libsp9b.so")
    compile_lib(t / "lib/x86_64-linux-gnu", "libsp9l.so")
    compile_lib(t / plat, "libsp9p.so")
    compile_lib(t2 / "lib/x86_64-linux-gnu", "libsp9l2.so")
    compile_lib(t2 / plat, "libsp9p2.so")
    runpath = ":".join(
        [
            "$ORIGIN/l1",
            "${ORIGIN}/../l2",
            f"{t}/$LIB",
            f"{t}/$PLATFORM",
            f"{t2}/${{LIB}}",
            f"{t2}/${{PLATFORM}}",
        ]
    )
    names = ["libsp9o.so", "libsp9b.so", "libsp9l.so", "libsp9p.so", "libsp9l2.so", "libsp9p2.so"]
    exe = compile_exe(tmp_path / "bin", "exe", needed=names, runpath=runpath)

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [
        lib("libsp9o.so", tmp_path / "bin/l1/libsp9o.so"),
        ("libsp9b.so", f"{tmp_path}/bin/../l2/libsp9b.so"),
        lib("libsp9l.so", t / "lib/x86_64-linux-gnu/libsp9l.so"),
        lib("libsp9p.so", t / plat / "libsp9p.so"),
        lib("libsp9l2.so", t2 / "lib/x86_64-linux-gnu/libsp9l2.so"),
        lib("libsp9p2.so", t2 / plat / "libsp9p2.so"),
        LIBC,
    ]
    assert_agrees_with_ldd(obj, ldd(exe))


@host_glibc
def test_origin_of_a_library_is_its_own_directory(tmp_path):
    """$ORIGIN in a library's RUNPATH is that library's directory, not the executable's."""
    compile_lib(tmp_path / "libs", "libsp9a.so", needed=["libsp9c.so"], runpath="$ORIGIN/sub")
    compile_lib(tmp_path / "libs/sub", "libsp9c.so")
    compile_lib(tmp_path / "bin/sub", "libsp9c.so")  # decoy: $ORIGIN of the executable
    exe = compile_exe(tmp_path / "bin", "exe", needed=["libsp9a.so"], runpath="$ORIGIN/../libs")

    rc, obj = deps_one([exe])
    assert rc == 0
    libs = f"{tmp_path}/bin/../libs"
    assert closure(obj) == [
        ("libsp9a.so", f"{libs}/libsp9a.so"),
        LIBC,
        ("libsp9c.so", f"{libs}/sub/libsp9c.so"),
    ]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 10. slash


@host_glibc
def test_needed_with_a_slash_is_opened_as_given(tmp_path):
    """NEEDED "/abs/dir/libsp10s.so" (linked by path, no SONAME): not searched, opened as is,
    even though a RUNPATH dir holds another file of that basename."""
    real_lib = compile_lib(tmp_path / "d", "libsp10s.so", soname="")
    compile_lib(tmp_path / "decoy", "libsp10s.so", soname="")
    exe = compile_exe(tmp_path, "exe", needed=[real_lib], runpath=str(tmp_path / "decoy"))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [(str(real_lib), str(real_lib)), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe))


# --------------------------------------------------------------------------- 11. LD_LIBRARY_PATH


@host_glibc
def test_ld_library_path_and_library_path_option(tmp_path):
    l1, l2, rr = tmp_path / "l1", tmp_path / "l2", tmp_path / "rr"
    for d in (l1, l2, rr):
        compile_lib(d, "libsp11.so")
    exe = compile_exe(tmp_path, "exe", needed=["libsp11.so"])
    exe_runpath = compile_exe(tmp_path, "exe_runpath", needed=["libsp11.so"], runpath=str(rr))
    exe_rpath = compile_exe(tmp_path, "exe_rpath", needed=["libsp11.so"], rpath=str(rr))
    env1 = {"LD_LIBRARY_PATH": str(l1)}

    # Neither: not found.
    rc, obj = deps_one([exe])
    assert rc == 1 and obj["missing"] == ["libsp11.so"]
    assert_agrees_with_ldd(obj, ldd(exe))

    # LD_LIBRARY_PATH from the environment, like the loader.
    rc, obj = deps_one([exe], env=env1)
    assert rc == 0
    assert closure(obj) == [lib("libsp11.so", l1 / "libsp11.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe, env1))

    # --library-path overrides the environment variable.
    rc, obj = deps_one(["--library-path", f"{tmp_path}/nowhere:{l2}", exe], env=env1)
    assert rc == 0
    assert closure(obj) == [lib("libsp11.so", l2 / "libsp11.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe, {"LD_LIBRARY_PATH": f"{tmp_path}/nowhere:{l2}"}))

    # LD_LIBRARY_PATH comes before DT_RUNPATH ...
    rc, obj = deps_one([exe_runpath], env=env1)
    assert rc == 0
    assert closure(obj) == [lib("libsp11.so", l1 / "libsp11.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe_runpath, env1))

    # ... but after DT_RPATH.
    rc, obj = deps_one([exe_rpath], env=env1)
    assert rc == 0
    assert closure(obj) == [lib("libsp11.so", rr / "libsp11.so"), LIBC]
    assert_agrees_with_ldd(obj, ldd(exe_rpath, env1))


# --------------------------------------------------------------------------- 12. filters


@host_glibc
def test_filter_and_auxiliary_objects_are_loaded(tmp_path):
    """libF (RUNPATH $ORIGIN) has DT_NEEDED libN, DT_FILTER libFT, DT_AUXILIARY libAX (which
    needs libAXDEP) and DT_AUXILIARY libGONE (absent). Filtees and their needs are in the
    closure; a missing auxiliary is not "missing" (the loader ignores it; ``ldd``'s trace
    mode still prints it as "not found")."""
    d = tmp_path / "d"
    compile_lib(d, "libsp12ft.so")
    compile_lib(d, "libsp12ax.so", needed=["libsp12axdep.so"], runpath="$ORIGIN")
    compile_lib(d, "libsp12axdep.so")
    compile_lib(d, "libsp12n.so")
    compile_lib(
        d,
        "libsp12f.so",
        needed=["libsp12n.so"],
        runpath="$ORIGIN",
        extra_flags=[
            "-Wl,--filter=libsp12ft.so",
            "-Wl,--auxiliary=libsp12ax.so",
            "-Wl,--auxiliary=libsp12gone.so",
        ],
    )
    exe = compile_exe(tmp_path, "exe", needed=["libsp12f.so"], runpath=str(d))

    rc, obj = deps_one([exe])
    assert rc == 0
    assert obj["missing"] == []
    expected = {
        lib("libsp12f.so", d / "libsp12f.so"),
        lib("libsp12n.so", d / "libsp12n.so"),
        lib("libsp12ft.so", d / "libsp12ft.so"),
        lib("libsp12ax.so", d / "libsp12ax.so"),
        lib("libsp12axdep.so", d / "libsp12axdep.so"),
        LIBC,
    }
    assert sorted(closure(obj)) == sorted(expected)  # each object exactly once
    real = ldd(exe)
    assert sorted(real["libraries"]) == sorted(expected), real["raw"]
    assert real["missing"] == ["libsp12gone.so"]


# --------------------------------------------------------------------------- 13. static


@host_glibc
def test_static_and_static_pie_executables(tmp_path):
    try:
        static = compile_static(tmp_path, "static")
        static_pie = compile_static(tmp_path, "static_pie", pie=True)
    except RuntimeError as exc:
        pytest.skip(f"no static libc to link against: {exc}")

    rc, parsed, stderr = run_deps([static, static_pie])
    assert "Traceback" not in stderr
    assert rc == 0, stderr
    assert [o["path"] for o in parsed] == [str(static), str(static_pie)]
    for obj in parsed:
        assert obj["static"] is True
        assert obj["interpreter"] is None
        assert obj["libraries"] == []
        assert obj["missing"] == []
    assert ldd(static)["dynamic"] is False  # "not a dynamic executable"
    assert ldd(static_pie)["static"] is True  # "statically linked"


# --------------------------------------------------------------------------- 14. --root


def _build_glibc_root(base: Path) -> dict:
    """A tiny Debian-like usrmerged root holding the host's libc and ld.so.

    /lib -> usr/lib and /lib64 -> usr/lib64 (relative), /usr/lib64/ld-linux-x86-64.so.2 ->
    /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 (ABSOLUTE: only correct inside the root).
    /usr/bin/spapp (RUNPATH /opt/app/lib) needs:
      libspcustom.so.1  only in /opt/custom/lib, listed by /etc/ld.so.conf.d/custom.conf
                        through /etc/ld.so.conf's "include /etc/ld.so.conf.d/*.conf"
      libspesc.so.1     /opt/app/lib/libspesc.so.1 -> ../../../../../../../../../../usr/lib/
                        x86_64-linux-gnu/libspesc-real.so.1 (".." past "/" stays at "/")
      libspabs.so.1     /opt/app/lib/libspabs.so.1 -> /usr/lib/sp-only/libspabs.so.1, a
                        directory that exists only in the root
      libz.so.1         /opt/app/lib/libz.so.1 -> /lib/x86_64-linux-gnu/libz.so.1, which
                        exists on the host but not in the root: must stay missing
      libc.so.6
    """
    root = base / "root"
    multiarch = root / "usr/lib/x86_64-linux-gnu"
    multiarch.mkdir(parents=True)
    (root / "usr/lib64").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(Path(HOST_LIBC).parent / name, multiarch / name)
    os.symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "usr/lib64/ld-linux-x86-64.so.2"
    )
    compile_lib(root / "opt/custom/lib", "libspcustom.so.1")
    compile_lib(multiarch, "libspesc-real.so.1", soname="libspesc.so.1")
    compile_lib(root / "usr/lib/sp-only", "libspabs.so.1")
    app_lib = root / "opt/app/lib"
    app_lib.mkdir(parents=True)
    os.symlink(
        "../../../../../../../../../../usr/lib/x86_64-linux-gnu/libspesc-real.so.1",
        app_lib / "libspesc.so.1",
    )
    os.symlink("/usr/lib/sp-only/libspabs.so.1", app_lib / "libspabs.so.1")
    os.symlink("/lib/x86_64-linux-gnu/libz.so.1", app_lib / "libz.so.1")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/custom.conf").write_text("/opt/custom/lib\n")
    compile_exe(
        root / "usr/bin",
        "spapp",
        needed=["libspcustom.so.1", "libspesc.so.1", "libspabs.so.1", "libz.so.1"],
        runpath="/opt/app/lib",
    )
    assert not os.path.exists("/usr/bin/spapp"), "the host must not have /usr/bin/spapp"
    return {"root": root, "binary": "/usr/bin/spapp"}


def _assert_in_root(root: Path, obj: dict) -> None:
    for p in paths(obj):
        assert p.startswith("/") and not p.startswith(str(root)), p
        assert os.path.lexists(str(root) + p), f"{p} does not exist inside the root"


@host_glibc
def test_root_without_cache_reads_ld_so_conf_and_resolves_symlinks_inside_root(tmp_path):
    """No /etc/ld.so.cache in the root: by scratchpack's documented choice (README, "A root
    without /etc/ld.so.cache"), the root's ld.so.conf and its include glob stand in for
    the cache ldconfig would build, so /opt/custom/lib/libspcustom.so.1 is found.

    This is the one place where deps knowingly differs from the loader: ld.so never reads
    ld.so.conf, and the root's own ld.so run chrooted says "libspcustom.so.1 => not found"
    (checked below). Every other entry must be exactly what that loader reports.
    """
    fx = _build_glibc_root(tmp_path)
    root = fx["root"]
    rc, obj = deps_one(["--root", root, fx["binary"]], cwd=tmp_path)
    assert rc == 1  # libz.so.1 only exists on the host
    assert obj["path"] == "/usr/bin/spapp"
    assert obj["interpreter"] == HOST_INTERP
    assert obj["static"] is False
    assert closure(obj) == [
        ("libspcustom.so.1", "/opt/custom/lib/libspcustom.so.1"),
        ("libspesc.so.1", "/opt/app/lib/libspesc.so.1"),
        ("libspabs.so.1", "/opt/app/lib/libspabs.so.1"),
        LIBC,
    ]
    assert obj["missing"] == ["libz.so.1"]
    _assert_in_root(root, obj)

    real = chroot_list(root, HOST_INTERP, fx["binary"])
    if real is not None:
        assert sorted(real["missing"]) == ["libspcustom.so.1", "libz.so.1"], real["raw"]
        ours = [entry for entry in closure(obj) if entry[0] != "libspcustom.so.1"]
        assert ours == real["libraries"], real["raw"]


@host_glibc
def test_root_ld_so_conf_include_reaches_the_loader_through_the_cache(tmp_path):
    """``ldconfig -r ROOT`` builds ROOT/etc/ld.so.cache from ROOT/etc/ld.so.conf and its
    include glob: the library in /opt/custom/lib is then found, at its in-root path."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if os.geteuid() != 0 or not os.path.exists(ldconfig):
        pytest.skip("needs root and ldconfig to build the root's ld.so.cache")
    fx = _build_glibc_root(tmp_path)
    root = fx["root"]
    subprocess.run([ldconfig, "-X", "-r", str(root)], check=True, capture_output=True)
    assert (root / "etc/ld.so.cache").exists()

    rc, obj = deps_one(["--root", root, fx["binary"]])
    assert rc == 1  # libz.so.1 is still missing
    assert closure(obj) == [
        ("libspcustom.so.1", "/opt/custom/lib/libspcustom.so.1"),
        ("libspesc.so.1", "/opt/app/lib/libspesc.so.1"),
        ("libspabs.so.1", "/opt/app/lib/libspabs.so.1"),
        LIBC,
    ]
    assert obj["missing"] == ["libz.so.1"]
    _assert_in_root(root, obj)
    real = chroot_list(root, HOST_INTERP, fx["binary"])
    if real is not None:
        assert_agrees_with_ldd(obj, real)


def test_root_binary_argument_is_an_in_root_path(tmp_path):
    """With --root, /bin/true names ROOT/bin/true, not the host's file."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    rc, _parsed, stderr = run_deps(["--root", root, "/bin/true"])
    assert rc == 2
    assert "Traceback" not in stderr
    assert "/bin/true" in stderr


# --------------------------------------------------------------------------- 15. foreign arch


@pytest.fixture(scope="module")
def aarch64_root(tmp_path_factory):
    """A Debian-arm64-like root made of x86-64 objects with e_machine patched to AArch64.

    /usr/bin/app: PT_INTERP /lib/ld-linux-aarch64.so.1, NEEDED libspfoo.so.1, libc.so.6
    /lib/ld-linux-aarch64.so.1 -> aarch64-linux-gnu/ld-linux-aarch64.so.1 (SONAME
        ld-linux-aarch64.so.1)
    /lib/aarch64-linux-gnu/libc.so.6 needs ld-linux-aarch64.so.1 (= the interpreter)
    /lib/aarch64-linux-gnu/libspfoo.so.1: an x86-64 decoy (wrong machine: skipped)
    /usr/lib/aarch64-linux-gnu/glibc-hwcaps/x86-64-v2/libspfoo.so.1: x86-64 hwcaps decoy
        (patched to AArch64; AArch64 glibc 2.36 has no x86-64 hwcaps levels)
    /usr/lib/aarch64-linux-gnu/libspfoo.so.1 needs libspbar.so.1
    /usr/lib/libspbar.so.1 (the last default directory)
    """
    base = tmp_path_factory.mktemp("aarch64")
    build = base / "build"
    root = base / "root"

    def put(src: Path, rel: str) -> None:
        patch_machine(src, root / rel, EM_AARCH64)

    put(
        compile_lib(build / "a", "ld-linux-aarch64.so.1"),
        "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    )
    os.symlink("aarch64-linux-gnu/ld-linux-aarch64.so.1", root / "lib/ld-linux-aarch64.so.1")
    put(
        compile_lib(build / "b", "libc.so.6", needed=["ld-linux-aarch64.so.1"]),
        "lib/aarch64-linux-gnu/libc.so.6",
    )
    decoy = compile_lib(root / "lib/aarch64-linux-gnu", "libspfoo.so.1")  # stays x86-64
    assert decoy.exists()
    foo = compile_lib(build / "c", "libspfoo.so.1", needed=["libspbar.so.1"])
    put(foo, "usr/lib/aarch64-linux-gnu/libspfoo.so.1")
    put(foo, "usr/lib/aarch64-linux-gnu/glibc-hwcaps/x86-64-v2/libspfoo.so.1")
    put(compile_lib(build / "d", "libspbar.so.1"), "usr/lib/libspbar.so.1")
    exe = compile_exe(
        build / "e",
        "app",
        needed=["libspfoo.so.1", "libc.so.6"],
        nostdlib=True,
        interp="/lib/ld-linux-aarch64.so.1",
    )
    put(exe, "usr/bin/app")
    return root


def test_foreign_architecture_root(aarch64_root):
    """Nothing is executed: an AArch64 tree resolves with the AArch64 default directories,
    skipping x86-64 candidates, and libc's need of the loader is the PT_INTERP object."""
    rc, obj = deps_one(["--root", aarch64_root, "--hwcaps", "none", "/usr/bin/app"])
    assert rc == 0
    assert obj["interpreter"] == "/lib/ld-linux-aarch64.so.1"
    assert obj["static"] is False
    assert closure(obj) == [
        ("libspfoo.so.1", "/usr/lib/aarch64-linux-gnu/libspfoo.so.1"),
        ("libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"),
        ("libspbar.so.1", "/usr/lib/libspbar.so.1"),
    ]
    assert obj["missing"] == []
    _assert_in_root(aarch64_root, obj)


def test_foreign_architecture_root_ignores_host_hwcaps_levels(aarch64_root):
    """--hwcaps auto means this CPU's x86-64 levels; they do not apply to an AArch64 tree."""
    rc, obj = deps_one(["--root", aarch64_root, "/usr/bin/app"])
    assert rc == 0
    assert closure(obj)[0] == ("libspfoo.so.1", "/usr/lib/aarch64-linux-gnu/libspfoo.so.1")


# --------------------------------------------------------------------------- 16. musl


def test_musl_root(tmp_path):
    """A musl tree (checked against the real musl 1.2.3 loader chrooted in such a tree):

    /usr/bin/app: PT_INTERP /lib/ld-musl-x86_64.so.1, RUNPATH /opt/exerp, NEEDED
        libspmu.so.1 (/opt/mlib, listed in /etc/ld-musl-x86_64.path),
        libspmv.so.1 (/usr/lib, listed too), libspmx.so.1 (only in /lib: a musl default dir,
        but the path file replaces the defaults -> missing), libc.so (the loader itself)
    libspmu needs libspmw.so.1 (only in /opt/exerp: musl inherits the executable's RUNPATH)
        and libc.so; libspmv needs libm.so.6 and libpthread.so.0 (both the loader itself).
    """
    root = tmp_path / "root"
    compile_lib(root / "lib", "ld-musl-x86_64.so.1", soname="")
    (root / "etc").mkdir()
    (root / "etc/ld-musl-x86_64.path").write_text("/opt/mlib\n/usr/lib\n")
    compile_lib(root / "opt/mlib", "libspmu.so.1", needed=["libspmw.so.1", "libc.so"])
    compile_lib(root / "usr/lib", "libspmv.so.1", needed=["libm.so.6", "libpthread.so.0"])
    compile_lib(root / "lib", "libspmx.so.1")
    compile_lib(root / "opt/exerp", "libspmw.so.1")
    compile_exe(
        root / "usr/bin",
        "app",
        needed=["libspmu.so.1", "libspmv.so.1", "libspmx.so.1", "libc.so"],
        runpath="/opt/exerp",
        nostdlib=True,
        interp="/lib/ld-musl-x86_64.so.1",
    )

    rc, obj = deps_one(["--root", root, "/usr/bin/app"])
    assert rc == 1
    assert obj["interpreter"] == "/lib/ld-musl-x86_64.so.1"
    assert obj["static"] is False
    assert obj["missing"] == ["libspmx.so.1"]
    reserved = {"libc.so", "libm.so.6", "libpthread.so.0"}
    others = [(s, p) for s, p in closure(obj) if p != "/lib/ld-musl-x86_64.so.1"]
    assert others == [
        ("libspmu.so.1", "/opt/mlib/libspmu.so.1"),
        ("libspmv.so.1", "/usr/lib/libspmv.so.1"),
        ("libspmw.so.1", "/opt/exerp/libspmw.so.1"),
    ], "libc.so/libm/libpthread must map to the loader, nothing else may"
    assert not reserved & set(obj["missing"])
    _assert_in_root(root, obj)


# --------------------------------------------------------------------------- 17. cycle


@host_glibc
def test_dependency_cycle_terminates(tmp_path):
    """libA needs libB needs libA: each appears once."""
    compile_lib(tmp_path, "libsp17a.so", needed=["libsp17b.so"], runpath="$ORIGIN")
    compile_lib(tmp_path, "libsp17b.so", needed=["libsp17a.so"], runpath="$ORIGIN")
    exe = compile_exe(tmp_path, "exe", needed=["libsp17a.so"], runpath="$ORIGIN")

    rc, obj = deps_one([exe])
    assert rc == 0
    assert closure(obj) == [
        lib("libsp17a.so", tmp_path / "libsp17a.so"),
        LIBC,
        lib("libsp17b.so", tmp_path / "libsp17b.so"),
    ]
    assert_agrees_with_ldd(obj, ldd(exe))
