"""The applications of the README's recipes (issue 12, item 9), in one place.

The same programs run in two ways: packaged by ``scratchpack build`` from this
machine's Debian packages (tests/integration/test_recipes.py) and shrunk by
``scratchpack shrink --trace`` from fat Debian images made offline
(tests/debian_images.py, which hashes :func:`fingerprint` into its cache keys).

- :data:`POSTGRES_START`: a ``/bin/sh`` script that runs ``initdb`` into ``$HOME/data``
  on the first start, then ``postgres`` on every address, as the image's user;
- :data:`NODE_SERVER`: a Node.js HTTP server on port 8080;
- :data:`JAVA_HELLO`: a Java class printing its version and a SHA-256 (the digest
  needs ``conf/security/java.security``);
- :data:`PYTHON_APP`: a Python program printing YAML through PyYAML's C extension
  (libyaml), installed from a wheel cached in ``CACHE_DIR/wheels`` (:func:`pyyaml_wheel`).

Two more run from Debian's packages (``build --package``, issue 22, item 8), each a file
of the user's that ``--copy`` puts beside the packages, at ``/app/NAME``:

- :data:`POSTGRES_PACKAGE_START`: PostgreSQL 15 as the packages' ``postgres`` account,
  initialised into its home on the first start;
- :data:`PYTHON_HTTP_APP`: an HTTP server of Python's standard library on port 8000.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
from pathlib import Path


class Unavailable(Exception):
    """A prerequisite of a recipe is missing here (a JDK, PyPI, ...)."""


POSTGRES_VERSION = "15"
POSTGRES_BIN = Path(f"/usr/lib/postgresql/{POSTGRES_VERSION}/bin")
POSTGRES_START = f"""\
#!/bin/sh
# PostgreSQL as the image's user: a new cluster in $HOME/data on the first start
# (trust for every address: a test set-up, published on 127.0.0.1 only), then the
# server on every address of the container.
set -e
PATH={POSTGRES_BIN}
export PGDATA="$HOME/data"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --auth=trust --username=postgres
    echo "host all all all trust" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/tmp
"""

NODE_PORT = 8080
NODE_SERVER = f"""\
const http = require("http");
const server = http.createServer((request, response) => {{
  response.end(`hello from node ${{process.version}} ${{request.url}}\\n`);
}});
server.listen({NODE_PORT});
// As PID 1 of a container, node would ignore SIGTERM (docker stop waits 10 s).
process.on("SIGTERM", () => process.exit(0));
"""

JAVA_HELLO = """\
import java.security.MessageDigest;
import java.util.HexFormat;

public class Hello {
    public static void main(String[] args) throws Exception {
        byte[] digest = MessageDigest.getInstance("SHA-256").digest("scratch".getBytes("UTF-8"));
        System.out.println("java " + System.getProperty("java.version")
            + " sha256 " + HexFormat.of().formatHex(digest));
    }
}
"""
JAVA_EXPECTED = "sha256 " + hashlib.sha256(b"scratch").hexdigest()

PYTHON_APP = """\
import yaml

print(yaml.dump({"libyaml": yaml.__with_libyaml__, "pyyaml": yaml.__version__},
                Dumper=yaml.CSafeDumper), end="")
"""
PYYAML_VERSION = "6.0.2"
PYTHON_EXPECTED = f"libyaml: true\npyyaml: {PYYAML_VERSION}\n"
# Debian 12's python3 is 3.11: the wheel is for it, whatever runs pytest.
PYTHON_TAG = "cp311"


# The same start-up from the packages (its home is theirs: $HOME/data is
# /var/lib/postgresql/data), copied in as /app/start.sh. The socket stays where Debian's
# build puts it, /var/run/postgresql, which the image has as postgresql-common's
# tmpfiles.d line makes it.
POSTGRES_PACKAGE_START = """\
#!/bin/sh
# PostgreSQL from the Debian packages as their postgres account.
""" + POSTGRES_START[POSTGRES_START.index("set -e") :].replace(
    " -c unix_socket_directories=/tmp", ""
)

PYTHON_HTTP_PORT = 8000
PYTHON_HTTP_APP = f"""\
import http.server, json, platform, signal, sys


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"python": platform.python_version(), "path": self.path}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode() + b"\\n")


# As PID 1 of a container, python would ignore SIGTERM (docker stop waits 10 s).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.ThreadingHTTPServer(("", {PYTHON_HTTP_PORT}), Hello).serve_forever()
"""


# What each fat image's application is made of (tests/debian_images.py hashes it).
SOURCES = {
    "postgres": (POSTGRES_START,),
    "node": (NODE_SERVER,),
    "java": (JAVA_HELLO,),
    "pyapp": (PYTHON_APP, PYYAML_VERSION, PYTHON_TAG),
}


def fingerprint(name: str) -> str:
    """12 hex digits that change whenever the application ``name`` does."""
    return hashlib.sha256("\0".join(SOURCES[name]).encode()).hexdigest()[:12]


def write_app(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return path


def java_home() -> Path:
    """Debian's OpenJDK 17 (``openjdk-17-jdk-headless``): where its ``bin/javac`` is."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    home = Path(f"/usr/lib/jvm/java-17-openjdk-{arch}")
    if not (home / "bin/java").is_file():
        raise Unavailable(f"{home}/bin/java is missing: apt-get install openjdk-17-jdk-headless")
    return home


def compile_java(directory: Path) -> Path:
    """``Hello.java`` and ``Hello.class`` in ``directory`` (javac of :func:`java_home`)."""
    javac = java_home() / "bin/javac"
    if not javac.is_file():
        raise Unavailable(f"{javac} is missing: apt-get install openjdk-17-jdk-headless")
    source = write_app(directory, "Hello.java", JAVA_HELLO)
    proc = subprocess.run(
        [str(javac), "--release", "17", "-d", str(directory), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"javac failed:\n{proc.stderr}")
    return directory / "Hello.class"


def pyyaml_wheel(cache_dir: Path) -> Path:
    """PyYAML's manylinux wheel for CPython 3.11, downloaded once into ``cache_dir/wheels``."""
    wheels = cache_dir / "wheels"
    machine = platform.machine()
    pattern = f"PyYAML-{PYYAML_VERSION}-{PYTHON_TAG}-{PYTHON_TAG}-*{machine}*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", "3.11", "--abi", PYTHON_TAG,
        "--platform", f"manylinux2014_{machine}", "--dest", str(wheels),
        f"PyYAML=={PYYAML_VERSION}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pip download PyYAML=={PYYAML_VERSION} timed out") from None
    found = sorted(wheels.glob(pattern))
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        raise Unavailable(f"cannot download PyYAML=={PYYAML_VERSION} from PyPI:\n{tail}")
    return found[0]


def debian_python() -> Path:
    """Debian 12's ``/usr/bin/python3`` (3.11, with ``venv``: python3-venv)."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        raise Unavailable("/usr/bin/python3 is missing: apt-get install python3-venv")
    proc = subprocess.run(
        [python, "-c", "import sys, ensurepip; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise Unavailable(f"{python} has no venv/ensurepip: apt-get install python3-venv")
    if proc.stdout.strip() != "(3, 11)":
        raise Unavailable(f"{python} is Python {proc.stdout.strip()}, not Debian 12's 3.11")
    return Path(python)


def make_venv(directory: Path, wheel: Path) -> Path:
    """A venv in ``directory/venv`` with PyYAML installed offline; returns its python."""
    venv = directory / "venv"
    for cmd in (
        [str(debian_python()), "-m", "venv", str(venv)],
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--no-deps", "--disable-pip-version-check", "--no-cache-dir", str(wheel)],
    ):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return venv / "bin/python"
