"""``scratchpack deps`` on inputs that cannot be analysed: exit status 2, exactly one clear
line on stderr naming the path, never a traceback, never a hang."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from tests.cfixtures import (
    GCC,
    compile_exe,
    dynamic_entries,
    program_headers,
    run_deps_raw,
    strip_section_headers,
)

TIMEOUT = 30
HOST_ELF = shutil.which("ls") or "/bin/ls"
HUGE = 0x7FFF_FFFF_0000


def _corrupt_dynamic(data: bytearray) -> None:
    """PT_DYNAMIC's p_offset and p_vaddr far outside the file and every PT_LOAD (section
    headers dropped, so no reader can fall back on .dynamic; ld.so itself crashes on it)."""
    for ph in program_headers(data):
        if ph["type"] == 2:  # PT_DYNAMIC
            struct.pack_into("<QQ", data, ph["at"] + 8, HUGE, HUGE)  # p_offset, p_vaddr
    strip_section_headers(data)


def _corrupt_strtab(data: bytearray) -> None:
    """DT_STRTAB pointing outside every PT_LOAD (section headers dropped, so .dynstr cannot
    stand in for it; ld.so itself crashes on it)."""
    for at, tag, _val in dynamic_entries(data):
        if tag == 5:  # DT_STRTAB
            struct.pack_into("<Q", data, at + 8, HUGE)
    strip_section_headers(data)


@pytest.fixture(scope="module")
def dynamic_elf(tmp_path_factory) -> Path:
    """A small dynamically linked ELF64 LE executable to damage: compiled, or the host's ls."""
    if GCC is not None:
        return compile_exe(tmp_path_factory.mktemp("elf"), "exe")
    if not os.path.exists(HOST_ELF):
        pytest.skip("neither gcc nor an ELF executable to copy")
    return Path(HOST_ELF)


def _make(kind: str, d: Path, dynamic_elf: Path) -> Path:
    p = d / kind
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("just some text\nnot an ELF file\n")
    elif kind == "script":
        p.write_text("#!/bin/sh\necho hello\n")
        p.chmod(0o755)
    elif kind == "truncated-100":
        p.write_bytes(Path(HOST_ELF).read_bytes()[:100])
    elif kind == "truncated-2000":
        p.write_bytes(Path(HOST_ELF).read_bytes()[:2000])
    elif kind == "elf-magic-only":
        p.write_bytes(b"\x7fELF")
    elif kind == "corrupt-dynamic":
        data = bytearray(dynamic_elf.read_bytes())
        _corrupt_dynamic(data)
        p.write_bytes(bytes(data))
        p.chmod(0o755)
    elif kind == "corrupt-strtab":
        data = bytearray(dynamic_elf.read_bytes())
        _corrupt_strtab(data)
        p.write_bytes(bytes(data))
        p.chmod(0o755)
    elif kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)  # opening it to read would wait for a writer forever
    elif kind in ("relocatable", "core"):
        data = bytearray(dynamic_elf.read_bytes())
        struct.pack_into("<H", data, 16, 1 if kind == "relocatable" else 4)  # e_type
        p.write_bytes(bytes(data))
    elif kind == "nonexistent":
        pass
    else:
        raise AssertionError(kind)
    return p


KINDS = [
    "empty",
    "text",
    "script",
    "truncated-100",
    "truncated-2000",
    "elf-magic-only",
    "corrupt-dynamic",
    "corrupt-strtab",
    "directory",
    "nonexistent",
    "fifo",
    "relocatable",
    "core",
]


def assert_one_clear_line(proc, path: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert path in lines[0], f"the message does not name {path!r}: {lines[0]!r}"


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "text"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_exits_2_with_one_line(kind, json_flag, tmp_path, dynamic_elf):
    if kind.startswith("truncated") and not os.path.exists(HOST_ELF):
        pytest.skip(f"{HOST_ELF} is not there to truncate")
    p = _make(kind, tmp_path, dynamic_elf)
    args = ["--json", p] if json_flag else [p]
    proc = run_deps_raw(args, timeout=TIMEOUT)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert_one_clear_line(proc, str(p))


def test_unreadable_file(tmp_path, dynamic_elf):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    p = tmp_path / "unreadable"
    shutil.copyfile(dynamic_elf, p)
    p.chmod(0)
    try:
        proc = run_deps_raw(["--json", p], timeout=TIMEOUT)
    finally:
        p.chmod(0o644)
    assert proc.returncode == 2
    assert_one_clear_line(proc, str(p))


@pytest.mark.parametrize("position", ["first", "last"])
def test_one_bad_argument_among_good_ones(position, tmp_path, dynamic_elf):
    bad = _make("text", tmp_path, dynamic_elf)
    args = [bad, dynamic_elf] if position == "first" else [dynamic_elf, bad]
    proc = run_deps_raw(["--json", *args], timeout=TIMEOUT)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option", "/bin/true"],
        [],
        ["--root"],
    ],
    ids=["unknown-option", "no-binary", "root-without-value"],
)
def test_usage_errors_exit_2(args):
    proc = run_deps_raw(args, timeout=TIMEOUT)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()


def test_root_that_does_not_exist(tmp_path):
    proc = run_deps_raw(["--root", tmp_path / "nowhere", "/bin/true"], timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()


def test_in_root_binary_that_is_not_elf(tmp_path):
    """Inside --root, the message names the in-root path that was given."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    proc = run_deps_raw(["--root", root, "/usr/bin/tool"], timeout=TIMEOUT)
    assert proc.returncode == 2
    assert_one_clear_line(proc, "/usr/bin/tool")
