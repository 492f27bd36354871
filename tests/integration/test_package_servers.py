"""Servers from Debian packages on the first try, with no workaround (issue 22, PostgreSQL).

``test_recipes.test_postgres_from_packages_first_start`` needed three: ``--include
/var/lib/postgresql`` (the postgres account's home, shipped by postgresql-common,
another source), ``--tzdata`` (postgresql-15 depends on tzdata; initdb looks for the
zone files) and ``unix_socket_directories=/tmp`` (``/run/postgresql`` is made only by
postgresql-common's postinst and tmpfiles.d file). Here the build names none of them,
and ``psql`` on this machine talks to the result.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import recipes
from tests.integration.test_recipes import (  # noqa: F401
    PACKAGE_CACHE,
    PG_BIN,
    inline_cmd,
    need,
    psql_query,
    report,
    scratchpack,
    tag,
    talk,
    user_dir,
)

pytestmark = pytest.mark.engine

# initdb on the first start into the account's home, then the server on every address;
# its socket goes where Debian's build puts it, /var/run/postgresql. No single quote.
POSTGRES_FIRST_START = f"""\
#!/bin/sh
set -e
PATH={PG_BIN}
export PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --auth=trust --username=postgres
    echo "host all all all trust" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses="*"
"""


def _server_facts(host_port: int) -> str:
    return psql_query(
        host_port,
        "select 1, current_setting('data_directory'), current_setting('unix_socket_directories'),"
        " now() is not null, current_setting('TimeZone') <> ''",
    )


def test_postgres_from_packages_without_workarounds(docker_client, tag, user_dir: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    need("psql")
    start = recipes.write_app(user_dir, "start.sh", POSTGRES_FIRST_START)
    image = tag("postgres-first-try")
    proc = scratchpack(
        f"build --package postgresql-15 {PG_BIN}/postgres -t {image} --user postgres"
        " --shell busybox --locale C.UTF-8"
        f" --entrypoint /bin/sh --cmd {inline_cmd(start)}",
        env=PACKAGE_CACHE,
    )
    report(docker_client, "postgres from packages, first try", image, proc)
    assert "depends on tzdata" in proc.stderr, proc.stderr
    assert "points to nothing" not in proc.stderr, proc.stderr
    assert "/usr/local/lib/python" not in proc.stderr, proc.stderr
    answer = talk(docker_client, image, 5432, _server_facts, timeout=120)
    assert answer == "1|/var/lib/postgresql/data|/var/run/postgresql|t|t", answer


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
