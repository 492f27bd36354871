"""``--repository``: a signed repository of the user's own, next to Debian's, through the real apt.

The repository is ``tests/debkit.signed_repository``'s: a package
``scratchpack-test-hello`` whose ``usr/bin/hello`` is the static busybox, served
on a ``file:`` URI and on ``http://127.0.0.1``. ``base-files`` and ``base-passwd`` still come from
Debian's mirror (skipped when it cannot be reached). Also here: a repository
signed by another key than the one named is refused by apt; a lock records its
repositories; a tampered lock makes apt write nothing.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.debkit import Deb, File, Repository, signed_repository
from tests.integration.test_packages import scratchpack

BUSYBOX = Path("/bin/busybox")


def ok(proc: subprocess.CompletedProcess[str]) -> dict:
    if proc.returncode != 0 and "deb.debian.org" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_line(proc: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert proc.returncode == status, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


PACKAGE = "scratchpack-test-hello"  # not a name of Debian's (Debian has a hello)
HELLO = Deb(PACKAGE, "1.0-1", files={"usr/bin/hello": File(b"", 0o755)})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    """The package in a signed ``file:`` repository; the key lives as long as the module."""
    if not BUSYBOX.is_file():
        unavailable(f"{BUSYBOX} is missing: apt-get install busybox-static")
    hello = Deb(PACKAGE, "1.0-1", files={"usr/bin/hello": File(BUSYBOX.read_bytes(), 0o755)})
    return signed_repository(tmp_path_factory.mktemp("repo") / "top", [hello])


@pytest.fixture(scope="module")
def built(repo: Repository, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """``build --package PACKAGE --repository LINE``: the image archive, its lock, the report."""
    work = tmp_path_factory.mktemp("built")
    report = ok(
        scratchpack(
            "build", "--package", PACKAGE, "--repository", repo.line,
            "-t", "scratchpack-test/hello:1", "-o", str(work / "hello.tar"),
            "--lock", str(work / "hello.lock"), "--json",
        )
    )  # fmt: skip
    return work / "hello.tar", work / "hello.lock", report


def image_files(archive: Path) -> dict[str, bytes]:
    """Every regular file of a ``docker save`` archive's layers, by path."""
    files: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            handle = outer.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            data = handle.read()
            if not data.startswith(b"\x1f\x8b") and not _is_tar(data):
                continue
            import io

            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                for item in layer.getmembers():
                    if item.isfile():
                        found = layer.extractfile(item)
                        files[item.name.lstrip("./")] = found.read() if found else b""
    return files


def _is_tar(data: bytes) -> bool:
    return len(data) > 262 and data[257:262] == b"ustar"


def test_a_package_of_the_users_repository_is_built(built, repo: Repository) -> None:
    archive, lock, _report = built
    files = image_files(archive)
    assert files["usr/bin/hello"] == BUSYBOX.read_bytes()  # ours, not Debian's hello
    document = json.loads(lock.read_text())
    assert document["repositories"] == [repo.line]
    names = {p["name"] for p in document["platforms"]["linux/amd64"]["packages"]}
    assert {PACKAGE, "base-files", "base-passwd"} <= names


def test_a_locked_build_needs_the_same_repositories(built, repo: Repository, tmp_path) -> None:
    _archive, lock, _report = built
    again = ok(
        scratchpack(
            "build", "--package", PACKAGE, "--repository", repo.line, "--lock", str(lock),
            "-t", "scratchpack-test/hello:1", "-o", str(tmp_path / "again.tar"), "--json",
        )
    )  # fmt: skip
    assert again["lock"] == str(lock)
    proc = scratchpack(
        "build", "--package", PACKAGE, "--lock", str(lock),
        "-t", "scratchpack-test/hello:1", "-o", str(tmp_path / "none.tar"),
    )  # fmt: skip
    assert "repositor" in one_line(proc)
    assert not (tmp_path / "none.tar").exists()


def test_a_repository_signed_by_another_key_is_refused(repo: Repository, tmp_path) -> None:
    other = signed_repository(tmp_path / "other", [HELLO], gnupg_home=tmp_path / "other.gnupg")
    line = f"deb [signed-by={repo.keyring}] {other.uri} {other.suite} {other.component}"
    proc = scratchpack("lock", "--package", PACKAGE, "--repository", line,
                       "--lock", str(tmp_path / "x.lock"))  # fmt: skip
    message = one_line(proc)
    assert other.uri in message and "sign" in message, message
    assert not (tmp_path / "x.lock").exists()


def test_a_repository_line_without_signed_by_is_refused(repo: Repository, tmp_path) -> None:
    line = f"deb {repo.uri} {repo.suite} {repo.component}"
    proc = scratchpack("lock", "--package", PACKAGE, "--repository", line,
                       "--lock", str(tmp_path / "x.lock"))  # fmt: skip
    assert "signed-by" in one_line(proc)


@pytest.fixture
def served(repo: Repository) -> Iterator[str]:
    """The repository on ``http://127.0.0.1:PORT``: its one-line source."""
    handler = functools.partial(_QuietHandler, directory=str(repo.top))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        yield f"deb [signed-by={repo.keyring}] {uri} {repo.suite} {repo.component}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_repository_on_loopback_http_is_locked(served: str, tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    ok(scratchpack("lock", "--package", PACKAGE, "--repository", served,
                   "--lock", str(lock), "--json"))  # fmt: skip
    document = json.loads(lock.read_text())
    assert document["repositories"] == [served]
    ours = [p for p in document["platforms"]["linux/amd64"]["packages"] if p["name"] == PACKAGE]
    assert ours and ours[0]["filename"] == f"pool/main/{PACKAGE}_1.0-1_amd64.deb"


@pytest.mark.parametrize("option", ["-oDir::Cache::pkgcache={}", "-oDir::Cache::Archives={}"])
def test_a_tampered_lock_makes_apt_write_nothing(built, tmp_path: Path, option: str) -> None:
    _archive, lock, _report = built
    document = json.loads(lock.read_text())
    target = tmp_path / "pwned"
    document["platforms"]["linux/amd64"]["packages"][0]["name"] = option.format(target)
    tampered = tmp_path / "tampered.lock"
    tampered.write_text(json.dumps(document))
    proc = scratchpack(
        "build", "--package", PACKAGE, "--repository", document["repositories"][0],
        "--lock", str(tampered), "-t", "x:1", "-o", str(tmp_path / "x.tar"),
    )  # fmt: skip
    assert "packages[0].name" in one_line(proc)
    assert not target.exists() and not list(tmp_path.glob("pwned*"))
