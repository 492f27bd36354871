"""Shrink's index root without privileges: directories and files of mode 0 in the layers.

Root reads and writes whatever the modes say; a developer or a CI runner does
not. An image may hold a directory of mode 0 (or 0o500, 0o100) with files below
it that the plan needs, or a file of mode 0. Unprivileged, the paths made on
disk must stay usable by their owner (searched, read, removed), while the
output keeps the image's modes exactly, and nothing is left in TMPDIR.

The code runs in a child without privileges: as root here, ``setpriv`` drops
every capability (root's checks are then an owner's, as for any user, and the
project's interpreter under /root stays reachable); as any other user, the
child runs as that user.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests import imagekit
from tests.cfixtures import HOST_INTERP, HOST_LIBC, compile_exe, compile_lib, is_host_glibc_x86_64
from tests.cli import COMMAND, NO_ENGINE, child_env
from tests.imagekit import d, f, layer, write_docker_archive

# Modes an owner cannot use: not searchable, not writable, not readable.
SOURCE_MODES = {
    "opt/app": 0o500,
    "opt/app/bin": 0o100,
    "opt/app/bin/app": 0o555,
    "opt/app/lib": 0o000,
    "opt/app/lib/libfoo.so.1": 0o000,
}
INCLUDED_MODES = {"data": 0o000, "data/deep": 0o500, "data/deep/conf": 0o000}


def _unprivileged() -> list[str]:
    """The prefix that runs a command without privileges (none when already without)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed: cannot drop root's capabilities")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]


def _run(argv: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``argv`` without privileges, its TMPDIR and HOME in ``tmp``."""
    (tmp / "tmpdir").mkdir()
    (tmp / "home").mkdir()
    env = child_env(
        {"TMPDIR": str(tmp / "tmpdir"), "HOME": str(tmp / "home"), **NO_ENGINE}, unset=("LD_*",)
    )
    return subprocess.run(
        [*_unprivileged(), *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


def _layers(lib: bytes, exe: bytes, interp: bytes = b"", libc: bytes = b"") -> list[bytes]:
    system = layer(
        d("lib64"),
        f("lib64/ld-linux-x86-64.so.2", interp, mode=0o755),
        d("lib"),
        d("lib/x86_64-linux-gnu"),
        f("lib/x86_64-linux-gnu/libc.so.6", libc, mode=0o755),
        d("etc"),
        f("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
    )
    app = layer(
        d("opt"),
        d("opt/app", 0o500),
        d("opt/app/bin", 0o100),
        f("opt/app/bin/app", exe, mode=0o555),
        d("opt/app/lib", 0o000),
        f("opt/app/lib/libfoo.so.1", lib, mode=0o000),
        d("data", 0o000),
        d("data/deep", 0o500),
        f("data/deep/conf", b"secret", mode=0o000),
    )
    return [system, app]


def _left_in(directory: Path) -> list[str]:
    """What a run left in ``directory``, read with this (privileged) test's rights."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def _index_digest(outer: tarfile.TarFile) -> str:
    member = outer.extractfile("index.json")
    assert member is not None
    return str(json.loads(member.read())["manifests"][0]["digest"])


def _modes_of_layer(archive: Path) -> dict[str, int]:
    with tarfile.open(archive) as outer:

        def blob(digest: str) -> bytes:
            member = outer.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return member.read()

        manifest = json.loads(blob(_index_digest(outer)))
        data = blob(manifest["layers"][0]["digest"])
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
        return {member.name.strip("/"): member.mode for member in inner}


# -- the index root, materialized without privileges ------------------------------------

_MATERIALIZE = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from scratchpack.image.readers import open_image
    from scratchpack.image.unpack import unpack
    from scratchpack.lazyroot import LazyRoot
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.publish import remove_tree

    work = Path(sys.argv[1])
    source = open_image(sys.argv[2], work / "source", None)
    (work / "root").mkdir()
    report = unpack(source.image, work / "root", lazy=work / "contents")
    root = RootFS(LazyRoot(work / "root", report.lazy))
    found = {"elf": root.is_elf("/opt/app/lib/libfoo.so.1")}
    for path in ("/opt/app/lib/libfoo.so.1", "/data/deep/conf", "/opt/app/bin/app"):
        with open(root.host_path(path), "rb") as stream:
            found[path] = len(stream.read())
    found["modes"] = {path: report.modes[path] for path in sys.argv[3:]}
    report.lazy.close()
    remove_tree(work)  # as the command's cleanup does
    found["removed"] = not os.path.lexists(work)
    print(json.dumps(found))
    """
)


def test_files_below_unusable_directories_are_read_and_removed(tmp_path: Path) -> None:
    lib, exe = b"\x7fELF-lib", b"\x7fELF-exe"
    image = write_docker_archive(tmp_path / "source.tar", _layers(lib, exe))
    work = tmp_path / "work"
    work.mkdir()
    paths = ["/" + name for name in (*SOURCE_MODES, *INCLUDED_MODES)]
    done = _run([sys.executable, "-c", _MATERIALIZE, str(work), str(image), *paths], tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["elf"] is True
    assert found["/opt/app/lib/libfoo.so.1"] == len(lib) and found["/data/deep/conf"] == 6
    assert found["modes"] == {
        f"/{name}": mode for name, mode in {**SOURCE_MODES, **INCLUDED_MODES}.items()
    }
    assert found["removed"] is True, found["removed"]


# -- the command: shrink -o OUT.tar ---------------------------------------------------------

needs_host_glibc = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="the image's program links the host's glibc x86-64"
)


@pytest.fixture(scope="module")
def app_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image whose entrypoint's library lies in a directory of mode 0."""
    build = tmp_path_factory.mktemp("app")
    lib = compile_lib(build, "libfoo.so.1")
    exe = compile_exe(build, "app", needed=["libfoo.so.1"], runpath="/opt/app/lib")
    layers = _layers(
        lib.read_bytes(),
        exe.read_bytes(),
        Path(HOST_INTERP).resolve().read_bytes(),
        Path(HOST_LIBC).resolve().read_bytes(),
    )
    runtime = {"Entrypoint": ["/opt/app/bin/app"]}
    return imagekit.write_docker_archive(build / "source.tar", list(layers), runtime=runtime)


def _shrink(tmp_path: Path, image: Path, *options: str) -> tuple[dict[str, int], list[str]]:
    out = tmp_path / "out.tar"
    done = _run([*COMMAND, "shrink", str(image), "-t", "t:2", "-o", str(out), *options], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return _modes_of_layer(out), _left_in(tmp_path / "tmpdir")


@needs_host_glibc
def test_shrink_keeps_a_library_under_a_mode_0_directory(tmp_path: Path, app_image: Path) -> None:
    modes, left = _shrink(tmp_path, app_image)
    assert {name: modes[name] for name in SOURCE_MODES} == SOURCE_MODES
    assert left == []  # nothing it cannot remove


@needs_host_glibc
def test_shrink_includes_a_mode_0_directory_and_cleans_up(tmp_path: Path, app_image: Path) -> None:
    _modes, left = _shrink(tmp_path, app_image, "--include", "/data")
    assert left == []


@needs_host_glibc
def test_shrink_keeps_an_included_trees_modes(tmp_path: Path, app_image: Path) -> None:
    modes, _left = _shrink(tmp_path, app_image, "--include", "/data")
    assert {name: modes[name] for name in INCLUDED_MODES} == INCLUDED_MODES
