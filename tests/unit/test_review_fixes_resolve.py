"""Regression tests for the review of the resolver, the root view and the dpkg index.

Each section names the finding it covers: the dpkg database read through the root,
/etc/ld.so.preload misses as warnings, non-regular and non-program inputs, one parse
per file, the loader's working directory, --hwcaps validation, the dead code removed
and the per-architecture default interpreter.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.ld import elf, loaders, resolve
from scratchpack.ld.elf import ELFCLASS64, ElfError, read_elf
from scratchpack.ld.loaders import EM_AARCH64, EM_X86_64, HwcapsChoice, arch_for
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.dpkg import DpkgIndex
from tests.cfixtures import (
    GCC,
    HOST_INTERP,
    HOST_LIBC,
    compile_exe,
    compile_lib,
    is_host_glibc_x86_64,
    run_deps_raw,
)

host_glibc = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="needs the host's x86-64 glibc to copy into a root"
)
needs_gcc = pytest.mark.skipif(GCC is None, reason="needs gcc")
TIMEOUT = 30


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _glibc_root(base: Path) -> Path:
    """A tiny usrmerged root with the host's ld.so, libc and /usr/bin/true."""
    root = base / "root"
    multiarch = root / "usr/lib/x86_64-linux-gnu"
    multiarch.mkdir(parents=True)
    (root / "usr/lib64").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    os.symlink("usr/bin", root / "bin")
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(Path(HOST_LIBC).parent / name, multiarch / name)
    os.symlink(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "usr/lib64" / "ld-linux-x86-64.so.2"
    )
    shutil.copy2(shutil.which("true") or "/bin/true", root / "usr/bin/true")
    return root


# -- 1. the dpkg database is read inside the root ---------------------------------------


def _dpkg_root(base: Path) -> tuple[Path, Path]:
    root = base / "root"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: foo\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n"
        "Package: bar\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n"
    )
    host_file = base / "host-secret.list"
    host_file.write_text("/host/only/secret\n")
    os.symlink(str(host_file), info / "foo.list")  # absolute: only valid on the host
    (root / "srv").mkdir()
    (root / "srv/bar.list").write_text("/usr/bin/bar\n")
    os.symlink("/srv/bar.list", info / "bar.list")  # absolute, inside the root
    return root, host_file


def test_dpkg_list_symlink_does_not_escape_the_root(tmp_path: Path) -> None:
    root, host_file = _dpkg_root(tmp_path)
    assert host_file.exists()
    index = DpkgIndex.load(RootFS(root))
    assert index.owner("/host/only/secret") is None
    assert index.files("foo") == []
    # The same kind of link resolves inside the root: bar's list is read from ROOT/srv.
    owner = index.owner("/usr/bin/bar")
    assert owner is not None and owner.name == "bar"
    assert index.files("bar") == ["/usr/bin/bar"]


def test_dpkg_files_refuses_a_key_with_a_slash(tmp_path: Path) -> None:
    root, _host_file = _dpkg_root(tmp_path)
    index = DpkgIndex.load(RootFS(root))
    assert index.files("../../../srv/bar") == []


def test_dpkg_status_fifo_does_not_block(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    os.mkfifo(root / "var/lib/dpkg/status")
    assert len(DpkgIndex.load(RootFS(root))) == 0


# -- 2. /etc/ld.so.preload misses are warnings ------------------------------------------


@host_glibc
def test_missing_preload_is_not_a_missing_library(tmp_path: Path) -> None:
    root = _glibc_root(tmp_path)
    (root / "etc/ld.so.preload").write_text(
        "/usr/lib/libnothere.so libalsonothere.so /lib/x86_64-linux-gnu/libc.so.6\n"
    )
    closure = Resolver(root).resolve("/usr/bin/true")
    assert closure.missing == []
    assert closure.complete
    assert [(m.soname, m.needed_by) for m in closure.preload_missing] == [
        ("/usr/lib/libnothere.so", "/etc/ld.so.preload"),
        ("libalsonothere.so", "/etc/ld.so.preload"),
    ]
    # A preload that is there is loaded (first, before DT_NEEDED) and stays a library.
    assert [lib.soname for lib in closure.libraries] == ["/lib/x86_64-linux-gnu/libc.so.6"]

    proc = run_deps_raw(["--root", root, "/bin/true"], timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if os.geteuid() == 0:
        # The loader itself ignores the missing preloads and runs the program.
        real = subprocess.run(
            ["chroot", str(root), "/bin/true"], capture_output=True, text=True, check=False
        )
        assert real.returncode == 0, real.stderr
        assert "cannot be preloaded" in real.stderr


@host_glibc
def test_preload_that_cannot_be_loaded_is_a_warning_with_its_reason(tmp_path: Path) -> None:
    root = _glibc_root(tmp_path)
    (root / "usr/lib/bad.so").write_text("not an ELF file\n")
    (root / "etc/ld.so.preload").write_text("/usr/lib/bad.so\n")
    closure = Resolver(root).resolve("/usr/bin/true")
    assert closure.missing == []
    assert len(closure.preload_missing) == 1
    assert closure.preload_missing[0].soname == "/usr/lib/bad.so"
    assert closure.preload_missing[0].reason


# -- 3. FIFOs, sockets and devices are refused without blocking --------------------------


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "text"])
@pytest.mark.parametrize("kind", ["fifo", "socket", "dev-null", "dev-zero", "symlink-to-fifo"])
def test_deps_refuses_non_regular_files(kind: str, json_flag: bool, tmp_path: Path) -> None:
    keep = None
    if kind == "fifo":
        path = _fifo(tmp_path)
    elif kind == "symlink-to-fifo":
        path = tmp_path / "link"
        os.symlink(_fifo(tmp_path), path)
    elif kind == "socket":
        path = tmp_path / "sock"
        keep = socket.socket(socket.AF_UNIX)
        keep.bind(str(path))
    else:
        path = Path("/dev/" + kind.split("-")[1])
    try:
        args = ["--json", path] if json_flag else [path]
        proc = run_deps_raw(args, timeout=TIMEOUT)
    finally:
        if keep is not None:
            keep.close()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = _one_line(proc.stderr)
    assert str(path) in line and "not a regular file" in line, line


def test_deps_refuses_a_fifo_inside_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "fifo")
    proc = run_deps_raw(["--root", root, "/fifo"], timeout=TIMEOUT)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "/fifo" in line and "not a regular file" in line, line


def test_read_input_directory_and_fifo(tmp_path: Path) -> None:
    resolver = Resolver()
    with pytest.raises(InputError, match="is a directory"):
        resolver.read_input(str(tmp_path))
    with pytest.raises(InputError, match=r"not a regular file \(a FIFO\)"):
        resolver.read_input(str(_fifo(tmp_path)))
    with pytest.raises(InputError, match=r"not a regular file \(a character device\)"):
        resolver.read_input("/dev/null")


def test_read_elf_and_root_reads_do_not_block_on_a_fifo(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    with pytest.raises(ElfError, match="not a regular file"):
        read_elf(str(fifo))
    with pytest.raises(ElfError, match="not a regular file"):
        elf.undefined_symbols(str(fifo))
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/ld.so.preload")
    root = RootFS(tmp_path)
    assert root.read_bytes("/etc/ld.so.preload") is None
    assert root.read_bytes("/fifo") is None
    assert RootFS().read_bytes(str(fifo)) is None


def test_trace_is_none_for_a_final_component_that_is_not_a_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    os.symlink("fifo", tmp_path / "link")
    (tmp_path / "file").write_text("x")
    root = RootFS(tmp_path)
    assert root.trace("/fifo") is None
    assert root.trace("/link") is None
    steps = root.trace("/file")
    assert steps is not None and [step.kind for step in steps] == ["file"]
    # The path still resolves, so callers can stat it and say what it is.
    assert root.realpath("/link") == "/fifo"
    host = RootFS()
    assert host.trace(str(tmp_path / "fifo")) is None
    assert host.trace("/dev/null") is None


# -- 4. relocatable objects and core dumps ------------------------------------------------


def _with_type(src: str, dst: Path, elf_type: int) -> Path:
    data = bytearray(Path(src).read_bytes())
    data[16:18] = elf_type.to_bytes(2, "little")
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("elf_type", "words"),
    [
        (1, "a relocatable object (.o), not a program or library"),
        (4, "a core dump, not a program or library"),
        (0, "not a program or library"),
    ],
)
def test_deps_refuses_objects_that_are_no_program(tmp_path: Path, elf_type, words) -> None:
    target = _with_type(HOST_LIBC, tmp_path / f"type{elf_type}", elf_type)
    proc = run_deps_raw([target], timeout=TIMEOUT)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = _one_line(proc.stderr)
    assert str(target) in line and words in line, line


@needs_gcc
def test_deps_refuses_a_real_object_file(tmp_path: Path) -> None:
    src = tmp_path / "foo.c"
    src.write_text("int foo(void) { return 1; }\n")
    subprocess.run([GCC, "-c", "-o", tmp_path / "foo.o", src], check=True)
    proc = run_deps_raw([tmp_path / "foo.o"], timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "relocatable object" in _one_line(proc.stderr)


# -- 5. every file is parsed once per Resolver --------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    calls: collections.Counter = collections.Counter()
    real = resolve.read_elf

    def counted(path: str):
        st = os.stat(path)
        calls[(st.st_dev, st.st_ino)] += 1
        return real(path)

    monkeypatch.setattr(resolve, "read_elf", counted)
    return calls


@host_glibc
def test_plan_like_use_parses_each_file_once(monkeypatch: pytest.MonkeyPatch) -> None:
    programs = [p for p in (shutil.which(n) for n in ("curl", "wget", "git")) if p]
    if not programs:
        pytest.skip("none of curl, wget, git is installed")
    calls = _counting(monkeypatch)
    resolver = Resolver(hwcaps=HwcapsChoice("none"))
    for program in programs:
        resolver.read_input(program)  # as build.py checks its arguments first
        resolver.resolve(program)
        resolver.resolve(program, dlopen=[("libgcc_s.so.1", "libc.so.6")])
    assert calls, "read_elf was never called"
    assert max(calls.values()) == 1, [key for key, count in calls.items() if count > 1]


@host_glibc
def test_deps_parses_its_input_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    program = shutil.which("true") or "/bin/true"
    Resolver().resolve_all([program, program])
    st = os.stat(program)
    assert calls[(st.st_dev, st.st_ino)] == 1
    assert max(calls.values()) == 1


# -- 6. relative search paths use the loader's working directory -------------------------


@host_glibc
@needs_gcc
def test_relative_rpath_in_a_root_uses_the_given_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _glibc_root(tmp_path)
    compile_lib(root / "app/lib", "libsprel.so")
    compile_exe(root / "usr/bin", "relapp", needed=["libsprel.so"], rpath="lib")
    # A decoy where scratchpack itself runs: the root's loader never sees it.
    compile_lib(tmp_path / "decoy/lib", "libsprel.so")
    monkeypatch.chdir(tmp_path / "decoy")

    default = Resolver(root).resolve("/usr/bin/relapp")
    assert [m.soname for m in default.missing] == ["libsprel.so"]
    assert not default.libraries or all("decoy" not in lib.path for lib in default.libraries)

    closure = Resolver(root, cwd="/app").resolve("/usr/bin/relapp")
    assert closure.missing == []
    assert ("libsprel.so", "lib/libsprel.so") in [(x.soname, x.path) for x in closure.libraries]
    assert Resolver(root, cwd="app").cwd == "/app"

    via_env = Resolver(root, library_path=".", cwd="/app/lib").resolve("/usr/bin/relapp")
    assert ("libsprel.so", "./libsprel.so") in [(x.soname, x.path) for x in via_env.libraries]


@host_glibc
@needs_gcc
def test_host_root_keeps_the_process_cwd_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_lib(tmp_path / "here/lib", "libsprel2.so")
    exe = compile_exe(tmp_path / "bin", "relapp2", needed=["libsprel2.so"], rpath="lib")
    monkeypatch.chdir(tmp_path / "here")
    assert Resolver().cwd == str(tmp_path / "here")
    closure = Resolver().resolve(str(exe))
    assert closure.missing == [], closure.missing
    monkeypatch.chdir(tmp_path)
    assert Resolver(cwd=str(tmp_path / "here")).resolve(str(exe)).missing == []
    assert [m.soname for m in Resolver().resolve(str(exe)).missing] == ["libsprel2.so"]


# -- 7. --hwcaps levels are validated -----------------------------------------------------


@pytest.mark.parametrize("text", ["x86-64-v9", "", " , ", "x86-64-v3,bogus", "../../etc"])
def test_hwcaps_unknown_levels_are_refused(text: str) -> None:
    with pytest.raises(InputError) as raised:
        HwcapsChoice.parse(text)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "text", ["auto", "none", "x86-64-v2", "x86-64-v3,x86-64-v2", "power9,power10", "z13", "z16"]
)
def test_hwcaps_known_levels_are_accepted(text: str) -> None:
    HwcapsChoice.parse(text)


def test_hwcaps_list_keeps_only_the_targets_levels_best_first() -> None:
    choice = HwcapsChoice.parse("x86-64-v2,power9,x86-64-v3")
    x86 = read_elf(HOST_LIBC) if os.path.exists(HOST_LIBC) else None
    if x86 is None:
        pytest.skip("no host libc to read")
    assert loaders._hwcaps_levels(choice, x86) == ("x86-64-v3", "x86-64-v2")


def test_deps_rejects_an_unknown_hwcaps_level() -> None:
    proc = run_deps_raw(["--hwcaps", "x86-64-v9", shutil.which("true") or "/bin/true"])
    assert proc.returncode == 2
    assert "x86-64-v9" in _one_line(proc.stderr)


# -- 8. dead code is gone -----------------------------------------------------------------


def test_dead_code_removed() -> None:
    assert not hasattr(resolve, "describe_machine")
    assert not hasattr(RootFS, "host_path_unresolved")
    assert not hasattr(loaders, "host_matches")
    assert not hasattr(elf, "DF_1_PIE")
    assert "upstream_lib" not in {f for f in loaders.Arch.__dataclass_fields__}


# -- 9. the default interpreter lives in loaders.Arch -------------------------------------


def test_arch_knows_its_interpreter() -> None:
    arch = arch_for(EM_X86_64, ELFCLASS64)
    assert arch is not None and arch.interpreter == HOST_INTERP
    aarch64 = arch_for(EM_AARCH64, ELFCLASS64)
    assert aarch64 is not None and aarch64.interpreter == "/lib/ld-linux-aarch64.so.1"
    assert not hasattr(resolve, "_system_interpreter_bytes")


@host_glibc
def test_a_library_argument_reads_the_roots_usual_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libz = "/lib/x86_64-linux-gnu/libz.so.1"
    if not os.path.exists(libz):
        pytest.skip("no libz")
    read: list[str] = []
    real = RootFS.read_bytes

    def spy(self: RootFS, path: str) -> bytes | None:
        read.append(path)
        return real(self, path)

    monkeypatch.setattr(RootFS, "read_bytes", spy)
    closure = Resolver().resolve(libz)
    assert HOST_INTERP in read
    assert closure.missing == []
