"""``build --package``: images from real Debian packages, for two architectures, locked.

The packages come from the Debian mirror apt uses on this machine, through
scratchpack's private apt state (cached in ``$SCRATCHPACK_CACHE``, here
``/var/cache/scratchpack-tests/packages``). Each platform's image is unpacked
and its entrypoint run from that root: amd64 in a chroot, arm64 under
``qemu-aarch64-static -L ROOT`` (Debian's qemu-user-static). Nothing here needs
an engine but the nginx test, which builds in one and talks HTTP to it.

When the mirror cannot be reached the tests skip, or fail with
``SCRATCHPACK_REQUIRE_ENGINE=1``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.conftest import unavailable
from tests.tarcompat import extract_all

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))
QEMU = "/usr/bin/qemu-aarch64-static"


def scratchpack(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command with the suite's package cache, from the repository's top unless ``cwd``."""
    env = {"SCRATCHPACK_CACHE": str(CACHE / "packages")}
    return cli.scratchpack(*args, cwd=cwd or REPO_ROOT, env=env, timeout=900)


def built(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if proc.returncode != 0 and "apt could not fetch the package lists" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return layout / "blobs" / algorithm / hexdigest


def platform_roots(layout: Path, into: Path) -> dict[str, Path]:
    """Each platform's image of an index layout, its layers extracted into a directory."""
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    index = json.loads(blob(layout, top["digest"]).read_text())
    roots: dict[str, Path] = {}
    for entry in index["manifests"]:
        name = entry["platform"]["architecture"]
        manifest = json.loads(blob(layout, entry["digest"]).read_text())
        root = into / name
        root.mkdir(parents=True)
        for layer in manifest["layers"]:
            with tarfile.open(blob(layout, layer["digest"])) as tar:
                extract_all(tar, root)
        roots[name] = root
    return roots


@pytest.fixture(scope="module")
def curl_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict]]:
    """curl for amd64 and arm64 as one OCI layout, with the lock it wrote."""
    work = tmp_path_factory.mktemp("packages")
    lock = work / "curl.lock"
    report = built(
        scratchpack(
            "build", "--package", "curl", "--platform", "linux/amd64,linux/arm64",
            "-t", "scratchpack-test/curl-packages:1", "-o", str(work / "index"),
            "--lock", str(lock), "--json",
        )
    )  # fmt: skip
    yield work, lock, report


def test_curl_for_two_platforms_runs_from_each_platforms_root(curl_index, tmp_path: Path) -> None:
    work, _lock, report = curl_index
    assert [item["platform"] for item in report["platforms"]] == ["linux/amd64", "linux/arm64/v8"]
    roots = platform_roots(work / "index", tmp_path)
    assert set(roots) == {"amd64", "arm64"}
    for name, root in roots.items():
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        closure = scratchpack("deps", "--root", str(root), "/usr/bin/curl", "--json")
        assert closure.returncode == 0, closure.stderr
        files = [lib["path"] for lib in json.loads(closure.stdout)[0]["libraries"]]
        closure_size = sum((root / path.lstrip("/")).resolve().stat().st_size for path in files)
        closure_size += (root / "usr/bin/curl").stat().st_size
        print(f"\ncurl {name}: image {size / 1e6:.2f} MB, closure {closure_size / 1e6:.2f} MB")
    if os.geteuid() != 0:
        unavailable("running the amd64 root in a chroot needs root")
    native = subprocess.run(
        ["chroot", str(roots["amd64"]), "/usr/bin/curl", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert native.returncode == 0, native.stderr
    assert native.stdout.startswith("curl 7.") and "x86_64-pc-linux-gnu" in native.stdout
    if not os.path.exists(QEMU):
        unavailable(f"{QEMU} is missing (Debian's qemu-user-static; tests/run.sh installs it)")
    arm = subprocess.run(
        [QEMU, "-L", str(roots["arm64"]), str(roots["arm64"] / "usr/bin/curl"), "--version"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert arm.returncode == 0, arm.stderr
    assert arm.stdout.startswith("curl 7.") and "aarch64-unknown-linux-gnu" in arm.stdout


def test_the_images_name_their_packages_for_scanners(curl_index, tmp_path: Path) -> None:
    work, _lock, _report = curl_index
    root = platform_roots(work / "index", tmp_path)["arm64"]
    status = (root / "var/lib/dpkg/status.d/curl").read_text()
    assert "Package: curl\n" in status and "Architecture: arm64\n" in status
    assert (root / "var/lib/dpkg/status.d/libc6").is_file()
    assert not (root / "usr/share/doc").exists()  # docs are left out
    assert "ID=debian" in (root / "usr/lib/os-release").read_text()


def test_a_lock_gives_the_same_index_again_and_stays_as_it_was(curl_index) -> None:
    work, lock, report = curl_index
    before = lock.read_bytes()
    locked = json.loads(before)
    assert set(locked["platforms"]) == {"linux/amd64", "linux/arm64/v8"}
    assert any(p["name"] == "curl" for p in locked["platforms"]["linux/arm64/v8"]["packages"])
    again = built(
        scratchpack(
            "build", "--package", "curl", "--platform", "linux/amd64,linux/arm64",
            "-t", "scratchpack-test/curl-packages:1", "-o", str(work / "again"),
            "--lock", str(lock), "--json",
        )
    )  # fmt: skip
    assert again["index_digest"] == report["index_digest"]
    assert lock.read_bytes() == before


def test_the_same_build_from_scratchpack_yaml_equals_the_flags(curl_index, tmp_path: Path) -> None:
    _work, lock, report = curl_index
    (tmp_path / "scratchpack.yaml").write_text(
        "tag: scratchpack-test/curl-packages:1\n"
        "package: [curl]\n"
        "platform: [linux/amd64, linux/arm64]\n"
        f"lock: {lock}\n"
        "output: from-file\n"
    )
    from_file = built(scratchpack("build", "--json", cwd=tmp_path))
    assert from_file["index_digest"] == report["index_digest"]
    assert (tmp_path / "from-file" / "index.json").is_file()


def test_package_errors_are_one_line(curl_index, tmp_path: Path) -> None:
    _work, lock, _report = curl_index
    proc = scratchpack(
        "build", "--package", "no-such-package-here", "-t", "x:1", "-o", str(tmp_path / "a.tar")
    )
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no-such-package-here" in proc.stderr and "Traceback" not in proc.stderr
    proc = scratchpack(
        "build",
        "--package",
        "wget",
        "--lock",
        str(lock),
        "-t",
        "x:1",
        "-o",
        str(tmp_path / "b.tar"),
    )
    assert proc.returncode == 2 and "was made for" in proc.stderr, proc.stderr
    (tmp_path / "bad.yaml").write_text("tag: x:1\npackage: curl\n")
    proc = scratchpack("build", "-f", str(tmp_path / "bad.yaml"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"scratchpack: {tmp_path / 'bad.yaml'}:2: package is repeatable: give a list of values"
    )
    assert not list(tmp_path.glob("*.tar"))


@pytest.mark.engine
def test_nginx_light_from_packages_answers_http(docker_client: Any) -> None:
    tag = f"scratchpack-test/nginx-packages:{uuid.uuid4().hex[:8]}"
    built(
        scratchpack(
            "build", "--package", "nginx-light", "-t", tag, "--engine", "docker", "--json",
            "--include", "/etc/nginx/sites-available/default:/etc/nginx/sites-enabled/default",
            "--include", "/usr/share/nginx/html/index.html:/var/www/html/index.html",
            "--cmd", "-g 'daemon off;'", "--expose", "80",
        )
    )  # fmt: skip
    container = docker_client.containers.create(tag, ports={"80/tcp": ("127.0.0.1", None)})
    try:
        container.start()
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"].get("80/tcp") or []
            if ports:
                try:
                    url = f"http://127.0.0.1:{ports[0]['HostPort']}/"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        text = response.read().decode()
                    break
                except (urllib.error.URLError, ConnectionError):
                    pass
            time.sleep(0.3)
        assert "Welcome to nginx" in text, container.logs().decode()
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


def _archive_owners(container: Any, path: str) -> dict[str, tuple[int, int, int]]:
    """``path`` of a (created, never started) container: each member's uid, gid and mode."""
    stream, _ = container.get_archive(path)
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m.uid, m.gid, m.mode & 0o7777) for m in tar.getmembers()}


@pytest.mark.engine
def test_lighttpd_owners_are_debians_with_systemd_among_its_packages(docker_client: Any) -> None:
    """Issue 22, finding 3: systemd's sysusers file declares base-passwd's accounts again;
    they are not the packages', so /usr/sbin stays root's (it was uid 1's), and the
    owners the .deb records (www-data's /var/log/lighttpd) are the image's."""
    tag = f"scratchpack-test/lighttpd-owners:{uuid.uuid4().hex[:8]}"
    report = built(
        scratchpack(
            "build", "--package", "lighttpd", "/usr/sbin/lighttpd",
            "-t", tag, "--engine", "docker", "--json",
        )
    )  # fmt: skip
    assert report
    container = docker_client.containers.create(tag)
    try:
        sbin = _archive_owners(container, "/usr/sbin")
        assert sbin["sbin"][:2] == (0, 0), sbin["sbin"]
        assert sbin["sbin/lighttpd"][:2] == (0, 0)
        logs = _archive_owners(container, "/var/log/lighttpd")
        assert logs["lighttpd"] == (33, 33, 0o750), logs
        www = _archive_owners(container, "/var/www")
        assert www["www"][:2] == (0, 0), www["www"]
        stream, _ = container.get_archive("/etc/passwd")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("passwd")
            assert member is not None
            passwd = member.read().decode()
        assert re.search(r"^www-data:[x*]:33:33:", passwd, re.MULTILINE), passwd
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


def test_a_link_a_package_ships_to_nothing_stays_a_link(tmp_path: Path) -> None:
    """nginx lists /usr/share/nginx/modules -> ../../lib/nginx/modules, whose target only a
    module package brings: the build kept refusing the package ("not found")."""
    report = built(
        scratchpack(
            "build", "--package", "nginx", "/usr/sbin/nginx", "-t", "scratchpack-test/nginx:1",
            "-o", str(tmp_path / "nginx.tar"), "--json",
        )
    )  # fmt: skip
    assert report["output"] == str(tmp_path / "nginx.tar")
    links = {}
    with tarfile.open(tmp_path / "nginx.tar") as archive:
        for member in archive.getmembers():
            stream = archive.extractfile(member) if member.isfile() else None
            try:  # every layer, whatever the archive's layout names it
                with tarfile.open(fileobj=io.BytesIO(stream.read() if stream else b"")) as layer:
                    links.update({m.name: m.linkname for m in layer if m.issym()})
            except tarfile.TarError:
                continue
    assert links.get("usr/share/nginx/modules") == "../../lib/nginx/modules"


def _config_and_names(archive_path: Path) -> tuple[dict[str, Any], set[str]]:
    """The image configuration of a ``-o`` archive, and the paths its layers hold."""
    with tarfile.open(archive_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        names: set[str] = set()
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as members:
                names.update(member.name for member in members)
    return config["config"], names


@pytest.mark.parametrize(
    ("package", "entrypoint", "also"),
    [
        ("haproxy", "/usr/sbin/haproxy", "usr/bin/halog"),
        ("python3", "/usr/bin/python3", "usr/lib/python3.11/encodings/__init__.py"),
    ],
)
def test_the_program_named_like_the_package_runs(
    tmp_path: Path, package: str, entrypoint: str, also: str
) -> None:
    """haproxy stopped with "put 3 programs on PATH (...); choose one"; python3 offered
    pdb3, pydoc3 and pygettext3 but not its python3, a link python3-minimal ships."""
    output = tmp_path / f"{package}.tar"
    report = built(
        scratchpack(
            "build", "--package", package, "-t", f"scratchpack-test/{package}:1",
            "-o", str(output), "--json",
        )
    )  # fmt: skip
    assert any(
        f"{entrypoint} is the entrypoint (named like the package)" in line
        for line in report["warnings"]
    ), report["warnings"]
    config, names = _config_and_names(output)
    assert config["Entrypoint"] == [entrypoint]
    assert also in names  # the other programs, the interpreter's library stay
