"""SBOMs: package ownership from the dpkg database, SPDX 2.3 and CycloneDX 1.5 documents.

The documents are validated against the official JSON schemas kept in
``tests/data/schemas`` (see its README for where each came from); every
``$ref`` resolves from there, never over the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from scratchpack import __version__
from scratchpack.image.sbom import SbomFile, render, render_cyclonedx, render_spdx, sbom_files
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.dpkg import DpkgIndex, Package
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan
from tests.cpu_time import thread_cpu_time

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"
CDX_BASE = "http://cyclonedx.org/schema/"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
DIGEST = "sha256:" + "ab" * 32

has_dpkg = pytest.mark.skipif(
    not os.path.exists("/var/lib/dpkg/status") or shutil.which("dpkg-query") is None,
    reason="needs a Debian host with a dpkg database",
)


def distro() -> str:
    """The purl distro qualifier expected for this host: debian-12 on Debian 12."""
    release = platform.freedesktop_os_release()
    return f"{release['ID']}-{release['VERSION_ID']}"


def dpkg_version(package: str) -> str | None:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


# -- schemas -----------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def _no_fetch(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # every schema must come from tests/data/schemas


@pytest.fixture(scope="module")
def spdx_validator() -> Draft7Validator:
    schema = _schema("spdx-2.3.schema.json")
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=Registry(retrieve=_no_fetch))


@pytest.fixture(scope="module")
def cyclonedx_validator() -> Draft7Validator:
    # The bom schema refers to its neighbours by these names (cyclonedx-python-lib's copies).
    resources = []
    for name in ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"):
        resource = Resource.from_contents(_schema(name))
        resources += [(CDX_BASE + name, resource), (resource.id() or CDX_BASE + name, resource)]
    registry = Registry(retrieve=_no_fetch).with_resources(resources)  # type: ignore[call-arg]
    schema = _schema("bom-1.5.SNAPSHOT.schema.json")
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=registry)


def assert_valid(validator: Draft7Validator, document: Any) -> None:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


# -- DpkgIndex on the host ---------------------------------------------------------


@pytest.fixture(scope="module")
def host_index() -> DpkgIndex:
    return DpkgIndex.load(RootFS())


@has_dpkg
@pytest.mark.parametrize("path", [LIBC, "/lib/x86_64-linux-gnu/libc.so.6"])
def test_libc_belongs_to_libc6_under_both_spellings(host_index: DpkgIndex, path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    package = host_index.owner(path)
    assert package is not None
    assert (package.name, package.version) == ("libc6", dpkg_version("libc6"))
    assert package.architecture == "amd64"
    assert package.source == "glibc"
    assert package.purl.startswith(f"pkg:deb/debian/libc6@{package.version}?arch=amd64")


@has_dpkg
def test_curl_and_loader_owners(host_index: DpkgIndex) -> None:
    loader = host_index.owner("/lib64/ld-linux-x86-64.so.2")
    assert loader is not None and loader.name == "libc6"
    if dpkg_version("curl") is None:
        pytest.skip("curl is not installed")
    for path in ("/usr/bin/curl", "/bin/curl"):
        package = host_index.owner(path)
        assert package is not None
        assert (package.name, package.version) == ("curl", dpkg_version("curl"))


@has_dpkg
def test_unowned_file_has_no_package(host_index: DpkgIndex, tmp_path: Path) -> None:
    stray = tmp_path / "stray"
    stray.write_text("x")
    assert host_index.owner(str(stray)) is None
    assert host_index.owner("/usr/lib/x86_64-linux-gnu/no-such-library.so.1") is None


@has_dpkg
def test_load_is_quick() -> None:
    """The host's database is read once per build: hundreds of packages take tens of
    milliseconds of this thread's CPU (not wall time, which measures the machine's load)."""
    with thread_cpu_time() as cpu:
        index = DpkgIndex.load(RootFS())
    assert len(index) > 10
    assert cpu.seconds < 0.5, f"DpkgIndex.load took {cpu.seconds:.3f} s of CPU for {len(index)}"


def test_root_without_dpkg_owns_nothing(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/tool").write_text("x")
    index = DpkgIndex.load(RootFS(tmp_path))
    assert len(index) == 0
    assert index.owner("/usr/bin/tool") is None
    assert index.owner(LIBC) is None


# -- DpkgIndex on a made-up root ---------------------------------------------------

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: tool
Status: install ok installed
Architecture: amd64
Source: toolsrc (1.0-1)
Version: 1:2.0-1

Package: wrapper
Status: install ok installed
Architecture: all
Version: 3

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
"""


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A merged-/usr root with libc6 (name:arch.list), tool (name.list), a diversion."""
    info = tmp_path / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(STATUS)
    (info / "libc6:amd64.list").write_text(
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n"
        "/lib64/ld-linux-x86-64.so.2\n"
    )
    (info / "tool.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/tool\n")
    (info / "wrapper.list").write_text("/usr/bin/tool\n/usr/bin/helper\n")
    (info / "gone.list").write_text("/usr/bin/gone\n")
    (tmp_path / "var/lib/dpkg/diversions").write_text(
        "/usr/bin/tool\n/usr/bin/tool.real\nwrapper\n"
    )
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    for directory in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "opt"):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64"):
        (tmp_path / link).symlink_to(f"usr/{link}")
    for name in (
        "usr/bin/tool",
        "usr/bin/tool.real",
        "usr/bin/gone",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
    ):
        (tmp_path / name).write_text(name)
    (tmp_path / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/libc.so.6")
    (tmp_path / "opt/libdir").symlink_to("/usr/lib/x86_64-linux-gnu")
    (tmp_path / "opt/libc-link").symlink_to("../lib/x86_64-linux-gnu/libc.so.6")
    return tmp_path


def test_fake_root_packages(fake_root: Path) -> None:
    index = DpkgIndex.load(RootFS(fake_root))
    assert sorted(index.packages) == ["libc6:amd64", "tool", "wrapper"]  # config-files: no files
    libc = index.owner("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert libc == Package("libc6", "2.36-9+deb12u4", "amd64", "glibc", "debian", "debian-12")
    assert libc.purl == "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12"
    # usrmerge both ways, a symlinked parent directory, and a symlink's target.
    assert index.owner("/lib/x86_64-linux-gnu/libc.so.6") == libc
    assert index.owner("/opt/libdir/libc.so.6") == libc
    assert index.owner("/opt/libc-link") == libc
    assert index.owner("/usr/lib64/ld-linux-x86-64.so.2") == libc
    tool = index.owner("/usr/bin/tool.real")  # the diverted file stays the tool's
    assert tool is not None and (tool.name, tool.version, tool.source) == (
        "tool",
        "1:2.0-1",
        "toolsrc",
    )
    assert tool.purl == "pkg:deb/debian/tool@1:2.0-1?arch=amd64&distro=debian-12"
    wrapper = index.owner("/bin/tool")  # the diverting package's file
    assert wrapper is not None and wrapper.name == "wrapper" and wrapper.source is None
    assert index.owner("/usr/bin/gone") is None
    assert index.owner("/usr/bin/missing") is None


_ASKED = (
    "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6",
    "/opt/libdir/libc.so.6", "/opt/libc-link", "/usr/lib64/ld-linux-x86-64.so.2",
    "/usr/bin/tool.real", "/usr/bin/tool", "/bin/tool", "/usr/bin/helper", "/usr/bin/gone",
    "/usr/bin/missing", "/usr", "/",
)  # fmt: skip


@pytest.mark.parametrize("primed", [_ASKED, _ASKED[::2], ()])
def test_primed_owners_answer_as_the_whole_map_does(
    fake_root: Path, primed: tuple[str, ...]
) -> None:
    """A build primes the owners of its few files (one pass over the lists, no map of
    every listed path); every answer, diversions included, is the whole map's."""
    whole = DpkgIndex.load(RootFS(fake_root))
    expected = {path: whole.owned(path) for path in _ASKED}
    index = DpkgIndex.load(RootFS(fake_root))
    index.prime(primed)
    assert {path: index.owned(path) for path in _ASKED} == expected
    if primed == _ASKED:
        assert index._owners is None  # answered from the primed paths alone
    assert expected["/usr/bin/tool"] == ("wrapper", "/usr/bin/tool")
    assert expected["/usr/bin/tool.real"] == ("tool", "/usr/bin/tool.real")


# -- SBOM documents for a real binary ----------------------------------------------


def real_binary() -> str:
    return "/usr/bin/curl" if os.path.exists("/usr/bin/curl") else "/usr/bin/ls"


@pytest.fixture(scope="module")
def plan() -> RootPlan:
    binary = real_binary()
    root = RootFS()
    closure = Resolver().resolve(binary)
    assert not closure.missing
    plan = RootPlan()
    plan.add_path(root, binary, Reason.PROGRAM)
    assert closure.interpreter is not None
    plan.add_path(root, closure.interpreter, Reason.INTERPRETER)
    for library in closure.libraries:
        plan.add_path(root, library.path, Reason.LIBRARY, library.soname)
    plan.add_generated("/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n", Reason.ESSENTIAL)
    plan.add_dir("/tmp", 0o1777, Reason.ESSENTIAL, "tmp")
    return plan


@pytest.fixture(scope="module")
def files(plan: RootPlan, host_index: DpkgIndex) -> list[SbomFile]:
    return sbom_files(plan.entries.values(), host_index, RootFS())


def test_every_regular_file_hashed(plan: RootPlan, files: list[SbomFile]) -> None:
    expected = {entry.path: entry for entry in plan.files}
    assert [file.path for file in files] == sorted(expected)
    assert LIBC in expected and real_binary() in expected and "/etc/passwd" in expected
    for file in files:
        entry = expected[file.path]
        data = entry.data if entry.data is not None else Path(entry.source or "").read_bytes()
        assert file.sha256 == hashlib.sha256(data).hexdigest(), file.path
        assert file.sha1 == hashlib.sha1(data).hexdigest(), file.path
        assert file.size == len(data)


@has_dpkg
def test_packages_of_files(files: list[SbomFile]) -> None:
    by_path = {file.path: file for file in files}
    libc = by_path[LIBC].package
    assert libc is not None and (libc.name, libc.version) == ("libc6", dpkg_version("libc6"))
    assert by_path["/etc/passwd"].package is None
    binary = by_path[real_binary()].package
    assert binary is not None and binary.name == (
        "curl" if "curl" in real_binary() else "coreutils"
    )
    assert all(file.package is not None for file in files if file.path != "/etc/passwd")


@has_dpkg
def test_spdx_document(files: list[SbomFile], spdx_validator: Draft7Validator) -> None:
    raw = render_spdx(files, "curl:7.88", DIGEST, 0)
    assert raw.endswith(b"}\n")
    document = json.loads(raw)
    assert_valid(spdx_validator, document)
    assert document["spdxVersion"] == "SPDX-2.3"
    assert document["dataLicense"] == "CC0-1.0"
    assert (
        document["documentNamespace"] == f"https://scratchpack.invalid/spdx/curl-7.88-{'ab' * 32}"
    )
    assert document["creationInfo"] == {
        "created": "1970-01-01T00:00:00Z",
        "creators": [f"Tool: scratchpack-{__version__}"],
    }
    packages = {p["SPDXID"]: p for p in document["packages"]}
    image = packages["SPDXRef-Image"]
    assert (image["name"], image["versionInfo"]) == ("curl:7.88", DIGEST)
    libc6 = next(p for p in packages.values() if p["name"] == "libc6")
    version = dpkg_version("libc6")
    assert libc6["versionInfo"] == version
    assert libc6["externalRefs"] == [
        {
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": f"pkg:deb/debian/libc6@{version}?arch=amd64&distro={distro()}",
        }
    ]
    spdx_files = {f["fileName"]: f for f in document["files"]}
    assert set(spdx_files) == {"." + file.path for file in files}
    libc_file = spdx_files["." + LIBC]
    by_path = {file.path: file for file in files}
    assert {c["algorithm"]: c["checksumValue"] for c in libc_file["checksums"]} == {
        "SHA1": by_path[LIBC].sha1,
        "SHA256": by_path[LIBC].sha256,
    }
    ids = [element["SPDXID"] for element in [*document["packages"], *document["files"]]]
    assert len(ids) == len(set(ids))
    relations = {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
        for r in document["relationships"]
    }
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image") in relations
    assert ("SPDXRef-Image", "CONTAINS", libc6["SPDXID"]) in relations
    assert (libc6["SPDXID"], "CONTAINS", libc_file["SPDXID"]) in relations
    assert ("SPDXRef-Image", "CONTAINS", spdx_files["./etc/passwd"]["SPDXID"]) in relations
    # Each file is contained exactly once, each package by the image.
    contained = [r[2] for r in relations if r[1] == "CONTAINS"]
    assert sorted(contained) == sorted(i for i in ids if i != "SPDXRef-Image")


@has_dpkg
def test_cyclonedx_document(files: list[SbomFile], cyclonedx_validator: Draft7Validator) -> None:
    raw = render_cyclonedx(files, "curl:7.88", DIGEST, 1_700_000_000)
    document = json.loads(raw)
    assert_valid(cyclonedx_validator, document)
    assert (document["bomFormat"], document["specVersion"], document["version"]) == (
        "CycloneDX",
        "1.5",
        1,
    )
    assert document["$schema"] == "http://cyclonedx.org/schema/bom-1.5.schema.json"
    assert document["serialNumber"].startswith("urn:uuid:")
    metadata = document["metadata"]
    assert metadata["timestamp"] == "2023-11-14T22:13:20Z"
    assert metadata["tools"] == {
        "components": [{"type": "application", "name": "scratchpack", "version": __version__}]
    }
    assert metadata["component"]["type"] == "container"
    assert metadata["component"]["name"] == "curl:7.88"
    version = dpkg_version("libc6")
    purl = f"pkg:deb/debian/libc6@{version}?arch=amd64&distro={distro()}"
    libraries = {c["bom-ref"]: c for c in document["components"] if c["type"] == "library"}
    libc6 = libraries[purl]
    assert (libc6["name"], libc6["version"], libc6["purl"]) == ("libc6", version, purl)
    nested = {c["name"]: c for c in libc6["components"]}
    assert LIBC in nested
    by_path = {file.path: file for file in files}
    assert nested[LIBC]["hashes"] == [
        {"alg": "SHA-1", "content": by_path[LIBC].sha1},
        {"alg": "SHA-256", "content": by_path[LIBC].sha256},
    ]
    top_files = [c["name"] for c in document["components"] if c["type"] == "file"]
    assert top_files == ["/etc/passwd"]
    every_file = top_files + [f["name"] for c in libraries.values() for f in c["components"]]
    assert sorted(every_file) == [file.path for file in files]
    refs = [c["bom-ref"] for c in document["components"]] + [
        f["bom-ref"] for c in libraries.values() for f in c["components"]
    ]
    assert len(refs) == len(set(refs))


@pytest.mark.parametrize("fmt", ["spdx", "cyclonedx"])
def test_deterministic(plan: RootPlan, host_index: DpkgIndex, fmt: str) -> None:
    entries = list(plan.entries.values())
    first = render(fmt, sbom_files(entries, host_index, RootFS()), "img", DIGEST, 0)
    random.Random(7).shuffle(entries)
    second = render(fmt, sbom_files(entries, host_index, RootFS()), "img", DIGEST, 0)
    assert first == second
    # The namespace / serial number follow the digest; the timestamp follows the epoch.
    files = sbom_files(entries, host_index, RootFS())
    other = render(fmt, files, "img", "sha256:" + "cd" * 32, 0)
    assert other != first
    later = json.loads(render(fmt, files, "img", DIGEST, 86400))
    stamp = later["creationInfo"]["created"] if fmt == "spdx" else later["metadata"]["timestamp"]
    assert stamp == "1970-01-02T00:00:00Z"


def test_no_digest_still_deterministic(spdx_validator: Draft7Validator) -> None:
    files = [
        SbomFile("/b", "0" * 64, "1" * 40, 1, None),
        SbomFile("/a_b", "2" * 64, "3" * 40, 2, None),
        SbomFile("/a-b", "4" * 64, "5" * 40, 3, None),
    ]
    one = render_spdx(files, "x/y:z", "", 5)
    assert one == render_spdx(list(reversed(files)), "x/y:z", "", 5)
    document = json.loads(one)
    assert_valid(spdx_validator, document)
    assert "versionInfo" not in document["packages"][0]
    ids = [f["SPDXID"] for f in document["files"]]
    assert len(set(ids)) == 3  # /a_b and /a-b would share SPDXRef-File-a-b
    assert "SPDXRef-File-b" in ids


def test_generated_entries_only() -> None:
    entries = [
        Entry("/etc", EntryKind.DIR, 0o755, Reason.ESSENTIAL, "users"),
        Entry("/etc/group", EntryKind.FILE, 0o644, Reason.ESSENTIAL, "users", data=b"root:x:0:\n"),
        Entry("/lib", EntryKind.SYMLINK, 0o777, Reason.LIBRARY, target="usr/lib"),
    ]
    files = sbom_files(entries, DpkgIndex(RootFS()), RootFS())
    assert files == [
        SbomFile(
            "/etc/group",
            hashlib.sha256(b"root:x:0:\n").hexdigest(),
            hashlib.sha1(b"root:x:0:\n").hexdigest(),
            10,
            None,
        )
    ]


def test_validators_are_not_vacuous(
    spdx_validator: Draft7Validator, cyclonedx_validator: Draft7Validator
) -> None:
    files = [SbomFile("/etc/passwd", "0" * 64, "1" * 40, 1, None)]
    spdx = json.loads(render_spdx(files, "img", DIGEST, 0))
    del spdx["files"][0]["checksums"]
    assert not spdx_validator.is_valid(spdx)
    bom = json.loads(render_cyclonedx(files, "img", DIGEST, 0))
    assert cyclonedx_validator.is_valid(bom)
    # Licence ids resolve through the $ref to spdx.SNAPSHOT.schema.json, offline.
    bom["metadata"]["component"]["licenses"] = [{"license": {"id": "MIT"}}]
    assert cyclonedx_validator.is_valid(bom)
    bom["metadata"]["component"]["licenses"] = [{"license": {"id": "No-Such-Licence"}}]
    assert not cyclonedx_validator.is_valid(bom)
    bom["metadata"]["component"].pop("licenses")
    bom["components"][0]["hashes"][0]["alg"] = "SHA-0"
    assert not cyclonedx_validator.is_valid(bom)
