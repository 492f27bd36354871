"""``--layers packages``: a layer per Debian source package, shared between images.

Two ``--package`` images of one suite (curl and wget, built with different
``SOURCE_DATE_EPOCH``) written with ``-o`` must hold byte-identical blobs for the
packages they share; the image runs in the engine, loaded from its archive or
loaded by ``build`` itself; a build of this machine's curl is cut the same way. An
update of one package (a signed repository of the test's, ``tests/debkit.py``)
changes that package's layer and the records, nothing else. The packages come
from the suite's package cache (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.conftest import unavailable
from tests.debkit import Deb, File, signed_repository

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))


def build(*args: str, cwd: Path, epoch: str = "0", engine: bool = False) -> dict[str, Any]:
    env = {"SCRATCHPACK_CACHE": str(CACHE / "packages"), "SOURCE_DATE_EPOCH": epoch}
    if not engine:
        env.update(cli.NO_ENGINE)
    proc = cli.scratchpack("build", "--json", *args, cwd=cwd, env=env, timeout=900)
    if proc.returncode != 0 and "apt could not fetch the package lists" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """curl and wget of the host's suite, each as an archive of package layers."""
    work = tmp_path_factory.mktemp("layers")
    curl, wget = work / "curl.tar", work / "wget.tar"
    build(
        "--package", "curl", "--layers", "packages", "-t", "curl:layers", "-o", str(curl), cwd=work
    )
    build("--package", "wget", "--layers", "packages", "-t", "wget:layers", "-o", str(wget),
          cwd=work, epoch="1700000000")  # fmt: skip
    yield curl, wget


def layers(archive: Path) -> list[tuple[str, int, str, list[str]]]:
    """(digest, compressed size, history comment, paths) of each layer, in order."""
    with tarfile.open(archive) as tar:

        def document(digest: str) -> Any:
            member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return json.load(member)

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = document(index["manifests"][0]["digest"])
        config = document(manifest["config"]["digest"])
        comments = [entry["comment"] for entry in config["history"]]
        found = []
        for layer, comment in zip(manifest["layers"], comments, strict=True):
            blob = tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1])
            with tarfile.open(fileobj=blob, mode="r:gz") as inner:
                paths = [member.name for member in inner.getmembers()]
            found.append((layer["digest"], layer["size"], comment, paths))
        return found


def test_images_of_one_suite_share_their_common_packages_layers(
    two_images: tuple[Path, Path],
) -> None:
    curl, wget = (layers(archive) for archive in two_images)
    for image in (curl, wget):
        comments = [comment for _, _, comment, _ in image]
        assert comments[0] == "packages: glibc"  # the C library first
        assert comments[-2:] == ["package records", "application"]
        assert 3 < len(image) <= 20  # --max-layers' default
    by_comment = {comment: digest for digest, _, comment, _ in curl}
    shared = [comment for digest, _, comment, _ in wget if by_comment.get(comment) == digest]
    # Same digests, though built with another SOURCE_DATE_EPOCH: a package layer is its
    # packages' alone. Both need glibc, gnutls28 and nettle (through libcurl / wget).
    assert {"packages: glibc", "packages: gnutls28", "packages: nettle"} <= set(shared)
    assert "packages: curl" not in shared and "application" not in shared


def test_a_package_layer_holds_the_package_whole_but_its_docs(
    two_images: tuple[Path, Path],
) -> None:
    glibc = next(paths for _, _, comment, paths in layers(two_images[0]) if "glibc" in comment)
    # libc6's character sets: no closure asks for them, the package ships them.
    assert any("/gconv/" in path for path in glibc)
    assert not any(path.startswith("usr/share/doc/") for path in glibc)
    assert "lib/x86_64-linux-gnu/libc.so.6" in glibc and "lib" in glibc  # its directories too


@pytest.mark.engine
def test_the_layered_image_runs_in_the_engine(
    two_images: tuple[Path, Path], docker_client: Any, tmp_path: Path
) -> None:
    tag = f"scratchpack-test/layers:{uuid.uuid4().hex[:12]}"
    with open(two_images[1], "rb") as stream:
        docker_client.images.load(stream.read())
    loaded = "wget:layers"
    try:
        docker_client.images.get(loaded).tag(tag)
        assert _run(docker_client, tag, ["--version"]).startswith(b"GNU Wget")
    finally:
        docker_client.images.remove(tag, force=True)
        docker_client.images.remove(loaded, force=True)
    # Without -o, build loads the written layers into the engine itself.
    result = build("--package", "curl", "--layers", "packages", "-t", tag, cwd=tmp_path,
                   engine=True)  # fmt: skip
    try:
        assert result["loaded"] is True and len(result["diff_ids"]) > 3
        image = docker_client.images.get(tag)
        assert image.attrs["RootFS"]["Layers"] == result["diff_ids"]
        assert _run(docker_client, tag, ["--version"]).startswith(b"curl ")
    finally:
        docker_client.images.remove(tag, force=True)
    assert not list(tmp_path.glob("*.tar"))  # loaded, not written beside


def _run(docker_client: Any, tag: str, args: list[str]) -> bytes:
    container = docker_client.containers.create(tag, args, network_disabled=True)
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        return bytes(container.logs())
    finally:
        container.remove(force=True)


def test_a_build_of_this_machines_curl_is_cut_by_package(tmp_path: Path) -> None:
    if not Path("/usr/bin/curl").exists() or not Path("/var/lib/dpkg/status").exists():
        pytest.skip("needs this machine's curl from a Debian package")
    archive = tmp_path / "curl.tar"
    result = build("/usr/bin/curl", "--layers", "packages", "-t", "host:layers", "-o",
                   str(archive), cwd=tmp_path)  # fmt: skip
    found = layers(archive)
    comments = [comment for _, _, comment, _ in found]
    assert len(result["diff_ids"]) == len(found) <= 20
    assert comments[0] == "packages: glibc" and comments[-1] == "application"
    assert any(comment.startswith("packages: ") and "openssl" in comment for comment in comments)
    curl = next(paths for _, _, comment, paths in found if comment == "packages: curl")
    assert "usr/bin/curl" in curl


def test_an_update_of_one_package_changes_its_layer_and_the_records_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A repository's library at 1.0-1, then 1.0-2: the rebuilt image differs in that
    package's layer and the records layer; the program's, base-files' and the user's stay."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        unavailable(f"{busybox} is missing: apt-get install busybox-static")
    work = tmp_path_factory.mktemp("update")
    app = Deb(
        "scratchpack-test-layers-app",
        "1.0-1",
        files={"usr/bin/layers-app": File(busybox.read_bytes(), 0o755)},
        control={"Depends": "scratchpack-test-layers-data"},
    )
    archives = []
    for version in ("1.0-1", "1.0-2"):
        data = Deb(
            "scratchpack-test-layers-data",
            version,
            files={"usr/share/layers-data/version": File(version.encode())},
        )
        repo = signed_repository(work / version, [app, data], gnupg_home=work / "gnupg")
        archive = work / f"{version}.tar"
        build("--package", app.name, "--package", data.name, "--repository", repo.line,
              "--layers", "packages",
              "-t", f"layers-app:{version}", "-o", str(archive), cwd=work)  # fmt: skip
        archives.append({comment: digest for digest, _, comment, _ in layers(archive)})
    old, new = archives
    changed = sorted(comment for comment, digest in new.items() if old.get(comment) != digest)
    assert changed == ["package records", "packages: scratchpack-test-layers-data"]
    assert {"packages: scratchpack-test-layers-app", "packages: base-files", "application"} <= set(
        new
    )
