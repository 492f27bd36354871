"""Real, fat Debian 12 images for the ``scratchpack shrink`` tests, made offline-ish.

One root file system is built with ``debootstrap --variant=minbase`` from the Debian
mirror apt uses on this machine (``--include`` the packages of :data:`PACKAGES`), then
imported into the engine three times (``docker import`` semantics) with the
configuration of a typical image of each program:

- ``debian_nginx_image``: ``CMD ["nginx", "-g", "daemon off;"]``, ``EXPOSE 80``;
- ``debian_curl_image``: ``ENTRYPOINT ["curl"]``, ``CMD ["--version"]``;
- ``debian_python_image``: ``python3 -c`` printing sqlite's and OpenSSL's versions as JSON.

All three have ``Env`` ``PATH=...`` (``docker import`` leaves it empty) and share one
layer. Use them by importing the fixtures a test module needs (each stands alone)::

    from tests.debian_images import debian_nginx_image  # noqa: F401

    def test_shrink_nginx(debian_nginx_image: str):  # noqa: F811

Caching
-------
The root is kept between test runs as a tar in :data:`CACHE_DIR`
(``/var/cache/scratchpack-tests``, or ``$SCRATCHPACK_TEST_CACHE``), named after a key
that hashes the recipe (suite, variant, architecture, packages, post-processing
version): changing the recipe rebuilds it, and stale tars of other keys are deleted.
The tar is written to a temporary file and renamed, so an interrupted build never
leaves a broken cache; ``CACHE_DIR/.lock`` (``fcntl.flock``) keeps two pytest processes
from building or importing at the same time. The images are tagged with the same key
and reused when the engine already has them, so the import happens once per engine.
``CACHE_DIR/debs`` keeps the downloaded packages (``debootstrap --cache-dir``) so a
recipe change does not download everything again.

When debootstrap is missing, not run as root, or fails (no mirror, ...), the fixtures
skip — or fail with ``SCRATCHPACK_REQUIRE_ENGINE=1`` (:func:`tests.conftest.unavailable`).
The mirror is the first ``deb`` source of apt's configuration that serves
``bookworm``/``main``; ``$SCRATCHPACK_TEST_DEBIAN_MIRROR`` overrides it. Signatures are
always checked (the source's ``Signed-By`` keyring, else Debian's archive keyring).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unavailable

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("nginx-light", "curl", "python3")
# Bump when the post-processing of the root changes: it is part of the cache key.
RECIPE_VERSION = 1
CACHE_DIR = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))
MIRROR_ENV = "SCRATCHPACK_TEST_DEBIAN_MIRROR"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBOOTSTRAP_TIMEOUT = 15 * 60  # seconds; a healthy first build takes a few minutes
TAR_PREFIX = f"debian-root-{SUITE}-"

PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_PROGRAM = (
    "import json, sqlite3, ssl; "
    "print(json.dumps({'sqlite': sqlite3.sqlite_version, 'ssl': ssl.OPENSSL_VERSION}))"
)
IMAGE_CHANGES: dict[str, list[str]] = {
    "scratchpack-test/debian-nginx": [
        'CMD ["nginx", "-g", "daemon off;"]',
        "EXPOSE 80",
        PATH_ENV,
    ],
    "scratchpack-test/debian-curl": [
        'ENTRYPOINT ["curl"]',
        'CMD ["--version"]',
        PATH_ENV,
    ],
    "scratchpack-test/debian-python": [
        "CMD " + json.dumps(["python3", "-c", PYTHON_PROGRAM]),
        PATH_ENV,
    ],
}


class Unavailable(Exception):
    """The root cannot be built here (no debootstrap, no mirror, not root, ...)."""


# --- recipe and mirror -----------------------------------------------------------------


def host_arch() -> str:
    try:
        out = subprocess.run(
            ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise Unavailable(f"dpkg --print-architecture failed: {exc}") from None
    return out.stdout.strip()


def recipe_key(arch: str) -> str:
    """12 hex digits naming the root: changes whenever the recipe does."""
    recipe = {
        "suite": SUITE,
        "variant": VARIANT,
        "arch": arch,
        "packages": sorted(PACKAGES),
        "version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None  # a keyring file, when the source names one


def _one_line_sources(text: str) -> Iterator[Source]:
    """``deb [opt=val ...] URI SUITE COMPONENT...`` lines of a ``.list`` file."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options: dict[str, str] = {}
        match = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        if match:
            for item in match.group(1).split():
                name, _, value = item.partition("=")
                options[name] = value
            rest = match.group(2).split()
        else:
            rest = line.split()[1:]
        if len(rest) >= 3:
            yield Source(rest[0], (rest[1],), tuple(rest[2:]), options.get("signed-by"))


def _deb822_sources(text: str) -> Iterator[Source]:
    """The stanzas of a ``.sources`` file (``Types``/``URIs``/``Suites``/...)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        name = None
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and name is not None:  # continuation line
                fields[name] += "\n" + raw.strip()
                continue
            name, _, value = raw.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by")
        if signed_by and "\n" in signed_by:  # an inline key block: use the default
            signed_by = None
        for uri in fields.get("uris", "").split():
            yield Source(
                uri,
                tuple(fields.get("suites", "").split()),
                tuple(fields.get("components", "").split()),
                signed_by or None,
            )


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[Source]:
    """The ``deb`` sources apt reads, in apt's order (``sources.list`` first)."""
    sources: list[Source] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += _one_line_sources(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):  # apt ignores other suffixes (*.disabled, ...)
            if path.suffix == ".list":
                sources += _one_line_sources(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                sources += _deb822_sources(path.read_text(errors="replace"))
    return sources


def _keyring(signed_by: str | None) -> str:
    """The keyring to check the Release signature with; never none at all."""
    for candidate in (signed_by, DEFAULT_KEYRING):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise Unavailable(f"no Debian archive keyring ({DEFAULT_KEYRING}): debian-archive-keyring")


def debian_mirror() -> tuple[str, str]:
    """``(mirror URI, keyring)`` for :data:`SUITE`, from the environment or apt's sources."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override, _keyring(None)
    for source in apt_sources():
        if not source.uri.startswith(("http://", "https://", "file:/")):
            continue  # cdrom:, mirror+file:, tor+http: ... debootstrap cannot use them
        if SUITE in source.suites and "main" in source.components:
            return source.uri, _keyring(source.signed_by)
    raise Unavailable(
        f"no apt source serves {SUITE}/main (read /etc/apt/sources.list{{,.d/}}); "
        f"set {MIRROR_ENV}=http://.../debian"
    )


# --- mounts ---------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    base = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(root: Path) -> None:
    """Unmount whatever debootstrap left mounted in ``root`` (proc, sys, dev binds)."""
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
    points = mounts_under(root)
    if points:
        raise RuntimeError(f"cannot unmount {', '.join(map(str, points))}")


def remove_tree(path: Path) -> None:
    """``rm -rf path``, but never through a mount point (a bind of the host's /dev ...)."""
    if not path.exists():
        return
    unmount_all_under(path)
    if mounts_under(path):  # unmount_all_under raises first; belt and braces
        raise RuntimeError(f"refusing to delete {path}: something is mounted below it")
    shutil.rmtree(path)


# --- building the root tar ------------------------------------------------------------


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_debootstrap(root: Path, mirror: str, keyring: str, log: Path) -> None:
    debs = CACHE_DIR / "debs"
    debs.mkdir(exist_ok=True)
    cmd = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        # Explicit, so that a missing keyring or gpgv is an error, not a warning
        # followed by an unchecked install.
        f"--keyring={keyring}",
        SUITE,
        str(root),
        mirror,
    ]
    with log.open("w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            rc = proc.wait(timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # debootstrap unmounts on exit
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        what = f"timed out after {DEBOOTSTRAP_TIMEOUT} s" if rc is None else f"exited {rc}"
        raise Unavailable(f"debootstrap {what} (mirror {mirror}, log {log}):\n{tail}")


def _clean_root(root: Path) -> None:
    """Make the root fit for an image: no mounts, no package files or indexes."""
    unmount_all_under(root)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for pattern in ("var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for path in root.glob(pattern):
            if path.is_file() and path.name != "lock":
                path.unlink()
    leftovers = root / "debootstrap"  # only left behind by a failed second stage
    if leftovers.exists():
        raise RuntimeError(f"{leftovers} exists: debootstrap did not finish")


def build_root_tar(dest: Path, mirror: str, keyring: str) -> None:
    """debootstrap a root and tar it to ``dest`` (atomically). Caller holds the lock."""
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR))
    try:
        root = work / "root"
        _run_debootstrap(root, mirror, keyring, CACHE_DIR / "debootstrap.log")
        _clean_root(root)
        tmp = work / "root.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", str(root),
             "-cf", str(tmp), "."],
            check=True, capture_output=True,
        )  # fmt: skip
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        remove_tree(work)


def _remove_stale(keep: Path) -> None:
    """Delete tars of other keys and build dirs of interrupted runs. Lock held."""
    for path in CACHE_DIR.glob(f"{TAR_PREFIX}*.tar"):
        if path != keep:
            path.unlink()
    for path in CACHE_DIR.glob(".build-*"):
        with contextlib.suppress(RuntimeError, OSError):
            remove_tree(path)


def ensure_root_tar() -> tuple[Path, str]:
    """``(tar path, key)``: the cached root, built first when missing."""
    key = recipe_key(host_arch())
    dest = CACHE_DIR / f"{TAR_PREFIX}{key}.tar"
    if dest.is_file():
        return dest, key
    if os.geteuid() != 0:
        raise Unavailable("debootstrap needs root")
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is missing: apt-get install debootstrap")
    mirror, keyring = debian_mirror()
    with cache_lock():
        if not dest.is_file():  # another process may have built it while we waited
            _remove_stale(dest)
            started = time.monotonic()
            build_root_tar(dest, mirror, keyring)
            print(
                f"\ndebian_images: built {dest} ({dest.stat().st_size / 1e6:.0f} MB) "
                f"from {mirror} in {time.monotonic() - started:.0f} s"
            )
    return dest, key


# --- engine images --------------------------------------------------------------------


def import_image(client, tar: Path, repository: str, tag: str) -> str:
    """``docker import`` ``tar`` as ``repository:tag`` unless the engine has it. Returns it."""
    import docker

    name = f"{repository}:{tag}"
    with cache_lock():
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            pass
        # docker-py treats a ``src`` that is not an existing file as a URL for the
        # engine to fetch: make sure it is a file.
        if not tar.is_file():
            raise FileNotFoundError(tar)
        started = time.monotonic()
        client.api.import_image_from_file(
            str(tar), repository=repository, tag=tag, changes=IMAGE_CHANGES[repository]
        )
        client.images.get(name)  # raises when the import did not tag it
        print(f"\ndebian_images: imported {name} in {time.monotonic() - started:.1f} s")
    return name


@functools.cache
def _root_or_problem() -> tuple[Path, str] | str:
    """:func:`ensure_root_tar` once per process; an :class:`Unavailable` becomes its text."""
    try:
        return ensure_root_tar()
    except Unavailable as exc:
        return str(exc)


def debian_root() -> tuple[Path, str]:
    """``(tar path, key)`` of the cached root; skips (or fails) when it cannot be built."""
    result = _root_or_problem()
    if isinstance(result, str):
        unavailable(result)
    return result


# The fixtures depend on no other fixture of this module, so a test module imports
# just the ones it uses (``docker_client`` comes from conftest.py).


@pytest.fixture(scope="session")
def debian_root_tar() -> Path:
    """The cached tar of the Debian 12 root (nginx-light, curl, python3)."""
    return debian_root()[0]


@pytest.fixture(scope="session")
def debian_nginx_image(docker_client) -> str:
    """Tag of the imported root with ``CMD ["nginx", "-g", "daemon off;"]``, ``EXPOSE 80``."""
    tar, key = debian_root()
    return import_image(docker_client, tar, "scratchpack-test/debian-nginx", key)


@pytest.fixture(scope="session")
def debian_curl_image(docker_client) -> str:
    """Tag of the imported root with ``ENTRYPOINT ["curl"]``, ``CMD ["--version"]``."""
    tar, key = debian_root()
    return import_image(docker_client, tar, "scratchpack-test/debian-curl", key)


@pytest.fixture(scope="session")
def debian_python_image(docker_client) -> str:
    """Tag of the imported root running ``python3 -c`` (prints sqlite/ssl versions as JSON)."""
    tar, key = debian_root()
    return import_image(docker_client, tar, "scratchpack-test/debian-python", key)
