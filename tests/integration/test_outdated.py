"""``outdated`` through the real apt: a signed local repository holding a package at two
versions (the newer one's changelog names a CVE), and Debian's mirror for this machine's libssl3.

The images are hand-made archives holding only what ``outdated`` reads: os-release and
``status.d`` records. Skipped when Debian's mirror cannot be reached.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.debkit import Deb, Repository, signed_repository
from tests.imagekit import d, f, layer, write_docker_archive, write_oci
from tests.integration.test_packages import scratchpack

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


def _deb(version: str, *history: str) -> Deb:
    doc = f"usr/share/doc/{PACKAGE}/changelog.Debian.gz"
    return Deb(PACKAGE, version, files={doc: _changelog(*history)}, control={"Source": "patched"})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    debs = [_deb("1.0-1", "1.0-1"), _deb("2.0-1", "2.0-1", "1.0-1")]
    return signed_repository(tmp_path_factory.mktemp("repo") / "top", debs)


def _image(path: Path, records: dict[str, str], oci: bool = False) -> Path:
    """An image holding only os-release and these status.d records."""
    dirs = [d("usr"), d("usr/lib"), d("var"), d("var/lib"), d("var/lib/dpkg")]
    files = [f("usr/lib/os-release", OS_RELEASE), d("var/lib/dpkg/status.d")]
    for name, version in records.items():
        record = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        files.append(f(f"var/lib/dpkg/status.d/{name}", record.encode()))
    (write_oci if oci else write_docker_archive)(path, [layer(*dirs, *files)])
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
