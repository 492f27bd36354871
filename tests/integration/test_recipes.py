"""The README's recipes (issue 12, item 9), each the shortest command line that works.

Every recipe is checked the way a user would check it: a real client talks to the
result on 127.0.0.1 (``psql``, ``redis-cli``, HTTP) or the program's own output is
read. Two ways to each application:

- ``build`` from this machine's Debian packages, with the user's files in a fresh
  ``mktemp -d`` directory (mode 0700, never chmodded): the tool must cope;
- ``shrink --trace`` of a fat Debian image made offline by tests/debian_images.py,
  which runs the same application (tests/recipes.py).

Each command line is written as in the README and split with :func:`shlex.split`;
only flags the README explains appear. Nothing else is done to the image.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli, recipes
from tests.conftest import unavailable
from tests.debian_images import (  # noqa: F401
    CACHE_DIR,
    debian_java_image,
    debian_nginx_image,
    debian_node_image,
    debian_postgres_image,
    debian_pyapp_image,
    debian_redis_image,
)

pytestmark = pytest.mark.engine

PG_BIN = recipes.POSTGRES_BIN
PG_SHARE = Path(f"/usr/share/postgresql/{recipes.POSTGRES_VERSION}")
PG_LIB = PG_BIN.parent


def scratchpack(
    command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``scratchpack COMMAND`` (a README line, shell-quoted); fails the test unless it exits 0."""
    proc = cli.scratchpack(*shlex.split(command), env=env, timeout=600)
    assert proc.returncode == 0, f"scratchpack {command}\nexit {proc.returncode}\n{proc.stderr}"
    return proc


def need(*paths: Path | str) -> None:
    """Skip (fail with SCRATCHPACK_REQUIRE_ENGINE=1) unless every program is there."""
    for path in paths:
        found = Path(path).is_file() if "/" in str(path) else shutil.which(str(path))
        if not found:
            unavailable(f"{path} is missing: bash tests/run.sh installs it")


@pytest.fixture
def tag(docker_client) -> Iterator[Callable[[str], str]]:  # type: ignore[no-untyped-def]
    """``tag(name)``: a new tag, its image removed after the test."""
    made: list[str] = []

    def new(name: str) -> str:
        made.append(f"scratchpack-test/recipe-{name}:{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    for name in made:
        with contextlib.suppress(Exception):
            docker_client.images.remove(name, force=True)


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A directory as ``mktemp -d`` makes it (0700), for the user's files."""
    path = Path(tempfile.mkdtemp(prefix="recipe-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def report(
    client: Any, name: str, image: str, proc: subprocess.CompletedProcess[str] | None = None
) -> None:
    size = int(client.images.get(image).attrs["Size"])
    print(f"\nrecipe {name}: {size / 1e6:.1f} MB")
    if proc is not None and proc.stderr.strip():
        print(proc.stderr.rstrip())


def shrink_trace(client: Any, name: str, source: str, tag: str, extra: str = "") -> dict:
    """``scratchpack shrink SOURCE -t TAG --trace``; returns the JSON report."""
    proc = scratchpack(f"shrink {source} -t {tag} --trace {extra} --json")
    result = json.loads(proc.stdout)
    print(f"\nrecipe {name}: {result['size_before'] / 1e6:.1f} MB -> "
          f"{result['size_after'] / 1e6:.1f} MB; trace {result.get('trace')}")  # fmt: skip
    return result


# --- running the results -------------------------------------------------------------


def run_to_end(client: Any, image: str, timeout: int = 120) -> tuple[int, str]:
    """Run ``image`` as configured (no network); its exit status and output."""
    container = client.containers.create(image, network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=timeout)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def talk(
    client: Any, image: str, port: int, client_call: Callable[[int], str], timeout: float = 60
) -> str:
    """Start ``image`` with ``port`` published on 127.0.0.1 and return what
    ``client_call(host_port)`` says once it stops raising (it is retried until then)."""
    container = client.containers.create(image, ports={f"{port}/tcp": ("127.0.0.1", None)})
    try:
        container.start()
        deadline = time.monotonic() + timeout
        while True:  # the engine publishes the port once the container runs
            container.reload()
            bound = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
            if bound or container.status != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not bound:
            logs = container.logs().decode(errors="replace")
            problem = f"{image} ({container.status}) publishes no {port}/tcp"
            pytest.fail(f"{problem}\n{logs}", pytrace=False)
        host_port = int(bound[0]["HostPort"])
        while True:
            try:
                return client_call(host_port)
            except (OSError, AssertionError, subprocess.SubprocessError) as exc:
                problem = str(exc)
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                logs = container.logs().decode(errors="replace")
                pytest.fail(f"{image} ({container.status}): {problem}\n{logs}", pytrace=False)
            time.sleep(0.5)
    finally:
        container.remove(force=True)


def http_get(host_port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}{path}", timeout=5) as response:
        return response.read().decode()


def psql_select_1(host_port: int) -> str:
    return psql_query(host_port, "select 1")


def psql_query(host_port: int, sql: str) -> str:
    """What ``psql -At -c SQL`` as postgres on 127.0.0.1:``host_port`` prints."""
    proc = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(host_port), "-U", "postgres", "-At",
         "-c", sql],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.strip()
    return proc.stdout.strip()


def redis_ping(host_port: int) -> str:
    proc = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(host_port), "ping"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    answer = proc.stdout.strip()
    assert proc.returncode == 0 and answer == "PONG", f"{answer} {proc.stderr.strip()}"
    return answer


# --- PostgreSQL: initdb and the server as non-root --------------------------------------


def test_postgres_build(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The script's #!/bin/sh brings dash, which initdb's popen() needs (initdb alone
    # would take --shell busybox). Its mktemp directory is a parent only: 0755 (12.1).
    need(PG_BIN / "postgres", PG_BIN / "initdb", "psql")
    start = recipes.write_app(user_dir, "postgres.sh", recipes.POSTGRES_START, 0o755)
    image = tag("postgres")
    proc = scratchpack(
        f"build {start} -t {image} --include {PG_LIB} --include {PG_SHARE} --user nonroot"
    )
    report(docker_client, "postgres build", image, proc)
    assert talk(docker_client, image, 5432, psql_select_1, timeout=90) == "1"


def test_postgres_shrink_trace(docker_client, tag, debian_postgres_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # The image's USER is postgres: initdb writes into its home, /var/lib/postgresql,
    # which the trace only stats; the shrunk image keeps it (12.7).
    need("psql")
    image = tag("postgres-thin")
    shrink_trace(docker_client, "postgres shrink", debian_postgres_image, image)
    assert talk(docker_client, image, 5432, psql_select_1, timeout=90) == "1"


# --- redis ---------------------------------------------------------------------------


def test_redis_build(docker_client, tag) -> None:  # type: ignore[no-untyped-def]
    need("/usr/bin/redis-server", "redis-cli")
    image = tag("redis")
    proc = scratchpack(
        f"build /usr/bin/redis-server -t {image} --cmd '--protected-mode no' --user nonroot"
    )
    report(docker_client, "redis build", image, proc)
    assert talk(docker_client, image, 6379, redis_ping) == "PONG"


def test_redis_shrink_trace(docker_client, tag, debian_redis_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    need("redis-cli")
    image = tag("redis-thin")
    shrink_trace(docker_client, "redis shrink", debian_redis_image, image)
    assert talk(docker_client, image, 6379, redis_ping) == "PONG"


# --- nginx with Debian's configuration -------------------------------------------------


def test_nginx_build(docker_client, tag) -> None:  # type: ignore[no-untyped-def]
    # NEEDS /run in build images (nginx.conf: pid /run/nginx.pid): missing, unplanned.
    # www-data comes from nginx.conf's "user www-data;" (accounts rule, 12.6).
    need("/usr/sbin/nginx", "/etc/nginx/nginx.conf")
    image = tag("nginx")
    proc = scratchpack(
        f"build /usr/sbin/nginx -t {image} --include /etc/nginx --include /var/www/html"
        " --include /var/lib/nginx --include /var/log/nginx --cmd \"-g 'daemon off;'\""
    )
    report(docker_client, "nginx build", image, proc)
    assert "Welcome to nginx" in talk(docker_client, image, 80, http_get)


def test_nginx_shrink_trace(docker_client, tag, debian_nginx_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    image = tag("nginx-thin")
    shrink_trace(docker_client, "nginx shrink", debian_nginx_image, image)
    assert "Welcome to nginx" in talk(docker_client, image, 80, http_get)


# --- a Python venv with a C extension --------------------------------------------------


def test_python_venv_build(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # With libpython3.11-dev, /usr/lib/python3.11 holds python.o and .a files: data (12.3).
    try:
        wheel = recipes.pyyaml_wheel(CACHE_DIR)
    except recipes.Unavailable as exc:
        problem = str(exc)
    else:
        problem = None
    if problem is not None:
        unavailable(problem)
    python = recipes.make_venv(user_dir, wheel)
    app = recipes.write_app(user_dir, "app.py", recipes.PYTHON_APP)
    stdlib = "/usr/lib/python3.11"  # Debian 12's, that the venv's python is
    image = tag("python")
    proc = scratchpack(
        f"build {python} -t {image} --include {user_dir}/venv --include {app}"
        f" --include {stdlib} --cmd {app} --user nonroot"
    )
    report(docker_client, "python build", image, proc)
    assert run_to_end(docker_client, image) == (0, recipes.PYTHON_EXPECTED)


def test_python_venv_shrink_trace(docker_client, tag, debian_pyapp_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    image = tag("python-thin")
    shrink_trace(docker_client, "python shrink", debian_pyapp_image, image)
    assert run_to_end(docker_client, image) == (0, recipes.PYTHON_EXPECTED)


# --- a Node.js HTTP server -------------------------------------------------------------


def node_answers(host_port: int) -> str:
    return http_get(host_port, "/recipe")


def test_node_build(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The file, not its 0700 directory: an included directory keeps its mode.
    need("/usr/bin/node")
    server = recipes.write_app(user_dir, "server.js", recipes.NODE_SERVER)
    image = tag("node")
    proc = scratchpack(
        f"build /usr/bin/node -t {image} --include {server}:/app/server.js"
        " --cmd /app/server.js --user nonroot"
    )
    report(docker_client, "node build", image, proc)
    assert talk(docker_client, image, recipes.NODE_PORT, node_answers).startswith("hello from node")


def test_node_shrink_trace(docker_client, tag, debian_node_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    image = tag("node-thin")
    shrink_trace(docker_client, "node shrink", debian_node_image, image)
    assert talk(docker_client, image, recipes.NODE_PORT, node_answers).startswith("hello from node")


# --- interpreters from Debian's packages: what they cannot start without (issue 22) -----


def test_node_build_from_debian_packages(docker_client, tag) -> None:  # type: ignore[no-untyped-def]
    # Debian's nodejs, not the machine's: libnode reads its builtins from /usr/share/nodejs.
    image = tag("node-deb")
    cmd = shlex.quote(shlex.join(["-e", recipes.NODE_SERVER]))
    proc = scratchpack(f"build --package nodejs /usr/bin/node -t {image} --cmd {cmd}")
    report(docker_client, "node from packages", image, proc)
    assert "builtins Node.js loads at start (/usr/share/nodejs" in proc.stderr
    assert talk(docker_client, image, recipes.NODE_PORT, node_answers).startswith("hello from node")


PYTHON_CHECK = "import encodings, json, sqlite3, ssl; print(json.dumps({'answer': 42}))"


@pytest.mark.parametrize("source", ["--package python3 /usr/bin/python3", "/usr/bin/python3.11"])
def test_python_build_keeps_its_standard_library(docker_client, tag, source: str) -> None:  # type: ignore[no-untyped-def]
    if "--package" not in source:
        need(source)
    image = tag("python-stdlib")
    cmd = shlex.quote(shlex.join(["-c", PYTHON_CHECK]))
    proc = scratchpack(f"build {source} -t {image} --cmd {cmd}")
    report(docker_client, f"python ({source})", image, proc)
    assert "kept Python 3.11's standard library (/usr/lib/python3.11" in proc.stderr
    assert run_to_end(docker_client, image) == (0, '{"answer": 42}\n')


# --- Java: a JRE running a class -------------------------------------------------------


def test_java_build(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The JDK's conf/security/java.security -> /etc/java-17-openjdk/... (link targets,
    # 12.3) and lib/*.so needing lib/server/libjvm.so ("loaded first", 12.4).
    try:
        java_home = recipes.java_home()
        hello = recipes.compile_java(user_dir)
    except recipes.Unavailable as exc:
        problem = str(exc)
    else:
        problem = None
    if problem is not None:
        unavailable(problem)
    image = tag("java")
    proc = scratchpack(
        f"build {java_home}/bin/java -t {image} --include {java_home}"
        f" --include {hello}:/app/Hello.class --cmd '-cp /app Hello' --user nonroot"
    )
    report(docker_client, "java build", image, proc)
    status, output = run_to_end(docker_client, image)
    assert status == 0 and recipes.JAVA_EXPECTED in output, output


def test_java_shrink_trace(docker_client, tag, debian_java_image: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    image = tag("java-thin")
    shrink_trace(docker_client, "java shrink", debian_java_image, image)
    status, output = run_to_end(docker_client, image)
    assert status == 0 and recipes.JAVA_EXPECTED in output, output


# --- servers from Debian's packages, with the user's own start-up (issue 22, item 8) ----


# --package from the suite's package cache (tests/integration/test_packages.py's).
PACKAGE_CACHE = {"SCRATCHPACK_CACHE": str(CACHE_DIR / "packages")}


def postgres_facts(host_port: int) -> str:
    """Where the cluster and the socket are, that a clock and a time zone answer."""
    return psql_query(
        host_port,
        "select 1, current_setting('data_directory'), current_setting('unix_socket_directories'),"
        " now() is not null, current_setting('TimeZone') <> ''",
    )


def test_postgres_from_packages_first_start(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The account is postgresql-common's (its postinst's adduser), its home (brought by
    # --user, owned by it) holds the cluster in $HOME/data, and the zone files come as
    # postgresql-15 depends on tzdata; the user's start.sh comes with --copy (at
    # /app/start.sh, the entrypoint) and busybox is its #!/bin/sh and initdb's popen()'s;
    # llvmjit (the JIT, 128 MB with LLVM and z3) is optional.
    need("psql")
    start = recipes.write_app(user_dir, "start.sh", recipes.POSTGRES_PACKAGE_START, 0o755)
    image = tag("postgres-deb")
    proc = scratchpack(
        f"build --package postgresql-15 /app/start.sh -t {image} --copy {start}"
        " --user postgres --shell busybox --locale C.UTF-8 --exclude 'llvmjit*'",
        env=PACKAGE_CACHE,
    )
    report(docker_client, "postgres from packages", image, proc)
    # No workaround was needed, and nothing a user cannot act on was said.
    assert "depends on tzdata" in proc.stderr, proc.stderr
    assert "points to nothing" not in proc.stderr, proc.stderr
    assert "/usr/local/lib/python" not in proc.stderr, proc.stderr
    answer = talk(docker_client, image, 5432, postgres_facts, timeout=120)
    assert answer == "1|/var/lib/postgresql/data|/var/run/postgresql|t|t", answer


def python_app_answers(host_port: int) -> str:
    return http_get(host_port, "/recipe")


def test_python_app_from_packages(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The app comes with --copy, at /app/app.py; python3 is the program named like the
    # package, with its standard library.
    app = recipes.write_app(user_dir, "app.py", recipes.PYTHON_HTTP_APP)
    image = tag("python-deb")
    proc = scratchpack(
        f"build --package python3 -t {image} --copy {app} --cmd /app/app.py --user nonroot"
        f" --expose {recipes.PYTHON_HTTP_PORT}",
        env=PACKAGE_CACHE,
    )
    report(docker_client, "python app from packages", image, proc)
    answer = json.loads(talk(docker_client, image, recipes.PYTHON_HTTP_PORT, python_app_answers))
    assert answer["path"] == "/recipe" and answer["python"].startswith("3.11."), answer
