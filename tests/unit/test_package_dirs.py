"""A package server's first start: what Debian leaves beside its files (issue 22, PostgreSQL).

Hand-made ``.deb`` files (:mod:`tests.debkit`) shaped like Debian 12's
postgresql-15 and postgresql-common: the program, ``initdb`` and their
siblings outside ``PATH``; the ``postgres`` account and its home, created and
shipped by postgresql-common (another source); the socket directory that only
its tmpfiles.d file and postinst make; and ``Depends: tzdata``. The tmpfiles.d
and ``install -d`` lines are a package's words: literal absolute paths under
the runtime directories, planned as empty directories of the image, never a
path of this machine and never through a link.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import collecting
from scratchpack.packages.apt import PackageRef
from scratchpack.packages.root import PackageRoot, unpack_packages
from scratchpack.plan.entries import EntryKind, Reason
from scratchpack.plan.essentials import Essentials, add_users
from scratchpack.plan.from_packages import (
    add_package_dirs,
    add_system_files,
    created_accounts,
    entry_program,
    own_homes,
    package_essentials,
    select,
)
from scratchpack.plan.rootplan import RootPlan
from tests.debkit import Deb, Dir, File, Link, build_deb

PASSWD_MASTER = (
    "root:*:0:0:root:/root:/bin/sh\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP_MASTER = "root:*:0:\ndaemon:*:1:\nadm:*:4:\nnogroup:*:65534:\n"
BASE_PASSWD = Deb(
    "base-passwd",
    files={
        "usr/share/base-passwd/passwd.master": PASSWD_MASTER,
        "usr/share/base-passwd/group.master": GROUP_MASTER,
    },
)
BIN = "/usr/lib/postgresql/15/bin"
ELF = File(b"\x7fELF program", 0o755)
POSTGRES_BIN = {
    f"{BIN}/postgres": ELF,
    f"{BIN}/initdb": File(b"#!/bin/sh\nexec true\n", 0o755),
    **{f"{BIN}/pg_tool{n}": ELF for n in range(8)},  # 10 programs in all
    f"{BIN}/notes.txt": File(b"not a program", 0o644),
    f"{BIN}/data.bin": File(b"x-bit but neither ELF nor script", 0o755),
    "/usr/share/postgresql/15/postgres.bki": "data",
}
TMPFILES = (
    "# Directory for PostgreSQL sockets, lockfiles and stats tempfiles\n"
    "d /run/postgresql 2775 postgres postgres - -\n"
    "# Log directory\n"
    "d /var/log/postgresql 1775 root postgres - -\n"
)
COMMON_POSTINST = (
    "adduser --system $quiet --home /var/lib/postgresql --no-create-home \\\n"
    '    --shell /bin/bash --group --gecos "PostgreSQL administrator" postgres\n'
    "chown postgres:postgres /var/lib/postgresql\n"
    "[ -d /var/run/postgresql ] || \\\n"
    "   install -d -m 2775 -o postgres -g postgres /var/run/postgresql\n"
)
COMMON = Deb(
    "postgresql-common",
    files={
        "var/lib/postgresql/": Dir(0o755),
        "var/lib/postgresql/stray": "never in the image: the home is kept empty",
        "var/log/postgresql/": Dir(0o755),
        "usr/lib/tmpfiles.d/postgresql-common.conf": TMPFILES,
    },
    scripts={"postinst": COMMON_POSTINST},
)
TZDATA = Deb(
    "tzdata",
    files={
        "usr/share/zoneinfo/UTC": "TZif",
        "usr/share/zoneinfo/localtime": Link("/etc/localtime"),
    },
)


def _postgres(depends: str = "postgresql-common, tzdata") -> Deb:
    return Deb("postgresql-15", files=POSTGRES_BIN, control={"Depends": depends})


def _root(tmp_path: Path, *debs: Deb, depends: str | None = None) -> PackageRoot:
    """``debs`` unpacked as build --package unpacks them; each index names its Depends."""
    pairs = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        index = f"Package: {deb.name}\nVersion: {deb.version}\n"
        if "Depends" in deb.control:
            index += f"Depends: {deb.control['Depends']}\n"
        ref = PackageRef(deb.name, deb.version, deb.architecture, "p", 1, "0" * 64, index=index)
        pairs.append((ref, path))
    top = tmp_path / "root"
    top.mkdir()
    return unpack_packages(pairs, top)


def _server_root(tmp_path: Path, *extra: Deb) -> PackageRoot:
    return _root(tmp_path, BASE_PASSWD, _postgres(), COMMON, TZDATA, *extra)


def _planned_server_root(tmp_path: Path) -> PackageRoot:
    """As :func:`_server_root`, its programs scripts: a whole plan resolves no fake ELF file."""
    scripts = {path: File(b"#!/bin/sh\n", 0o755) for path in POSTGRES_BIN if "/bin/" in path}
    postgres = Deb("postgresql-15", files=scripts, control={"Depends": "postgresql-common, tzdata"})
    return _root(tmp_path, BASE_PASSWD, postgres, COMMON, TZDATA)


def _plan(root: PackageRoot, named: tuple[str, ...], user: str | None) -> RootPlan:
    """The named packages planned as build --package plans them, up to their directories."""
    plan = RootPlan(source_parent_modes=False)
    fs = RootFS(str(root.top))
    selection = select(root, named)
    for path in selection.paths:
        with contextlib.suppress(InputError):
            plan.add_listed(fs, path, Reason.PACKAGE)
    add_users(plan, fs, user, created_accounts(root, selection.packages))
    plan.add_dir("/tmp", 0o1777, Reason.ESSENTIAL, "tmp")
    plan.add_dir("/run", 0o755, Reason.ESSENTIAL, "run")
    add_system_files(plan)
    own_homes(plan, root)
    add_package_dirs(plan, root, user)
    return plan


def _ids(plan: RootPlan, name: str) -> tuple[int, int]:
    passwd = plan.entries["/etc/passwd"].data or b""
    for line in passwd.decode().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no {name} in {passwd!r}")


def _dir(plan: RootPlan, path: str) -> tuple[int, int, int]:
    entry = plan.entries[path]
    assert entry.kind is EntryKind.DIR and not entry.implied, entry
    return entry.uid, entry.gid, entry.mode


# ------------------------------------------------------------ which program


def test_no_program_on_path_lists_the_packages_programs_elsewhere(tmp_path: Path) -> None:
    """``--package postgresql-15`` said only "put no program on PATH"."""
    root = _server_root(tmp_path)
    with pytest.raises(InputError) as raised:
        entry_program(root, select(root, ["postgresql-15"]), ["postgresql-15"], None)
    message = str(raised.value)
    assert message.startswith("--package postgresql-15: put no program on PATH")
    assert f"{BIN}/initdb" in message and f"{BIN}/postgres" in message
    assert "notes.txt" not in message and "data.bin" not in message and ".bki" not in message
    assert message.count(f"{BIN}/") == 8 and ", …" in message
    assert "choose one with --entrypoint or BINARY" in message


# ------------------------------------------------------------ the user's home


def test_the_users_home_shipped_by_another_source_is_an_empty_directory_of_the_image(
    tmp_path: Path,
) -> None:
    """initdb: could not create directory "/var/lib/postgresql": Permission denied."""
    root = _server_root(tmp_path)
    plan = _plan(root, ("postgresql-15",), "postgres")
    uid, gid = _ids(plan, "postgres")
    assert _dir(plan, "/var/lib/postgresql") == (uid, gid, 0o755)
    assert "/var/lib/postgresql/stray" not in plan.entries
    assert not any(path.startswith("/usr/share/base-passwd") for path in plan.entries)


def test_no_home_for_another_user_nor_a_system_directory(tmp_path: Path) -> None:
    script = "adduser --system --home /var/lib --group sneaky\n"
    sneaky = Deb("sneaky", files={"var/lib/": Dir(0o777)}, scripts={"postinst": script})
    root = _root(tmp_path, BASE_PASSWD, _postgres(), COMMON, sneaky)
    plan = _plan(root, ("postgresql-15",), "nobody")
    assert "/var/lib/postgresql" not in plan.entries
    plan = _plan(root, ("postgresql-15",), "sneaky")
    var_lib = plan.entries.get("/var/lib")
    assert var_lib is None or (var_lib.uid == 0 and var_lib.mode != 0o777)


# ------------------------------------------------------------ tmpfiles.d and install -d


def test_the_socket_directory_of_tmpfiles_and_postinst_is_planned_with_its_owner(
    tmp_path: Path,
) -> None:
    root = _server_root(tmp_path)
    with collecting() as warnings:
        plan = _plan(root, ("postgresql-15",), "postgres")
    uid, gid = _ids(plan, "postgres")
    assert plan.entries["/var/run"].kind is EntryKind.SYMLINK
    assert _dir(plan, "/run/postgresql") == (uid, gid, 0o2775)
    assert _dir(plan, "/var/log/postgresql") == (0, gid, 0o1775)
    assert warnings.messages == []


def test_install_d_alone_makes_the_directory(tmp_path: Path) -> None:
    script = (
        "install -d -m 0750 -o daemon -g daemon /var/run/app /var/cache/app >/dev/null || true\n"
        "install -d /var/spool/app\ninstall -m 644 /etc/app.conf /var/lib/app.conf\n"
    )
    app = Deb("app", files={"usr/bin/app": "x"}, scripts={"postinst": script})
    root = _root(tmp_path, BASE_PASSWD, app)
    plan = _plan(root, ("app",), "daemon")
    assert _dir(plan, "/run/app") == (1, 1, 0o750)
    assert _dir(plan, "/var/cache/app") == (1, 1, 0o750)
    assert _dir(plan, "/var/spool/app") == (0, 0, 0o755)
    assert "/var/lib/app.conf" not in plan.entries


def test_tmpfiles_defaults_and_D_lines(tmp_path: Path) -> None:
    text = "D /run/app - - -\nd /var/lib/app :0700 daemon\nf /run/app.pid 0644 - -\n"
    app = Deb("app", files={"usr/bin/app": "x", "usr/lib/tmpfiles.d/app.conf": text})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), "daemon")
    assert _dir(plan, "/run/app") == (0, 0, 0o755)
    assert _dir(plan, "/var/lib/app") == (1, 0, 0o700)
    assert "/run/app.pid" not in plan.entries


HOSTILE_LINES = [
    "d /run/../../etc 0777 root root",
    "d /run/app/../../etc/evil 0777 root root",
    "d run/relative 0777 root root",
    "d /run/%t/evil 0777 root root",
    "d /run/$HOME 0777 root root",
    "d /run/ev*l 0777 root root",
    "d /etc/evil 0777 root root",
    "d /usr/bin 0777 root root",
    "d /var/lib/escape/evil 0777 root root",  # escape is a link to /etc
    "d /var/lib/x 0777 nosuchuser root",
]


@pytest.mark.parametrize("line", HOSTILE_LINES)
def test_a_hostile_tmpfiles_line_makes_nothing(tmp_path: Path, line: str) -> None:
    files = {
        "usr/bin/app": "x",
        "var/lib/escape": Link("/etc"),
        "usr/lib/tmpfiles.d/app.conf": line + "\n",
    }
    app = Deb("app", files=files)
    root = _root(tmp_path, BASE_PASSWD, app)
    plan = _plan(root, ("app",), None)
    made = [e.path for e in plan.entries.values() if e.kind is EntryKind.DIR and e.mode == 0o777]
    assert made == []
    assert not any("evil" in path or "relative" in path for path in plan.entries)
    assert plan.entries["/var/lib/escape"].kind is EntryKind.SYMLINK
    assert not (Path("/etc") / "evil").exists()


@pytest.mark.parametrize(
    "line",
    [
        "install -d -m 0777 /run/../etc",
        "install -d -m 0777 /var/lib/escape/evil",
        "install -d -m 0777 $DIR/evil",
        "install -d -m 0777 /etc/evil",
        "install -d -m 0777 -o nosuchuser /run/evil",
    ],
)
def test_a_hostile_install_line_makes_nothing(tmp_path: Path, line: str) -> None:
    files = {"usr/bin/app": "x", "var/lib/escape": Link("/etc")}
    app = Deb("app", files=files, scripts={"postinst": line + "\n"})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert not any("evil" in path for path in plan.entries)
    assert [
        e.path for e in plan.entries.values() if e.mode == 0o777 and e.kind is EntryKind.DIR
    ] == []


def test_a_package_link_at_var_run_is_not_planned_through(tmp_path: Path) -> None:
    script = "install -d -m 0777 /var/run/evil\n"
    files = {"usr/bin/app": "x", "var/run": Link("/etc")}
    app = Deb("app", files=files, scripts={"postinst": script})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert not any("evil" in path for path in plan.entries)


# ------------------------------------------------------------ tzdata


def test_a_direct_tzdata_dependency_keeps_the_zone_files_and_says_so(tmp_path: Path) -> None:
    root = _server_root(tmp_path)
    with collecting() as warnings:
        kept = package_essentials(Essentials(), root, select(root, ["postgresql-15"]))
    assert kept.tzdata
    assert len(warnings.messages) == 1 and "tzdata" in warnings.messages[0]
    for depends in ("postgresql-common", "postgresql-common, tzdata-legacy | foo"):
        other = _root(tmp_path / depends.replace(" ", "_"), _postgres(depends), TZDATA)
        with collecting() as warnings:
            assert not package_essentials(
                Essentials(), other, select(other, ["postgresql-15"])
            ).tzdata
        assert warnings.messages == []


def test_a_dangling_link_of_a_package_root_names_no_temporary_directory(tmp_path: Path) -> None:
    """--tzdata warned "zoneinfo/localtime -> /etc/localtime: points to nothing in /tmp/…"."""
    root = _server_root(tmp_path)
    plan = RootPlan()
    with collecting() as warnings:
        plan.add_tree(RootFS(str(root.top)), "/usr/share/zoneinfo", Reason.ESSENTIAL)
    assert plan.entries["/usr/share/zoneinfo/localtime"].kind is EntryKind.SYMLINK
    assert not any(str(tmp_path) in message for message in warnings.messages)


# ------------------------------------------------------------ python3's postinst


def test_script_changes_to_paths_the_root_lacks_warn_nothing(tmp_path: Path) -> None:
    """python3.11-minimal: chmod/chown of /usr/local/lib/python3.11 gave 4 warnings."""
    script = (
        "if [ -d /usr/local/lib/python3.11 ]; then\n"
        "  chmod 2775 /usr/local/lib/python3.11 2>/dev/null || true\n"
        "  chown root:staff /usr/local/lib/python3.11 2>/dev/null || true\n"
        "fi\n"
        "chmod $perm /usr/local/lib/python3.11/dist-packages 2>/dev/null || true\n"
        "chown root:$group /usr/local/lib/python3.11/dist-packages 2>/dev/null || true\n"
        "chown root:staff /usr/local/lib/python3.11/dist-packages 2>/dev/null || true\n"
    )
    python = Deb(
        "python3.11-minimal", files={"usr/bin/python3.11": "x"}, scripts={"postinst": script}
    )
    root = _root(tmp_path, BASE_PASSWD, python)
    assert root.owner_notes == ()


# ------------------------------------------------------------ the whole plan


def test_entrypoint_bin_sh_with_shell_busybox_needs_no_binary(
    tmp_path: Path, static_busybox: Path
) -> None:
    """``--entrypoint /bin/sh --shell busybox`` said "/bin/sh is not in the package root"."""
    from scratchpack.plan.image_plan import BuildOptions, plan_image

    root = _planned_server_root(tmp_path)
    options = BuildOptions(
        binaries=(),
        root=str(root.top),
        packages=("postgresql-15",),
        package_root=root,
        essentials=Essentials(shell=str(static_busybox)),
    )
    with collecting():
        plan = plan_image(options, ImageConfig(entrypoint=("/bin/sh",), user="postgres"))
    entries = plan.root.entries
    assert plan.config.entrypoint == ("/bin/sh",)
    assert entries["/bin/sh"].source is not None
    assert Path(entries["/bin/sh"].source).samefile(static_busybox)
    assert entries["/var/lib/postgresql"].kind is EntryKind.DIR
    assert entries["/run/postgresql"].kind is EntryKind.DIR
    assert entries["/usr/share/zoneinfo/UTC"].kind is EntryKind.FILE


def test_the_tzdata_of_a_dependency_can_be_excluded(tmp_path: Path, static_busybox: Path) -> None:
    from scratchpack.plan.image_plan import BuildOptions, plan_image

    root = _planned_server_root(tmp_path)
    options = BuildOptions(
        binaries=("/bin/sh",),
        root=str(root.top),
        packages=("postgresql-15",),
        package_root=root,
        excludes=("/usr/share/zoneinfo",),
        essentials=Essentials(shell=str(static_busybox)),
    )
    with collecting() as warnings:
        plan = plan_image(options, ImageConfig(entrypoint=None))
    assert not any(path.startswith("/usr/share/zoneinfo") for path in plan.root.entries)
    assert not any("matched nothing" in message for message in warnings.messages)


# ------------------------------------------------------------ grammar


def test_one_shell_call_runs_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "calls system(), which run /bin/sh": one call runs it."""
    from scratchpack.plan import image_plan
    from scratchpack.plan.programs import Program

    monkeypatch.setattr(image_plan, "shell_calls", lambda host: ["system"])
    with collecting() as warnings:
        image_plan._warn_about_shell_calls(
            RootFS("/"), [Program("/bin/true", ("/bin/true",), "true")]
        )
    assert warnings.messages and "calls system(), which runs /bin/sh;" in warnings.messages[0]
    monkeypatch.setattr(image_plan, "shell_calls", lambda host: ["popen", "system"])
    with collecting() as warnings:
        image_plan._warn_about_shell_calls(
            RootFS("/"), [Program("/bin/true", ("/bin/true",), "true")]
        )
    assert "calls popen(), system(), which run /bin/sh;" in warnings.messages[0]


# ------------------------------------------------------------ the first-try survey (issue 22)

# mariadb-server's preinst and postinst (Debian 12), abridged: the data directory is made
# by mkdir, then chowned through find | xargs; the account's home is /nonexistent.
MARIADB_PREINST = """\
mysql_datadir=/var/lib/mysql
mysql_upgradedir=/var/lib/mysql-upgrade
if ! getent group mysql >/dev/null; then
 \taddgroup --system mysql >/dev/null
fi
if ! getent passwd mysql >/dev/null; then
\tadduser \\
\t  --system \\
\t  --disabled-login \\
\t  --ingroup mysql \\
\t  --no-create-home \\
\t  --home /nonexistent \\
\t  --shell /bin/false \\
\t  mysql  >/dev/null 2>&1
fi
for dir in DATADIR LOGDIR; do
  checkdir=$(eval echo "$"$dir)
  if [ -L "$checkdir" ]; then
    mkdir -pZ "$mysql_upgradedir"
  fi
done
if [ ! -d $mysql_datadir ] && [ ! -L $mysql_datadir ]; then
  mkdir -Z $mysql_datadir
fi
set +e
find $mysql_datadir ! -uid "$(id -u mysql)" -print0 | xargs -0 -r chown mysql
find $mysql_datadir -follow -not -group mysql -print0 2>/dev/null \\
  | xargs -0 --no-run-if-empty chgrp mysql
set -e
"""
MARIADB_POSTINST = """\
    mysql_statedir=/usr/share/mysql
    mysql_datadir=/var/lib/mysql
    mysql_cfgdir=/etc/mysql
    if [ ! -d "$mysql_statedir" ] && [ ! -L "$mysql_statedir" ]; then mkdir -Z "$mysql_statedir"; fi
    if [ ! -d "$mysql_datadir"  ] && [ ! -L "$mysql_datadir" ]; then mkdir -Z "$mysql_datadir" ; fi
    find $mysql_statedir ! -uid 0 -print0 -or ! -gid 0 -print0 | xargs -0 -r sudo chown 0:0
    find $mysql_datadir ! -uid "$(id -u mysql)" -print0 | xargs -0 -r chown mysql
    dc=$mysql_cfgdir/debian.cnf;
    if [ ! -e "$dc" ]; then
        cat /dev/null > $dc
    fi
    chown 0:0 $dc
    chmod 0600 $dc
"""
MARIADB = Deb(
    "mariadb-server",
    files={"usr/sbin/mariadbd": ELF, "usr/share/mysql/": Dir(0o755)},
    scripts={"preinst": MARIADB_PREINST, "postinst": MARIADB_POSTINST},
)


def _group_lines(plan: RootPlan) -> list[str]:
    return (plan.entries["/etc/group"].data or b"").decode().splitlines()


def test_mariadbs_data_directory_is_made_by_mkdir_and_owned_through_find(tmp_path: Path) -> None:
    """Survey problem 1: "Can't create database directory '/var/lib/mysql'"."""
    root = _root(tmp_path, BASE_PASSWD, MARIADB)
    with collecting() as warnings:
        plan = _plan(root, ("mariadb-server",), "mysql")
    uid, gid = _ids(plan, "mysql")
    assert _dir(plan, "/var/lib/mysql") == (uid, gid, 0o755)
    assert warnings.messages == []  # nor 'chown 0:0 $dc': /etc/mysql/debian.cnf is not held


def test_mkdir_of_a_created_users_home_is_the_users(tmp_path: Path) -> None:
    script = (
        "adduser --system --home /var/lib/app --no-create-home --group app\n"
        "mkdir -p -m 0750 /var/lib/app /var/cache/app\nmkdir /etc/app /var/lib/app/sub\n"
    )
    app = Deb("app", files={"usr/bin/app": "x"}, scripts={"postinst": script})
    with collecting() as warnings:
        plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), "app")
    uid, gid = _ids(plan, "app")
    assert _dir(plan, "/var/lib/app") == (uid, gid, 0o750)
    assert _dir(plan, "/var/cache/app") == (0, 0, 0o750)  # no chown: root's
    assert _dir(plan, "/var/lib/app/sub") == (0, 0, 0o755)
    assert "/etc/app" not in plan.entries
    assert warnings.messages == []


def test_a_later_chown_gives_a_made_directory_its_owner(tmp_path: Path) -> None:
    script = (
        "LOG=/var/log/app\nmkdir -p $LOG\nchown daemon:daemon $LOG\nchmod 2750 $LOG\n"
        "mkdir /var/spool/app\ndpkg-statoverride --update --add daemon daemon 0700 /var/spool/app\n"
    )
    app = Deb("app", files={"usr/bin/app": "x"}, scripts={"postinst": script})
    with collecting() as warnings:
        plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), "daemon")
    assert _dir(plan, "/var/log/app") == (1, 1, 0o2750)
    assert _dir(plan, "/var/spool/app") == (1, 1, 0o700)
    assert warnings.messages == []


@pytest.mark.parametrize(
    "line",
    ["mkdir -p $UNKNOWN/evil", "mkdir -m $MODE /var/lib/evil", "mkdir --parents=x /var/lib/evil"],
)
def test_a_mkdir_line_not_understood_is_warned_about(tmp_path: Path, line: str) -> None:
    app = Deb("app", files={"usr/bin/app": "x"}, scripts={"postinst": f"set -e\n{line}\n"})
    with collecting() as warnings:
        plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert not any("evil" in path for path in plan.entries)
    assert any("postinst line 2" in message for message in warnings.messages), warnings.messages


@pytest.mark.parametrize(
    "line",
    ["mkdir -m 0777 /run/../etc/evil", "mkdir -m 0777 /var/lib/escape/evil", "mkdir /etc/evil"],
)
def test_a_hostile_mkdir_line_makes_nothing(tmp_path: Path, line: str) -> None:
    files = {"usr/bin/app": "x", "var/lib/escape": Link("/etc")}
    app = Deb("app", files=files, scripts={"postinst": line + "\n"})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert not any("evil" in path for path in plan.entries)


DNSMASQ = Deb(
    "dnsmasq",
    files={
        "usr/sbin/dnsmasq": ELF,
        "usr/lib/tmpfiles.d/dnsmasq.conf": "d /run/dnsmasq 755 dnsmasq nogroup\n",
    },
    scripts={
        "postinst": "adduser --system --home /var/lib/misc --gecos dnsmasq "
        "--no-create-home --disabled-password --quiet dnsmasq || true\n"
    },
)


def test_debians_nogroup_is_in_the_image_when_a_package_names_it(tmp_path: Path) -> None:
    """Survey problem 2: "/run/dnsmasq: no account 'nogroup' in the image; not made"."""
    with collecting() as warnings:
        plan = _plan(_root(tmp_path, BASE_PASSWD, DNSMASQ), ("dnsmasq",), "dnsmasq")
    uid, gid = _ids(plan, "dnsmasq")
    assert gid == 65534
    assert _dir(plan, "/run/dnsmasq") == (uid, 65534, 0o755)
    groups = _group_lines(plan)
    assert "nogroup:x:65534:" in groups and "nobody:x:65534:" in groups
    assert groups.index("nogroup:x:65534:") < groups.index("nobody:x:65534:")  # shown so
    assert warnings.messages == []


def test_no_nogroup_when_no_package_names_it(tmp_path: Path) -> None:
    app = Deb("app", files={"usr/bin/app": "x"})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert not any(line.startswith("nogroup:") for line in _group_lines(plan))


def test_package_images_have_var_tmp_beside_tmp(tmp_path: Path) -> None:
    """Survey problem 3: lighttpd's "server.upload-dirs doesn't exist: /var/tmp"."""
    app = Deb("app", files={"usr/bin/app": "x"})
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert _dir(plan, "/var/tmp") == (0, 0, 0o1777)


def test_variables_built_from_variables_are_substituted(tmp_path: Path) -> None:
    """Survey problem 4: nginx-common's 'chmod 640 "$access_log"' warned 4 times."""
    script = (
        'logdir="/var/log/nginx"\naccess_log="$logdir/access.log"\n'
        'error_log="${logdir}/error.log"\n'
        'if [ ! -e "$access_log" ]; then\n  touch "$access_log"\n'
        '  chmod 640 "$access_log"\n  chown www-data:adm "$access_log"\nfi\n'
        'chmod 640 "$error_log"\n'
    )
    nginx = Deb("nginx-common", files={"var/log/nginx/": Dir(0o755)}, scripts={"postinst": script})
    root = _root(tmp_path, BASE_PASSWD, nginx)
    assert root.owner_notes == ()


def test_a_tmpfiles_file_that_links_out_is_read_inside_the_root(tmp_path: Path) -> None:
    """A package's tmpfiles.d entry that is a link to a host file reads nothing of the host."""
    host_file = tmp_path / "host-tmpfiles.conf"
    host_file.write_text("d /run/from-the-host 0777 root root\n")
    app = Deb(
        "app",
        files={
            "usr/bin/app": "x",
            "usr/lib/tmpfiles.d/app.conf": Link(str(host_file)),
            "usr/lib/tmpfiles.d/rel.conf": Link("../../../.." + str(host_file)),
        },
    )
    plan = _plan(_root(tmp_path, BASE_PASSWD, app), ("app",), None)
    assert "/run/from-the-host" not in plan.entries
