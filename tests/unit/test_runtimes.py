"""Interpreters keep what they cannot start without (issue 22): the rules, on small roots.

The roots are made here: the host's ``true`` copied in as ``node`` or
``python3.11`` (the rules go by a binary's name and its bytes, the loader only
by its headers), and for Debian's Node the builtin paths its libnode names,
appended to the copy as they sit in its read-only data.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from scratchpack.image.config import ImageConfig
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import collecting
from scratchpack.plan.entries import Reason
from scratchpack.plan.image_plan import BuildOptions, plan_image
from scratchpack.plan.runtimes import (
    Runtime,
    embedded_python_stdlib,
    node_builtins,
    python_stdlib,
    runtime_files,
    runtime_paths,
)
from tests import tarcompat
from tests.cfixtures import HOST_INTERP, HOST_LIBC, is_host_glibc_x86_64

TRUE = shutil.which("true") or "/usr/bin/true"
BUILTINS = (
    b"/usr/share/nodejs/cjs-module-lexer/lexer.js\0/usr/share/nodejs/acorn/dist/acorn.js\0"
    b'"PATH=/usr/share/nodejs/acorn/dist/acorn.js", /usr/share/nodejs/../../etc/shadow\0'
)
host_glibc = pytest.mark.skipif(not is_host_glibc_x86_64(), reason="plans the host's true")


def _file(root: Path, path: str, data: bytes = b"x\n") -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _root(tmp_path: Path) -> Path:
    """A merged-/usr root with ``true``'s loader and libc."""
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    for path in (HOST_LIBC, HOST_INTERP):
        _file(root, "/usr" + path, Path(os.path.realpath(path)).read_bytes())
    return root


STDLIB = (
    "os.py", "encodings/__init__.py", "encodings/__pycache__/x.cpython-311.pyc",
    "json/__init__.py", "test/test_os.py", "site-packages/mine.py", "dist-packages/theirs.py",
    "config-3.11-x86_64-linux-gnu/libpython3.11.a",
)  # fmt: skip


def _stdlib(root: Path) -> None:
    for path in STDLIB:
        _file(root, f"/usr/lib/python3.11/{path}")


# -- the rules ---------------------------------------------------------------------------


def test_debian_libnode_names_its_builtins_and_a_path_out_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _file(root, "/usr/lib/x86_64-linux-gnu/libnode.so.108", b"\x7fELF" + b"\0" * 64 + BUILTINS)
    _file(root, "/usr/share/nodejs/acorn/dist/acorn.js")
    found = node_builtins(RootFS(str(root)), ["/usr/lib/x86_64-linux-gnu/libnode.so.108"])
    assert found is not None and found.runtime is Runtime.NODE
    assert found.paths == ("/usr/share/nodejs/acorn/dist/acorn.js",)
    assert found.missing == ("/usr/share/nodejs/cjs-module-lexer/lexer.js",)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("node", b"\x7fELF" + b"\0" * 64),  # a self-contained Node names no builtin
        ("node", b"#!/bin/sh\n" + BUILTINS),  # not an ELF file: not scanned
        ("libnodejs-helper.so", b"\x7fELF" + BUILTINS),  # not a node by its name
        ("node", b""),  # empty: nothing to map
    ],
)
def test_what_names_no_builtins_adds_nothing(tmp_path: Path, name: str, data: bytes) -> None:
    root = tmp_path / "root"
    _file(root, f"/usr/bin/{name}", data)
    assert node_builtins(RootFS(str(root)), [f"/usr/bin/{name}"]) is None


def test_python_keeps_its_standard_library_without_tests_bytecode_and_packages(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    _file(root, "/usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    _stdlib(root)
    (root / "usr/lib/python3.11/sitecustomize.py").symlink_to("/etc/python3.11/sitecustomize.py")
    _file(root, "/etc/python3.11/sitecustomize.py")
    fs = RootFS(str(root))
    found = python_stdlib(fs, "/usr/bin/python3")  # the link counts as its real file
    assert found is not None and found.top == "/usr/lib/python3.11"
    assert set(runtime_paths(fs, found)) == {
        "/usr/lib/python3.11/os.py",
        "/usr/lib/python3.11/encodings/__init__.py",
        "/usr/lib/python3.11/json/__init__.py",
        "/usr/lib/python3.11/sitecustomize.py",
    }
    assert "30.0 MB); --exclude to drop parts" in found.note(4, 30_000_000)


@pytest.mark.parametrize("name", ["python3", "python", "python3.11-config", "pypy3.9"])
def test_only_a_versioned_python_names_its_library(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    _file(root, f"/usr/bin/{name}")
    _stdlib(root)
    assert python_stdlib(RootFS(str(root)), f"/usr/bin/{name}") is None


def test_a_program_linking_libpython_keeps_its_standard_library(tmp_path: Path) -> None:
    """gdb links libpython3.11: without the library its embedded Python dies at start."""
    root = tmp_path / "root"
    lib = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
    _file(root, lib)
    (root / "usr/lib/x86_64-linux-gnu/libpython3.11.so.1").symlink_to("libpython3.11.so.1.0")
    _stdlib(root)
    fs = RootFS(str(root))
    found = embedded_python_stdlib(fs, "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1")
    assert found is not None and found.runtime is Runtime.PYTHON
    assert found.top == "/usr/lib/python3.11"
    assert "/usr/lib/python3.11/encodings/__init__.py" in set(runtime_paths(fs, found))
    kept = runtime_files(fs, [], ["/usr/bin/gdb", lib])
    assert [files.top for files in kept] == ["/usr/lib/python3.11"]


@pytest.mark.parametrize(
    "name", ["libpython3.so", "libpython3.11.a", "libpythonista.so.1", "libpython3.11.so.x"]
)
def test_only_a_versioned_libpython_names_a_library(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    _file(root, f"/usr/lib/{name}")
    _stdlib(root)
    assert embedded_python_stdlib(RootFS(str(root)), f"/usr/lib/{name}") is None


def test_a_libpython_without_its_library_in_the_root_adds_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _file(root, "/usr/lib/libpython3.11.so.1.0")
    assert embedded_python_stdlib(RootFS(str(root)), "/usr/lib/libpython3.11.so.1.0") is None


# -- build's plan --------------------------------------------------------------------------


@host_glibc
def test_a_build_keeps_node_builtins_and_says_so(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _file(root, "/usr/bin/node", Path(os.path.realpath(TRUE)).read_bytes() + BUILTINS)
    for path in ("cjs-module-lexer/lexer.js", "acorn/dist/acorn.js"):
        _file(root, f"/usr/share/nodejs/{path}")
    with collecting() as warnings:
        plan = plan_image(BuildOptions(("/usr/bin/node",), root=str(root)), ImageConfig(None))
    entry = plan.root.entries["/usr/share/nodejs/acorn/dist/acorn.js"]
    assert (entry.reason, entry.detail) == (Reason.ESSENTIAL, "node")
    assert "/usr/share/nodejs/cjs-module-lexer/lexer.js" in plan.root.entries
    assert any("(/usr/share/nodejs, 2 files" in w for w in warnings.messages)
    assert not any("also needs its library tree" in w for w in warnings.messages)


@host_glibc
def test_a_build_keeps_pythons_library_unless_the_user_includes_it(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _file(root, "/usr/bin/python3.11", Path(os.path.realpath(TRUE)).read_bytes())
    (root / "usr/bin/python3").symlink_to("python3.11")
    _stdlib(root)
    libz = _file(root, "/usr/lib/python3.11/lib-dynload/zlib.cpython-311-x86_64-linux-gnu.so")
    shutil.copy(os.path.realpath(HOST_LIBC), libz)  # an ELF extension module: resolved
    with collecting() as warnings:
        plan = plan_image(BuildOptions(("/usr/bin/python3",), root=str(root)), ImageConfig(None))
    kept = {path for path in plan.root.entries if path.startswith("/usr/lib/python3.11/")}
    assert "/usr/lib/python3.11/encodings/__init__.py" in kept
    assert not any("test/" in p or "packages" in p or "__pycache__" in p for p in kept)
    assert any(c.path.endswith("zlib.cpython-311-x86_64-linux-gnu.so") for c in plan.closures)
    assert any("kept Python 3.11's standard library" in w for w in warnings.messages)
    options = BuildOptions(
        ("/usr/bin/python3",), root=str(root), includes=("/usr/lib/python3.11/os.py",)
    )
    with collecting() as warnings:
        plan = plan_image(options, ImageConfig(None))
    assert "/usr/lib/python3.11/json/__init__.py" in plan.root.entries  # a part is not the tree
    options = BuildOptions(("/usr/bin/python3",), root=str(root), includes=("/usr/lib/python3.11",))
    with collecting() as warnings:
        plan = plan_image(options, ImageConfig(None))
    assert "/usr/lib/python3.11/test/test_os.py" in plan.root.entries  # theirs, as they chose
    assert not any("kept Python" in w for w in warnings.messages)


@host_glibc
def test_a_python_script_still_hears_about_its_own_modules(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _file(root, "/usr/bin/python3.11", Path(os.path.realpath(TRUE)).read_bytes())
    _stdlib(root)
    script = _file(root, "/usr/bin/tool", b"#!/usr/bin/python3.11\nimport yaml\n")
    script.chmod(0o755)
    with collecting() as warnings:
        plan_image(BuildOptions(("/usr/bin/tool",), root=str(root)), ImageConfig(None))
    assert any("beyond what was kept" in w for w in warnings.messages)


# -- tests' own helper ---------------------------------------------------------------------


@pytest.mark.parametrize("has_filters", [True, False])
def test_extract_all_acts_as_the_tar_filter_on_every_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_filters: bool
) -> None:
    if not has_filters:
        monkeypatch.delattr(tarfile, "tar_filter", raising=False)

    def tar(*members: tuple[str, bytes | None, str | None]) -> tarfile.TarFile:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as out:
            for name, content, link in members:
                info = tarfile.TarInfo(name)
                if link is not None:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                else:
                    info.size, info.mode = len(content or b""), 0o4777
                out.addfile(info, io.BytesIO(content or b""))
        data.seek(0)
        return tarfile.open(fileobj=data)

    with tar(("/usr/bin/x", b"hi", None), ("lib64", None, "/lib/x")) as good:
        tarcompat.extract_all(good, tmp_path / "good")
    assert (tmp_path / "good/usr/bin/x").stat().st_mode & 0o7777 == 0o755
    assert os.readlink(tmp_path / "good/lib64") == "/lib/x"
    for bad in ((("etc", None, "/etc"), ("etc/passwd", b"x", None)), (("../x", b"x", None),)):
        with tar(*bad) as hostile, pytest.raises(tarfile.TarError):
            tarcompat.extract_all(hostile, tmp_path / "bad")
