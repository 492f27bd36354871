"""Never silently unpatched: a host that lists only ``bookworm main`` still resolves from
bookworm-updates and bookworm-security of Debian's archive, unless ``--only-listed-suites``."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchpack.packages.apt import (
    Apt,
    Archive,
    Candidate,
    Source,
    _policy,
    debian_keyring,
    host_sources,
    sources_for,
)

KEYRING = debian_keyring()


def _etc(tmp_path: Path, sources_list: str = "", deb822: str = "") -> Path:
    """A temporary apt etc dir holding these sources."""
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(sources_list)
    if deb822:
        (etc / "sources.list.d" / "debian.sources").write_text(deb822)
    return etc


def _shape(sources: list[Source]) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str]]:
    return [(s.uris[0], s.suites, s.components, s.signed_by or "") for s in sources]


DEBOOTSTRAP = "deb http://deb.debian.org/debian bookworm main\n"


@pytest.mark.parametrize(
    ("listed", "suite", "only_listed", "expected"),
    [
        (  # debootstrap's default: the three suites
            DEBOOTSTRAP, "bookworm", False,
            [("http://deb.debian.org/debian", ("bookworm",), ("main",), ""),
             ("http://deb.debian.org/debian", ("bookworm-updates",), ("main",), KEYRING),
             ("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",),
              KEYRING)],
        ),
        (  # opted out: exactly what the host lists
            DEBOOTSTRAP, "bookworm", True,
            [("http://deb.debian.org/debian", ("bookworm",), ("main",), "")],
        ),
        (  # --suite of another release: its own siblings, the host's components
            "deb http://ftp.de.debian.org/debian bookworm main contrib\n", "trixie", False,
            [("http://ftp.de.debian.org/debian", ("trixie",), ("main", "contrib"), ""),
             ("http://ftp.de.debian.org/debian", ("trixie-updates",), ("main", "contrib"),
              KEYRING),
             ("http://deb.debian.org/debian-security", ("trixie-security",),
              ("main", "contrib"), KEYRING)],
        ),
        (  # sid has no -updates or -security
            DEBOOTSTRAP, "sid", False,
            [("http://deb.debian.org/debian", ("sid",), ("main",), "")],
        ),
        (  # only the missing one is added
            DEBOOTSTRAP + "deb http://security.debian.org/debian-security bookworm-security "
            "main\n", "bookworm", False,
            [("http://deb.debian.org/debian", ("bookworm",), ("main",), ""),
             ("http://security.debian.org/debian-security", ("bookworm-security",), ("main",),
              ""),
             ("http://deb.debian.org/debian", ("bookworm-updates",), ("main",), KEYRING)],
        ),
        (  # a snapshot: security of the same moment
            "deb http://snapshot.debian.org/archive/debian/20250520T000000Z bookworm main\n",
            "bookworm", False,
            [("http://snapshot.debian.org/archive/debian/20250520T000000Z", ("bookworm",),
              ("main",), ""),
             ("http://snapshot.debian.org/archive/debian/20250520T000000Z",
              ("bookworm-updates",), ("main",), KEYRING),
             ("http://snapshot.debian.org/archive/debian-security/20250520T000000Z",
              ("bookworm-security",), ("main",), KEYRING)],
        ),
    ],
)  # fmt: skip
def test_the_suite_gets_its_updates_and_security(
    tmp_path: Path, listed: str, suite: str, only_listed: bool, expected: list
) -> None:
    sources = host_sources(_etc(tmp_path, listed))
    assert _shape(sources_for(sources, "bookworm", suite, only_listed=only_listed)) == expected


def test_a_host_listing_all_three_is_resolved_as_before(tmp_path: Path) -> None:
    """Nothing is added, so the private apt state (keyed by its sources) stays the same."""
    deb822 = (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        f"Components: main\nSigned-By: {KEYRING}\n\nTypes: deb\n"
        "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        f"Components: main\nSigned-By: {KEYRING}\n"
    )
    sources = host_sources(_etc(tmp_path, deb822=deb822))
    assert sources_for(sources, "bookworm", "bookworm") == sources_for(
        sources, "bookworm", "bookworm", only_listed=True
    )


def test_a_mirror_that_is_not_debians_gets_nothing_added(tmp_path: Path) -> None:
    """A host whose only source is another party's is refused as before, not given Debian's."""
    sources = host_sources(_etc(tmp_path, "deb http://mirror.example/debian bookworm main\n"))
    with pytest.raises(Exception, match="no apt source of this machine"):
        sources_for(sources, "bookworm", "bookworm")


def test_a_repository_gets_no_siblings(tmp_path: Path) -> None:
    sources = host_sources(_etc(tmp_path, DEBOOTSTRAP))
    mine = Source(("file:/srv/repo",), ("tests",), ("main",), "/k.gpg")
    chosen = sources_for(sources, "bookworm", "bookworm", [mine])
    assert [s.suites[0] for s in chosen] == [
        "bookworm", "bookworm-updates", "bookworm-security", "tests"
    ]  # fmt: skip


def test_the_archives_used_are_named_with_their_release_dates(tmp_path: Path) -> None:
    sources = sources_for(host_sources(_etc(tmp_path, DEBOOTSTRAP)), "bookworm", "bookworm")
    apt = Apt("bookworm", "amd64", sources, cache=tmp_path / "cache")
    lists = apt.state / "lists"
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text(
        "Suite: stable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n"
    )
    (lists / "deb.debian.org_debian-security_dists_bookworm-security_InRelease").write_text(
        "Codename: bookworm-security\nDate: $(reboot)\n"  # not a date: not repeated
    )
    assert apt.archives() == (
        Archive("http://deb.debian.org/debian", "bookworm", "Sat, 11 Jul 2026 10:16:37 UTC"),
        Archive("http://deb.debian.org/debian", "bookworm-updates", None),
        Archive("http://deb.debian.org/debian-security", "bookworm-security", None),
    )


POLICY = """\
libssl3:
  Installed: (none)
  Candidate: 3.0.22-1~deb12u2
  Version table:
     3.0.22-1~deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
     3.0.20-1~deb12u2 500
        500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
hello:
  Installed: (none)
  Candidate: 2.0-1
  Version table:
     2.0-1 500
        500 copy:/srv/repo tests/main amd64 Packages
evil:
  Installed: (none)
  Candidate: --option=1
gone:
  Installed: (none)
  Candidate: (none)
"""


def test_apt_policy_gives_each_candidate_and_where_it_comes_from() -> None:
    found = _policy(POLICY, {"libssl3", "hello", "evil", "gone"})
    assert found == {
        "libssl3": Candidate(
            "libssl3",
            "3.0.22-1~deb12u2",
            (
                Archive("http://deb.debian.org/debian-security", "bookworm-security"),
                Archive("http://deb.debian.org/debian", "bookworm"),
            ),
        ),
        "hello": Candidate("hello", "2.0-1", (Archive("file:/srv/repo", "tests"),)),
    }
    assert found["libssl3"].suite == "bookworm-security"


def test_the_opt_out_is_a_flag_of_build_lock_and_outdated_and_a_yaml_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchpack import cli
    from scratchpack.commands import lock as lock_command
    from scratchpack.commands.common import PackageSources
    from scratchpack.config_file import option_keys, read_config

    for command in (cli.build, cli.lock, cli.outdated):
        assert "only-listed-suites" in option_keys(command)
    (tmp_path / "scratchpack.yaml").write_text("package: [curl]\nonly-listed-suites: true\n")
    assert read_config(tmp_path / "scratchpack.yaml", cli.build)["only_listed_suites"] is True
    sources = PackageSources.from_options(("curl",), None, only_listed_suites=True)
    assert sources.only_listed_suites
    with pytest.raises(Exception, match="--only-listed-suites chooses the sources of --package"):
        PackageSources.from_options((), None, only_listed_suites=True)
    seen: dict[str, object] = {}

    def resolve_lock(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        raise RuntimeError("enough")

    monkeypatch.setattr(lock_command, "resolve_lock", resolve_lock)
    request = lock_command.LockRequest(("curl",), None, (), (), "x.lock", True)
    with pytest.raises(RuntimeError):
        lock_command.run_lock(request)
    assert seen["only_listed"] is True
