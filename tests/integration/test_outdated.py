"""``outdated`` through the real apt: a signed local repository holding a package at two
versions (the newer one's changelog names a CVE), and Debian's mirror for this machine's libssl3.

Most images are hand-made archives holding only what ``outdated`` reads: os-release and
``status.d`` records. Then real ones: curl built ``--package`` for amd64 and arm64 (each
platform against its own architecture's lists), and this machine's ``/usr/bin/curl`` built
with the built-in writer and in the engine. Skipped when Debian's mirror cannot be reached.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.debkit import Deb, Repository, signed_repository
from tests.imagekit import d, f, layer, pack, write_docker_archive, write_oci
from tests.integration.test_packages import built, scratchpack
from tests.unit.test_readers_platforms import Layout, on

PACKAGE = "scratchpack-test-patched"
CVE = "CVE-2026-12345"
OS_RELEASE = b"ID=debian\nVERSION_CODENAME=bookworm\n"


def _changelog(*versions: str) -> bytes:
    blocks = [
        f"{PACKAGE} ({version}) tests; urgency={'high' if version == '2.0-1' else 'low'}\n\n"
        f"  * {'Fix ' + CVE + '.' if version == '2.0-1' else 'First.'}\n\n"
        f" -- Tests <t@example.invalid>  Mon, 01 Jun 2026 00:00:00 +0000\n"
        for version in versions
    ]
    return gzip.compress("\n".join(blocks).encode(), mtime=0)


def _deb(version: str, *history: str, architecture: str = "amd64") -> Deb:
    doc = f"usr/share/doc/{PACKAGE}/changelog.Debian.gz"
    files = {doc: _changelog(*history)}
    return Deb(PACKAGE, version, architecture, files=files, control={"Source": "patched"})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    """1.0-1 and 2.0-1 for amd64; for arm64 only 1.0-1 (there it is current)."""
    debs = [_deb("1.0-1", "1.0-1"), _deb("2.0-1", "2.0-1", "1.0-1"),
            _deb("1.0-1", "1.0-1", architecture="arm64")]  # fmt: skip
    return signed_repository(tmp_path_factory.mktemp("repo") / "top", debs)


def _root(records: dict[str, str], architecture: str = "amd64") -> bytes:
    """A layer holding only os-release and these status.d records."""
    dirs = [d("usr"), d("usr/lib"), d("var"), d("var/lib"), d("var/lib/dpkg")]
    files = [f("usr/lib/os-release", OS_RELEASE), d("var/lib/dpkg/status.d")]
    for name, version in records.items():
        record = f"Package: {name}\nVersion: {version}\nArchitecture: {architecture}\n"
        files.append(f(f"var/lib/dpkg/status.d/{name}", record.encode()))
    return layer(*dirs, *files)


def _image(path: Path, records: dict[str, str], oci: bool = False) -> Path:
    """An image holding only os-release and these status.d records."""
    (write_oci if oci else write_docker_archive)(path, [_root(records)])
    return path


def _outdated(*args: str) -> subprocess.CompletedProcess[str]:
    proc = scratchpack("outdated", *args)
    if proc.returncode not in (0, 7) and "apt could not fetch" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    return proc


def test_an_older_package_is_outdated_with_its_cve(repo: Repository, tmp_path: Path) -> None:
    image = _image(tmp_path / "old.tar", {PACKAGE: "1.0-1"})
    proc = _outdated(str(image), "--repository", repo.line, "--json")
    assert proc.returncode == 7, proc.stderr
    document = json.loads(proc.stdout)
    assert document["image"] == str(image) and document["outdated"] == 1
    (platform,) = document["platforms"]
    assert platform["platform"] == "linux/amd64" and platform["suite"] == "bookworm"
    assert {"uri": repo.uri, "suite": "tests"} in [
        {"uri": a["uri"], "suite": a["suite"]} for a in platform["archives"]
    ]
    (update,) = platform["outdated"]
    assert update == {
        "package": PACKAGE, "architecture": "amd64", "installed": "1.0-1",
        "state": "outdated", "source": "patched", "candidate": "2.0-1", "from": "tests",
        "archives": update["archives"],
        "changelog": {"state": "read", "note": "",
                      "entries": [{"version": "2.0-1", "urgency": "high", "cves": [CVE]}]},
        "cves": [CVE],
    }  # fmt: skip
    text = _outdated(str(image), "--repository", repo.line)
    assert text.returncode == 7
    assert f"{PACKAGE} 1.0-1 -> 2.0-1 (source patched, from tests)" in text.stdout
    assert f"2.0-1 urgency high: {CVE}" in text.stdout


def test_a_current_image_exits_0(repo: Repository, tmp_path: Path) -> None:
    layout = _image(tmp_path / "layout", {PACKAGE: "2.0-1"}, oci=True)
    proc = _outdated(str(layout), "--repository", repo.line, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outdated"] == 0


def test_a_lock_is_compared_like_an_image(repo: Repository, tmp_path: Path) -> None:
    pool = f"pool/main/{PACKAGE}_1.0-1_amd64.deb"
    ref = {"name": PACKAGE, "version": "1.0-1", "architecture": "amd64",
           "filename": pool, "size": 1, "sha256": "0" * 64}  # fmt: skip
    lock = {"lockVersion": 1, "suite": "bookworm", "requests": [PACKAGE],
            "platforms": {"linux/amd64": {"architecture": "amd64", "packages": [ref]}}}  # fmt: skip
    (tmp_path / "x.lock").write_text(json.dumps(lock))
    proc = _outdated("--lock", str(tmp_path / "x.lock"), "--repository", repo.line, "--json")
    assert proc.returncode == 7, proc.stderr
    assert json.loads(proc.stdout)["platforms"][0]["outdated"][0]["candidate"] == "2.0-1"


def test_a_foreign_image_is_one_line(tmp_path: Path) -> None:
    image = tmp_path / "alpine.tar"
    write_docker_archive(image, [layer(d("etc"), f("etc/os-release", b"ID=alpine\n"))])
    proc = scratchpack("outdated", str(image))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_this_machines_libssl3_is_outdated_against_bookworm_security(tmp_path: Path) -> None:
    """Against the real mirror: the host's libssl3 (older here than bookworm-security's)."""
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libssl3"], capture_output=True, text=True
    )
    if query.returncode != 0:
        unavailable("this machine has no libssl3")
    image = _image(tmp_path / "curl.tar", {"libssl3": query.stdout.strip()})
    proc = _outdated(str(image), "--json")
    document = json.loads(proc.stdout) if proc.stdout else {}
    outdated = {u["package"]: u for u in document["platforms"][0]["outdated"]}
    if proc.returncode == 0:
        unavailable(f"this machine's libssl3 {query.stdout} is as new as bookworm-security's")
    assert proc.returncode == 7, proc.stderr
    update = outdated["libssl3"]
    assert update["from"] == "bookworm-security" and update["source"] == "openssl"
    assert update["changelog"]["state"] == "read"
    assert update["cves"] and all(cve.startswith("CVE-") for cve in update["cves"])


# -- every platform of an index ---------------------------------------------------------------


def test_each_platform_is_compared_with_its_own_architectures_lists(
    repo: Repository, tmp_path: Path
) -> None:
    """The repository offers 2.0-1 for amd64 only: amd64's image is outdated, arm64's not."""
    out = Layout(tmp_path / "layout")
    manifests = [
        on(out.manifest(arch, _root({PACKAGE: "1.0-1"}, arch)), arch) for arch in ("amd64", "arm64")
    ]
    layout = out.index(manifests)
    for image in (layout, pack(layout, tmp_path / "oci.tar")):
        proc = _outdated(str(image), "--repository", repo.line, "--json")
        assert proc.returncode == 7, proc.stderr
        platforms = json.loads(proc.stdout)["platforms"]
        assert [(p["platform"], [u["package"] for u in p["outdated"]]) for p in platforms] == [
            ("linux/amd64", [PACKAGE]), ("linux/arm64", []),
        ]  # fmt: skip
        assert platforms[0]["outdated"][0]["candidate"] == "2.0-1"


@pytest.fixture(scope="module")
def curl_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """curl built from Debian's packages for amd64 and arm64, as one OCI layout."""
    work = tmp_path_factory.mktemp("outdated-index")
    built(
        scratchpack(
            "build", "--package", "curl", "--platform", "linux/amd64,linux/arm64",
            "-t", f"scratchpack-test/outdated-{uuid.uuid4().hex[:12]}:1",
            "-o", str(work / "index"), "--json",
        )
    )  # fmt: skip
    return work / "index"


def test_a_package_image_of_two_platforms_is_compared_per_platform(
    curl_index: Path, tmp_path: Path
) -> None:
    for image in (curl_index, pack(curl_index, tmp_path / "curl-oci.tar")):
        proc = _outdated(str(image), "--json")
        assert proc.returncode in (0, 7), proc.stderr  # 7: the mirror moved since the build
        platforms = {p["platform"]: p for p in json.loads(proc.stdout)["platforms"]}
        assert set(platforms) == {"linux/amd64", "linux/arm64/v8"}
        for name, platform in platforms.items():
            architecture = name.split("/")[1]
            assert platform["suite"] == "bookworm" and platform["packages"] >= 10
            assert platform["unknown"] == [] and platform["newer"] == []
            assert {u["architecture"] for u in platform["outdated"]} <= {architecture, "all"}
        assert platforms["linux/amd64"]["packages"] == platforms["linux/arm64/v8"]["packages"]


# -- this machine's curl ------------------------------------------------------------------------


def _host_libssl3() -> str:
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libssl3"], capture_output=True, text=True
    )
    if query.returncode != 0:
        unavailable("this machine has no libssl3")
    return query.stdout.strip()


def _libssl3_update(proc: subprocess.CompletedProcess[str], installed: str) -> dict[str, Any]:
    """The libssl3 entry of an ``outdated --json`` run on an image of this machine's curl."""
    if proc.returncode == 0:
        unavailable(f"this machine's libssl3 {installed} is as new as bookworm-security's")
    assert proc.returncode == 7, proc.stderr
    (platform,) = json.loads(proc.stdout)["platforms"]
    updates = {u["package"]: u for u in platform["outdated"]}
    assert "libssl3" in updates, "the image holds no libssl3 record (pending: host records)"
    update = updates["libssl3"]
    assert update["installed"] == installed and update["from"] == "bookworm-security"
    assert update["source"] == "openssl" and update["changelog"]["state"] == "read"
    assert update["cves"] and all(cve.startswith("CVE-") for cve in update["cves"])
    return update


def test_outdated_of_this_machines_curl_names_libssl3(tmp_path: Path) -> None:
    installed = _host_libssl3()
    image = tmp_path / "curl.tar"
    tag = f"scratchpack-test/outdated-curl-{uuid.uuid4().hex[:12]}:1"
    proc = scratchpack("build", "/usr/bin/curl", "--engine", "none", "-t", tag, "-o", str(image))
    assert proc.returncode == 0, proc.stderr
    update = _libssl3_update(_outdated(str(image), "--json"), installed)
    started = time.monotonic()  # the lists and changelogs fetched once: a warm run
    text = _outdated(str(image))
    print(f"\noutdated of this machine's curl, warm: {time.monotonic() - started:.2f} s")
    assert text.returncode == 7, text.stderr
    line = f"libssl3 {installed} -> {update['candidate']} (source openssl, from bookworm-security)"
    assert line in text.stdout
    assert update["cves"][0] in text.stdout


@pytest.fixture
def engine_curl(docker_client: Any) -> Iterator[str]:
    """This machine's curl built in the engine under a tag of its own, removed after."""
    tag = f"scratchpack-test/outdated-engine-{uuid.uuid4().hex[:12]}:1"
    try:
        yield tag
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)


@pytest.mark.engine
def test_outdated_of_an_engine_image_of_this_machines_curl(engine_curl: str) -> None:
    installed = _host_libssl3()
    proc = scratchpack("build", "/usr/bin/curl", "--engine", "docker", "-t", engine_curl)
    assert proc.returncode == 0, proc.stderr
    document = _outdated(engine_curl, "--json")
    _libssl3_update(document, installed)
    assert json.loads(document.stdout)["image"] == engine_curl
