"""Package records in real images (issue 23): what a scanner reads is what the image holds.

Three images, each written as an archive and read member by member, as Trivy and
Grype read them (reference.md §10): ``etc/debian_version``, one
``var/lib/dpkg/status.d/NAME`` paragraph per package and ``NAME.md5sums``:

- this machine's curl (``build /usr/bin/curl``, the built-in writer): the host's
  packages at the host's versions (``dpkg-query``), exactly those that own the
  image's files (``dpkg -S``), every md5sums line matching the image's bytes;
- ``build --package curl`` from the suite's package cache: the same checks
  against the packages' own md5sums;
- a shrink of the debootstrap image of curl (tests/debian_images.py), whose
  source has nginx and python3 installed too: only the kept packages' records.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.conftest import unavailable
from tests.debian_images import debian_curl_image  # noqa: F401

STATUS_D = "var/lib/dpkg/status.d/"
PACKAGE_CACHE = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))


@dataclass(frozen=True)
class ImageFiles:
    """An image archive's members after its layers are applied: path -> header, bytes."""

    members: dict[str, tuple[tarfile.TarInfo, bytes]]

    def read(self, path: str, depth: int = 0) -> bytes:
        """The bytes at ``path``, its links followed inside the image (parents too)."""
        assert depth < 40, f"{path}: a link loop"
        parts = path.strip("/").split("/")
        for number in range(1, len(parts) + 1):
            prefix = "/".join(parts[:number])
            found = self.members.get(prefix)
            if found is not None and found[0].issym():
                target = posixpath.join(posixpath.dirname(prefix), found[0].linkname)
                rest = "/".join(parts[number:])
                return self.read(
                    posixpath.normpath(f"{target}/{rest}" if rest else target), depth + 1
                )
        info, data = self.members[path.strip("/")]
        assert info.isfile(), path
        return data

    def records(self) -> dict[str, dict[str, str]]:
        """status.d's paragraphs, by file name, each one checked as one paragraph."""
        found = {}
        for path, (_, data) in self.members.items():
            name = path.removeprefix(STATUS_D)
            if path.startswith(STATUS_D) and name and not name.endswith(".md5sums"):
                text = data.decode()
                assert "\n\n" not in text.strip(), f"{name}: one paragraph"
                found[name] = {
                    line.partition(":")[0]: line.partition(":")[2].strip()
                    for line in text.splitlines()
                    if line[:1] not in (" ", "\t")
                }
        return found

    def md5sums(self, name: str) -> list[tuple[str, str]]:
        data = self.members.get(f"{STATUS_D}{name}.md5sums", (None, b""))[1]
        return [tuple(line.split("  ", 1)) for line in data.decode().splitlines()]  # type: ignore[misc]


def image_files(archive: Path) -> ImageFiles:
    members: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        for layer_name in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:  # type: ignore[arg-type]
                for member in layer:
                    stream = layer.extractfile(member) if member.isfile() else None
                    name = member.name.removeprefix("./").rstrip("/")
                    members[name] = (member, stream.read() if stream else b"")
    return ImageFiles(members)


def check_scanner_view(image: ImageFiles) -> dict[str, dict[str, str]]:
    """What Trivy needs (debian_version, installed paragraphs) and md5sums that hold."""
    assert image.read("etc/debian_version").strip()
    assert b"ID=debian" in image.read("etc/os-release")
    assert image.members["etc/os-release"][0].linkname == "../usr/lib/os-release"
    records = image.records()
    assert records, "no package declared"
    for name, fields in records.items():
        assert name == fields["Package"], "distroless's convention: the file is NAME"
        assert fields["Status"] == "install ok installed"
        assert fields["Version"] and fields["Architecture"]
        lines = image.md5sums(name)
        assert [path for _, path in lines] == sorted(path for _, path in lines)
        for digest, path in lines:
            assert hashlib.md5(image.read(path)).hexdigest() == digest, f"{name}: {path}"
    return records


def _tool(name: str) -> None:
    if shutil.which(name) is None:
        unavailable(f"{name} is not installed")


def _host_owners(image: ImageFiles) -> set[str]:
    """The host packages ``dpkg -S`` names for the image's copied files (both /usr spellings)."""
    paths = []
    for path, (info, _) in image.members.items():
        if info.isfile() and not path.startswith(("var/lib/dpkg/", "etc/")):
            paths += ["/" + path]
            if path.startswith("usr/"):
                paths.append("/" + path.removeprefix("usr/"))
    proc = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, check=False)
    return {
        line.split(":")[0]
        for line in proc.stdout.splitlines()
        if ": " in line and not line.startswith("diversion ")
    }


def test_this_machines_curl_declares_the_host_packages_it_holds(tmp_path: Path) -> None:
    _tool("dpkg-query")
    if not os.path.exists("/usr/bin/curl"):
        unavailable("/usr/bin/curl is not installed")
    archive = tmp_path / "x.tar"
    proc = cli.scratchpack(
        "build", "/usr/bin/curl", "-t", "records:curl", "-o", archive, "--json",
        cwd=tmp_path, env=cli.NO_ENGINE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    image = image_files(archive)
    records = check_scanner_view(image)
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "libssl3"], capture_output=True, text=True, check=True
    ).stdout
    assert records["libssl3"]["Version"] == version  # this machine's, whatever bookworm has
    assert records["libssl3"]["Source"] == "openssl"
    assert records["libssl3"]["Multi-Arch"] == "same"  # and still named libssl3
    assert "Conffiles" not in records.get("base-files", {})
    assert "usr/lib/x86_64-linux-gnu/libssl.so.3" in dict(
        (path, digest) for digest, path in image.md5sums("libssl3")
    )
    assert image.read("etc/debian_version") == Path("/etc/debian_version").read_bytes()
    assert image.read("usr/lib/os-release") == Path("/usr/lib/os-release").read_bytes()
    # Exactly the packages of its files (os-release and debian_version: base-files').
    assert set(records) == _host_owners(image) | {"base-files"}
    for absent in ("curl-doc", "libcurl4-openssl-dev", "dpkg", "apt"):
        assert absent not in records


def test_a_package_image_declares_its_packages_with_their_md5sums(tmp_path: Path) -> None:
    env = {"SCRATCHPACK_CACHE": str(PACKAGE_CACHE / "packages")}
    archive = tmp_path / "curl.tar"
    proc = cli.scratchpack(
        "build", "--package", "curl", "-t", "records:pkg", "-o", archive, "--json",
        cwd=REPO_ROOT, env=env, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0 and "apt could not fetch the package lists" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    image = image_files(archive)
    records = check_scanner_view(image)
    assert {"curl", "libcurl4", "libssl3", "libc6", "base-files"} <= set(records)
    assert "usr/bin/curl" in dict((path, md5) for md5, path in image.md5sums("curl"))
    assert records["libcurl4"]["Source"] == "curl"
    assert image.read("etc/debian_version").decode().strip()[:2].isdigit()
    # Every declared package holds a file of the image (none declared for nothing).
    for name in records:
        assert image.md5sums(name), f"{name} declared, but none of its files listed"


@pytest.mark.engine
def test_a_shrink_keeps_the_records_of_the_packages_it_keeps_only(
    docker_client,
    debian_curl_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    tag = f"scratchpack-test/records:{uuid.uuid4().hex[:8]}"
    archive = tmp_path / "thin.tar"
    proc = cli.scratchpack("shrink", debian_curl_image, "-t", tag, "-o", archive, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    image = image_files(archive)
    records = check_scanner_view(image)
    assert {"curl", "libcurl4", "libssl3", "libc6"} <= set(records)
    assert sorted(records) == report["records"]
    for absent in ("nginx-light", "python3", "python3.11-minimal", "apt", "dpkg", "bash"):
        assert absent not in records, f"{absent}: declared, but not kept"
    print(f"\nshrink of {debian_curl_image}: {len(records)} packages declared")
