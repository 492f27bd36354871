"""Root assembly without an engine: the build context's rootfs/ must run on its own.

``build --no-build --context DIR`` writes the exact tree the image gets, so
``chroot DIR/rootfs PROGRAM`` is a faithful, engine-free oracle: it runs the
program with the loader and libraries of the assembled root and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT, compile_exe, compile_lib

MULTIARCH = "/lib/x86_64-linux-gnu"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
    pytest.mark.skipif(not os.path.exists("/lib64/ld-linux-x86-64.so.2"), reason="x86-64 glibc"),
]


def build_context(context: Path, *args: str, ok: int = 0) -> subprocess.CompletedProcess[str]:
    proc = cli.scratchpack(
        "build", "--no-build", "--context", context, *args, cwd=REPO_ROOT, env=cli.NO_ENGINE
    )
    assert proc.returncode == ok, proc.stderr
    return proc


INTERP = "/lib64/ld-linux-x86-64.so.2"


def run_in(rootfs: Path, *argv: str) -> str:
    proc = subprocess.run(
        [CHROOT, str(rootfs), *argv], capture_output=True, text=True, check=False, env={}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def samples() -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples")], check=True)
    return REPO_ROOT / "samples"


def test_context_holds_the_closure_once_with_its_symlinks(samples: Path, tmp_path: Path) -> None:
    binary = samples / "hello-world/hello-world"
    build_context(tmp_path / "ctx", str(binary))
    rootfs = tmp_path / "ctx/rootfs"
    assert (tmp_path / "ctx/Dockerfile").is_file()
    assert not list(rootfs.rglob("Dockerfile"))
    # The interpreter exists at its PT_INTERP path, through the host's own links.
    interp = rootfs / "lib64/ld-linux-x86-64.so.2"
    assert os.path.lexists(interp)
    for link in ("lib64", "lib"):
        if os.path.islink(f"/{link}"):
            assert os.readlink(rootfs / link) == os.readlink(f"/{link}")
    digests = [
        hashlib.sha256(path.read_bytes()).hexdigest()
        for path in rootfs.rglob("*")
        if path.is_file() and not path.is_symlink()
    ]
    assert len(digests) == len(set(digests)), "a file is stored twice"
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "nonroot:x:65532:65532" in (rootfs / "etc/passwd").read_text()
    assert run_in(rootfs, "/app/hello-world") == "Hello from scratchpack!\n"  # a user's BINARY


def test_origin_runpath_and_cpp_runtime_run_from_the_root(samples: Path, tmp_path: Path) -> None:
    greet = samples / "origin-lib/greet"
    threads = samples / "threads-cpp/threads-cpp"
    build_context(tmp_path / "ctx", str(greet), str(threads))
    rootfs = tmp_path / "ctx/rootfs"
    # A chroot has no /proc, where ld.so reads $ORIGIN of a program it did not start
    # itself; started through the loader, the program's own path gives $ORIGIN.
    # Both under /app, their layout below samples/ kept ($ORIGIN/lib still resolves).
    assert run_in(rootfs, INTERP, "/app/origin-lib/greet") == "greetings from libgreet 1.0.0\n"
    assert run_in(rootfs, "/app/threads-cpp/threads-cpp").endswith("ok\n")
    assert os.path.islink(rootfs / "app/origin-lib/lib/libgreet.so.1")


def test_libgcc_s_comes_along_when_glibc_will_dlopen_it(tmp_path: Path) -> None:
    source = tmp_path / "cancel.c"
    source.write_text(
        "#include <pthread.h>\n#include <stdio.h>\n#include <unistd.h>\n"
        "static void *sleeper(void *arg) { (void)arg; for (;;) pause(); return NULL; }\n"
        "int main(void) { pthread_t t; void *r;\n"
        "  pthread_create(&t, NULL, sleeper, NULL); pthread_cancel(t); pthread_join(t, &r);\n"
        '  puts(r == PTHREAD_CANCELED ? "cancelled" : "not cancelled"); return 0; }\n'
    )
    program = tmp_path / "cancel"
    subprocess.run(["gcc", "-pthread", "-o", str(program), str(source)], check=True)
    build_context(tmp_path / "ctx", str(program))
    rootfs = tmp_path / "ctx/rootfs"
    assert list(rootfs.rglob("libgcc_s.so.1"))
    assert run_in(rootfs, "/app/cancel") == "cancelled\n"

    build_context(tmp_path / "plain", str(REPO_ROOT / "samples/hello-world/hello-world"))
    assert not list((tmp_path / "plain/rootfs").rglob("libgcc_s.so.1"))


def _mini_root(root: Path) -> None:
    """A root with the host's loader and libc, laid out like Debian's (no cache)."""
    lib = root / MULTIARCH.lstrip("/")
    lib.mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(f"{MULTIARCH}/{name}", lib / name)
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to(f"{MULTIARCH}/ld-linux-x86-64.so.2")


def test_a_library_found_only_through_ld_so_conf_loads_in_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _mini_root(root)
    custom = root / "opt/custom/lib"
    compile_lib(custom, "libcustom.so.1", nostdlib=False)
    compile_exe(root / "usr/bin", "app", needed=[custom / "libcustom.so.1"])
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/custom.conf").write_text("/opt/custom/lib\n")

    build_context(tmp_path / "ctx", "--root", str(root), "/usr/bin/app")
    rootfs = tmp_path / "ctx/rootfs"
    assert (rootfs / "opt/custom/lib/libcustom.so.1").is_file()
    assert (rootfs / "etc/ld.so.cache").is_file()
    assert not (rootfs / "etc/ld.so.conf").exists()
    listing = run_in(rootfs, f"{MULTIARCH}/ld-linux-x86-64.so.2", "--list", "/usr/bin/app")
    assert "libcustom.so.1 => /opt/custom/lib/libcustom.so.1" in listing
    run_in(rootfs, "/usr/bin/app")


def test_a_script_brings_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from sh\n")
    script.chmod(0o755)
    build_context(tmp_path / "ctx", str(script))
    assert run_in(tmp_path / "ctx/rootfs", "/app/hello.sh") == "hello from sh\n"

    python_script = tmp_path / "tool.py"
    python_script.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    proc = build_context(tmp_path / "py", str(python_script))
    assert "--include" in proc.stderr and "python3" in proc.stderr
    assert (tmp_path / "py/rootfs/usr/bin/env").exists()


def test_included_elf_files_get_their_libraries(samples: Path, tmp_path: Path) -> None:
    build_context(
        tmp_path / "ctx",
        str(samples / "hello-world/hello-world"),
        "--include",
        f"{samples / 'origin-lib'}:/opt/greet",
        "--include",
        f"{samples / 'README.md'}:/usr/share/doc/samples.md",
    )
    rootfs = tmp_path / "ctx/rootfs"
    assert (rootfs / "usr/share/doc/samples.md").read_text().startswith("#")
    assert run_in(rootfs, INTERP, "/opt/greet/greet") == "greetings from libgreet 1.0.0\n"


def test_a_missing_library_leaves_nothing_behind(tmp_path: Path) -> None:
    lib = compile_lib(tmp_path / "lib", "libgone.so.1", nostdlib=False)
    app = compile_exe(tmp_path, "app", needed=[lib], runpath=str(tmp_path / "lib"))
    lib.unlink()
    proc = build_context(tmp_path / "ctx", str(app), ok=1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "libgone.so.1" in lines[0] and str(app) in lines[0]
    assert not (tmp_path / "ctx").exists()
    assert not list(tmp_path.glob(".scratchpack-*"))
    build_context(tmp_path / "ctx", str(app), "--allow-missing")
    assert (tmp_path / "ctx/Dockerfile").is_file()
