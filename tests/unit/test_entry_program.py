"""Which program a package image runs, and what a script's ``#!`` needs (issue 22, items 3-4).

Package roots are hand-made ``.deb`` files (:mod:`tests.debkit`) unpacked as
``build --package`` unpacks them, shaped like Debian 12's haproxy (the same
``halog`` in ``/usr/sbin`` and ``/usr/bin``) and python3 (whose ``python3`` is
a link its same-source sibling python3-minimal ships).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.media import Platform
from scratchpack.ld.elf import read_elf
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import collecting
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.root import PackageRoot, unpack_packages
from scratchpack.plan.essentials import image_platform
from scratchpack.plan.from_packages import entry_program, programs_on_path, select
from scratchpack.plan.programs import DEFAULT_PATH, Program, program
from tests.debkit import Deb, File, Link, build_deb

HALOG = File(b"\x7fELF halog", 0o755)
HAPROXY = Deb(
    "haproxy",
    files={
        "/usr/bin/halog": HALOG,
        "/usr/sbin/halog": HALOG,
        "/usr/sbin/haproxy": File(b"\x7fELF haproxy", 0o755),
    },
)
PYTHON3 = [
    Deb("python3", files={"/usr/bin/pdb3": Link("pdb3.11"), "/usr/bin/pydoc3": Link("pydoc3.11")}),
    Deb(
        "python3-minimal",
        files={"/usr/bin/python3": Link("python3.11"), "/usr/bin/py3clean": b"#!/x\n"},
    ),
    Deb(
        "python3.11-minimal",
        files={"/usr/bin/python3.11": File(b"\x7fELF python", 0o755), "/usr/bin/pdb3.11": b"p"},
    ),
]
PYTHON3_SOURCES = {"python3": "python3-defaults", "python3-minimal": "python3-defaults"}


def _root(tmp_path: Path, debs: list[Deb], sources: dict[str, str] | None = None) -> PackageRoot:
    """``debs`` unpacked; each ref's index paragraph names the archive's Source."""
    pairs = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        index = f"Package: {deb.name}\nVersion: {deb.version}\n"
        if sources and deb.name in sources:
            index += f"Source: {sources[deb.name]}\n"
        ref = PackageRef(deb.name, deb.version, deb.architecture, "p", 1, "0" * 64, index=index)
        pairs.append((ref, path))
    (tmp_path / "root").mkdir()
    return unpack_packages(pairs, tmp_path / "root")


def _entry(root: PackageRoot, *named: str, entrypoint: str | None = None) -> str:
    return entry_program(root, select(root, named), named, entrypoint)


def test_the_program_named_like_the_package_is_the_entrypoint_and_said_so(tmp_path: Path) -> None:
    """``--package haproxy`` stopped with "put 3 programs on PATH ...; choose one"."""
    root = _root(tmp_path, [HAPROXY])
    with collecting() as warnings:
        assert _entry(root, "haproxy") == "/usr/sbin/haproxy"
    assert warnings.messages == [
        "--package haproxy: /usr/sbin/haproxy is the entrypoint (named like the package); "
        "--entrypoint or BINARY picks another of /usr/sbin/halog"
    ]
    with collecting() as warnings:
        assert _entry(root, "haproxy", entrypoint="/usr/bin/halog") == "/usr/bin/halog"
    assert warnings.messages == []


def test_the_same_program_in_two_path_directories_counts_once(tmp_path: Path) -> None:
    """haproxy's two halogs are one program; a link to a program is that program."""
    tool = File(b"\x7fELF tool", 0o755)
    debs = [Deb("tools", files={"/usr/bin/tool": tool, "/usr/sbin/tool": Link("../bin/tool")})]
    assert _entry(_root(tmp_path, debs), "tools") == "/usr/sbin/tool"
    twins = [Deb("halogs", files={"/usr/bin/halog": HALOG, "/usr/sbin/halog": HALOG})]
    assert _entry(_root(tmp_path / "2", twins), "halogs") == "/usr/sbin/halog"


def test_programs_of_the_same_name_but_other_bytes_both_count(tmp_path: Path) -> None:
    debs = [Deb("pair", files={"/usr/bin/run": b"one", "/usr/sbin/run": b"two"})]
    with pytest.raises(InputError, match=r"put 2 programs on PATH \(/usr/bin/run, /usr/sbin/run\)"):
        _entry(_root(tmp_path, debs), "pair")


def test_without_a_program_named_like_the_package_the_user_chooses(tmp_path: Path) -> None:
    debs = [Deb("utils", files={"/usr/bin/one": b"1", "/usr/bin/two": b"2"})]
    with pytest.raises(InputError, match=r"--package utils: put 2 programs on PATH"):
        _entry(_root(tmp_path, debs), "utils")
    both = [HAPROXY, Deb("curl", files={"/usr/bin/curl": b"c"})]
    with pytest.raises(InputError, match=r"--package haproxy, curl: put 3 programs"):
        _entry(_root(tmp_path / "2", both), "haproxy", "curl")


def test_a_siblings_link_named_like_the_package_is_offered_and_chosen(tmp_path: Path) -> None:
    """``--package python3`` offered pdb3 and pydoc3, never ``/usr/bin/python3``."""
    root = _root(tmp_path, PYTHON3, PYTHON3_SOURCES)
    offered = programs_on_path(select(root, ["python3"]), ["python3"])
    assert offered == ["/usr/bin/pdb3", "/usr/bin/pydoc3", "/usr/bin/python3"]
    with collecting() as warnings:
        assert _entry(root, "python3") == "/usr/bin/python3"
    assert "picks another of /usr/bin/pdb3, /usr/bin/pydoc3" in warnings.messages[0]


def test_only_same_source_siblings_lend_their_programs(tmp_path: Path) -> None:
    """python3.11-minimal is another source's: its python3.11 is no program of python3."""
    root = _root(tmp_path, PYTHON3, {"python3": "python3-defaults"})
    with pytest.raises(
        InputError, match=r"put 2 programs on PATH \(/usr/bin/pdb3, /usr/bin/pydoc3\)"
    ):
        _entry(root, "python3")


def _script_root(
    tmp_path: Path, shebang: str, files: dict[str, str | Path] | None = None
) -> RootFS:
    """A root holding ``/usr/bin/tool``, a script run by ``shebang``, and ``files``
    (in-root path -> a link target, or a host file's :class:`Path` to copy)."""
    top = tmp_path / "root"
    (top / "usr/bin").mkdir(parents=True)
    (top / "usr/bin/tool").write_text(f"#!{shebang}\necho hi\n")
    for path, what in (files or {}).items():
        (top / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Path):
            shutil.copy(what, top / path.lstrip("/"))
        else:
            os.symlink(what, top / path.lstrip("/"))
    return RootFS(str(top))


def test_a_sh_script_without_a_shell_says_to_add_busybox(tmp_path: Path) -> None:
    """mariadb-install-db (#!/bin/sh) stopped with "its interpreter /bin/sh is not in the root"."""
    root = _script_root(tmp_path, "/bin/sh")
    with pytest.raises(InputError, match=r"/bin/sh is not in .*; add --shell busybox"):
        program(root, "/usr/bin/tool", DEFAULT_PATH)


def test_shell_busybox_runs_a_sh_script(tmp_path: Path, static_busybox: Path) -> None:
    root = _script_root(tmp_path, "/bin/sh -e")
    found = program(root, "/usr/bin/tool", DEFAULT_PATH, shell=str(static_busybox))
    assert (found.path, found.runs, found.name) == ("/usr/bin/tool", (), "sh")


def test_busybox_is_not_bash(tmp_path: Path, static_busybox: Path) -> None:
    root = _script_root(tmp_path, "/bin/bash")
    with pytest.raises(InputError, match=r"/bin/bash is not in .*busybox's sh is not bash"):
        program(root, "/usr/bin/tool", DEFAULT_PATH, shell=str(static_busybox))
    with pytest.raises(InputError, match=r"/bin/bash is not in [^;]*$"):
        program(root, "/usr/bin/tool", DEFAULT_PATH)


def test_a_shell_from_the_packages_runs_the_script(tmp_path: Path, static_busybox: Path) -> None:
    """dash's /bin/sh in the root: the script runs it, and its closure is resolved."""
    root = _script_root(
        tmp_path, "/bin/sh", {"/usr/bin/dash": static_busybox, "/bin/sh": "/usr/bin/dash"}
    )
    found = program(root, "/usr/bin/tool", DEFAULT_PATH)
    assert found.runs == ("/bin/sh",)
    assert Resolver(root.top).resolve(found.runs[0]).static


def test_a_script_run_by_shell_busybox_has_busyboxs_platform(
    tmp_path: Path, static_busybox: Path
) -> None:
    """The image's platform came from what the first program runs: none for such a script."""
    root = _script_root(tmp_path, "/bin/sh")
    script = Program("/usr/bin/tool", (), "sh")
    platform = image_platform(Resolver(root.top), [script], str(static_busybox))
    busybox = read_elf(str(static_busybox))
    assert platform == Platform.from_elf(busybox.machine, busybox.bits)


def test_a_sh_script_plans_with_busybox_at_bin_sh(tmp_path: Path, static_busybox: Path) -> None:
    """The whole plan, as build --root DIR /usr/bin/tool --shell busybox makes it."""
    from scratchpack.image.config import ImageConfig
    from scratchpack.plan.essentials import Essentials
    from scratchpack.plan.image_plan import BuildOptions, plan_image

    root = _script_root(tmp_path, "/bin/sh")
    options = BuildOptions(
        binaries=("/usr/bin/tool",), root=root.top, essentials=Essentials(shell=str(static_busybox))
    )
    with collecting():
        plan = plan_image(options, ImageConfig(entrypoint=None))
    assert plan.config.entrypoint == ("/usr/bin/tool",)
    shell = plan.root.entries["/bin/sh"]
    assert shell.source is not None and os.path.samefile(shell.source, static_busybox)
    assert plan.platform == Platform.from_elf(*_machine_and_bits(static_busybox))


def _machine_and_bits(path: Path) -> tuple[str, int]:
    elf = read_elf(str(path))
    return elf.machine, elf.bits


def test_a_link_to_a_program_is_that_program_named_like_the_package(tmp_path: Path) -> None:
    """``--package nodejs`` offered /usr/bin/node as "another" of /usr/bin/nodejs -> node."""
    node = File(b"\x7fELF node", 0o755)
    debs = [Deb("nodejs", files={"/usr/bin/node": node, "/usr/bin/nodejs": Link("node")})]
    root = _root(tmp_path, debs)
    with collecting() as warnings:
        assert _entry(root, "nodejs") == "/usr/bin/nodejs"
    assert warnings.messages == []
    other = [Deb("nodejs", files={**debs[0].files, "/usr/bin/corepack": b"c"})]
    with collecting() as warnings:
        assert _entry(_root(tmp_path / "2", other), "nodejs") == "/usr/bin/nodejs"
    assert warnings.messages == [
        "--package nodejs: /usr/bin/nodejs is the entrypoint (named like the package); "
        "--entrypoint or BINARY picks another of /usr/bin/corepack"
    ]
