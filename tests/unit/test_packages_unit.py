"""The pure parts of build --package: sources, maintainer scripts, locks, options files.

Table-driven over text, as apt, dpkg and users write it; no mirror, no engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from scratchpack.config_file import read_config
from scratchpack.errors import InputError
from scratchpack.image.media import Platform
from scratchpack.packages.apt import (
    PackageError,
    PackageRef,
    Source,
    _deb822_sources,
    _one_line_sources,
    sources_for,
)
from scratchpack.packages.lock import Lock, PlatformLock, read_lock
from scratchpack.packages.root import script_accounts, sysusers_accounts

DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""


def test_the_hosts_debian_sources_and_only_its_suite_family() -> None:
    sources = _deb822_sources(DEB822) + _one_line_sources(
        "deb [arch=amd64 signed-by=/k.gpg] http://security.debian.org/debian-security "
        "bookworm-security main\n# deb http://x y z\n"
    )
    assert len(sources) == 3  # deb-src left out
    chosen = sources_for(sources, "bookworm", "trixie")
    assert [(s.uris, s.suites, s.signed_by) for s in chosen] == [
        (("http://deb.debian.org/debian",), ("trixie", "trixie-updates"),
         "/usr/share/keyrings/debian-archive-keyring.gpg"),
        (("http://security.debian.org/debian-security",), ("trixie-security",), "/k.gpg"),
    ]  # fmt: skip
    with pytest.raises(PackageError, match="no apt source"):
        sources_for([Source(("http://x",), ("nodistro",), ("main",))], "bookworm", "bookworm")


POSTGRES_POSTINST = """\
if [ "$1" = configure ]; then
    [ "$DPKG_MAINTSCRIPT_PACKAGE" ] && quiet="--quiet"
    if ! getent passwd postgres > /dev/null; then
        adduser --system $quiet --home /var/lib/postgresql --no-create-home \\
            --shell /bin/bash --group --gecos "PostgreSQL administrator" postgres
    fi
    if ! getent group postgres > /dev/null; then
        addgroup --system $quiet postgres
    fi
    adduser $quiet postgres ssl-cert
fi
"""
REDIS_POSTINST = """\
USER="redis"
adduser \\
    --system \\
    --home /var/lib/redis \\
    --quiet \\
    --group \\
    ${USER} || true
"""


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (POSTGRES_POSTINST, [("postgres", True, "/var/lib/postgresql", "/bin/bash", True),
                             ("postgres", False, "/nonexistent", "/usr/sbin/nologin", False)]),
        (REDIS_POSTINST, [("redis", True, "/var/lib/redis", "/usr/sbin/nologin", True)]),
        ("useradd -r -d /srv/app -s /bin/false app\n",
         [("app", True, "/srv/app", "/bin/false", False)]),
        ("groupadd --system web && echo ok\n",
         [("web", False, "/nonexistent", "/usr/sbin/nologin", False)]),
        ('adduser --system "$NAME"\n', []),  # a computed name is not guessed
        ("adduser someone\n", []),  # not a system user
    ],
)  # fmt: skip
def test_system_accounts_in_maintainer_scripts(script: str, expected: list[tuple]) -> None:
    found = script_accounts(script, "pkg")
    assert [(a.name, a.is_user, a.home, a.shell, a.own_group) for a in found] == expected


def test_sysusers_files() -> None:
    text = 'u messagebus - "System Message Bus" /nonexistent -\ng netdev -\n# u x\n'
    found = sysusers_accounts(text, "dbus")
    assert [(a.name, a.is_user) for a in found] == [("messagebus", True), ("netdev", False)]


REF = PackageRef("curl", "7.88.1-10", "arm64", "pool/main/c/curl/curl.deb", 10, "a" * 64)


def test_a_lock_round_trips_and_checks_what_it_was_made_for(tmp_path: Path) -> None:
    lock = Lock("bookworm", ("curl",), {"linux/arm64/v8": PlatformLock("arm64", (REF,), {})})
    path = tmp_path / "x.lock"
    path.write_bytes(lock.to_bytes())
    again = read_lock(path)
    assert again == lock and again.to_bytes() == lock.to_bytes()
    again.check("bookworm", ("curl",), "linux/arm64/v8", path)
    with pytest.raises(PackageError, match="was made for"):
        again.check("bookworm", ("wget",), "linux/arm64/v8", path)
    with pytest.raises(PackageError, match="no packages for linux/amd64"):
        again.check("bookworm", ("curl",), "linux/amd64", path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(lockVersion=2), "not a scratchpack lock"),
        (lambda d: d.update(platforms=[]), "platforms must be an object"),
        (lambda d: d["platforms"]["linux/arm64/v8"].update(packages={}), "packages must be a list"),
        (lambda d: d["platforms"]["linux/arm64/v8"]["packages"][0].update(sha256="zz"), "64 hex"),
        (lambda d: d["platforms"]["linux/arm64/v8"]["packages"][0].update(size="1"), "size"),
        (lambda d: d["platforms"]["linux/arm64/v8"]["packages"][0].update(name="a b"), "name"),
    ],
)
def test_a_damaged_lock_is_one_line_naming_the_field(tmp_path: Path, change, message: str) -> None:
    lock = Lock("bookworm", ("curl",), {"linux/arm64/v8": PlatformLock("arm64", (REF,), {})})
    document = json.loads(lock.to_bytes())
    change(document)
    path = tmp_path / "x.lock"
    path.write_text(json.dumps(document))
    with pytest.raises(PackageError, match=message):
        read_lock(path)


@pytest.mark.parametrize(
    ("debian", "oci"),
    [("amd64", "linux/amd64"), ("arm64", "linux/arm64/v8"), ("armhf", "linux/arm/v7"),
     ("ppc64el", "linux/ppc64le"), ("i386", "linux/386")],
)  # fmt: skip
def test_debian_architectures_and_platforms(debian: str, oci: str) -> None:
    assert str(Platform.from_debian(debian)) == oci
    assert Platform.parse(oci).debian_architecture == debian


@click.command()
@click.argument("binaries", nargs=-1)
@click.option("--tag")
@click.option("--package", "packages", multiple=True)
@click.option("--debug", is_flag=True)
@click.option("--retries", type=int)
@click.option("--layers", type=click.Choice(["one", "split"]))
def _build(**_kwargs: object) -> None:
    """A command shaped like build, for the options file."""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tag: a:1\npackage: [curl, wget]\ndebug: true\nretries: 3\nbinary: [/x]\n",
         {"tag": "a:1", "packages": ("curl", "wget"), "debug": True, "retries": 3,
          "binaries": ("/x",)}),
        ("", {}),
    ],
)  # fmt: skip
def test_an_options_file_gives_the_commands_defaults(tmp_path: Path, text: str, expected) -> None:
    path = tmp_path / "scratchpack.yaml"
    path.write_text(text)
    assert read_config(path, _build) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tag: a\nfrobnicate: 1\n", ":2: unknown option 'frobnicate'"),
        ("package: curl\n", ":1: package is repeatable: give a list"),
        ("debug: yes please\n", ":1: debug is a flag"),
        ("retries: three\n", ":1: retries takes a number"),
        ("tag: [a, b]\n", ":1: tag takes one value"),
        ("layers: three\n", ":1: layers is one of one, split"),
        ("tag: a\ntag: b\n", ":2: tag is given twice"),
        ("- tag\n", ":1: expected a mapping"),
        ("tag: [unclosed\n", "not YAML"),
    ],
)
def test_an_options_file_error_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scratchpack.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        read_config(path, _build)


_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tag: !!python/object:os.system {}\n", r":1: .*tags? .*not taken"),
        ("tag: !!python/name:os.system\n", r":1: .*tags? .*not taken"),
        ("retries: !!int twelve\n", r":1: .*tags? .*not taken"),
        ("retries: " + "9" * 5000 + "\n", r":1: retries takes a number"),
        ("package: " + "[" * 20000 + "]" * 20000 + "\n", r":1: .*nest"),
        ("package: [" + "{a: " * 30 + "1" + "}" * 30 + "]\n", r":1: .*nest"),
        (_LAUGHS, r":1: .*(anchor|alias)"),
        ("tag: &t x\nbinary: [*t]\n", r":1: .*(anchor|alias)"),
        ("tag: a\n---\ntag: b\n", r":2: .*one document"),
    ],
)
def test_a_hostile_options_file_is_one_line_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """Tags, bad scalars, nesting and alias bombs: one line (exit 2), never a traceback."""
    path = tmp_path / "scratchpack.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(str(path)) + message):
        read_config(path, _build)
