"""Helpers for the loader-rule tests: compile tiny C fixtures, run ``scratchpack deps``,
parse the real ``ldd`` output, and patch ELF headers in copies.

Every DT_NEEDED entry of a fixture comes from a *stub*: an empty shared object whose
SONAME is the wanted name, linked with ``--no-as-needed``. So a fixture's NEEDED list is
exactly what the test asks for, in that order, whatever exists on the search path.
Libraries are linked with ``-nostdlib`` (no libc dependency) unless asked otherwise, so the
expected closures stay small and exact; executables are ordinary ``gcc`` programs
(NEEDED ``libc.so.6`` last) unless ``nostdlib=True``.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from tests import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
GCC = shutil.which("gcc")
LDD = shutil.which("ldd")

# Debian 12 x86_64 facts (reference.md section 1).
HOST_INTERP = "/lib64/ld-linux-x86-64.so.2"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
HOST_MULTIARCH = "x86_64-linux-gnu"

EM_X86_64 = 62
EM_AARCH64 = 183

# Environment variables that would change what the loader (or the resolver) does.

EXE_SOURCE = "int main(void) { return 0; }\n"
# For executables linked without libc: nothing runs them, they only need to link.
NOSTDLIB_EXE_SOURCE = "void _start(void) { for (;;) { } }\n"


def require_gcc() -> None:
    if GCC is None:
        pytest.skip("gcc is not installed")


def require_ldd() -> None:
    if LDD is None:
        pytest.skip("ldd is not installed")


def _gcc(args: Sequence[str | os.PathLike[str]]) -> None:
    require_gcc()
    cmd = [GCC, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc failed: {' '.join(cmd)}\n{proc.stderr}")


def _ident(name: str) -> str:
    return "f_" + re.sub(r"\W", "_", name)


# --------------------------------------------------------------------------- stubs

_STUB_DIR: Path | None = None
_STUBS: dict[str, Path] = {}
_COUNTER = itertools.count()


def _stub_dir() -> Path:
    global _STUB_DIR
    if _STUB_DIR is None:
        _STUB_DIR = Path(tempfile.mkdtemp(prefix="scratchpack-stubs-"))
        atexit.register(shutil.rmtree, _STUB_DIR, True)
    return _STUB_DIR


def stub(soname: str) -> Path:
    """An empty shared object with SONAME ``soname``: linking it records DT_NEEDED ``soname``.

    It lives in a private temporary directory that no test ever searches.
    """
    if "/" in soname:
        raise ValueError("a NEEDED entry with a slash is made by linking the real file")
    path = _STUBS.get(soname)
    if path is None:
        directory = _stub_dir() / f"s{len(_STUBS)}"
        directory.mkdir()
        src = directory / "stub.c"
        src.write_text(f"int {_ident('stub_' + soname)}(void) {{ return 0; }}\n")
        path = directory / soname
        _gcc(["-shared", "-fPIC", "-nostdlib", f"-Wl,-soname,{soname}", "-o", path, src])
        _STUBS[soname] = path
    return path


def _needed_args(needed: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Link arguments that make DT_NEEDED exactly ``needed``, in order.

    A plain name gets a stub; a path (str with a slash, or a Path) is linked as given, so a
    library without SONAME linked by absolute path gives a NEEDED entry holding that path.
    """
    args = ["-Wl,--no-as-needed"]
    for item in needed:
        if isinstance(item, os.PathLike) or "/" in str(item):
            args.append(str(item))
        else:
            args.append(str(stub(str(item))))
    return args


def _path_args(rpath: str | None, runpath: str | None) -> list[str]:
    if rpath is not None and runpath is not None:
        raise ValueError("GNU ld writes either DT_RPATH or DT_RUNPATH, not both")
    if rpath is not None:
        return ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
    if runpath is not None:
        return ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
    return ["-Wl,--disable-new-dtags"]


# --------------------------------------------------------------------------- compile


def compile_lib(
    directory: str | os.PathLike[str],
    name: str,
    soname: str | None = None,
    needed: Sequence[str | os.PathLike[str]] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    extra_flags: Sequence[str] = (),
    nostdlib: bool = True,
) -> Path:
    """Build ``directory/name``, a shared library with SONAME ``soname`` (default: ``name``;
    pass ``""`` for none) and exactly the DT_NEEDED entries ``needed``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    src = _stub_dir() / f"lib_{next(_COUNTER)}.c"
    src.write_text(f"int {_ident(name)}(void) {{ return 42; }}\n")
    soname = name if soname is None else soname
    args: list[str] = ["-shared", "-fPIC", "-o", out, src]
    if nostdlib:
        args.append("-nostdlib")
    if soname:
        args.append(f"-Wl,-soname,{soname}")
    args += _needed_args(needed)
    args += _path_args(rpath, runpath)
    args += list(extra_flags)
    _gcc(args)
    return out


def compile_exe(
    directory: str | os.PathLike[str],
    name: str,
    needed: Sequence[str | os.PathLike[str]] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    extra_flags: Sequence[str] = (),
    nostdlib: bool = False,
    interp: str | None = None,
) -> Path:
    """Build the executable ``directory/name`` with DT_NEEDED ``needed`` (then ``libc.so.6``
    unless ``nostdlib``), optional DT_RPATH/DT_RUNPATH and PT_INTERP ``interp``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    src = directory / f".{name}.c"
    src.write_text(NOSTDLIB_EXE_SOURCE if nostdlib else EXE_SOURCE)
    args: list[str] = ["-o", out, src]
    if nostdlib:
        args += ["-nostdlib", "-nostartfiles"]
    args += _needed_args(needed)
    args += _path_args(rpath, runpath)
    if interp is not None:
        args.append(f"-Wl,--dynamic-linker={interp}")
    args += list(extra_flags)
    _gcc(args)
    src.unlink()
    return out


def compile_static(
    directory: str | os.PathLike[str], name: str, pie: bool = False, source: str = EXE_SOURCE
) -> Path:
    """A static executable (``-static``) or a static-pie (``-static-pie``) of ``source``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    src = directory / f".{name}.c"
    src.write_text(source)
    _gcc(["-static-pie" if pie else "-static", "-o", out, src])
    src.unlink()
    return out


# --------------------------------------------------------------------------- ELF patching


def _ehdr(data: bytes) -> dict[str, int]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("only little-endian ELF64 files are patched here")
    e_type, e_machine = struct.unpack_from("<HH", data, 0x10)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return {"type": e_type, "machine": e_machine, "phoff": phoff, "phentsize": phentsize,
            "phnum": phnum}  # fmt: skip


def program_headers(data: bytes) -> list[dict[str, int]]:
    """Program headers of a little-endian ELF64 image (with their file offset in ``at``)."""
    eh = _ehdr(data)
    out = []
    for i in range(eh["phnum"]):
        at = eh["phoff"] + i * eh["phentsize"]
        p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", data, at)
        out.append({"at": at, "type": p_type, "offset": off, "vaddr": vaddr, "filesz": filesz})
    return out


def read_interp(path: str | os.PathLike[str]) -> str | None:
    """PT_INTERP of an ELF64 LE file, or None."""
    data = Path(path).read_bytes()
    for ph in program_headers(data):
        if ph["type"] == 3:  # PT_INTERP
            raw = data[ph["offset"] : ph["offset"] + ph["filesz"]]
            return raw.split(b"\0", 1)[0].decode()
    return None


def patch_machine(src: str | os.PathLike[str], dst: str | os.PathLike[str], machine: int) -> Path:
    """Copy ``src`` to ``dst`` with e_machine (offset 18) set to ``machine``."""
    data = bytearray(Path(src).read_bytes())
    struct.pack_into("<H", data, 18, machine)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))
    os.chmod(dst, os.stat(src).st_mode & 0o7777)
    return Path(dst)


def patch_byte(src: str | os.PathLike[str], dst: str | os.PathLike[str], offset: int, value: int):
    data = bytearray(Path(src).read_bytes())
    data[offset] = value
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))
    os.chmod(dst, os.stat(src).st_mode & 0o7777)
    return Path(dst)


def strip_section_headers(data: bytearray) -> None:
    """Drop the section header table reference (e_shoff = e_shnum = e_shstrndx = 0).

    The loader never reads sections; this forces every reader to go through the program
    headers and the dynamic segment, as ld.so does.
    """
    struct.pack_into("<Q", data, 0x28, 0)  # e_shoff
    struct.pack_into("<H", data, 0x3C, 0)  # e_shnum
    struct.pack_into("<H", data, 0x3E, 0)  # e_shstrndx


def vaddr_to_offset(data: bytes, vaddr: int) -> int:
    for ph in program_headers(data):
        if ph["type"] == 1 and ph["vaddr"] <= vaddr < ph["vaddr"] + ph["filesz"]:
            return vaddr - ph["vaddr"] + ph["offset"]
    raise ValueError(f"address {vaddr:#x} is not in a PT_LOAD segment")


def dynamic_entries(data: bytes) -> list[tuple[int, int, int]]:
    """(file offset of the entry, d_tag, d_val) for each entry of PT_DYNAMIC, up to DT_NULL."""
    for ph in program_headers(data):
        if ph["type"] == 2:  # PT_DYNAMIC
            out = []
            for at in range(ph["offset"], ph["offset"] + ph["filesz"], 16):
                tag, val = struct.unpack_from("<qQ", data, at)
                out.append((at, tag, val))
                if tag == 0:
                    break
            return out
    raise ValueError("no PT_DYNAMIC")


# --------------------------------------------------------------------------- running


def _pythonpath() -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
    }


def run_deps_raw(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m scratchpack deps ARGS`` with a clean loader environment (plus ``env``)."""
    return cli.scratchpack(
        "deps",
        *args,
        cwd=cwd,
        env={**_pythonpath(), **(env or {})},
        unset=cli.LOADER_ENV,
        timeout=timeout,
    )


def run_deps(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60,
) -> tuple[int, object, str]:
    """Run ``deps --json ARGS`` -> (returncode, parsed JSON or None, stderr).

    ``--json`` is added unless already present. The JSON is None when stdout is not JSON.
    """
    args = [str(a) for a in args]
    if "--json" not in args:
        args = ["--json", *args]
    proc = run_deps_raw(args, env=env, cwd=cwd, timeout=timeout)
    try:
        parsed = json.loads(proc.stdout)
    except ValueError:
        parsed = None
    return proc.returncode, parsed, proc.stderr


def deps_one(args: Sequence[str | os.PathLike[str]], env=None, cwd=None) -> tuple[int, dict]:
    """Run ``deps --json`` for one binary; return (returncode, its JSON object)."""
    rc, parsed, stderr = run_deps(args, env=env, cwd=cwd)
    assert "Traceback" not in stderr, stderr
    assert isinstance(parsed, list), f"rc={rc}, no JSON array on stdout; stderr:\n{stderr}"
    assert len(parsed) == 1, parsed
    obj = parsed[0]
    assert set(obj) >= {"path", "interpreter", "static", "libraries", "missing"}, obj
    return rc, obj


def closure(obj: Mapping) -> list[tuple[str, str]]:
    """``[(soname, path), ...]`` of a ``deps --json`` object, in load order."""
    return [(lib["soname"], lib["path"]) for lib in obj["libraries"]]


def paths(obj: Mapping) -> list[str]:
    return [lib["path"] for lib in obj["libraries"]]


# --------------------------------------------------------------------------- ldd

_ADDR = re.compile(r"\s*\(0x[0-9a-fA-F]+\)$")


def parse_ldd(text: str, interp: str | None = None) -> dict:
    """Parse ``ldd`` (or ``ld.so --list``) output.

    Returns ``{"interpreter", "libraries": [(name, path)] in load order, "missing": [names],
    "static": bool, "dynamic": bool}``. ``linux-vdso.so.1`` is dropped. The interpreter line
    (``/lib64/ld-linux-x86-64.so.2 (0x...)``) is the ``name (addr)`` line naming ``interp``
    (when given) or, failing that, the one whose basename starts with ``ld-``.
    """
    result: dict = {
        "interpreter": None,
        "libraries": [],
        "missing": [],
        "static": False,
        "dynamic": True,
    }
    stripped = text.strip()
    if "not a dynamic executable" in stripped:
        result.update(static=True, dynamic=False)
        return result
    if stripped == "statically linked":
        result.update(static=True, dynamic=True)
        return result
    plain: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        line = _ADDR.sub("", line.strip())
        name, arrow, target = line.partition(" => ")
        name, target = name.strip(), target.strip()
        if name.startswith(("linux-vdso.so", "linux-gate.so")):
            continue
        if arrow and target == "not found":
            result["missing"].append(name)
        elif arrow and target:
            result["libraries"].append((name, target))
        else:  # "name (addr)": the interpreter, or a NEEDED entry holding a path
            plain.append((len(result["libraries"]), name))
            result["libraries"].append((name, name))
    interp_entry = None
    for index, name in plain:
        if interp is not None and name == interp:
            interp_entry = (index, name)
    if interp_entry is None and interp is None:
        for index, name in plain:
            if os.path.basename(name).startswith("ld-"):
                interp_entry = (index, name)
    if interp_entry is not None:
        result["interpreter"] = interp_entry[1]
        del result["libraries"][interp_entry[0]]
    return result


def ldd(path: str | os.PathLike[str], env: Mapping[str, str] | None = None, cwd=None) -> dict:
    """Run the real ``ldd`` on ``path`` (clean loader environment plus ``env``) and parse it."""
    require_ldd()
    proc = subprocess.run(
        [LDD, str(path)],
        capture_output=True,
        text=True,
        env=cli.child_env({**_pythonpath(), **(env or {})}, cli.LOADER_ENV),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    text = proc.stdout + ("" if proc.returncode == 0 else proc.stderr)
    try:
        interp = read_interp(path)
    except (OSError, ValueError, struct.error):
        interp = None
    parsed = parse_ldd(text, interp)
    parsed["returncode"] = proc.returncode
    parsed["raw"] = text
    return parsed


def chroot_list(root: str | os.PathLike[str], interp: str, binary: str) -> dict | None:
    """The real loader's answer inside ``root``: ``INTERP BINARY`` run chrooted in trace mode
    (``LD_TRACE_LOADED_OBJECTS=1``, what ``ldd`` does; ``ld.so --list`` stops at the first
    missing library instead of listing it as "not found").

    None when it cannot be run (not root, or the loader in the root does not run here).
    """
    if os.geteuid() != 0:
        return None
    root = str(root)

    def enter_root() -> None:
        os.chroot(root)
        os.chdir("/")

    try:
        proc = subprocess.run(
            [interp, binary],
            capture_output=True,
            text=True,
            env={"LD_TRACE_LOADED_OBJECTS": "1"},
            preexec_fn=enter_root,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    parsed = parse_ldd(proc.stdout, interp)
    parsed["returncode"] = proc.returncode
    parsed["raw"] = proc.stdout + proc.stderr
    return parsed


def assert_agrees_with_ldd(obj: Mapping, real: Mapping) -> None:
    """``deps --json`` object == what the real loader listed (order, paths, missing)."""
    ours = [(soname, path) for soname, path in closure(obj)]
    theirs = list(real["libraries"])
    assert ours == theirs, f"deps: {ours}\nldd:  {theirs}\nraw ldd:\n{real.get('raw', '')}"
    assert sorted(obj["missing"]) == sorted(real["missing"]), real.get("raw", "")
    if real["interpreter"] is not None:
        assert obj["interpreter"] == real["interpreter"]


# --------------------------------------------------------------------------- host facts


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


X86_64_V2_FLAGS = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}


def host_platform() -> str:
    """``$PLATFORM`` as this host's loader expands it (``dl_platform``), default x86_64."""
    try:
        proc = subprocess.run(
            [HOST_INTERP, "--list-diagnostics"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return "x86_64"
    m = re.search(r'^dl_platform="([^"]*)"', proc.stdout, re.M)
    return m.group(1) if m else "x86_64"


def is_host_glibc_x86_64() -> bool:
    return (
        sys.platform.startswith("linux")
        and os.path.exists(HOST_INTERP)
        and (os.path.exists(HOST_LIBC))
    )
