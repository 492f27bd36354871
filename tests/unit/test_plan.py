"""Planning without writing: build's plan of host programs, shrink's plan of a small root.

The shrink root is made here, in a temporary directory, like an unpacked
Debian image: merged /usr, the host's ``true`` with its loader and libc at
their paths, a dpkg database that lists a package of it, and an image
configuration. Nothing is written as an image and no engine is involved.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from scratchpack.errors import EXIT_MISSING, InputError
from scratchpack.image.config import ImageConfig, RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.notes import collecting
from scratchpack.plan.entries import EntryKind, Reason
from scratchpack.plan.image_plan import BuildOptions, MissingLibraryError, plan_image
from scratchpack.plan.layers import split_layers
from scratchpack.plan.programs import DEFAULT_PATH
from scratchpack.plan.shrink import SOURCE_LABEL, ShrinkInputs, plan_shrink
from tests.cfixtures import HOST_INTERP, HOST_LIBC, is_host_glibc_x86_64

pytestmark = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="plans the host's glibc x86-64 programs"
)
TRUE = shutil.which("true") or "/usr/bin/true"


def test_a_build_plan_holds_the_closure_the_essentials_and_the_config() -> None:
    plan = plan_image(BuildOptions((TRUE,)), ImageConfig(entrypoint=None, env=(("A", "1"),)))
    entries = plan.root.entries
    real_true = os.path.realpath(TRUE)
    assert entries[real_true].reason is Reason.PROGRAM
    assert entries[plan.root.through_links(HOST_INTERP)].kind is EntryKind.SYMLINK
    libc = [e for e in entries.values() if e.detail == "libc.so.6" and e.kind is EntryKind.FILE]
    assert libc and libc[0].reason is Reason.LIBRARY
    assert entries["/tmp"].mode == 0o1777 and entries["/tmp"].reason is Reason.ESSENTIAL
    home = entries["/home/nonroot"]
    assert (home.uid, home.gid, home.mode) == (65532, 65532, 0o700)
    assert b"nonroot:x:65532" in (entries["/etc/passwd"].data or b"")
    assert plan.config.env[0] == ("PATH", DEFAULT_PATH) and ("A", "1") in plan.config.env
    assert plan.config.entrypoint == (os.path.abspath(TRUE),)
    assert plan.platform == Platform("amd64")
    library_layer, application = split_layers(plan.root, True)
    assert any(e.detail == "libc.so.6" for e in library_layer)
    assert all(e.reason is not Reason.LIBRARY for e in application if e.kind is EntryKind.FILE)


def test_scripts_bring_their_interpreter_and_a_warning_for_library_trees(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    script.chmod(0o755)
    with collecting() as warnings:
        plan = plan_image(BuildOptions((str(script),)), ImageConfig(entrypoint=None))
    programs = {p for p, e in plan.root.entries.items() if e.reason is Reason.PROGRAM}
    assert "/app/tool" in programs  # the user's own script: under /app (plan.relocate)
    assert os.path.realpath(shutil.which("env") or "/usr/bin/env") in programs
    python = shutil.which("python3", path=DEFAULT_PATH)
    assert python is not None and os.path.realpath(python) in programs
    assert any("python3 also needs its library tree" in w for w in warnings.messages)


def test_a_missing_library_is_exit_1_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(TRUE, root / "usr/bin/true")
    options = BuildOptions(("/usr/bin/true",), root=str(root))
    with pytest.raises(MissingLibraryError, match="missing libraries") as error:
        plan_image(options, ImageConfig(entrypoint=None))
    assert error.value.exit_code == EXIT_MISSING and "libc.so.6" in str(error.value)
    allowed = dataclasses.replace(options, allow_missing=True)
    with collecting() as warnings:
        plan_image(allowed, ImageConfig(entrypoint=None))
    assert any("missing libraries" in message for message in warnings.messages)


# -- shrink -------------------------------------------------------------------------------


def _copy(root: Path, path: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(path), target)


def fake_image_root(top: Path) -> Path:
    """A merged-/usr root with ``true``, its loader and libc, users and a dpkg database."""
    root = top / "root"
    for directory in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc", "tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    _copy(root, "/usr/bin/true")
    _copy(root, "/usr/lib/x86_64-linux-gnu/libc.so.6")
    _copy(root, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    (root / "usr/share/coreutils").mkdir(parents=True)
    (root / "usr/share/coreutils/data.txt").write_text("data\n")
    (root / "usr/share/doc/coreutils").mkdir(parents=True)
    (root / "usr/share/doc/coreutils/copyright").write_text("(c)\n")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n"
        "nobody:x:65534:65534::/:/bin/sh\nother:x:1000:1000::/home/o:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nwww-data:x:33:\nother:x:1000:\n")
    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: coreutils\nStatus: install ok installed\nArchitecture: amd64\nVersion: 9.1-1\n\n"
    )
    (dpkg / "info/coreutils.list").write_text(
        "/.\n/bin\n/bin/true\n/usr/share/coreutils\n/usr/share/coreutils/data.txt\n"
        "/usr/share/doc/coreutils\n/usr/share/doc/coreutils/copyright\n"
    )
    return root


def test_a_static_shrink_plan_keeps_the_closure_the_package_and_the_users(tmp_path: Path) -> None:
    root = fake_image_root(tmp_path)
    runtime = RuntimeConfig.from_json(
        {
            "Entrypoint": ["true"],
            "Env": ["PATH=/usr/bin:/bin"],
            "User": "www-data",
            "Healthcheck": {"Test": ["CMD-SHELL", "true \\"]},
            "Unknown": {"kept": True},
        },
        "fake",
    )
    inputs = ShrinkInputs(root, runtime, Platform("amd64"), "sha256:" + "0" * 64)
    plan = plan_shrink(inputs)
    assert plan.programs == ("/usr/bin/true",)
    kept = plan.root.entries
    assert "/usr/share/coreutils/data.txt" in kept
    assert not any(path.startswith("/usr/share/doc") for path in kept)
    assert any(path.endswith("/libc.so.6") for path in kept)
    assert kept["/lib"].kind is EntryKind.SYMLINK  # the loader's path keeps its links
    passwd = (kept["/etc/passwd"].data or b"").decode()
    assert {line.split(":")[0] for line in passwd.splitlines()} == {"root", "www-data", "nobody"}
    assert set(plan.kept.reasons) >= {"closure", "package", "runtime"}
    assert plan.kept.packages == ["coreutils"]
    # The configuration is the source's, exactly, plus the label naming the source.
    expected = {**runtime.copy_json(), "Labels": {SOURCE_LABEL: "sha256:" + "0" * 64}}
    assert plan.runtime == expected and plan.platform == Platform("amd64")


def test_a_shrink_plan_refuses_an_image_with_nothing_to_run(tmp_path: Path) -> None:
    root = fake_image_root(tmp_path)
    nothing = RuntimeConfig.from_json({"Env": ["PATH=/bin"]}, "fake")
    with pytest.raises(InputError, match="neither an Entrypoint nor a Cmd"):
        plan_shrink(ShrinkInputs(root, nothing, Platform("amd64"), "sha256:" + "1" * 64))
    missing = RuntimeConfig.from_json({"Entrypoint": ["nope"], "Env": ["PATH=/bin"]}, "fake")
    with pytest.raises(InputError, match="not found through the image's PATH"):
        plan_shrink(ShrinkInputs(root, missing, Platform("amd64"), "sha256:" + "1" * 64))
    assert HOST_LIBC  # the host facts these roots copy


@pytest.mark.parametrize("path", ["/", "/.."])
def test_a_path_that_is_the_root_itself_adds_nothing(tmp_path: Path, path: str) -> None:
    """A package's ``..`` entry or a traced ``stat("/")`` names the root: nothing to add
    (it once ended a build --package in an IndexError)."""
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.plan.rootplan import RootPlan

    (tmp_path / "usr").mkdir()
    plan = RootPlan(source_parent_modes=False)
    assert plan.add_path(RootFS(str(tmp_path)), path, Reason.INCLUDE) == "/"
    assert list(plan.entries) in ([], ["/"])
