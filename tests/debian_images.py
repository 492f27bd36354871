"""Real, fat Debian 12 images for the ``scratchpack shrink`` tests, made offline-ish.

Each root file system is built with ``debootstrap --variant=minbase`` from the Debian
mirror apt uses on this machine (``--include`` the packages of its :class:`Root`),
optionally completed by a ``prepare`` step (the application of a recipe, from
tests/recipes.py), then imported into the engine (``docker import`` semantics) with
the configuration of a typical image of its program. The roots (:data:`ROOTS`):

- ``root`` (nginx-light, curl, python3), imported three times, one shared layer:
  ``debian_nginx_image`` (``CMD ["nginx", "-g", "daemon off;"]``, ``EXPOSE 80``),
  ``debian_curl_image`` (``ENTRYPOINT ["curl"]``, ``CMD ["--version"]``),
  ``debian_python_image`` (``python3 -c`` printing sqlite's and OpenSSL's versions);
- ``postgres`` (postgresql-15): ``debian_postgres_image``, ``USER postgres``, ``CMD
  ["postgres-start"]`` (initdb into ``$HOME/data`` on the first start, then the server),
  ``EXPOSE 5432``;
- ``redis`` (redis-server): ``debian_redis_image``, ``USER redis``, ``WORKDIR
  /var/lib/redis``, ``CMD ["redis-server", "--protected-mode", "no"]``, ``EXPOSE 6379``;
- ``node`` (nodejs): ``debian_node_image``, ``USER nobody``, ``CMD ["node",
  "/opt/app/server.js"]``, ``EXPOSE 8080``;
- ``java`` (openjdk-17-jre-headless, ``Hello.class`` compiled by this machine's javac):
  ``debian_java_image``, ``CMD ["java", "-cp", "/opt/app", "Hello"]``;
- ``pyapp`` (python3-venv, a venv in ``/opt/app/venv`` with PyYAML's wheel, installed
  offline from ``CACHE_DIR/wheels``): ``debian_pyapp_image``, ``USER nobody``, ``CMD
  ["/opt/app/venv/bin/python", "/opt/app/app.py"]``.

One root per application, not one for all: a shrink unpacks its whole source image,
so each test pays for its own root (140-500 MB: 5-20 s) instead of all of them
(1.1 GB: ~40 s each). The price is one base system per root the first time: the
first root a run needs builds every missing one, their packages downloaded once
(``debootstrap --download-only``), then all installed in parallel — 2:50 for the six
from nothing (1.6 GB of tars, 180 MB of packages), instead of ~1:50 for a single
combined root, or ~4:30 one after the other.

Every image has ``Env`` ``PATH=...`` (``docker import`` leaves it empty). Use them by
importing the fixtures a test module needs (each stands alone)::

    from tests.debian_images import debian_nginx_image  # noqa: F401

    def test_shrink_nginx(debian_nginx_image: str):  # noqa: F811

Caching
-------
Each root is kept between test runs as a tar in :data:`CACHE_DIR`
(``/var/cache/scratchpack-tests``, or ``$SCRATCHPACK_TEST_CACHE``),
``debian-NAME-bookworm-KEY.tar``, where the key hashes the recipe (suite, variant,
architecture, packages, post-processing version, the applications' sources):
changing the recipe rebuilds that root, and stale tars of its other keys are deleted
(the first root keeps the key it had before there were others).
The tar is written to a temporary file and renamed, so an interrupted build never
leaves a broken cache; ``CACHE_DIR/.lock`` (``fcntl.flock``) keeps two pytest processes
from building or importing at the same time. The images are tagged with the same key
and reused when the engine already has them, so the import happens once per engine.
``CACHE_DIR/debs`` keeps the downloaded packages (``debootstrap --cache-dir``) so a
recipe change does not download everything again.

When debootstrap is missing, not run as root, or fails (no mirror, ...), the fixtures
skip — or fail with ``SCRATCHPACK_REQUIRE_ENGINE=1`` (:func:`tests.conftest.unavailable`).
A root with a ``prepare`` step also needs what it uses: a JDK for ``java``, PyPI once
for ``pyapp`` (then the cached wheel). The mirror is the first ``deb`` source of apt's
configuration that serves ``bookworm``/``main``; ``$SCRATCHPACK_TEST_DEBIAN_MIRROR``
overrides it. Signatures are always checked (the source's ``Signed-By`` keyring, else
Debian's archive keyring).
"""

from __future__ import annotations

import concurrent.futures
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import recipes
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
# repository -> (root name, docker import changes)
IMAGES: dict[str, tuple[str, list[str]]] = {
    "scratchpack-test/debian-nginx": (
        "root",
        ['CMD ["nginx", "-g", "daemon off;"]', "EXPOSE 80", PATH_ENV],
    ),
    "scratchpack-test/debian-curl": (
        "root",
        ['ENTRYPOINT ["curl"]', 'CMD ["--version"]', PATH_ENV],
    ),
    "scratchpack-test/debian-python": (
        "root",
        ["CMD " + json.dumps(["python3", "-c", PYTHON_PROGRAM]), PATH_ENV],
    ),
    "scratchpack-test/debian-postgres": (
        "postgres",
        ['CMD ["postgres-start"]', "USER postgres", "EXPOSE 5432", PATH_ENV],
    ),
    "scratchpack-test/debian-redis": (
        "redis",
        [
            'CMD ["redis-server", "--protected-mode", "no"]',
            "USER redis",
            "WORKDIR /var/lib/redis",
            "EXPOSE 6379",
            PATH_ENV,
        ],
    ),
    "scratchpack-test/debian-node": (
        "node",
        [
            'CMD ["node", "/opt/app/server.js"]',
            "USER nobody",
            f"EXPOSE {recipes.NODE_PORT}",
            PATH_ENV,
        ],
    ),
    "scratchpack-test/debian-java": (
        "java",
        ['CMD ["java", "-cp", "/opt/app", "Hello"]', PATH_ENV],
    ),
    "scratchpack-test/debian-pyapp": (
        "pyapp",
        ['CMD ["/opt/app/venv/bin/python", "/opt/app/app.py"]', "USER nobody", PATH_ENV],
    ),
}
IMAGE_CHANGES: dict[str, list[str]] = {repo: changes for repo, (_, changes) in IMAGES.items()}


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


@dataclass(frozen=True)
class Root:
    """One root file system: debootstrap with ``packages``, then ``prepare(root)``."""

    name: str
    packages: tuple[str, ...]
    version: int = 1  # bump when ``prepare`` changes
    prepare: Callable[[Path], None] | None = None

    @property
    def tar_prefix(self) -> str:
        return f"debian-{self.name}-{SUITE}-"

    @property
    def log(self) -> Path:
        return CACHE_DIR / (
            "debootstrap.log" if self.name == "root" else f"debootstrap-{self.name}.log"
        )


def recipe_key(arch: str, root: Root | None = None) -> str:
    """12 hex digits naming the root: changes whenever the recipe does."""
    root = root or ROOTS["root"]
    recipe: dict[str, object] = {
        "suite": SUITE,
        "variant": VARIANT,
        "arch": arch,
        "packages": sorted(root.packages),
        "version": root.version,
    }
    if root.name != "root":  # the first root's key is older than the others: kept as it was
        recipe["name"] = root.name
        if root.prepare is not None:
            recipe["app"] = recipes.fingerprint(root.name)
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


def _run_debootstrap(
    root: Path,
    packages: tuple[str, ...],
    mirror: str,
    keyring: str,
    log: Path,
    *options: str,
) -> None:
    debs = CACHE_DIR / "debs"
    debs.mkdir(exist_ok=True)
    cmd = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(packages)}",
        f"--cache-dir={debs}",
        # Explicit, so that a missing keyring or gpgv is an error, not a warning
        # followed by an unchecked install.
        f"--keyring={keyring}",
        *options,
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


def build_root_tar(dest: Path, mirror: str, keyring: str, recipe: Root | None = None) -> None:
    """debootstrap a root and tar it to ``dest`` (atomically). Caller holds the lock."""
    recipe = recipe or ROOTS["root"]
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR))
    try:
        root = work / "root"
        _run_debootstrap(root, recipe.packages, mirror, keyring, recipe.log)
        _clean_root(root)
        if recipe.prepare is not None:
            recipe.prepare(root)
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


def _remove_stale(keep: Path, prefix: str = TAR_PREFIX) -> None:
    """Delete tars of other keys and build dirs of interrupted runs. Lock held."""
    for path in CACHE_DIR.glob(f"{prefix}*.tar"):
        if path != keep:
            path.unlink()
    for path in CACHE_DIR.glob(".build-*"):
        with contextlib.suppress(RuntimeError, OSError):
            remove_tree(path)


def tar_path(recipe: Root) -> tuple[Path, str]:
    key = recipe_key(host_arch(), recipe)
    return CACHE_DIR / f"{recipe.tar_prefix}{key}.tar", key


# Roots that could not be built in this process (built beside another one): not tried again.
_FAILED: dict[str, BaseException] = {}


def _download_debs(roots: list[Root], mirror: str, keyring: str) -> None:
    """Fill ``CACHE_DIR/debs`` for all ``roots`` in one run (``debootstrap --download-only``).

    debootstrap writes a package into its ``--cache-dir`` under its final name while
    downloading it, so parallel runs must find the cache full already.
    """
    packages = tuple(sorted({package for root in roots for package in root.packages}))
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR))
    try:
        log = CACHE_DIR / "debootstrap-download.log"
        _run_debootstrap(work / "root", packages, mirror, keyring, log, "--download-only")
    finally:
        remove_tree(work)


def _build_missing(mirror: str, keyring: str) -> None:
    """Build every missing root of :data:`ROOTS` at once. Lock held.

    One base system per root is what a first build costs (~30-60 s each, dpkg bound):
    run in parallel they take about as long as the largest, and a test run needs them
    all. A root that fails is remembered in :data:`_FAILED`; the others are kept.
    """
    missing = [r for r in ROOTS.values() if r.name not in _FAILED and not tar_path(r)[0].is_file()]
    if not missing:
        return
    for recipe in missing:  # before any build starts: it also removes .build-* dirs
        _remove_stale(tar_path(recipe)[0], recipe.tar_prefix)
    started = time.monotonic()
    if len(missing) > 1:
        try:
            _download_debs(missing, mirror, keyring)
        except Unavailable as exc:  # no mirror, ...: every root would fail the same way
            for recipe in missing:
                _FAILED[recipe.name] = exc
            return

    def build(recipe: Root) -> None:
        dest = tar_path(recipe)[0]
        build_root_tar(dest, mirror, keyring, recipe)
        print(
            f"\ndebian_images: built {dest} ({dest.stat().st_size / 1e6:.0f} MB) "
            f"from {mirror} in {time.monotonic() - started:.0f} s"
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(missing)) as pool:
        futures = {pool.submit(build, recipe): recipe for recipe in missing}
        for future in concurrent.futures.as_completed(futures):
            exc = future.exception()
            if exc is not None:
                _FAILED[futures[future].name] = exc


def ensure_root_tar(name: str = "root") -> tuple[Path, str]:
    """``(tar path, key)``: the cached root ``name``, built first when missing.

    A missing root is built together with every other missing one (:func:`_build_missing`).
    """
    dest, key = tar_path(ROOTS[name])
    if dest.is_file():
        return dest, key
    if name not in _FAILED:
        if os.geteuid() != 0:
            raise Unavailable("debootstrap needs root")
        if shutil.which("debootstrap") is None:
            raise Unavailable("debootstrap is missing: apt-get install debootstrap")
        mirror, keyring = debian_mirror()
        with cache_lock():
            if not dest.is_file():  # another process may have built it while we waited
                _build_missing(mirror, keyring)
    if name in _FAILED:
        raise _FAILED[name]
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


# --- the applications' roots ------------------------------------------------------------

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}


def _chroot(root: Path, *cmd: str) -> None:
    """Run ``cmd`` inside ``root`` (no /proc, no network, a clean environment)."""
    proc = subprocess.run(
        ["chroot", str(root), *cmd], env=CHROOT_ENV, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(
            f"chroot {root} {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}"
        )


def _app_dir(root: Path) -> Path:
    app = root / "opt/app"
    app.mkdir(parents=True, exist_ok=True)
    app.chmod(0o755)
    return app


def _prepare_postgres(root: Path) -> None:
    recipes.write_app(root / "usr/local/bin", "postgres-start", recipes.POSTGRES_START, 0o755)


def _prepare_node(root: Path) -> None:
    recipes.write_app(_app_dir(root), "server.js", recipes.NODE_SERVER)


def _prepare_java(root: Path) -> None:
    recipes.compile_java(_app_dir(root))
    (root / "opt/app/Hello.java").unlink()


def _prepare_pyapp(root: Path) -> None:
    wheel = recipes.pyyaml_wheel(CACHE_DIR)
    app = _app_dir(root)
    _chroot(root, "python3", "-m", "venv", "/opt/app/venv")
    shutil.copy(wheel, root / "tmp" / wheel.name)
    try:
        _chroot(
            root, "/opt/app/venv/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
            "--no-deps", "--no-cache-dir", "--disable-pip-version-check", f"/tmp/{wheel.name}",
        )  # fmt: skip
    finally:
        (root / "tmp" / wheel.name).unlink()
    recipes.write_app(app, "app.py", recipes.PYTHON_APP)


ROOTS: dict[str, Root] = {
    root.name: root
    for root in (
        Root("root", PACKAGES, RECIPE_VERSION),
        Root("postgres", ("postgresql-15",), prepare=_prepare_postgres),
        Root("redis", ("redis-server",)),
        Root("node", ("nodejs",), prepare=_prepare_node),
        Root("java", ("openjdk-17-jre-headless",), prepare=_prepare_java),
        Root("pyapp", ("python3-venv",), prepare=_prepare_pyapp),
    )
}


@functools.cache
def _root_or_problem(name: str = "root") -> tuple[Path, str] | str:
    """:func:`ensure_root_tar` once per process; an :class:`Unavailable` becomes its text."""
    try:
        return ensure_root_tar(name)
    except (Unavailable, recipes.Unavailable) as exc:
        return str(exc)


def debian_root(name: str = "root") -> tuple[Path, str]:
    """``(tar path, key)`` of the cached root; skips (or fails) when it cannot be built."""
    result = _root_or_problem(name)
    if isinstance(result, str):
        unavailable(result)
    return result


def debian_image(client, repository: str) -> str:  # type: ignore[no-untyped-def]
    """The tag of ``repository`` (a key of :data:`IMAGES`), its root built and imported."""
    tar, key = debian_root(IMAGES[repository][0])
    return import_image(client, tar, repository, key)


# The fixtures depend on no other fixture of this module, so a test module imports
# just the ones it uses (``docker_client`` comes from conftest.py).


@pytest.fixture(scope="session")
def debian_root_tar() -> Path:
    """The cached tar of the Debian 12 root (nginx-light, curl, python3)."""
    return debian_root()[0]


@pytest.fixture(scope="session")
def debian_nginx_image(docker_client) -> str:
    """Tag of the imported root with ``CMD ["nginx", "-g", "daemon off;"]``, ``EXPOSE 80``."""
    return debian_image(docker_client, "scratchpack-test/debian-nginx")


@pytest.fixture(scope="session")
def debian_curl_image(docker_client) -> str:
    """Tag of the imported root with ``ENTRYPOINT ["curl"]``, ``CMD ["--version"]``."""
    return debian_image(docker_client, "scratchpack-test/debian-curl")


@pytest.fixture(scope="session")
def debian_python_image(docker_client) -> str:
    """Tag of the imported root running ``python3 -c`` (prints sqlite/ssl versions as JSON)."""
    return debian_image(docker_client, "scratchpack-test/debian-python")


@pytest.fixture(scope="session")
def debian_postgres_image(docker_client) -> str:
    """postgresql-15, ``USER postgres``, ``CMD ["postgres-start"]``, ``EXPOSE 5432``."""
    return debian_image(docker_client, "scratchpack-test/debian-postgres")


@pytest.fixture(scope="session")
def debian_redis_image(docker_client) -> str:
    """redis-server, ``USER redis``, ``CMD ["redis-server", "--protected-mode", "no"]``."""
    return debian_image(docker_client, "scratchpack-test/debian-redis")


@pytest.fixture(scope="session")
def debian_node_image(docker_client) -> str:
    """nodejs, ``USER nobody``, ``CMD ["node", "/opt/app/server.js"]``, ``EXPOSE 8080``."""
    return debian_image(docker_client, "scratchpack-test/debian-node")


@pytest.fixture(scope="session")
def debian_java_image(docker_client) -> str:
    """openjdk-17-jre-headless, ``CMD ["java", "-cp", "/opt/app", "Hello"]``."""
    return debian_image(docker_client, "scratchpack-test/debian-java")


@pytest.fixture(scope="session")
def debian_pyapp_image(docker_client) -> str:
    """A venv with PyYAML, ``USER nobody``, ``CMD ["/opt/app/venv/bin/python", "app.py"]``."""
    return debian_image(docker_client, "scratchpack-test/debian-pyapp")
