"""Accounts and owners as Debian would leave them (issue 22, finding 3).

Hand-made ``.deb`` files (:mod:`tests.debkit`) unpacked with
:func:`unpack_packages`: maintainer-script account lines read as shell words,
sysusers files that never make base-passwd's accounts package-created, owners
from the data tar's headers, and the ``chown``/``chmod``/``dpkg-statoverride``
lines of the scripts, read as text and applied only to the package's own paths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.root import PackageRoot, script_accounts, unpack_packages
from scratchpack.plan.entries import Reason
from scratchpack.plan.from_packages import own_homes, select
from scratchpack.plan.rootplan import RootPlan
from tests.debkit import Deb, Dir, File, Link, build_deb

PASSWD_MASTER = (
    "root:*:0:0:root:/root:/bin/sh\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "bin:*:2:2:bin:/bin:/usr/sbin/nologin\nwww-data:*:33:33:www-data:/var/www:/usr/sbin/nologin\n"
    "nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP_MASTER = "root:*:0:\ndaemon:*:1:\nbin:*:2:\nwww-data:*:33:\nnogroup:*:65534:\n"
BASE_PASSWD = Deb(
    "base-passwd",
    files={
        "usr/share/base-passwd/passwd.master": PASSWD_MASTER,
        "usr/share/base-passwd/group.master": GROUP_MASTER,
    },
)
# systemd 252's basic.conf (Debian 12), abridged: base-passwd's accounts, declared again.
BASIC_CONF = """\
g adm        4     -
g nogroup    65534 -
u root       0       - /root                /bin/bash
u daemon     1       - /usr/sbin            /usr/sbin/nologin
u bin        2       - /bin                 /usr/sbin/nologin
u www-data   33      - /var/www             /usr/sbin/nologin
u nobody     65534:65534 - /nonexistent         /usr/sbin/nologin
"""
SYSTEMD = Deb(
    "systemd",
    files={"usr/sbin/": Dir(), "bin/": Dir(), "usr/lib/sysusers.d/basic.conf": BASIC_CONF},
)


def _unpack(tmp_path: Path, *debs: Deb) -> PackageRoot:
    pairs = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        pairs.append((PackageRef(deb.name, deb.version, deb.architecture, "p", 1, "0" * 64), path))
    top = tmp_path / "root"
    top.mkdir()
    return unpack_packages(pairs, top)


def _planned(root: PackageRoot, *named: str) -> RootPlan:
    """The named packages' paths planned as build --package plans them, owners applied."""
    plan = RootPlan(source_parent_modes=False)
    fs = RootFS(str(root.top))
    for path in select(root, named).paths:
        with contextlib.suppress(InputError):  # a link out of the root: not planned
            plan.add_path(fs, path, Reason.PACKAGE)
    own_homes(plan, root)
    return plan


def _owner(plan: RootPlan, path: str) -> tuple[int, int, int]:
    entry = plan.entries[path]
    return entry.uid, entry.gid, entry.mode


# ------------------------------------------------------------ account lines as shell words

NONE = "/nonexistent"  # adduser --system's home when none is given
ADDUSER_LINES = [
    ("adduser --system --group memcache >/dev/null", ("memcache", NONE, None, True)),
    ("adduser --system --group memcache > /dev/null 2>&1", ("memcache", NONE, None, True)),
    ("adduser --system --group memcache>/dev/null", ("memcache", NONE, None, True)),
    ("adduser --system --group memcache 2>/dev/null || true", ("memcache", NONE, None, True)),
    ("getent passwd app >/dev/null || adduser --system app", ("app", NONE, None, False)),
    ("true && adduser --system app; echo done", ("app", NONE, None, False)),
    ("adduser --system --home /var/lib/app --shell /bin/sh app",
     ("app", "/var/lib/app", None, False)),
    ("adduser --system --ingroup web --no-create-home app", ("app", NONE, "web", False)),
    ('adduser --system --disabled-login --gecos "App; daemon" --quiet app',
     ("app", NONE, None, False)),
    ("adduser --quiet --system --home=/srv/app --group app", ("app", "/srv/app", None, True)),
    ('if ! getent passwd app; then adduser --system "app" </dev/null; fi',
     ("app", NONE, None, False)),
    ("useradd -r -d /srv/app -g web app 2>/dev/null", ("app", "/srv/app", "web", False)),
    ("(adduser --system app)", ("app", NONE, None, False)),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), ADDUSER_LINES, ids=[i for i, _ in ADDUSER_LINES])
def test_account_lines_are_shell_words(line: str, expected: tuple) -> None:
    users = [a for a in script_accounts(line + "\n", "pkg") if a.is_user]
    assert [(a.name, a.home, a.group, a.own_group) for a in users] == [expected]


def test_memcacheds_own_postinst_creates_its_user() -> None:
    script = (
        "USER=memcache\nGROUP=memcache\nDATADIR=/nonexistent\n"
        "if ! getent group $GROUP >/dev/null ; then\n    addgroup --system $GROUP >/dev/null\nfi\n"
        "if ! getent passwd $USER >/dev/null ; then\n    adduser \\\n      --system \\\n"
        "      --disabled-login \\\n      --ingroup $GROUP \\\n      --home $DATADIR \\\n"
        '      --no-create-home \\\n      --gecos "Memcached" \\\n      --shell /bin/false \\\n'
        "      $USER  >/dev/null\nfi\n"
    )
    found = script_accounts(script, "memcached")
    assert [(a.name, a.is_user, a.group, a.shell) for a in found] == [
        ("memcache", False, None, "/usr/sbin/nologin"),
        ("memcache", True, "memcache", "/bin/false"),
    ]


# ------------------------------------------------------------ sysusers and base-passwd


@pytest.mark.parametrize("with_masters", [True, False], ids=["masters", "no-masters"])
def test_systemds_sysusers_never_make_debians_accounts_package_created(
    tmp_path: Path, with_masters: bool
) -> None:
    lighttpd = Deb("lighttpd", files={"var/www/html/": Dir(), "usr/sbin/lighttpd": "x"})
    debs = [BASE_PASSWD] if with_masters else []
    root = _unpack(tmp_path, *debs, SYSTEMD, lighttpd)
    assert {a.name for a in root.accounts} <= {"adm"}
    plan = _planned(root, "lighttpd", "systemd")
    for path in ("/usr/sbin", "/bin", "/var/www", "/var/www/html"):
        assert _owner(plan, path)[:2] == (0, 0), path
    assert not any(path in root.owners for path in ("/usr/sbin", "/bin", "/var/www"))


def test_a_created_user_gets_only_a_home_its_package_ships(tmp_path: Path) -> None:
    script = (
        "adduser --system --home /var/lib/app --group app\n"
        "adduser --system --home /usr/share/other --group sneaky\n"
    )
    app = Deb("app", files={"var/lib/app/": Dir(0o750)}, scripts={"postinst": script})
    other = Deb("other", files={"usr/share/other/": Dir()})
    root = _unpack(tmp_path, BASE_PASSWD, app, other)
    plan = _planned(root, "app", "other")
    assert _owner(plan, "/var/lib/app") == (100, 100, 0o750)
    assert _owner(plan, "/usr/share/other")[:2] == (0, 0)


# ------------------------------------------------------------ owners from the tar headers


def test_tar_header_owners_are_resolved_by_name_as_dpkg_does(tmp_path: Path) -> None:
    files = {
        # lighttpd's own headers: www-data by name (33 on Debian)
        "var/log/lighttpd/": Dir(0o750, 33, 33, "www-data", "www-data"),
        # the name wins over the number, as dpkg resolves it in the installing root
        "var/cache/app/": Dir(0o755, 999, 999, "www-data", "www-data"),
        # a name the root does not know: the number
        "var/lib/unknown/": Dir(0o700, 1234, 4321, "nosuch", "nosuchgroup"),
        "usr/bin/tool": File(b"x", 0o2755, 0, 33, "root", "www-data"),
        "usr/bin/plain": File(b"x", 0o755, 0, 0, "root", "root"),
    }
    root = _unpack(tmp_path, BASE_PASSWD, Deb("lighttpd", files=files))
    plan = _planned(root, "lighttpd")
    assert _owner(plan, "/var/log/lighttpd") == (33, 33, 0o750)
    assert _owner(plan, "/var/cache/app") == (33, 33, 0o755)
    assert _owner(plan, "/var/lib/unknown") == (1234, 4321, 0o700)
    assert _owner(plan, "/usr/bin/tool") == (0, 33, 0o2755)
    assert _owner(plan, "/usr/bin/plain") == (0, 0, 0o755)


# ------------------------------------------------------------ chown, chmod, statoverride


SCRIPT_CHANGES = [
    ("chown www-data:www-data /var/log/app", "/var/log/app", (33, 33, 0o755)),
    ("chown -R www-data /var/log/app", "/var/log/app/old", (33, 0, 0o644)),
    ("chown :www-data /var/log/app 2>/dev/null || true", "/var/log/app", (0, 33, 0o755)),
    ("chown 1000:1000 /var/log/app", "/var/log/app", (1000, 1000, 0o755)),
    ("chmod 0750 /var/log/app", "/var/log/app", (0, 0, 0o750)),
    ('chmod g+w,o-rx "/var/log/app"', "/var/log/app", (0, 0, 0o770)),
    ("chmod +x /var/log/app/old >/dev/null || true", "/var/log/app/old", (0, 0, 0o755)),
    ("chmod 04755 /usr/bin/helper", "/usr/bin/helper", (0, 0, 0o4755)),
    ("dpkg-statoverride --update --add www-data www-data 0750 /var/log/app",
     "/var/log/app", (33, 33, 0o750)),
    ("if ! dpkg-statoverride --list /usr/bin/helper >/dev/null; then\n"
     "  dpkg-statoverride --force-statoverride-add --quiet --update --add root www-data 2755 "
     "/usr/bin/helper\nfi", "/usr/bin/helper", (0, 33, 0o2755)),
    ("LOG=/var/log/app\nchown www-data $LOG", "/var/log/app", (33, 0, 0o755)),
]  # fmt: skip
APP_FILES = {
    "var/log/app/": Dir(),
    "var/log/app/old": "x",
    "usr/bin/helper": File(b"x", 0o755),
}


@pytest.mark.parametrize(
    ("script", "path", "expected"), SCRIPT_CHANGES, ids=[s for s, _, _ in SCRIPT_CHANGES]
)
def test_script_ownership_changes_are_applied(
    tmp_path: Path, script: str, path: str, expected: tuple
) -> None:
    deb = Deb("app", files=APP_FILES, scripts={"postinst": script + "\n"})
    root = _unpack(tmp_path, BASE_PASSWD, deb)
    assert _owner(_planned(root, "app"), path) == expected
    assert not root.owner_notes


@pytest.mark.parametrize(
    "line",
    [
        "chown www-data $UNSET_DIR",
        "chown www-data /var/log/app/*",
        "chown $(id -u app) /var/log/app",
        "chmod u+q /var/log/app",
    ],
)
def test_what_is_not_understood_is_warned_naming_script_and_line(tmp_path: Path, line: str) -> None:
    deb = Deb("app", files=APP_FILES, scripts={"postinst": f"set -e\n{line}\n"})
    root = _unpack(tmp_path, BASE_PASSWD, deb)
    assert _owner(_planned(root, "app"), "/var/log/app") == (0, 0, 0o755)
    assert any(p == "app" and "postinst line 2" in w for p, w in root.owner_notes), root


# ------------------------------------------------------------ hostile scripts


@pytest.mark.parametrize(
    "line",
    [
        "chown root:root ../../etc/shadow",
        "chown root:root /../../etc/shadow",
        "chown www-data /var/log/link-to-host",
        "chown www-data /var/log/linked-dir/file",
        "chmod 4755 /var/log/link-to-host",
        "dpkg-statoverride --update --add root root 4755 /usr/bin/others",
        "dpkg-statoverride --update --add www-data www-data 0755 /etc/shadow",
        "chown -R www-data /",
        "chown -R www-data /usr",
    ],
)
def test_a_hostile_script_changes_no_path_but_its_own(tmp_path: Path, line: str) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("host")
    before = (host / "file").stat()
    files = {
        **APP_FILES,
        "var/log/link-to-host": Link(str(host / "file")),
        "var/log/linked-dir": Link(str(host)),
        "usr/bin/": Dir(),
    }
    evil = Deb("evil", files=files, scripts={"postinst": f"{line}\n"})
    others = Deb("others", files={"usr/bin/others": File(b"x", 0o755), "etc/shadow": "x"})
    root = _unpack(tmp_path, BASE_PASSWD, others, evil)
    after = (host / "file").stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )
    plan = _planned(root, "evil", "others")
    for path in ("/usr/bin/others", "/etc/shadow", "/usr", "/usr/bin", "/var/log"):
        assert _owner(plan, path) in ((0, 0, 0o755), (0, 0, 0o644)), path
    assert all(not key.startswith(("/etc", "/usr")) for key in root.owners)
    assert any(p == "evil" and "postinst line 1" in w for p, w in root.owner_notes), root


# ------------------------------------------------------------ variables (issue 22 survey, 4)


def _paths(script: str) -> list[str]:
    import re

    from scratchpack.packages.scripts import commands

    found = commands(script, re.compile(r"chown"), "pkg", "ownership commands")
    return [command.words[-1] for command in found]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('a=/var/log\nb="$a/app";\nchown x "$b"', "/var/log/app"),
        ("a=/one\nchown x $a\na=/two\nchown x ${a}", "/one /two"),  # the last before the use
        ("chown x $a\na=/later", "$a"),
        ("for a in /x /y; do\n  chown x $a\ndone", "$a"),
        ("a=/one\nfor f in 1; do\n  a=/two\ndone\nchown x $a", "$a"),  # assigned in a loop
        ("a=/one\na=$(cat /etc/where)\nchown x $a", "$a"),
        ("a=/one\nread a </etc/where\nchown x $a", "$a"),
        ("a=/one\nb=$a/$unknown\nchown x $b", "$b"),
        ("export a=/var/lib/app\nchown x $a/data", "/var/lib/app/data"),
        ("chown x $DPKG_ROOT/var/lib/app", "/var/lib/app"),
    ],
)
def test_plain_variables_are_substituted_in_script_order(script: str, expected: str) -> None:
    assert " ".join(_paths(script + "\n")) == expected
