"""What an image says about its packages, and reading a hostile dpkg database (issue 20).

A ``.deb`` describes itself (its control file); the archive's signed index says
what it is. status.d, the SBOM and the same-source sibling rule rest on the
index. A dpkg database in an image is read bounded in memory and in time.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from scratchpack.errors import EXIT_USAGE, InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.root import PackageRoot, unpack_packages
from scratchpack.plan import dpkg
from scratchpack.plan.dpkg import DpkgIndex
from scratchpack.plan.entries import Reason
from scratchpack.plan.from_packages import (
    created_accounts,
    own_homes,
    programs_on_path,
    select,
)
from scratchpack.plan.records import STATUS_D, add_records
from scratchpack.plan.rootplan import RootPlan
from tests.cpu_time import thread_cpu_time
from tests.debkit import ARCHITECTURE, Deb, Dir, File, build_deb

FORGED = "Package: base-files\nStatus: install ok installed\nVersion: 99.0-forged\n"
FORGED += f"Architecture: {ARCHITECTURE}\nMaintainer: attacker <a@example.invalid>\n"
FORGED += "Description: forged\n"


def _index(deb: Deb, path: Path, fields: dict[str, str] | None = None) -> str:
    """A Packages-index paragraph for ``deb`` as ``apt-cache show`` prints it."""
    data = path.read_bytes()
    own = {
        "Package": deb.name,
        "Version": deb.version,
        "Architecture": deb.architecture,
        "Maintainer": "Archive Maintainers <archive@example.invalid>",
        "Installed-Size": "12",
        **(fields or {}),
        "Description": f"{deb.name} as the archive describes it\n more words\n .\n last line",
        "Description-md5": "0" * 32,
        "Tag": "role::program",
        "Section": "misc",
        "Priority": "optional",
        "Filename": f"pool/main/{path.name}",
        "Size": str(len(data)),
        "MD5sum": hashlib.md5(data).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }
    return "".join(f"{key}: {value}\n" for key, value in own.items())


def _root(
    tmp_path: Path, debs: list[Deb], index: dict[str, dict[str, str] | None] | None = None
) -> PackageRoot:
    """``debs`` unpacked; refs carry an index paragraph for the names in ``index``."""
    resolved = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        text = _index(deb, path, index[deb.name]) if index and deb.name in index else ""
        data = path.read_bytes()
        ref = PackageRef(
            deb.name,
            deb.version,
            deb.architecture,
            f"pool/main/{path.name}",
            len(data),
            hashlib.sha256(data).hexdigest(),
            index=text,
        )
        resolved.append((ref, path))
    (tmp_path / "root").mkdir()
    return unpack_packages(resolved, tmp_path / "root")


def _status_d(root: PackageRoot, *paths: str) -> dict[str, str]:
    """The status.d files written for a plan holding ``paths`` of the root."""
    plan = RootPlan(source_parent_modes=False)
    fs = RootFS(str(root.top))
    for path in paths:
        plan.add_path(fs, path, Reason.PACKAGE)
    add_records(plan, fs, DpkgIndex.load(fs))
    return {
        path.removeprefix(STATUS_D + "/"): (entry.data or b"").decode()
        for path, entry in plan.entries.items()
        if path.startswith(STATUS_D + "/") and not path.endswith(".md5sums")
    }


def _fields(paragraph: str) -> dict[str, str]:
    fields = {}
    for line in paragraph.splitlines():
        if line and line[0] not in " \t":
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


TWO_PARAGRAPHS = Deb(
    "evil",
    files={"/usr/bin/evil": b"x"},
    raw_control=(
        f"Package: evil\nVersion: 1.0\nArchitecture: {ARCHITECTURE}\n"
        "Maintainer: attacker <a@example.invalid>\nDescription: evil\n\n" + FORGED
    ),
)


# -- 1. status.d: exactly one paragraph, the archive's -------------------------------------


def test_status_d_is_the_archives_one_paragraph_not_the_control_file(tmp_path: Path) -> None:
    root = _root(tmp_path, [TWO_PARAGRAPHS], {"evil": {}})
    written = _status_d(root, "/usr/bin/evil")
    assert list(written) == ["evil"]
    text = written["evil"]
    assert "99.0-forged" not in text and "base-files" not in text
    assert not any(not line.strip() for line in text.splitlines()), "one paragraph"
    lines = text.splitlines()
    assert lines[:2] == ["Package: evil", "Status: install ok installed"]
    fields = _fields(text)
    assert fields["Version"] == "1.0" and fields["Architecture"] == ARCHITECTURE
    # The archive's words, not the package's.
    assert fields["Maintainer"] == "Archive Maintainers <archive@example.invalid>"
    assert "evil as the archive describes it\n more words\n .\n last line" in text
    # The archive's download bookkeeping is not dpkg status.
    for field in ("Filename", "Size", "MD5sum", "SHA256", "Description-md5", "Tag"):
        assert field not in fields, field
    assert fields["Section"] == "misc" and fields["Installed-Size"] == "12"


def test_status_d_without_an_index_takes_the_controls_first_paragraph(tmp_path: Path) -> None:
    root = _root(tmp_path, [TWO_PARAGRAPHS])
    text = _status_d(root, "/usr/bin/evil")["evil"]
    assert "99.0-forged" not in text and "base-files" not in text
    assert text.splitlines()[:2] == ["Package: evil", "Status: install ok installed"]
    assert _fields(text)["Version"] == "1.0"
    assert not any(not line.strip() for line in text.splitlines())


def test_status_d_names_the_package_apt_resolved(tmp_path: Path) -> None:
    """A control file (or index) naming another package or version cannot declare it."""
    liar = Deb(
        "liar",
        files={"/usr/bin/liar": b"x"},
        raw_control=FORGED.replace("Status: install ok installed\n", ""),
    )
    root = _root(tmp_path, [liar])
    fields = _fields(_status_d(root, "/usr/bin/liar")["liar"])
    assert (fields["Package"], fields["Version"]) == ("liar", "1.0")
    assert fields["Status"] == "install ok installed"


def test_a_blank_looking_line_in_the_index_ends_its_paragraph(tmp_path: Path) -> None:
    deb = Deb("tool", files={"/usr/bin/tool": b"x"})
    root = _root(tmp_path, [deb], {"tool": {"Homepage": "https://example.invalid\n \t\n" + FORGED}})
    text = _status_d(root, "/usr/bin/tool")["tool"]
    assert "99.0-forged" not in text and "base-files" not in text


@pytest.mark.parametrize("evil_first", [True, False])
def test_the_sbom_reads_one_version_per_package_from_the_root(
    tmp_path: Path, evil_first: bool
) -> None:
    """The root's dpkg status (what --sbom reads) carries no forged second paragraph."""
    base = Deb("base-files", "12.4", files={"/etc/debian_version": b"12.4\n"})
    debs = [TWO_PARAGRAPHS, base] if evil_first else [base, TWO_PARAGRAPHS]
    root = _root(tmp_path, debs, {"evil": {}, "base-files": {}})
    index = DpkgIndex.load(RootFS(str(root.top)))
    owner = index.owner("/etc/debian_version")
    assert owner is not None and (owner.name, owner.version) == ("base-files", "12.4")
    versions = {package.name: package.version for package in index.packages.values()}
    assert versions == {"evil": "1.0", "base-files": "12.4"}


def test_a_package_listed_twice_in_a_status_file_is_refused(tmp_path: Path) -> None:
    """dpkg writes one paragraph per package: a second can only be there to replace it."""
    real = "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n"
    root = _db(tmp_path, real + "\n" + FORGED, {"base-files": "/.\n/etc/debian_version\n"})
    assert "base-files:amd64 is listed twice" in _refused(root)


# -- 2. same-source siblings: the index's Source field --------------------------------------


SETUID = File(b"#!/bin/sh\n", 0o6755)


def _curl_family() -> list[Deb]:
    return [
        Deb("curl", files={"/usr/bin/curl": b"curl"}),
        Deb("libcurl4", files={"/usr/lib/libcurl.so.4": b"lib"}, control={"Source": "curl"}),
        Deb(
            "libhostile",
            files={"/usr/bin/rootshell": SETUID, "/etc/sudoers.d/hostile": b"ALL ALL=(ALL) ALL\n"},
            control={"Source": "curl"},  # what it says of itself
            scripts={"postinst": "#!/bin/sh\nadduser --system --home /usr/bin hostile\n"},
        ),
    ]


def test_a_dependency_claiming_the_source_is_no_sibling(tmp_path: Path) -> None:
    index = {"curl": {}, "libcurl4": {"Source": "curl"}, "libhostile": {"Source": "hostile"}}
    root = _root(tmp_path, _curl_family(), index)
    selection = select(root, ["curl"])
    assert [package.ref.name for package in selection.packages] == ["curl", "libcurl4"]
    assert "/usr/lib/libcurl.so.4" in selection.paths
    assert "/usr/bin/rootshell" not in selection.paths
    assert "/etc/sudoers.d/hostile" not in selection.paths
    assert "hostile" not in created_accounts(root, selection.packages)


def test_an_index_without_source_means_the_package_is_its_own_source(tmp_path: Path) -> None:
    """Debian's Packages files omit Source when it equals the package name."""
    index: dict[str, dict[str, str] | None] = {"curl": {}, "libcurl4": {}, "libhostile": {}}
    root = _root(tmp_path, _curl_family(), index)
    assert [package.ref.name for package in select(root, ["curl"]).packages] == ["curl"]
    root2 = _root(tmp_path / "2", _curl_family(), {"curl": {}, "libhostile": {"Source": "curl"}})
    assert [p.ref.name for p in select(root2, ["curl"]).packages] == ["curl", "libhostile"]


def test_hand_made_refs_have_no_siblings_from_the_deb(tmp_path: Path) -> None:
    root = _root(tmp_path, _curl_family())
    selection = select(root, ["curl"])
    assert [package.ref.name for package in selection.packages] == ["curl"]
    assert "/usr/bin/rootshell" not in selection.paths


def test_a_metapackage_takes_programs_from_archive_siblings_only(tmp_path: Path) -> None:
    debs = [
        Deb("nginx-light", files={"/usr/share/doc/nginx-light/copyright": b"c"}),
        Deb("nginx-core", files={"/usr/sbin/nginx": b"n"}, control={"Source": "nginx"}),
        Deb("sneaky", files={"/usr/bin/sneaky": b"s"}, control={"Source": "nginx"}),
    ]
    index = {"nginx-light": {"Source": "nginx"}, "nginx-core": {"Source": "nginx"}, "sneaky": {}}
    root = _root(tmp_path, debs, index)
    selection = select(root, ["nginx-light"])
    assert programs_on_path(selection, ["nginx-light"]) == ["/usr/sbin/nginx"]


def test_a_non_selected_packages_user_owns_no_directory_of_the_image(tmp_path: Path) -> None:
    """libhostile's postinst makes /usr/bin its user's home; curl's image keeps it root's."""
    root = _root(tmp_path, _curl_family(), {"curl": {}, "libcurl4": {"Source": "curl"}})
    plan = RootPlan(source_parent_modes=False)
    plan.add_path(RootFS(str(root.top)), "/usr/bin/curl", Reason.PACKAGE)
    plan.add_generated("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", Reason.ESSENTIAL)
    own_homes(plan, root)
    usr_bin = plan.entries["/usr/bin"]
    assert (usr_bin.uid, usr_bin.gid) == (0, 0)


@pytest.mark.parametrize(
    ("home", "owned"),
    [
        ("/usr/sbin", False),  # a system directory, whoever lists it
        ("/var/lib/shared", False),  # another package lists it too
        ("/var/lib/own", True),  # the creating package's own directory
    ],
)
def test_a_kept_packages_user_owns_only_a_home_of_its_own(
    tmp_path: Path, home: str, owned: bool
) -> None:
    """A kept package's script cannot hand a system or shared directory to its user."""
    debs = [
        Deb("other", files={"/var/lib/shared/": Dir(), "/usr/sbin/other": b"x"}),
        Deb(
            "app",
            files={"/usr/sbin/app": b"x", "/var/lib/shared/": Dir(), "/var/lib/own/": Dir()},
            scripts={"postinst": f"#!/bin/sh\nadduser --system --home {home} appuser\n"},
        ),
    ]
    root = _root(tmp_path, debs, {"app": {}, "other": {}})
    plan = RootPlan(source_parent_modes=False)
    fs = RootFS(str(root.top))
    for path in ("/usr/sbin/app", "/var/lib/shared", "/var/lib/own"):
        plan.add_path(fs, path, Reason.PACKAGE)
    passwd = (root.top / "etc/passwd").read_bytes()
    plan.add_generated("/etc/passwd", passwd, Reason.ESSENTIAL)
    own_homes(plan, root)
    entry = plan.entries[home]
    assert (entry.uid != 0) is owned, (home, entry)


# -- 3. a hostile dpkg database is read bounded ---------------------------------------------


def _db(top: Path, status: str | bytes, lists: dict[str, str] | None = None) -> RootFS:
    info = top / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    data = status.encode() if isinstance(status, str) else status
    (top / "var/lib/dpkg/status").write_bytes(data)
    for key, text in (lists or {}).items():
        (info / f"{key}.list").write_text(text)
    return RootFS(str(top))


def _paragraph(name: str, version: str = "1") -> str:
    return (
        f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n"
    )


def _refused(root: RootFS) -> str:
    with pytest.raises(InputError) as caught:
        DpkgIndex.load(root)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == EXIT_USAGE
    return message


def test_a_status_file_over_the_bound_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A sparse status file far over the real bound: refused from its size, in little memory."""
    root = _db(tmp_path, "")
    with open(tmp_path / "var/lib/dpkg/status", "r+b") as stream:
        stream.truncate(100 << 20)  # over the 64 MiB bound
    tracemalloc.start()
    try:
        with thread_cpu_time() as cpu:  # this thread's work, not the machine's load
            message = _refused(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Refused from its size: milliseconds; reading and splitting 100 MiB would be seconds.
    assert cpu.seconds < 5, f"{cpu.seconds:.1f} s of CPU"
    assert peak < 4 << 20, f"peak {peak} bytes"
    assert "/var/lib/dpkg/status" in message and "64 MiB" in message


def test_a_status_file_growing_past_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dpkg, "MAX_STATUS_BYTES", 4096, raising=False)
    root = _db(tmp_path, "".join(_paragraph(f"p{n}") + "\n" for n in range(200)))
    assert "/var/lib/dpkg/status" in _refused(root)


def test_a_paragraph_over_its_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dpkg, "MAX_PARAGRAPH_BYTES", 1024, raising=False)
    long_line = _paragraph("big") + "Description: " + "x" * 5000 + "\n"
    assert "1 KiB" in _refused(_db(tmp_path / "a", long_line, {"big": "/x\n"}))
    many_lines = _paragraph("big") + "Description: d\n" + " more\n" * 1000
    assert "paragraph" in _refused(_db(tmp_path / "b", many_lines, {"big": "/x\n"}))


def test_a_list_over_its_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_LIST_BYTES", 1024, raising=False)
    root = _db(tmp_path, _paragraph("big"), {"big": "".join(f"/p/{n}\n" for n in range(1000))})
    assert "/var/lib/dpkg/info/big.list" in _refused(root)


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (b"/" + b"x" * 1023, False),  # exactly the bound
        (b"/" + b"x" * 1024, True),
        (b"/" + "\u00e9".encode() * 600, True),  # 600 characters, 1201 bytes: bytes count
        (b"/" + b"\xff" * 1024, True),  # not UTF-8: a byte each, still counted
        (b"/" + "\u00e9".encode() * 511, False),  # 1023 bytes
    ],
)
def test_a_line_over_its_bound_is_refused_by_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes, refused: bool
) -> None:
    """A line of a list is bounded in bytes, whatever it decodes to."""
    monkeypatch.setattr(dpkg, "_MAX_LINE", 1024, raising=False)
    root = _db(tmp_path, _paragraph("big"), {"big": "/x\n" * 400})
    (tmp_path / "var/lib/dpkg/info/big.list").write_bytes(b"/x\n" * 400 + line + b"\n")
    if refused:
        assert "/var/lib/dpkg/info/big.list" in _refused(root) and "a line" in _refused(root)
    else:
        assert len(DpkgIndex.load(root).files("big")) == 401


def test_all_lists_together_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_PATHS", 500, raising=False)
    names = [f"p{n}" for n in range(10)]
    lists = {name: "".join(f"/{name}/{n}\n" for n in range(100)) for name in names}
    root = _db(tmp_path, "\n".join(_paragraph(name) for name in names), lists)
    assert "paths" in _refused(root)


def test_the_number_of_packages_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_PACKAGES", 50, raising=False)
    names = [f"p{n}" for n in range(100)]
    root = _db(tmp_path, "\n".join(_paragraph(name) for name in names))
    assert "packages" in _refused(root)


def test_diversions_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_DIVERSIONS_BYTES", 1024, raising=False)
    root = _db(tmp_path, _paragraph("pp"), {"pp": "/x\n"})
    (tmp_path / "var/lib/dpkg/diversions").write_text("/a\n/a.real\npp\n" * 200)
    assert "/var/lib/dpkg/diversions" in _refused(root)


def test_a_package_name_that_is_a_path_lists_nothing(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/x.list").write_text("/usr/bin/x\n")
    root = _db(tmp_path, _paragraph("../../../../srv/x"))
    index = DpkgIndex.load(root)
    assert len(index) == 0 and index.owner("/usr/bin/x") is None


def test_a_bounded_database_still_reads_quickly_and_whole(tmp_path: Path) -> None:
    names = [f"pkg{n}" for n in range(2000)]
    lists = {name: "/.\n" + "".join(f"/usr/{name}/{n}\n" for n in range(50)) for name in names}
    root = _db(tmp_path, "\n".join(_paragraph(name, "2.0") for name in names), lists)
    with thread_cpu_time() as cpu:  # this thread's work, not the machine's load
        index = DpkgIndex.load(root)
    # 100,000 paths read linearly: well under a second; quadratic in them would be minutes.
    assert cpu.seconds < 5, f"{cpu.seconds:.1f} s of CPU"
    assert len(index) == 2000
    owner = index.owner("/usr/pkg1999/49")
    assert owner is not None and (owner.name, owner.version) == ("pkg1999", "2.0")
    assert index.files("pkg7")[-1] == "/usr/pkg7/49"


def test_os_release_is_read_bounded(tmp_path: Path) -> None:
    root = _db(tmp_path, _paragraph("pp"), {"pp": "/x\n"})
    (tmp_path / "etc").mkdir()
    with open(tmp_path / "etc/os-release", "wb") as stream:
        stream.write(b'ID=debian\nVERSION_ID="12"\n')
        stream.truncate(256 << 20)
    tracemalloc.start()
    try:
        index = DpkgIndex.load(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes"
    assert index.packages["pp"].distro == "debian-12"
