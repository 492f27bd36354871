"""``outdated`` without a mirror: records read from hand-made images (hostile ones included),
changelogs from hand-made packages (bombs, links out), candidates from a fake apt."""

from __future__ import annotations

import contextlib
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scratchpack.commands import outdated as command
from scratchpack.errors import InputError
from scratchpack.image.readers import open_image
from scratchpack.image.records import read_records
from scratchpack.packages import updates
from scratchpack.packages.apt import Archive, Candidate, PackageError, PackageRef
from scratchpack.packages.updates import (
    MAX_CHANGELOG,
    ChangelogState,
    InstalledPackage,
    UpdateState,
    changelog_news,
    check_updates,
    newer_entries,
    parse_status,
    tell_suite,
)
from tests.debkit import Deb, File, Link, build_deb
from tests.imagekit import d, f, hard, layer, sym, write_docker_archive, write_oci
from tests.unit.test_readers_platforms import Layout, on

BOOKWORM = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'


def _record(name: str, version: str, extra: str = "") -> str:
    return f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}"


# -- status files --------------------------------------------------------------------------

STATUS = (
    _record("libc6", "2.36-9+deb12u10", "Status: install ok installed\nSource: glibc\n")
    + "\n"
    + _record("gone", "1.0", "Status: deinstall ok config-files\n")
    + "\n"
    + _record("libssl3", "3.0.19-1~deb12u2", "Status: install ok installed\n"
              "Source: openssl (3.0.19-1~deb12u2)\nDescription: x\n more\n")
)  # fmt: skip


def test_a_full_status_counts_only_installed_packages() -> None:
    assert parse_status(STATUS, "s") == [
        InstalledPackage("libc6", "2.36-9+deb12u10", "amd64", "glibc"),
        InstalledPackage("libssl3", "3.0.19-1~deb12u2", "amd64", "openssl"),
    ]


def test_a_status_d_record_needs_no_status_field() -> None:
    assert parse_status(_record("base-files", "12.4"), "s", need_installed=False) == [
        InstalledPackage("base-files", "12.4", "amd64", "base-files")
    ]
    assert parse_status(_record("base-files", "12.4"), "s") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (_record("--force-all", "1.0"), "Package is not a Debian name"),
        (_record("libc6", "1.0; rm -rf /"), "Version is not a Debian version"),
        (_record("libc6", "\x1b[2J1.0"), r"\\x1b"),
        ("Package: a1\nVersion: 1.0\nArchitecture: ../../etc\n", "Architecture is not Debian"),
        ("Package: a1\nVersion: 1.0\n", "Architecture is not Debian"),
    ],
)
def test_a_hostile_record_is_one_line(text: str, says: str) -> None:
    with pytest.raises(PackageError, match=says) as caught:
        parse_status(text, "img: /var/lib/dpkg/status.d/x", need_installed=False)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


@pytest.mark.parametrize(
    ("os_release", "debian_version", "suite"),
    [
        (BOOKWORM, None, "bookworm"),
        (None, "12.5\n", "bookworm"),
        (None, "11.9", "bullseye"),
        (None, "trixie/sid\n", "trixie"),
        ('ID=debian\nVERSION_CODENAME="$(reboot)"\n', "12.1", "bookworm"),
        ("ID=ubuntu\nVERSION_CODENAME=jammy\n", "bookworm/sid", None),  # not Debian's suite
        ("ID=alpine\n", None, None),
        (None, None, None),
        (None, "99.1", None),
        (None, "\x1b[2J", None),
    ],
)
def test_the_suite_is_told_from_os_release_or_debian_version(
    os_release: str | None, debian_version: str | None, suite: str | None
) -> None:
    assert tell_suite(os_release, debian_version) == suite


# -- records from images --------------------------------------------------------------------

STATUS_D = "var/lib/dpkg/status.d"


def _image(tmp_path: Path, *layers: bytes, oci: bool = False):
    path = tmp_path / ("layout" if oci else "image.tar")
    (write_oci if oci else write_docker_archive)(path, list(layers))
    return open_image(str(path), tmp_path / "work").image


def _base() -> bytes:
    return layer(
        d("etc"), d("usr"), d("usr/lib"), d("var"), d("var/lib"), d("var/lib/dpkg"),
        d(STATUS_D),
        f("usr/lib/os-release", BOOKWORM.encode()),
        sym("etc/os-release", "../usr/lib/os-release"),
        f(f"{STATUS_D}/libssl3", _record("libssl3", "3.0.19-1~deb12u2").encode()),
        f(f"{STATUS_D}/libssl3.md5sums", b"0123 usr/lib/libssl.so.3\n"),
        f(f"{STATUS_D}/base-files", _record("base-files", "12.4+deb12u1").encode()),
    )  # fmt: skip


@pytest.mark.parametrize("oci", [False, True])
def test_the_records_and_the_suite_of_an_image(tmp_path: Path, oci: bool) -> None:
    records = read_records(_image(tmp_path, _base(), oci=oci), "img")
    assert [p.name for p in records.packages] == ["base-files", "libssl3"]
    assert records.suite == "bookworm"


@pytest.mark.parametrize(
    ("upper", "names", "suite"),
    [
        (layer(f(f"{STATUS_D}/.wh.libssl3")), ["base-files"], "bookworm"),  # whited out
        (layer(f(f"{STATUS_D}/.wh..wh..opq")), [], "bookworm"),  # opaque: all gone
        (  # a later layer's version wins
            layer(f(f"{STATUS_D}/libssl3", _record("libssl3", "3.0.22-1~deb12u2").encode())),
            ["base-files", "libssl3=3.0.22-1~deb12u2"], "bookworm",
        ),
        (  # os-release linked out of the image: followed inside it, to nothing
            layer(f("etc/.wh.os-release"), f("usr/lib/.wh.os-release"),
                  sym("etc/os-release", "../../../../../etc/os-release")),
            ["base-files", "libssl3"], None,
        ),
        (  # a status.d file that is a link to the host's status: read inside the image only
            layer(sym(f"{STATUS_D}/evil", "/../../../var/lib/dpkg/status")),
            ["base-files", "libssl3"], "bookworm",
        ),
        (  # a hard link to a record is no record of its own here (its target is read)
            layer(hard(f"{STATUS_D}/copy", f"{STATUS_D}/base-files")),
            ["base-files", "libssl3"], "bookworm",
        ),
    ],
)  # fmt: skip
def test_layers_are_honoured_and_links_stay_inside(
    tmp_path: Path, upper: bytes, names: list[str], suite: str | None
) -> None:
    records = read_records(_image(tmp_path, _base(), upper), "img")
    shown = [p.name if p.version != "3.0.22-1~deb12u2" else f"{p.name}={p.version}"
             for p in records.packages]  # fmt: skip
    assert shown == names
    assert records.suite == suite


def test_a_huge_record_file_is_refused_unread(tmp_path: Path) -> None:
    big = layer(f(f"{STATUS_D}/big", b"Package: x\n" + b"#" * (2 << 20)))
    with pytest.raises(InputError, match="larger than 1 MiB"):
        read_records(_image(tmp_path, _base(), big), "img")


@pytest.mark.parametrize("body", [b"Package: x\n" + b"#" * (2 << 20), b"Package: ../x\n"])
def test_a_record_files_name_reaches_no_terminal_raw(tmp_path: Path, body: bytes) -> None:
    """The file's name is the image's word: an escape sequence in it is shown escaped."""
    from scratchpack.errors import ScratchpackError

    evil = layer(f(f"{STATUS_D}/\x1b]0;owned\x07", body))
    with pytest.raises(ScratchpackError) as caught:
        read_records(_image(tmp_path, _base(), evil), "img")
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)


def test_a_full_dpkg_status_is_read_too(tmp_path: Path) -> None:
    full = layer(f("var/lib/dpkg/status", STATUS.encode()), f("etc/debian_version", b"12.7\n"))
    image = _image(tmp_path, layer(d("etc"), d("var"), d("var/lib"), d("var/lib/dpkg")), full)
    records = read_records(image, "img")
    assert [p.name for p in records.packages] == ["libc6", "libssl3"]
    assert records.suite == "bookworm"


# -- changelogs -----------------------------------------------------------------------------

CHANGELOG = """\
hello (2.0-1) bookworm-security; urgency=high

  * Fix CVE-2026-0001 and CVE-2026-0002 (and CVE-2026-0001 again).

 -- Tests <t@example.invalid>  Mon, 01 Jun 2026 00:00:00 +0000

hello (1.1-1) bookworm; urgency=medium

  * Nothing of note.

 -- Tests <t@example.invalid>  Mon, 01 May 2026 00:00:00 +0000

hello (1.0-1) bookworm; urgency=low

  * CVE-2020-9999, fixed long ago.

 -- Tests <t@example.invalid>  Mon, 01 Jan 2026 00:00:00 +0000
"""


def _deb(tmp_path: Path, files: dict) -> Path:
    return build_deb(Deb("hello", "2.0-1", files=files), tmp_path / "debs")


DOC = "usr/share/doc/hello"


def test_the_entries_newer_than_the_installed_version_with_their_cves(tmp_path: Path) -> None:
    deb = _deb(tmp_path, {f"{DOC}/changelog.Debian.gz": gzip.compress(CHANGELOG.encode())})
    news = changelog_news(deb, "hello", "1.0-1")
    assert news.state is ChangelogState.READ
    assert [(e.version, e.urgency, e.cves) for e in news.entries] == [
        ("2.0-1", "high", ("CVE-2026-0001", "CVE-2026-0002")),
        ("1.1-1", "medium", ()),
    ]
    assert news.cves == ("CVE-2026-0001", "CVE-2026-0002")


@pytest.mark.parametrize(
    ("files", "state", "note"),
    [
        ({f"{DOC}/changelog.Debian.gz": File(gzip.compress(b"\0" * (MAX_CHANGELOG + 10)))},
         ChangelogState.REFUSED, "more than 32 MiB"),  # a gzip bomb
        ({f"{DOC}/changelog.Debian.gz": b"not gzip"}, ChangelogState.REFUSED, "not a gzip"),
        ({DOC: Link("../../../../../../etc")}, ChangelogState.REFUSED, "links out"),
        ({f"{DOC}/changelog.Debian.gz": Link("/etc/shadow")}, ChangelogState.REFUSED,
         "links to"),
        ({DOC: Link("libhello0")}, ChangelogState.ELSEWHERE, "in libhello0's changelog"),
        ({"usr/bin/hello": b"x"}, ChangelogState.MISSING, "no /usr/share/doc/hello"),
    ],
)  # fmt: skip
def test_a_hostile_or_absent_changelog_is_said_not_followed(
    tmp_path: Path, files: dict, state: ChangelogState, note: str
) -> None:
    news = changelog_news(_deb(tmp_path, files), "hello", "1.0-1")
    assert news.state is state
    assert note in news.note and not news.entries


def test_a_package_of_too_many_members_is_refused_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for a changelog keeps no member and no link it does not need: a package of
    millions of entries costs time bounded by the cap and memory bounded by a constant."""
    monkeypatch.setattr(updates, "MAX_DEB_MEMBERS", 50)
    links = {f"usr/lib/l{n}": Link(f"t{n}") for n in range(60)}
    news = changelog_news(_deb(tmp_path, links), "hello", "1.0-1")
    assert news.state is ChangelogState.REFUSED
    assert "more than 50 entries" in news.note


def test_the_links_a_changelog_search_keeps_are_the_doc_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[dict[str, str]] = []
    real = updates._linked_changelog
    monkeypatch.setattr(
        updates, "_linked_changelog", lambda links, *rest: kept.append(links) or real(links, *rest)
    )
    files = {f"usr/lib/l{n}": Link(f"t{n}") for n in range(20)} | {DOC: Link("libhello0")}
    news = changelog_news(_deb(tmp_path, files), "hello", "1.0-1")
    assert news.state is ChangelogState.ELSEWHERE
    assert list(kept[0]) == [DOC]


@pytest.mark.parametrize(
    "text",
    [
        "hello (--evil) x; urgency=high\n\n  * CVE-2026-1\n\n -- a <b@c>  Mon, 01 Jun 2026\n",
        "\x1b[2J garbage\n",
        "",
    ],
)
def test_a_changelog_that_is_not_debians_gives_no_entries(text: str) -> None:
    news = newer_entries(gzip.compress(text.encode()), "1.0-1")
    assert not news.entries


# -- candidates, through a fake apt ---------------------------------------------------------


@dataclass
class FakeApt:
    """apt's answers, for check_updates; the .deb files are made by the test."""

    offered: dict[str, str]
    debs: dict[str, Path]
    suite: str = "bookworm-security"
    downloaded: list[str] = field(default_factory=list)

    def candidates(self, names: list[str]) -> dict[str, Candidate]:
        return {
            name: Candidate(name, self.offered[name], (Archive("http://x/debian", self.suite),))
            for name in names
            if name in self.offered
        }

    def describe(self, chosen: list[tuple[str, str]]) -> list[PackageRef]:
        return [
            PackageRef(n, v, "amd64", f"pool/{n}.deb", 1, "0" * 64, f"Package: {n}\nSource: src\n")
            for n, v in chosen
        ]

    def download(self, refs: list[PackageRef]) -> dict[str, Path]:
        self.downloaded += [ref.name for ref in refs]
        return {ref.name: self.debs[ref.name] for ref in refs}


def test_each_package_is_current_outdated_newer_or_unknown(tmp_path: Path) -> None:
    deb = _deb(tmp_path, {f"{DOC}/changelog.Debian.gz": gzip.compress(CHANGELOG.encode())})
    apt = FakeApt({"hello": "2.0-1", "libc6": "2.36-9", "new": "1.0"}, {"hello": deb})
    installed = [
        InstalledPackage("hello", "1.0-1", "amd64", "hello"),
        InstalledPackage("libc6", "2.36-9", "amd64", "glibc"),
        InstalledPackage("new", "1:0.1", "amd64", "new"),  # an epoch: newer than 1.0
        InstalledPackage("mine", "1.0", "amd64", "mine"),
    ]
    updates = {u.installed.name: u for u in check_updates(apt, installed)}  # type: ignore[arg-type]
    assert {name: u.state for name, u in updates.items()} == {
        "hello": UpdateState.OUTDATED,
        "libc6": UpdateState.CURRENT,
        "new": UpdateState.NEWER,
        "mine": UpdateState.UNKNOWN,
    }
    assert apt.downloaded == ["hello"]  # only what is outdated is fetched
    hello = updates["hello"].to_json()
    assert hello["from"] == "bookworm-security" and hello["source"] == "src"
    assert hello["cves"] == ["CVE-2026-0001", "CVE-2026-0002"]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path, offered: dict, debs: dict):
    """run_outdated over a fake apt: what a command-line run prints and exits with."""
    apt = FakeApt(offered, debs)

    class Locked:
        def __enter__(self) -> None: ...
        def __exit__(self, *_: object) -> None: ...

    apt.locked = Locked  # type: ignore[attr-defined]
    apt.update = lambda force=False: None  # type: ignore[attr-defined]
    apt.archives = lambda: (Archive("http://x/debian", "bookworm", "Mon, 1 Jun 2026"),)  # type: ignore[attr-defined]
    monkeypatch.setattr(command, "package_apt", lambda *args, **kw: apt)
    return command.run_outdated(command.OutdatedRequest(str(image)))


def test_the_command_reports_outdated_packages_as_text_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deb = build_deb(
        Deb("libssl3", "3.0.22-1~deb12u2", files={
            "usr/share/doc/libssl3/changelog.Debian.gz": gzip.compress(
                CHANGELOG.replace("hello", "openssl").replace("2.0-1", "3.0.22-1~deb12u2")
                .encode())}),
        tmp_path / "debs",
    )  # fmt: skip
    image = write_docker_archive(tmp_path / "image.tar", [_base()])
    offered = {"libssl3": "3.0.22-1~deb12u2", "base-files": "12.4+deb12u1"}
    result = _run(tmp_path, monkeypatch, image, offered, {"libssl3": deb})
    assert result.outdated == 1
    text = command.report_text(result)
    assert "libssl3 3.0.19-1~deb12u2 -> 3.0.22-1~deb12u2" in text
    assert "from bookworm-security" in text and "CVE-2026-0001" in text
    document = json.loads(json.dumps(result.to_json()))
    assert document["image"] == str(image) and document["outdated"] == 1
    platform = document["platforms"][0]
    assert platform["platform"] == "linux/amd64" and platform["suite"] == "bookworm"
    assert platform["outdated"][0]["package"] == "libssl3"
    assert platform["outdated"][0]["changelog"]["entries"][0] == {
        "version": "3.0.22-1~deb12u2", "urgency": "high",
        "cves": ["CVE-2026-0001", "CVE-2026-0002"],
    }  # fmt: skip


def test_a_foreign_image_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alpine = layer(d("etc"), f("etc/os-release", b"ID=alpine\n"), d("var"), d("var/lib"),
                   d("var/lib/dpkg"), f("var/lib/dpkg/status", STATUS.encode()))  # fmt: skip
    image = write_docker_archive(tmp_path / "image.tar", [alpine])
    with pytest.raises(InputError, match=r"cannot tell its Debian suite.*give --suite"):
        _run(tmp_path, monkeypatch, image, {}, {})


def test_an_image_without_records_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_docker_archive(tmp_path / "image.tar", [layer(f("app", b"x"))])
    with pytest.raises(InputError, match="holds no package records"):
        _run(tmp_path, monkeypatch, image, {}, {})


def test_each_platform_of_an_index_against_its_own_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amd64's libssl3 has an update in amd64's lists; arm64's is current in arm64's."""
    out = Layout(tmp_path / "layout")
    images = {}
    for architecture in ("amd64", "arm64"):
        record = _record("libssl3", "3.0.19-1~deb12u2").replace("amd64", architecture)
        data = layer(d("usr"), d("usr/lib"), f("usr/lib/os-release", BOOKWORM.encode()),
                     d("var"), d("var/lib"), d("var/lib/dpkg"), d(STATUS_D),
                     f(f"{STATUS_D}/libssl3", record.encode()))  # fmt: skip
        images[architecture] = on(out.manifest(architecture, data), architecture)
    layout = out.index(list(images.values()))
    deb = build_deb(Deb("libssl3", "3.0.22-1~deb12u2"), tmp_path / "debs")
    offered = {"amd64": "3.0.22-1~deb12u2", "arm64": "3.0.19-1~deb12u2"}
    asked: list[str] = []

    def package_apt(suite: str, architecture: str, *args: object, **kw: object) -> FakeApt:
        asked.append(architecture)
        apt = FakeApt({"libssl3": offered[architecture]}, {"libssl3": deb})
        apt.locked = contextlib.nullcontext  # type: ignore[attr-defined]
        apt.update = lambda force=False: None  # type: ignore[attr-defined]
        apt.archives = lambda: (Archive("http://x/debian", "bookworm"),)  # type: ignore[attr-defined]
        return apt

    monkeypatch.setattr(command, "package_apt", package_apt)
    result = command.run_outdated(command.OutdatedRequest(str(layout)))
    assert asked == ["amd64", "arm64"]
    document = json.loads(json.dumps(result.to_json()))
    assert document["outdated"] == 1
    assert [(p["platform"], len(p["outdated"])) for p in document["platforms"]] == [
        ("linux/amd64", 1), ("linux/arm64", 0),
    ]  # fmt: skip
    assert document["platforms"][0]["outdated"][0]["architecture"] == "amd64"
    text = command.report_text(result)
    assert "(linux/amd64, Debian bookworm): 1 of 1" in text
    assert "(linux/arm64, Debian bookworm): 0 of 1" in text


def test_a_platform_without_records_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Layout(tmp_path / "layout")
    amd64 = on(out.manifest("amd64", _base()), "amd64")
    arm64 = on(out.manifest("arm64", layer(f("app"))), "arm64")
    layout = out.index([amd64, arm64])
    with pytest.raises(InputError, match=r"\(linux/arm64\) holds no package records"):
        _run(tmp_path, monkeypatch, layout, {}, {})


def test_a_long_cve_list_is_shown_whole_in_lines_of_a_readable_length() -> None:
    """An entry may name up to 200 CVEs; the text report cut its lines at 400 characters,
    so most of them were lost to a reader of the text (--json had them all)."""
    from scratchpack.packages.apt import Archive, Candidate
    from scratchpack.packages.updates import ChangeEntry, ChangelogNews, PackageUpdate

    cves = tuple(f"CVE-2026-{number:05d}" for number in range(200))
    update = PackageUpdate(
        InstalledPackage("libssl3", "3.0.19-1", "amd64", "openssl"),
        UpdateState.OUTDATED,
        Candidate("libssl3", "3.0.22-1", (Archive("http://deb.debian.org/debian-security",
                                                  "bookworm-security"),)),
        "openssl",
        ChangelogNews(ChangelogState.READ, (ChangeEntry("3.0.22-1", "high", cves),)),
    )  # fmt: skip
    lines = command._update_lines(update)
    text = "\n".join(lines)
    assert all(cve in text for cve in cves)
    assert max(len(line) for line in lines) <= 120
    assert lines[1].startswith("    3.0.22-1 urgency high: CVE-2026-00000, ")
