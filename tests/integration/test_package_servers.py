"""Servers from Debian packages on the first try, with no workaround (issue 22).

PostgreSQL's is the README recipe (``test_recipes.test_postgres_from_packages_first_start``:
no ``--include`` of its home, no ``--tzdata``, its socket where Debian puts it); here the
ones that needed what their maintainer scripts make.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import recipes
from tests.integration.test_recipes import (  # noqa: F401
    PACKAGE_CACHE,
    report,
    scratchpack,
    tag,
    talk,
    user_dir,
)

pytestmark = pytest.mark.engine

# mariadb-install-db on the first start, then the server on every address (issue 22 survey,
# problem 1: /var/lib/mysql is made only by the maintainer scripts' mkdir).
MARIADB_FIRST_START = """\
#!/bin/sh
set -e
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
fi
exec mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/tmp/mysqld.sock \\
    --bind-address=0.0.0.0 --skip-grant-tables
"""


def _mariadb_protocol(host_port: int) -> str:
    """The protocol version of the server's first packet (10), read as a client does."""
    with socket.create_connection(("127.0.0.1", host_port), timeout=5) as connection:
        packet = connection.recv(4096)
    if len(packet) < 5:
        raise OSError("no handshake yet")
    return str(packet[4])


def test_mariadb_from_packages_makes_its_data_directory(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    start = recipes.write_app(user_dir, "start.sh", MARIADB_FIRST_START, mode=0o755)
    image = tag("mariadb-first-try")
    proc = scratchpack(
        f"build --package mariadb-server /app/start.sh -t {image} --copy {start}"
        " --user mysql --shell busybox --expose 3306",
        env=PACKAGE_CACHE,
    )
    report(docker_client, "mariadb from packages, first try", image, proc)
    assert "$dc" not in proc.stderr, proc.stderr
    assert talk(docker_client, image, 3306, _mariadb_protocol, timeout=90) == "10"
