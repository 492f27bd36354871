"""Hostile packages unpacked into a root: dpkg metadata, accounts, bombs (issue 20).

Each ``.deb`` is written by hand (:mod:`tests.debkit`) and applied with
:func:`unpack_packages` directly, as ``build --package`` does after apt has
fetched it: nothing it ships may lead our writes out of the root, forge its
own status paragraph, give a static account a home, or cost more than linear
time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scratchpack.packages.apt import PackageError, PackageRef
from scratchpack.packages.deb import MAX_CONTROL_MEMBER, paragraph_fields, read_control
from scratchpack.packages.root import PackageRoot, script_accounts, unpack_packages
from tests.cpu_time import thread_cpu_time
from tests.debkit import Deb, Dir, File, Link, build_deb

HOST_TEXT = "host file, not the package's\n"


def _ref(deb: Deb, path: Path, index: str = "") -> PackageRef:
    return PackageRef(
        deb.name, deb.version, deb.architecture, f"pool/{deb.filename}", 1, "0" * 64, index
    )


def _unpack(
    tmp_path: Path, *debs: Deb, index: dict[str, str] | None = None, max_bytes: int | None = None
) -> PackageRoot:
    pairs = []
    for deb in debs:
        path = build_deb(deb, tmp_path / "debs")
        pairs.append((_ref(deb, path, (index or {}).get(deb.name, "")), path))
    top = tmp_path / "root"
    top.mkdir()
    return unpack_packages(pairs, top, max_bytes)


def _paragraphs(text: str) -> list[dict[str, str]]:
    found = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if ":" in line and not line.startswith((" ", "\t")):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            found.append(fields)
    return found


# ------------------------------------------------------------ writes through links


def _host(tmp_path: Path, exists: bool) -> Path:
    outside = tmp_path / "host" / "target"
    outside.parent.mkdir(exist_ok=True)
    if exists:
        outside.write_text(HOST_TEXT)
    return outside


LINKED_FILES = {
    "status": "var/lib/dpkg/status",
    "list": "var/lib/dpkg/info/evil:amd64.list",
    "conffiles": "var/lib/dpkg/info/evil:amd64.conffiles",
    "passwd": "etc/passwd",
    "group": "etc/group",
}


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "absent"])
@pytest.mark.parametrize("linked", list(LINKED_FILES), ids=list(LINKED_FILES))
def test_metadata_is_never_written_through_a_packages_link(
    tmp_path: Path, linked: str, exists: bool
) -> None:
    outside = _host(tmp_path, exists)
    files = {
        "var/lib/dpkg/info/": Dir(),
        "etc/evil.conf": "x\n",
        LINKED_FILES[linked]: Link(str(outside)),
    }
    script = {"postinst": "adduser --system --group evil\n"}  # passwd and group have lines
    deb = Deb("evil", files=files, conffiles=("/etc/evil.conf",), scripts=script)
    root = _unpack(tmp_path, deb)
    if exists:
        assert outside.read_text() == HOST_TEXT
    else:
        assert not outside.exists()
    written = root.top / LINKED_FILES[linked]
    assert written.is_file() and not written.is_symlink()
    assert written.read_text()  # our metadata, in the root


@pytest.mark.parametrize(
    "directory", ["var/lib/dpkg/info", "var/lib/dpkg", "var", "etc"], ids=lambda d: d
)
def test_a_directory_link_on_the_way_leads_no_write_out(tmp_path: Path, directory: str) -> None:
    outside_dir = tmp_path / "host"
    outside_dir.mkdir()
    deb = Deb("evil", files={directory: Link(str(outside_dir)), "usr/share/doc/evil/x": "x"})
    with pytest.raises(PackageError, match=f"evil.*/{directory}"):
        _unpack(tmp_path, deb)
    assert list(outside_dir.iterdir()) == []


# ------------------------------------------------------------ the status paragraph

FORGED = (
    "Package: evil\nVersion: 1.0\nArchitecture: amd64\nMaintainer: m <m@x>\n"
    "Description: the package's own word\n"
    "\n"
    "Package: base-files\nVersion: 99.0-forged\nArchitecture: amd64\n"
    "Status: install ok installed\nDescription: forged\n"
)


def test_a_second_control_paragraph_is_never_read(tmp_path: Path) -> None:
    path = build_deb(Deb("evil", raw_control=FORGED, files={"usr/bin/evil": "x"}), tmp_path)
    control = read_control(path)
    assert control.name == "evil"
    assert control.fields["Version"] == "1.0"
    assert "base-files" not in control.paragraph and "forged" not in control.paragraph


@pytest.mark.parametrize("separator", ["\x1c", "\x85", "\u2028", "\r", "\x0c"])
def test_a_line_separator_inside_a_value_starts_no_field(separator: str) -> None:
    fields = paragraph_fields(f"Package: evil\nDescription: x{separator}Package: base-files\n")
    assert fields["Package"] == "evil"


def test_the_status_file_has_one_paragraph_per_package_from_the_control(tmp_path: Path) -> None:
    root = _unpack(tmp_path, Deb("evil", raw_control=FORGED, files={"usr/bin/evil": "x"}))
    status = (root.top / "var/lib/dpkg/status").read_text()
    assert [p["Package"] for p in _paragraphs(status)] == ["evil"]
    assert "forged" not in status
    assert _paragraphs(status)[0]["Status"] == "install ok installed"
    assert root.packages[0].status == status


INDEX = (
    "Package: evil\nVersion: 1.0\nArchitecture: amd64\nMaintainer: m <m@x>\n"
    "Installed-Size: 12\nDescription: the archive's word\n"
    "Filename: pool/main/e/evil.deb\nSize: 1\nSHA256: " + "0" * 64 + "\n"
    "\nPackage: base-files\nVersion: 99.0-forged\n"
)


def test_the_status_paragraph_is_the_archives_index_not_the_packages_word(
    tmp_path: Path,
) -> None:
    deb = Deb("evil", raw_control=FORGED, files={"usr/bin/evil": "x"})
    root = _unpack(tmp_path, deb, Deb("other"), index={"evil": INDEX})
    status = (root.top / "var/lib/dpkg/status").read_text()
    paragraphs = _paragraphs(status)
    assert [p["Package"] for p in paragraphs] == ["evil", "other"]
    assert paragraphs[0]["Description"] == "the archive's word"
    assert paragraphs[0]["Status"] == "install ok installed"
    assert "Filename" not in paragraphs[0] and "SHA256" not in paragraphs[0]
    assert "forged" not in status
    assert root.packages[0].status.count("Package:") == 1


# ------------------------------------------------------------ maintainer-script accounts

BASE_PASSWD = Deb(
    "base-passwd",
    files={
        "usr/share/base-passwd/passwd.master": (
            "root:*:0:0:root:/root:/bin/sh\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
            "nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "usr/share/base-passwd/group.master": (
            "root:*:0:\ndaemon:*:1:\nstaff:*:50:\nnogroup:*:65534:\n"
        ),
    },
)


@pytest.mark.parametrize("with_masters", [True, False], ids=["masters", "no-masters"])
def test_static_accounts_are_never_created_nor_given_homes(
    tmp_path: Path, with_masters: bool
) -> None:
    script = (
        "adduser --system daemon\naddgroup --system staff\n"
        "adduser --system --home /usr/sbin --group www-data\nadduser --system app\n"
    )
    deb = Deb("evil", scripts={"postinst": script}, files={"usr/sbin/": Dir()})
    root = _unpack(tmp_path, *([BASE_PASSWD] if with_masters else []), deb)
    assert [(a.name, a.is_user) for a in root.accounts] == [("app", True)]
    passwd = (root.top / "etc/passwd").read_text()
    daemons = [line for line in passwd.splitlines() if line.startswith("daemon:")]
    assert len(daemons) == (1 if with_masters else 0)
    assert "www-data" not in passwd and "app:x:100:65534::/nonexistent:" in passwd


@pytest.mark.parametrize(
    "redirect",
    [">/dev/null", "> /dev/null", "2>&1", ">/dev/null 2>&1", ">> /tmp/log", "</dev/null", "&>/x"],
)
def test_redirections_are_not_operands(redirect: str) -> None:
    found = script_accounts(f"adduser --system --group memcache {redirect}\n", "memcached")
    assert [(a.name, a.is_user, a.own_group) for a in found] == [("memcache", True, True)]
    found = script_accounts(f"addgroup --system {redirect} web\n", "pkg")
    assert [(a.name, a.is_user) for a in found] == [("web", False)]


def test_a_thousand_accounts_are_one_clear_error(tmp_path: Path) -> None:
    script = "".join(f"adduser --system user{n}\n" for n in range(1000))
    with pytest.raises(PackageError, match=r"evil.*more than 200"):
        _unpack(tmp_path, Deb("evil", scripts={"postinst": script}))


def test_the_system_id_range_running_out_is_one_clear_error(tmp_path: Path) -> None:
    masters = {
        "usr/share/base-passwd/passwd.master": "".join(
            f"u{n}:*:{n}:{n}::/:/bin/sh\n" for n in range(100, 1000)
        ),
        "usr/share/base-passwd/group.master": "nogroup:*:65534:\n",
    }
    deb = Deb("evil", files=masters, scripts={"postinst": "adduser --system one\n"})
    with pytest.raises(PackageError, match=r"no free system user id \(100\.\.999\).*one"):
        _unpack(tmp_path, deb)


def test_script_parsing_is_linear() -> None:
    script = "".join(f"V{n}=x\n" for n in range(200_000)) + 'NAME=app\nadduser --system "$NAME"\n'
    assert len(script) > 1_500_000
    with thread_cpu_time() as cpu:  # the parse's own work: the machine's load is not counted
        found = script_accounts(script, "pkg")
    assert [a.name for a in found] == ["app"]
    # A guard, not a benchmark: linear is a fraction of a second, quadratic took minutes.
    assert cpu.seconds < 5, f"{cpu.seconds:.1f} s of CPU"


def test_substitution_keeps_the_last_literal_before_the_use_and_leaves_others() -> None:
    """As the shell does: the value a variable holds where it is used."""
    script = 'U=first\nU=second\nadduser --system ${U}\nadduser --system "$UNKNOWN"\n'
    assert [a.name for a in script_accounts(script, "pkg")] == ["second"]


@pytest.mark.parametrize(
    "line",
    [
        "adduser --system 'ro:ot'",
        "adduser --system -- -oops",
        "adduser --system 9lives",
        "adduser --system " + "a" * 33,
        "adduser --system 'a b'",
        "adduser --system --home 'srv/app' app",  # relative
        "adduser --system --home '/srv/ .\nLABEL x=y' app",
        "adduser --system --home '/srv/a:b' app",
        "adduser --system --home '/srv/../../etc' app",
        "adduser --system --shell '/bin/sh\x1b' app",
        "useradd -r -d '/srv/\tx' app",
    ],
)
def test_hostile_names_homes_and_shells_are_skipped(line: str) -> None:
    assert script_accounts(line + "\n", "pkg") == []


def test_valid_names_are_kept() -> None:
    script = (
        "adduser --system --force-badname _apt\nadduser --system systemd-network\n"
        "adduser --system --force-badname Debian-exim\n"  # exim4's, snmpd's: capitals
    )
    names = [a.name for a in script_accounts(script, "pkg")]
    assert names == ["_apt", "systemd-network", "Debian-exim"]


def test_a_hostile_sysusers_file_is_skipped(tmp_path: Path) -> None:
    text = 'u app - "x" "/srv/ .\\nLABEL x=y" -\nu B:ad - "x" /srv -\nu ok - "x" /srv/ok -\n'
    deb = Deb("evil", files={"usr/lib/sysusers.d/evil.conf": text})
    root = _unpack(tmp_path, deb)
    assert [a.name for a in root.accounts] == ["ok"]


def test_an_oversized_script_is_skipped_with_a_warning(tmp_path: Path) -> None:
    script = "adduser --system big\n" + "#" * (MAX_CONTROL_MEMBER + 1)
    root = _unpack(tmp_path, Deb("evil", scripts={"postinst": script}))
    assert root.accounts == ()
    assert any("evil" in w and "postinst" in w for w in root.warnings)


# ------------------------------------------------------------ bombs and refused entries


def test_a_package_bomb_names_the_package_and_no_build_option(tmp_path: Path) -> None:
    deb = Deb("bomb", version="2.0", files={"usr/share/bomb/zeros": File(b"\0" * 200_000)})
    with pytest.raises(PackageError) as caught:
        _unpack(tmp_path, Deb("small"), deb, max_bytes=100_000)
    message = str(caught.value)
    assert "bomb 2.0" in message and "TMPDIR" in message
    assert "--max-unpacked-size" not in message and "the image" not in message
    assert "\n" not in message


def test_refused_entries_are_kept_as_warnings_naming_the_package(tmp_path: Path) -> None:
    outside = tmp_path / "escape"
    deb = Deb("evil", files={"usr/bin/ok": "x", "../escape": "x"}, scripts={})
    root = _unpack(tmp_path, Deb("good"), deb)
    assert not outside.exists()
    assert root.warnings
    assert all(w.startswith("package evil 1.0") for w in root.warnings)
    assert any("climbs out of the root" in w for w in root.warnings)
    assert os.path.isfile(root.top / "usr/bin/ok")


def test_a_flood_of_account_commands_is_refused_quickly() -> None:
    """Static or non-system names create nothing, but each costs a parse: bounded."""
    script = "adduser --system daemon >/dev/null 2>&1\n" * 100_000
    with (
        thread_cpu_time() as cpu,
        pytest.raises(PackageError, match=r"evil: .*more than 1000 account commands"),
    ):
        script_accounts(script, "evil")
    # Refused after 1,000 parses: milliseconds; parsing all 100,000 would be seconds.
    assert cpu.seconds < 5, f"{cpu.seconds:.1f} s of CPU"


def test_a_package_lists_only_the_paths_the_unpacker_placed(tmp_path: Path) -> None:
    """``..`` entries are refused by the unpacker; they never become the package's paths
    (a plan of ``/..`` found no steps and ended in an IndexError)."""
    deb = Deb("climber", files={"../../x": b"out", "usr/./bin//ok": b"in"})
    root = _unpack(tmp_path, deb)
    (package,) = root.packages
    assert all(".." not in item.split("/") for item in package.paths), package.paths
    assert "/usr/bin/ok" in package.paths
    assert any("climbs out of the root" in warning for warning in root.warnings)
