"""Fixtures shared by the whole test suite.

Engine tests
------------
A test that needs the Docker engine is marked ``@pytest.mark.engine`` and takes the
``docker_client`` fixture. The marker alone is enough to get the engine check: a
marked test that does not ask for ``docker_client`` gets it requested for it, and a
test that asks for ``docker_client`` without the marker gets the marker added, so
``pytest -m "not engine"`` always deselects every engine test.

When no engine answers, engine tests are skipped; with ``SCRATCHPACK_REQUIRE_ENGINE=1``
in the environment (CI sets it through ``.ci/run``) they fail instead, so a broken
engine set-up can never pass silently. The same rule applies to ``static_busybox``.

Engine tests must never pull: the engine has no images and no registry is
reachable. Build images ``FROM scratch`` with ``pull=False`` and start containers
with ``containers.create`` + ``start`` (``containers.run`` pulls missing images).

Running side by side
--------------------
tests/run.sh runs the suite in two processes (pytest-xdist, ``--dist loadfile``): the
tests of one file run in order in one process, files run beside each other on the same
engine, the same package cache and the same machine. So a test

- counts only its own engine objects and temporary files: names and tags it made
  (``uuid``), or what tests/ownership.py finds of its own runs — never every container,
  image, volume or ``scratchpack-*`` name of the engine or of ``/tmp``;
- takes ports from the OS (bind port 0), names containers and tags uniquely, and keeps
  files under ``tmp_path``; state shared by the tests of one file stays in that file;
- shares a cache between processes only through a lock and a rename (tests/debian_images.py
  does; scratchpack's own apt state and package cache lock themselves).

A plain ``pytest`` (one process) runs the same tests in the same order per file.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENGINE_ENV = "SCRATCHPACK_REQUIRE_ENGINE"
STATIC_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static


def engine_required() -> bool:
    """Whether a missing engine (or other engine-test prerequisite) is a failure."""
    return os.environ.get(REQUIRE_ENGINE_ENV, "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``SCRATCHPACK_REQUIRE_ENGINE=1``."""
    if engine_required():
        pytest.fail(f"{reason} ({REQUIRE_ENGINE_ENV}=1)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_ENGINE_ENV}=1 to fail instead)")


# The slowest files (seconds of one process, 2026-12), handed out first when the suite
# runs side by side, so that no long file starts last while the other process idles.
SLOWEST_FIRST = (
    "tests/integration/test_recipes.py",
    "tests/integration/test_update.py",
    "tests/integration/test_packages.py",
    "tests/integration/test_layers_packages.py",
    "tests/integration/test_shrink.py",
    "tests/integration/test_outdated.py",
    "tests/integration/test_package_servers.py",
    "tests/integration/test_copies.py",
    "tests/integration/test_faults.py",
)


def side_by_side(config: pytest.Config) -> bool:
    """Whether this is a worker of a pytest-xdist run, or the run that starts them."""
    return hasattr(config, "workerinput") or bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    """Before the workers start: build the samples once, not in two processes at a time.

    Many tests ``make -C samples/...`` first; two linkers writing one program at once
    could hand a test a half-written file. Here a failure is left for those tests to report.
    """
    if side_by_side(config) and not hasattr(config, "workerinput"):
        samples = Path(__file__).resolve().parent.parent / "samples"
        subprocess.run(["make", "-s", "-C", str(samples)], check=False, capture_output=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "engine"
        ):
            item.add_marker(pytest.mark.engine)
    if side_by_side(config):
        rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(autouse=True)
def _own_runs() -> None:
    """Commands started from here on are this test's (tests/ownership.py)."""
    from tests import ownership

    ownership.begin_test()


@pytest.fixture(autouse=True)
def _engine_marker(request: pytest.FixtureRequest) -> None:
    """Give every ``@pytest.mark.engine`` test the engine check of ``docker_client``."""
    if request.node.get_closest_marker("engine") is not None:
        request.getfixturevalue("docker_client")


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt for the test's length, as in a terminal.

    A shell starts a background job with SIGINT ignored, and the command rightly
    leaves an ignored SIGINT ignored: tests of what an interrupt does must not
    depend on how the suite was started.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A ``docker.DockerClient`` from the environment (``DOCKER_HOST`` respected), pinged.

    Skips when no engine answers, fails instead with ``SCRATCHPACK_REQUIRE_ENGINE=1``.
    The low-level API is ``docker_client.api`` (a ``docker.APIClient``).
    """
    import docker

    problem = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, ...
        problem = f"no Docker engine answers: {exc}"
    if problem is not None:  # outside the except block: no chained traceback
        unavailable(problem)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def static_busybox() -> Path:
    """Path of the statically linked busybox from Debian's ``busybox-static``."""
    from elftools.elf.elffile import ELFFile

    if not STATIC_BUSYBOX.is_file():
        unavailable(f"{STATIC_BUSYBOX} is missing: apt-get install busybox-static")
    with STATIC_BUSYBOX.open("rb") as f:
        interp = any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())
    if interp:
        unavailable(f"{STATIC_BUSYBOX} is dynamically linked: apt-get install busybox-static")
    return STATIC_BUSYBOX


@pytest.fixture(scope="module")
def tracer() -> Iterator[object]:
    """The host's strace packaged with its own closure, as ``shrink --trace`` brings it."""
    import shutil

    from scratchpack.trace.tracer import packaged_tracer

    if shutil.which("strace") is None:
        unavailable("strace is missing: apt-get install strace")
    with packaged_tracer() as tree:
        yield tree


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top directory (the one holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parent.parent


# Session fixtures of real Debian images (debootstrap + docker import), for every module.
from tests.debian_images import (  # noqa: E402, F401
    debian_curl_image,
    debian_nginx_image,
    debian_python_image,
    debian_root_tar,
)
