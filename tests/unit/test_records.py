"""Package records in every image (issue 23): what Trivy's and Grype's Debian detection read.

reference.md §10: Trivy detects Debian by ``etc/debian_version`` and reads the
packages from ``var/lib/dpkg/status.d/*`` (their files from ``*.md5sums``);
Grype/Syft read ``status.d`` too. :func:`scanner_view` reads a planned image the
way they do; each kind of image (a ``--package`` root, a host-like root with a
full dpkg database, a shrink of an image with ``status`` or with ``status.d``)
must show exactly the packages whose files it holds. Then the attacks: hostile
md5sums (malformed lines, ``..`` paths, absurd sizes) and status paragraphs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig, RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.ld.rootfs import RootFS
from scratchpack.packages import deb as deb_module
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.control import md5sums_path, parse_md5sums
from scratchpack.packages.deb import read_control
from scratchpack.packages.root import unpack_packages
from scratchpack.plan import dpkg
from scratchpack.plan.dpkg import DpkgIndex
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.excludes import Excludes
from scratchpack.plan.image_plan import BuildOptions, plan_image
from scratchpack.plan.records import (
    DEBIAN_VERSION,
    ETC_OS_RELEASE,
    OS_RELEASE,
    STATUS_D,
    add_records,
    package_of,
    record_paragraph,
)
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.shrink import ShrinkInputs, plan_shrink
from tests.debkit import ARCHITECTURE, Deb, Link, build_deb
from tests.unit import test_plan
from tests.unit.test_shrink_accounts import needs_host_glibc

OS_RELEASE_TEXT = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


# -- what the scanners read -----------------------------------------------------------------


@dataclass(frozen=True)
class ScannerView:
    """What Trivy's and Grype's Debian analyzers find in an image's files."""

    os_version: str | None  # etc/debian_version (Trivy: no OS without it)
    packages: dict[str, dict[str, str]]  # status.d/* paragraphs: Package -> fields
    files: dict[str, list[str]]  # status.d/NAME.md5sums: NAME -> installed paths


def _fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in paragraph.splitlines():
        assert line.strip(), "one paragraph per status.d file"
        if line[0] not in " \t":
            key, _, value = line.partition(":")
            assert key not in fields, f"{key} twice"
            fields[key] = value.strip()
    return fields


def scanner_view(plan: RootPlan) -> ScannerView:
    files = {path: entry for path, entry in plan.entries.items() if entry.kind is EntryKind.FILE}
    version = files.get(DEBIAN_VERSION)
    packages: dict[str, dict[str, str]] = {}
    installed: dict[str, list[str]] = {}
    for path, entry in sorted(files.items()):
        if not path.startswith(STATUS_D + "/"):
            continue
        name = path.removeprefix(STATUS_D + "/")
        text = (entry.data or b"").decode()
        if name.endswith(".md5sums"):
            installed[name.removesuffix(".md5sums")] = [
                "/" + line.split("  ", 1)[1] for line in text.splitlines()
            ]
            for line in text.splitlines():  # dpkg's format: MD5, two spaces, relative path
                digest, sep, relative = line.partition("  ")
                assert len(digest) == 32 and sep and not relative.startswith("/"), line
            assert text.splitlines() == sorted(text.splitlines(), key=lambda line: line[34:])
        else:
            fields = _fields(text)
            assert fields["Status"] == "install ok installed"
            assert {"Package", "Version", "Architecture"} <= set(fields)
            packages[fields["Package"]] = fields
    os_version = _bytes(plan, DEBIAN_VERSION).decode().strip() if version is not None else None
    return ScannerView(os_version, packages, installed)


# -- roots ----------------------------------------------------------------------------------


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _md5sums(files: dict[str, bytes]) -> str:
    return "".join(f"{_md5(data)}  {path.lstrip('/')}\n" for path, data in files.items())


BASE_FILES = Deb(
    "base-files",
    "12.4+deb12u8",
    files={
        "/etc/debian_version": b"12.8\n",
        "/usr/lib/os-release": OS_RELEASE_TEXT.encode(),
        "/etc/os-release": Link("../usr/lib/os-release"),
    },
    conffiles=("/etc/debian_version",),  # a conffile: dpkg leaves it out of md5sums
    scripts={"md5sums": _md5sums({"/usr/lib/os-release": OS_RELEASE_TEXT.encode()})},
)
LIBFOO_FILES = {"/usr/lib/libfoo.so.1.2": b"\x7fELF foo", "/usr/share/foo/data": b"data\n"}
LIBFOO = Deb(
    "libfoo1",
    "1.2-3",
    files={**LIBFOO_FILES, "/usr/lib/libfoo.so.1": Link("libfoo.so.1.2")},
    control={"Source": "foo", "Multi-Arch": "same"},
    scripts={"md5sums": _md5sums(LIBFOO_FILES)},
)
UNUSED = Deb("unused", files={"/usr/bin/unused": b"x"}, scripts={"md5sums": "x"})


def _package_root(tmp_path: Path, *debs: Deb) -> RootFS:
    resolved = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        data = path.read_bytes()
        ref = PackageRef(
            deb.name, deb.version, deb.architecture, f"pool/{path.name}", len(data),
            hashlib.sha256(data).hexdigest(),
        )  # fmt: skip
        resolved.append((ref, path))
    (tmp_path / "root").mkdir(parents=True)
    return RootFS(str(unpack_packages(resolved, tmp_path / "root").top))


def _write(root: Path, path: str, data: bytes | str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


HOST_STATUS = f"""Package: libssl3
Status: install ok installed
Priority: optional
Architecture: {ARCHITECTURE}
Multi-Arch: same
Source: openssl
Version: 3.0.19-1~deb12u2
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project.
 .
 It provides the libssl and libcrypto shared libraries.

Package: tool
Status: install ok installed
Architecture: {ARCHITECTURE}
Version: 2.0-1
Conffiles:
 /etc/tool.conf 0123456789abcdef0123456789abcdef
Description: a tool

Package: base-files
Status: install ok installed
Architecture: {ARCHITECTURE}
Version: 12.4+deb12u8
Conffiles:
 /etc/debian_version 0123456789abcdef0123456789abcdef
Description: Debian base system miscellaneous files

Package: removed
Status: deinstall ok config-files
Architecture: {ARCHITECTURE}
Version: 1.0
Description: its configuration only

"""
SSL_FILES = {"/usr/lib/libssl.so.3": b"ssl", "/usr/lib/libcrypto.so.3": b"crypto"}
TOOL_FILES = {"/usr/bin/tool": b"tool", "/usr/share/tool/extra": b"extra"}


def _host_like_root(tmp_path: Path) -> RootFS:
    """A Debian root as dpkg leaves it: status, info/*.list and *.md5sums (one multi-arch)."""
    root = tmp_path / "host"
    for path, data in {**SSL_FILES, **TOOL_FILES, "/etc/tool.conf": b"conf"}.items():
        _write(root, path, data)
    _write(root, "/usr/local/bin/mine", b"not from a package")
    _write(root, "/etc/debian_version", "12.8\n")
    _write(root, "/usr/lib/os-release", OS_RELEASE_TEXT)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    info = "/var/lib/dpkg/info"
    _write(root, "/var/lib/dpkg/status", HOST_STATUS)
    _write(root, f"{info}/libssl3:{ARCHITECTURE}.list", "/.\n/usr\n/usr/lib\n" + _list(SSL_FILES))
    _write(root, f"{info}/libssl3:{ARCHITECTURE}.md5sums", _md5sums(SSL_FILES))
    _write(root, f"{info}/tool.list", "/.\n/usr\n/etc/tool.conf\n" + _list(TOOL_FILES))
    _write(root, f"{info}/tool.md5sums", _md5sums(TOOL_FILES))
    os_files = "/etc/debian_version\n/etc/os-release\n/usr/lib/os-release\n"
    _write(root, f"{info}/base-files.list", "/.\n/etc\n/usr\n/usr/lib\n" + os_files)
    _write(root, f"{info}/base-files.md5sums", _md5sums({"/usr/lib/os-release": b""}))
    return RootFS(str(root))


def _list(files: dict[str, bytes]) -> str:
    return "".join(f"{path}\n" for path in files)


def _status_d_root(tmp_path: Path) -> RootFS:
    """A distroless-style image: status.d/NAME and NAME.md5sums, no status file."""
    root = tmp_path / "distroless"
    for path, data in {**SSL_FILES, **TOOL_FILES}.items():
        _write(root, path, data)
    _write(root, "/etc/debian_version", "12.8\n")
    _write(root, "/etc/os-release", OS_RELEASE_TEXT)  # a file in /etc, none in /usr/lib
    ssl, tool = HOST_STATUS.split("\n\n")[:2]
    _write(root, f"{STATUS_D}/libssl3", ssl + "\n")
    _write(root, f"{STATUS_D}/libssl3.md5sums", _md5sums(SSL_FILES))
    _write(root, f"{STATUS_D}/tool", tool + "\n")
    _write(root, f"{STATUS_D}/tool.md5sums", _md5sums(TOOL_FILES))
    return RootFS(str(root))


def _planned(root: RootFS, paths: list[str], index: DpkgIndex | None = None) -> RootPlan:
    plan = RootPlan(source_parent_modes=False)
    for path in paths:
        plan.add_path(root, path, Reason.LIBRARY)
    add_records(plan, root, index if index is not None else DpkgIndex.load_any(root))
    return plan


# -- each kind of image, as the scanners see it --------------------------------------------


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], RootFS]
    kept: list[str]  # the paths the image holds
    packages: dict[str, str]  # declared: name -> version
    files: dict[str, list[str]]  # status.d/NAME.md5sums: the paths listed
    source: dict[str, str | None]  # Source field as the record has it


CASES = {
    "--package image: libfoo1's library (a link and its file), not its data": Case(
        lambda tmp: _package_root(tmp, BASE_FILES, LIBFOO, UNUSED),
        ["/usr/lib/libfoo.so.1"],
        {"libfoo1": "1.2-3", "base-files": "12.4+deb12u8"},
        {"libfoo1": ["/usr/lib/libfoo.so.1.2"], "base-files": ["/usr/lib/os-release"]},
        {"libfoo1": "foo", "base-files": None},
    ),
    "host root: one file of libssl3 (Multi-Arch: same, named libssl3), tool's binary": Case(
        _host_like_root,
        ["/usr/lib/libssl.so.3", "/usr/bin/tool", "/usr/local/bin/mine"],
        {"libssl3": "3.0.19-1~deb12u2", "tool": "2.0-1", "base-files": "12.4+deb12u8"},
        {
            "libssl3": ["/usr/lib/libssl.so.3"],
            "tool": ["/usr/bin/tool"],
            "base-files": ["/usr/lib/os-release"],
        },
        {"libssl3": "openssl", "tool": None, "base-files": None},
    ),
    "host root: nothing of a package, nothing declared": Case(
        _host_like_root, ["/usr/local/bin/mine"], {}, {}, {}
    ),
    "status.d image (shrink's source): only tool's files kept": Case(
        _status_d_root,
        ["/usr/bin/tool", "/usr/share/tool/extra"],
        {"tool": "2.0-1"},
        {"tool": ["/usr/bin/tool", "/usr/share/tool/extra"]},
        {"tool": None},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_scanners_see_exactly_the_packages_the_image_holds(tmp_path: Path, case: Case) -> None:
    root = case.make(tmp_path)
    plan = _planned(root, case.kept)
    view = scanner_view(plan)
    assert {name: fields["Version"] for name, fields in view.packages.items()} == case.packages
    assert view.files == case.files
    assert {name: fields.get("Source") for name, fields in view.packages.items()} == case.source
    for fields in view.packages.values():
        assert fields["Architecture"] == ARCHITECTURE
    for paths in view.files.values():
        assert all(plan.through_links(path) in plan.entries for path in paths)
    if case.packages:  # Trivy detects the OS; os-release as Debian has it
        assert view.os_version == "12.8"
        assert _bytes(plan, DEBIAN_VERSION) == b"12.8\n"
        assert _bytes(plan, ETC_OS_RELEASE) == OS_RELEASE_TEXT.encode()
        if root.exists(OS_RELEASE):
            link = plan.entries[ETC_OS_RELEASE]
            assert (link.kind, link.target) == (EntryKind.SYMLINK, "../usr/lib/os-release")
            assert _bytes(plan, OS_RELEASE) == OS_RELEASE_TEXT.encode()
    else:  # an image of no package says nothing about Debian
        assert view.os_version is None and OS_RELEASE not in plan.entries
    records = [entry for entry in plan.entries.values() if entry.reason is Reason.RECORD]
    modes = {EntryKind.FILE: 0o644, EntryKind.SYMLINK: 0o777, EntryKind.DIR: 0o755}
    assert all(entry.uid == 0 and entry.mode == modes[entry.kind] for entry in records)


def _bytes(plan: RootPlan, path: str) -> bytes:
    """The bytes the image has at ``path``, its links followed (as the writer copies them)."""
    entry = plan.entries[path]
    if entry.kind is EntryKind.SYMLINK:
        assert entry.target is not None
        return _bytes(plan, os.path.normpath(os.path.join(os.path.dirname(path), entry.target)))
    if entry.data is not None:
        return entry.data
    assert entry.source is not None
    return Path(entry.source).read_bytes()


def test_the_record_is_the_paragraph_less_dpkgs_local_fields(tmp_path: Path) -> None:
    plan = _planned(_host_like_root(tmp_path), ["/usr/bin/tool", "/usr/lib/libssl.so.3"])
    tool = (plan.entries[f"{STATUS_D}/tool"].data or b"").decode()
    assert tool == (
        f"Package: tool\nStatus: install ok installed\nArchitecture: {ARCHITECTURE}\n"
        "Version: 2.0-1\nDescription: a tool\n"
    )  # no Conffiles (nor its continuation line): the host's, not the package's
    ssl = (plan.entries[f"{STATUS_D}/libssl3"].data or b"").decode()
    assert ssl == HOST_STATUS.split("\n\n")[0] + "\n"  # continuation lines kept as written
    assert plan.entries[f"{STATUS_D}/tool"].detail == "tool"


def test_records_are_deterministic_and_replace_stale_ones(tmp_path: Path) -> None:
    root = _host_like_root(tmp_path)
    first = _planned(root, ["/usr/bin/tool", "/usr/share/tool/extra"])
    again = RootPlan(source_parent_modes=False)
    again.add_generated(f"{STATUS_D}/tool", b"Package: tool\nVersion: 0-stale\n", Reason.TRACE)
    for path in ("/usr/share/tool/extra", "/usr/bin/tool"):  # another order
        again.add_path(root, path, Reason.LIBRARY)
    add_records(again, root, DpkgIndex.load(root))
    assert {p: e.data for p, e in first.entries.items() if p.startswith(STATUS_D + "/")} == {
        p: e.data for p, e in again.entries.items() if p.startswith(STATUS_D + "/")
    }


def test_a_stale_record_copied_in_is_replaced_and_not_named_unknown(tmp_path: Path) -> None:
    """``--include stale:/var/lib/dpkg/status.d/tool``: the image holds the record, which
    no report may call a file of no package."""
    root = _host_like_root(tmp_path)
    stale = tmp_path / "stale"
    stale.write_text("Package: tool\nVersion: 0-stale\n")
    plan = RootPlan(source_parent_modes=False)
    plan.add(Entry(f"{STATUS_D}/tool", EntryKind.FILE, 0o644, Reason.INCLUDE, source=str(stale)))
    plan.add_path(root, "/usr/bin/tool", Reason.LIBRARY)
    records = add_records(plan, root, DpkgIndex.load(root))
    assert plan.entries[f"{STATUS_D}/tool"].reason is Reason.RECORD
    assert f"{STATUS_D}/tool" not in records.unknown


def test_the_images_own_os_release_stays_and_exclude_leaves_records_out(tmp_path: Path) -> None:
    root = _host_like_root(tmp_path)
    plan = RootPlan(source_parent_modes=False)
    plan.add_generated(OS_RELEASE, b"ID=mine\n", Reason.INCLUDE)
    plan.add_path(root, "/usr/bin/tool", Reason.PROGRAM)
    add_records(plan, root, DpkgIndex.load(root))
    assert plan.entries[OS_RELEASE].data == b"ID=mine\n"
    excluded = RootPlan(source_parent_modes=False, excludes=Excludes(("/var/lib/dpkg/**",)))
    excluded.add_path(root, "/usr/bin/tool", Reason.PROGRAM)
    add_records(excluded, root, DpkgIndex.load(root))
    assert not any(path.startswith("/var/lib/dpkg/") for path in excluded.entries)
    assert DEBIAN_VERSION in excluded.entries


def test_a_root_without_a_dpkg_database_gets_no_records(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    _write(root, "/usr/bin/tool", b"x")
    _write(root, "/etc/debian_version", "12.8\n")
    plan = _planned(RootFS(str(root)), ["/usr/bin/tool"])
    assert [path for path in plan.entries if not plan.entries[path].implied] == ["/usr/bin/tool"]


def test_two_architectures_of_one_package_get_two_names(tmp_path: Path) -> None:
    root = _host_like_root(tmp_path)
    top = Path(root.top)
    i386 = HOST_STATUS.split("\n\n")[0].replace(
        f"Architecture: {ARCHITECTURE}", "Architecture: i386"
    )
    with open(top / "var/lib/dpkg/status", "a") as stream:
        stream.write(i386 + "\n")
    _write(top, "/usr/lib/i386/libssl.so.3", b"ssl32")
    _write(top, "/var/lib/dpkg/info/libssl3:i386.list", "/usr/lib/i386/libssl.so.3\n")
    fs = RootFS(str(top))
    plan = _planned(fs, ["/usr/lib/libssl.so.3", "/usr/lib/i386/libssl.so.3"], DpkgIndex.load(fs))
    names = sorted(
        p.removeprefix(STATUS_D + "/") for p in plan.entries if p.startswith(STATUS_D + "/")
    )
    assert [name for name in names if "libssl3" in name] == [
        "libssl3", "libssl3.md5sums", "libssl3:i386",
    ]  # fmt: skip


def test_package_of_names_the_package_source_and_version(tmp_path: Path) -> None:
    """The layering's question, for a host-like root and a --package root alike."""
    root = _host_like_root(tmp_path / "host")
    plan = _planned(root, ["/usr/lib/libssl.so.3", "/usr/local/bin/mine"])
    index = DpkgIndex.load(root)
    ssl = package_of(plan.entries["/usr/lib/libssl.so.3"], index, root)
    assert ssl is not None and (ssl.name, ssl.source, ssl.version) == (
        "libssl3", "openssl", "3.0.19-1~deb12u2",
    )  # fmt: skip
    assert package_of(plan.entries["/usr/local/bin/mine"], index, root) is None
    assert package_of(plan.entries[f"{STATUS_D}/libssl3"], index, root) is None  # generated
    packaged = _package_root(tmp_path / "pkg", LIBFOO)
    plan = _planned(packaged, ["/usr/lib/libfoo.so.1"])
    index = DpkgIndex.load(packaged)
    for path in ("/usr/lib/libfoo.so.1", "/usr/lib/libfoo.so.1.2"):
        found = package_of(plan.entries[path], index, packaged)
        assert found is not None and (found.name, found.source, found.version) == (
            "libfoo1", "foo", "1.2-3",
        )  # fmt: skip


def test_a_link_to_a_directory_declares_nothing(tmp_path: Path) -> None:
    """Every package lists /usr/lib: a merged-/usr link to it is nobody's file."""
    root = _host_like_root(tmp_path)
    (Path(root.top) / "lib").symlink_to("usr/lib")
    with open(Path(root.top) / "var/lib/dpkg/info/tool.list", "a") as stream:
        stream.write("/lib\n")
    plan = _planned(RootFS(root.top), ["/lib/libssl.so.3"])
    assert sorted(scanner_view(plan).packages) == ["base-files", "libssl3"]


# -- shrink -----------------------------------------------------------------------------------


def _shrink(root: Path) -> dict[str, bytes]:
    runtime = RuntimeConfig.from_json({"Entrypoint": ["true"], "Env": ["PATH=/usr/bin"]}, "t")
    plan = plan_shrink(ShrinkInputs(root, runtime, Platform("amd64"), "sha256:" + "0" * 64))
    assert plan.records.packages == tuple(sorted(plan.records.packages))
    return {
        path: _bytes(plan.root, path)
        for path, entry in plan.root.entries.items()
        if entry.reason is Reason.RECORD and entry.kind is EntryKind.FILE
    }


def _with_libc6(root: Path) -> None:
    """The fake image's libc as a package beside coreutils, and one package not kept."""
    libc = {
        path: (root / path.lstrip("/")).read_bytes()
        for path in ("/usr/lib/x86_64-linux-gnu/libc.so.6",
                     "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    }  # fmt: skip
    with open(root / "var/lib/dpkg/status", "a") as stream:
        stream.write(
            "\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\n"
            "Source: glibc\nVersion: 2.36-9+deb12u9\n\n"
            "Package: unkept\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n"
        )
    info = root / "var/lib/dpkg/info"
    (info / "libc6:amd64.list").write_text(
        _list({k.replace("/usr", "", 1): v for k, v in libc.items()})
    )
    (info / "libc6:amd64.md5sums").write_text(
        _md5sums({k.replace("/usr", "", 1): v for k, v in libc.items()})
    )
    (info / "coreutils.md5sums").write_text(
        _md5sums({"/bin/true": (root / "usr/bin/true").read_bytes()})
    )
    (root / "usr/share/unkept").mkdir(parents=True)
    (root / "usr/share/unkept/x").write_text("x")
    (info / "unkept.list").write_text("/usr/share/unkept/x\n")
    (root / "etc/debian_version").write_text("12.8\n")
    (root / "usr/lib/os-release").write_text(OS_RELEASE_TEXT)


@needs_host_glibc
def test_shrink_keeps_the_records_of_the_kept_packages_only(tmp_path: Path) -> None:
    root = test_plan.fake_image_root(tmp_path)
    _with_libc6(root)
    records = _shrink(root)
    names = sorted(p.removeprefix(STATUS_D + "/") for p in records if p.startswith(STATUS_D + "/"))
    assert names == ["coreutils", "coreutils.md5sums", "libc6", "libc6.md5sums"]
    assert records[DEBIAN_VERSION] == b"12.8\n" and records[OS_RELEASE] == OS_RELEASE_TEXT.encode()
    libc6 = records[f"{STATUS_D}/libc6.md5sums"].decode().splitlines()
    assert [line.split("  ")[1] for line in libc6] == [
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
    ]  # fmt: skip


@needs_host_glibc
def test_shrink_of_a_status_d_image_keeps_its_kept_packages_records(tmp_path: Path) -> None:
    root = test_plan.fake_image_root(tmp_path)
    _with_libc6(root)
    dpkg_dir = root / "var/lib/dpkg"
    index = DpkgIndex.load(RootFS(str(root)))
    (dpkg_dir / "status.d").mkdir()
    for key, paragraph in index.paragraphs.items():
        name = index.packages[key].name
        (dpkg_dir / "status.d" / name).write_text(paragraph)
        md5sums = dpkg_dir / "info" / f"{key}.md5sums"
        if md5sums.exists():
            shutil.copy(md5sums, dpkg_dir / "status.d" / f"{name}.md5sums")
    shutil.rmtree(dpkg_dir / "info")
    os.unlink(dpkg_dir / "status")
    records = _shrink(root)
    names = sorted(p.removeprefix(STATUS_D + "/") for p in records if p.startswith(STATUS_D + "/"))
    assert names == ["coreutils", "coreutils.md5sums", "libc6", "libc6.md5sums"]


# -- attacks: hostile md5sums and paragraphs -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "taken"),
    [
        (f"{'a' * 32}  usr/bin/x", "usr/bin/x"),
        (f"{'a' * 32} *usr/bin/x", "usr/bin/x"),  # md5sum's binary mark
        (f"{'a' * 32}  ./usr/bin/x", "usr/bin/x"),
        (f"{'a' * 32}  ../../etc/shadow", None),
        (f"{'a' * 32}  usr/../../etc/shadow", None),
        (f"{'a' * 32}  /etc/shadow", None),  # absolute: not dpkg's form
        (f"{'a' * 32}  usr//bin/x", None),
        (f"{'a' * 32}  usr/bin/x\rinjected", None),
        (f"{'a' * 32}  usr/bin/\x1b[31mred", None),
        (f"{'A' * 32}  usr/bin/x", None),  # dpkg writes lower case
        (f"{'a' * 31}  usr/bin/x", None),
        (f"{'a' * 32}usr/bin/x", None),
        (f"{'a' * 32}  " + "d/" * 3000 + "x", None),  # over PATH_MAX
        ("", None),
        ("garbage", None),
    ],
)
def test_an_md5sums_line_is_taken_only_when_well_formed(line: str, taken: str | None) -> None:
    parsed = parse_md5sums(line + "\n")
    assert [path for _, path in parsed.lines] == ([taken] if taken else [])
    assert parsed.skipped == (0 if taken or not line else 1)


def test_md5sums_path_refuses_every_way_out() -> None:
    for path in ("..", "a/..", "a/./b", "", "/", "a/"):
        assert md5sums_path(path) is None, path


def test_a_hostile_packages_md5sums_reaches_neither_the_root_nor_the_image(
    tmp_path: Path,
) -> None:
    """Lines escaping the root, malformed ones and another package's file: never written
    as records; the well-formed lines of its own files are; one warning says how many."""
    own = {"/usr/bin/evil": b"evil"}
    hostile = (
        _md5sums(own)
        + f"{'b' * 32}  ../../../etc/shadow\n"
        + "not a line at all\n"
        + f"{_md5(b'foo')}  usr/lib/libfoo.so.1.2\n"  # libfoo1's file, claimed
    )
    evil = Deb("evil", files=own, scripts={"md5sums": hostile})
    root = _package_root(tmp_path, LIBFOO, evil)
    stored = (Path(root.top) / f"var/lib/dpkg/info/evil:{ARCHITECTURE}.md5sums").read_text()
    assert "../" not in stored and "not a line" not in stored
    plan = _planned(root, ["/usr/bin/evil", "/usr/lib/libfoo.so.1.2"])
    view = scanner_view(plan)
    assert view.files == {"evil": ["/usr/bin/evil"], "libfoo1": ["/usr/lib/libfoo.so.1.2"]}
    assert not any(".." in path for path in plan.entries)


def test_an_unpack_warns_once_about_an_md5sums_it_did_not_take_whole(tmp_path: Path) -> None:
    evil = Deb("evil", files={"/usr/bin/evil": b"e"}, scripts={"md5sums": "x\ny\n"})
    path = build_deb(evil, tmp_path / "debs")
    data = path.read_bytes()
    ref = PackageRef("evil", "1.0", ARCHITECTURE, "pool/e.deb", len(data), _md5(data))
    (tmp_path / "root").mkdir()
    root = unpack_packages([(ref, path)], tmp_path / "root")
    lines = [line for line in root.warnings if "md5sums" in line]
    assert lines == ["package evil 1.0: 2 lines of its md5sums not taken "
                     "(not a digest and a path below the root)"]  # fmt: skip


def test_an_absurd_md5sums_member_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deb_module, "MAX_MD5SUMS_MEMBER", 64)
    evil = Deb("evil", files={"/usr/bin/evil": b"e"}, scripts={"md5sums": _md5sums(LIBFOO_FILES)})
    control = read_control(build_deb(evil, tmp_path / "debs"))
    assert control.oversized == ("md5sums",) and control.md5sums.lines == ()


def test_an_absurd_md5sums_file_in_an_image_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _host_like_root(tmp_path)
    monkeypatch.setattr(dpkg, "MAX_LIST_BYTES", 1024)
    with open(Path(root.top) / "var/lib/dpkg/info/tool.md5sums", "a") as stream:
        stream.write(f"{'c' * 32}  usr/share/filler\n" * 100)
    plan = RootPlan(source_parent_modes=False)
    plan.add_path(root, "/usr/bin/tool", Reason.PROGRAM)
    with pytest.raises(InputError, match=r"tool\.md5sums: more than 1 KiB"):
        add_records(plan, root, DpkgIndex.load(root))


def test_a_status_d_image_cannot_name_a_path(tmp_path: Path) -> None:
    """A status.d paragraph's Package names the md5sums file read: outside the grammar,
    it is no package (and ``../`` reads nothing)."""
    root = _status_d_root(tmp_path)
    top = Path(root.top)
    _write(top, "/secret.md5sums", _md5sums({"/usr/bin/tool": b"tool"}))
    _write(top, f"{STATUS_D}/evil", "Package: ../../../../secret\nVersion: 1\n"
           f"Architecture: {ARCHITECTURE}\n")  # fmt: skip
    index = DpkgIndex.load_status_d(RootFS(str(top)))
    assert sorted(index.packages) == ["libssl3", "tool"]


def test_record_paragraph_puts_status_after_package_once() -> None:
    text = "Package: x\nStatus: purge ok not-installed\nVersion: 1\nStatus: again\n"
    assert record_paragraph(text) == "Package: x\nStatus: install ok installed\nVersion: 1\n"


def test_files_of_no_package_are_named_unknown_not_declared(tmp_path: Path) -> None:
    root = _host_like_root(tmp_path)
    plan = RootPlan(source_parent_modes=False)
    for path in ("/usr/bin/tool", "/usr/local/bin/mine"):
        plan.add_path(root, path, Reason.PROGRAM)
    plan.add_generated("/etc/ld.so.cache", b"generated", Reason.ESSENTIAL)
    records = add_records(plan, root, DpkgIndex.load(root))
    assert records.packages == ("base-files", "tool")
    assert records.unknown == ("/usr/local/bin/mine",)  # generated files are nobody's


@needs_host_glibc
def test_a_host_build_declares_the_host_packages_and_names_its_own_file(tmp_path: Path) -> None:
    """This machine's libc6 at this machine's version; the user's binary (moved under
    /app) is named unknown, under its image path."""
    mine = tmp_path / "mine"
    shutil.copy(os.path.realpath("/usr/bin/true"), mine)
    plan = plan_image(BuildOptions((str(mine),)), ImageConfig(entrypoint=None))
    assert "libc6" in plan.records.packages and plan.records.unknown == ("/app/mine",)
    host = DpkgIndex.load(RootFS())
    libc6 = next(p for p in host.packages.values() if p.name == "libc6")
    fields = _fields((plan.root.entries[f"{STATUS_D}/libc6"].data or b"").decode())
    assert (fields["Version"], fields["Source"]) == (libc6.version, libc6.source_name)
    assert libc6.source_name == "glibc"
    assert _bytes(plan.root, DEBIAN_VERSION) == Path("/etc/debian_version").read_bytes()


@pytest.mark.parametrize(
    ("bound", "value", "message"),
    [
        ("MAX_PACKAGES", 1, r"status\.d: more than 1 packages"),
        ("MAX_STATUS_BYTES", 200, r"status\.d: more than 200 bytes"),
        ("MAX_PATHS", 3, r"status\.d: the md5sums list more than 3 paths"),
    ],
)
def test_a_status_d_beyond_its_bounds_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str, value: int, message: str
) -> None:
    root = _status_d_root(tmp_path)
    monkeypatch.setattr(dpkg, bound, value)
    with pytest.raises(InputError, match=message) as error:
        DpkgIndex.load_status_d(root)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "value",
    [
        "x\u0085\u0085Package: evil",  # NEL: a line break to str.splitlines, not to dpkg
        "x\u2028\u2028Package: evil",
        "x\x1c\x1cPackage: evil",
        "x\n \t\nPackage: evil",  # a line of only blanks: a paragraph's end to some parsers
    ],
)
def test_a_root_cannot_add_a_paragraph_of_its_own_to_a_record(value: str) -> None:
    """A field value of a hostile root's status stays one field of one paragraph."""
    record = record_paragraph(f"Package: tool\nVersion: 1\nDescription: {value}\n")
    assert record.count("\nPackage:") == 0 and record.startswith("Package: tool\n")
    assert all(line.strip(" \t") for line in record.split("\n")[:-1])  # no blank line


def test_a_status_that_is_not_utf8_is_recorded_byte_for_byte(tmp_path: Path) -> None:
    """Old images hold Latin-1 maintainers; a hostile one any byte: never an internal error."""
    root = _host_like_root(tmp_path)
    status = Path(root.top) / "var/lib/dpkg/status"
    status.write_bytes(status.read_bytes().replace(b"a tool", b"a t\xe9ol"))
    plan = _planned(root, ["/usr/bin/tool"])
    assert b"Description: a t\xe9ol\n" in (plan.entries[f"{STATUS_D}/tool"].data or b"")


def test_os_files_that_link_out_of_the_root_are_read_inside_it(tmp_path: Path) -> None:
    """A --root's debian_version and os-release are another party's links: resolved in
    the root (to nothing there), never to this machine's files; too big is left out."""
    root = _host_like_root(tmp_path)
    top = Path(root.top)
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    (top / "etc/debian_version").unlink()
    (top / "etc/debian_version").symlink_to(str(secret))  # absolute: the root's /tmp/…/secret
    (top / "usr/lib/os-release").unlink()
    (top / "usr/lib/os-release").symlink_to("../../../../../../../" + str(secret))
    (top / "etc/os-release").unlink()
    (top / "etc/os-release").write_bytes(b"ID=debian\n" + b"#" * (1 << 20))
    plan = _planned(RootFS(str(top)), ["/usr/bin/tool"])
    held = b"".join(entry.data or b"" for entry in plan.entries.values())
    sources = {entry.source for entry in plan.entries.values() if entry.source}
    assert b"host secret" not in held and str(secret) not in sources
    left_out = ("/etc/debian_version", "/usr/lib/os-release", "/etc/os-release")
    assert not any(path in plan.entries for path in left_out)
