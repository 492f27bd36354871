"""Lock files, package requests and apt sources are data: nothing in them reaches apt as an option.

A lock is reviewed in pull requests and a ``scratchpack.yaml`` comes with a
repository: both are another party's words. Every name, version, architecture,
file name and suite in them is checked against Debian's grammar before apt sees
it, and every apt command line ends its options with ``--``. A fake ``apt-get``
and ``apt-cache`` on PATH record what would have run. The host's sources are
used only when they are Debian's archive; a ``--repository`` line is the user's
and is parsed strictly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scratchpack.cli import cli
from scratchpack.notes import collecting
from scratchpack.packages.apt import (
    Apt,
    PackageError,
    PackageRef,
    _deb822_sources,
    _one_line_sources,
    check_request,
    parse_repository,
    sources_for,
)
from scratchpack.packages.fetch import _check_pinned
from scratchpack.packages.lock import Lock, PlatformLock, read_lock

SHA = "a" * 64
REF = PackageRef("hello", "1.0-1", "amd64", "pool/main/h/hello/hello_1.0-1_amd64.deb", 10, SHA)
INJECTED = "-oDir::Cache::pkgcache=/tmp/scratchpack-pwned"

FAKE_APT = """#!{python}
import json, os, sys
with open(os.environ["FAKE_APT_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if "update" in args and os.environ.get("FAKE_APT_GPG"):
    print(os.environ["FAKE_APT_GPG"], file=sys.stderr)
elif "-s" in args:
    print("Inst hello (1.0-1 tests [amd64])")
elif "show" in args:
    print({paragraph!r})
"""
PARAGRAPH = (
    "Package: hello\nVersion: 1.0-1\nArchitecture: amd64\n"
    f"Filename: {REF.filename}\nSize: 10\nSHA256: {SHA}\n"
)


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """apt-get and apt-cache that only record their argv (one JSON list a line) in the log."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "apt-cache"):
        path = bin_dir / tool
        path.write_text(FAKE_APT.format(python=sys.executable, paragraph=PARAGRAPH))
        path.chmod(0o755)
    log = tmp_path / "apt.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    monkeypatch.setenv("SCRATCHPACK_CACHE", str(tmp_path / "cache"))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def write_lock(path: Path, change) -> Path:
    lock = Lock("bookworm", ("hello",), {"linux/amd64": PlatformLock("amd64", (REF,), {})})
    document = json.loads(lock.to_bytes())
    change(document)
    path.write_text(json.dumps(document))
    return path


def entry(document: dict) -> dict:
    return document["platforms"]["linux/amd64"]["packages"][0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: entry(d).update(name=INJECTED), "packages[0].name"),
        (lambda d: entry(d).update(name="-oAPT::Solver=x"), "packages[0].name"),
        (lambda d: entry(d).update(name="Hello"), "packages[0].name"),
        (lambda d: entry(d).update(version="1.0 -oAPT::Solver=x"), "packages[0].version"),
        (lambda d: entry(d).update(version="1.0\n-oAPT::Solver=x"), "packages[0].version"),
        (lambda d: entry(d).update(version="1.0/../x"), "packages[0].version"),
        (lambda d: entry(d).update(version="-1.0"), "packages[0].version"),
        (lambda d: entry(d).update(version="x:1.0"), "packages[0].version"),
        (lambda d: entry(d).update(architecture="-oX=y"), "packages[0].architecture"),
        (lambda d: entry(d).update(architecture="sparc128"), "packages[0].architecture"),
        (lambda d: entry(d).update(filename="/etc/shadow"), "packages[0].filename"),
        (lambda d: entry(d).update(filename="pool/../../etc/shadow"), "packages[0].filename"),
        (lambda d: entry(d).update(filename="-oX=y"), "packages[0].filename"),
        (lambda d: d.update(suite="bookworm\nURIs: http://evil.example"), "suite"),
        (lambda d: d.update(suite="../../../etc"), "suite"),
        (lambda d: d.update(requests=[INJECTED]), "requests"),
        (lambda d: d["platforms"]["linux/amd64"].update(architecture="-oX=y"), "architecture"),
        (lambda d: d["platforms"]["linux/amd64"].update(releases={"a\nb": "x"}), "releases"),
        (lambda d: d["platforms"]["linux/amd64"].update(releases={"x": "a\nb"}), "releases"),
        (lambda d: d.update(repositories=["deb http://x y z"]), "repositories[0]"),
    ],
)
def test_a_tampered_lock_is_one_line_naming_the_field(tmp_path: Path, change, field: str) -> None:
    path = write_lock(tmp_path / "x.lock", change)
    with pytest.raises(PackageError) as raised:
        read_lock(path)
    message = str(raised.value)
    assert field in message and "\n" not in message, message


def test_a_good_lock_still_reads(tmp_path: Path) -> None:
    path = write_lock(tmp_path / "x.lock", lambda d: entry(d).update(version="2:1.0~rc1+dfsg-1.1"))
    assert read_lock(path).platforms["linux/amd64"].packages[0].version == "2:1.0~rc1+dfsg-1.1"


@pytest.mark.parametrize(
    "request_",
    ["hello", "hello=1.0-1", "libc6=2.36-9+deb12u4", "g++-12", "hello=1:2.0~rc1"],
)
def test_requests_of_debians_grammar_pass(request_: str) -> None:
    assert check_request(request_, "--package") == request_


@pytest.mark.parametrize(
    "request_",
    [INJECTED, "-oAPT::Solver=x", "hello=-oX=y", "hello =1", "hello=1.0\nx", "Hello", "a", ""],
)
def test_requests_outside_debians_grammar_are_one_line(request_: str) -> None:
    with pytest.raises(PackageError) as raised:
        check_request(request_, "--package")
    assert "--package" in str(raised.value) and "\n" not in str(raised.value)


def test_every_apt_command_line_ends_its_options_before_package_words(
    fake_apt: Path, tmp_path: Path
) -> None:
    apt = Apt("bookworm", "amd64", [], cache=tmp_path / "cache")
    refs = apt.resolve(["hello=1.0-1"])
    assert refs == [REF]
    with pytest.raises(PackageError):  # the fake downloads nothing
        apt.download(refs)
    recorded = calls(fake_apt)
    assert [call[0] for call in recorded] == ["apt-get", "apt-cache", "apt-get"]
    for call in recorded:
        words = call[call.index("--") + 1 :]
        assert words and not any(word.startswith("-") for word in words), call
        assert words[0] in ("hello=1.0-1", "hello:amd64=1.0-1"), call


def test_apt_never_sees_a_word_outside_the_grammar(fake_apt: Path, tmp_path: Path) -> None:
    apt = Apt("bookworm", "amd64", [], cache=tmp_path / "cache")
    with pytest.raises(PackageError):
        apt.resolve([INJECTED])
    bad = PackageRef(INJECTED, "1.0", "amd64", "pool/x.deb", 1, SHA)
    with pytest.raises(PackageError):
        apt.download([bad])
    with pytest.raises(PackageError):
        Apt("../../x", "amd64", [], cache=tmp_path / "cache")
    assert calls(fake_apt) == []


@pytest.mark.parametrize(
    "warning",
    [
        "W: GPG error: copy:/srv/repo tests InRelease: BADSIG 1234",
        # apt 2.6 with lists already fetched: one line, the GPG error at its end.
        "W: An error occurred during the signature verification. The repository is not "
        "updated and the previous index files will be used. GPG error: copy:/srv/repo tests "
        "InRelease: BADSIG 1234",
    ],
)
def test_a_signature_that_does_not_verify_fails_even_when_apt_only_warns(
    fake_apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warning: str
) -> None:
    monkeypatch.setenv("FAKE_APT_GPG", warning)  # apt exits 0 and would use the lists it had
    apt = Apt("bookworm", "amd64", [], cache=tmp_path / "cache")
    with pytest.raises(PackageError) as raised:
        apt.update(force=True)
    assert "file:/srv/repo tests is not signed by its signed-by key" in str(raised.value)


def test_a_tampered_lock_runs_nothing_through_build(
    fake_apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lock = write_lock(tmp_path / "x.lock", lambda d: entry(d).update(name=INJECTED))
    result = CliRunner().invoke(
        cli,
        ["build", "--package", "hello", "--suite", "bookworm", "--lock", str(lock),
         "-t", "x:1", "-o", str(tmp_path / "x.tar")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "packages[0].name" in result.output and len(result.output.splitlines()) == 1
    assert not any(INJECTED in word for call in calls(fake_apt) for word in call)


@pytest.mark.parametrize("how", ["flag", "yaml"])
def test_a_request_from_the_command_line_or_yaml_is_checked(
    fake_apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratchpack.yaml").write_text(f"tag: x:1\npackage: ['{INJECTED}']\n")
    args = ["lock"] if how == "yaml" else ["build", f"--package={INJECTED}", "-t", "x:1"]
    result = CliRunner().invoke(cli, [*args, "--suite", "bookworm"])
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1 and "--package" in result.output, result.output
    assert calls(fake_apt) == []


def test_a_lock_entry_cannot_name_another_file() -> None:
    offered = [REF]
    _check_pinned(offered, [REF])
    other = PackageRef(REF.name, REF.version, REF.architecture, "pool/main/x/x.deb", 10, SHA)
    with pytest.raises(PackageError, match="hello"):
        _check_pinned(offered, [other])


SOURCES_LIST = """\
deb http://deb.debian.org/debian bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/debian bookworm stable
deb [signed-by=/usr/share/keyrings/pgdg.gpg] http://apt.postgresql.org/pub/repos/apt bookworm-pgdg main
deb http://deb.debian.org.evil.example/debian bookworm main
deb http://evil.example/deb.debian.org/debian bookworm main
"""  # noqa: E501
DEB822 = """\
Types: deb
URIs: http://snapshot.debian.org/archive/debian/20250520T000000Z
Suites: bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.internal.example/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://download.docker.com/linux/debian
Suites: bookworm
Components: stable
Signed-By: /etc/apt/keyrings/docker.asc

Types: deb
URIs: http://ftp.de.debian.org/debian
Suites: bookworm
Components: main
"""


def test_only_debians_archive_is_used_of_the_hosts_sources(tmp_path: Path) -> None:
    sources = _one_line_sources(SOURCES_LIST) + _deb822_sources(DEB822)
    with collecting() as warnings:
        chosen = sources_for(sources, "bookworm", "bookworm")
    left_out = [message for message in warnings.messages if "left out" in message]
    assert any("download.docker.com" in message for message in left_out), left_out
    assert not any("source http://deb.debian.org/debian " in message for message in left_out)
    assert [source.uris[0] for source in chosen] == [
        "http://deb.debian.org/debian",
        "http://security.debian.org/debian-security",
        "http://snapshot.debian.org/archive/debian/20250520T000000Z",
        "http://mirror.internal.example/debian",  # signed by Debian's archive keyring
        "http://ftp.de.debian.org/debian",
    ]


def test_a_repository_line_is_parsed_strictly(tmp_path: Path) -> None:
    key = tmp_path / "key.gpg"
    key.write_bytes(b"k")
    source = parse_repository(f"deb [signed-by={key}] file:{tmp_path}/repo tests main extra")
    assert source.uris == (f"file:{tmp_path}/repo",) and source.suites == ("tests",)
    assert source.components == ("main", "extra") and source.signed_by == str(key)
    assert source.one_line() == f"deb [signed-by={key}] file:{tmp_path}/repo tests main extra"
    http = parse_repository(f"deb [ signed-by={key} ] http://127.0.0.1:8080/debian tests main")
    assert http.uris == ("http://127.0.0.1:8080/debian",)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("deb http://127.0.0.1/x tests main", "signed-by"),
        ("deb [signed-by=/no/such/key.gpg] http://127.0.0.1/x tests main", "/no/such/key.gpg"),
        ("deb [signed-by=KEY] http://127.0.0.1/x tests", "component"),
        ("deb-src [signed-by=KEY] http://127.0.0.1/x tests main", "deb"),
        ("deb [signed-by=KEY trusted=yes] http://127.0.0.1/x tests main", "trusted"),
        ("deb [signed-by=KEY http://127.0.0.1/x tests main", "]"),
        ("deb [signed-by=KEY] cdrom:/x tests main", "URI"),
        ("deb [signed-by=KEY] http://127.0.0.1/x tests\nTrusted: yes main", "one line"),
        ("deb [signed-by=KEY] http://127.0.0.1/x -oAPT::Solver=x main", "suite"),
        ("deb [signed-by=KEY] http://127.0.0.1/x tests m@in", "component"),
    ],
)
def test_a_malformed_repository_line_is_one_line(tmp_path: Path, line: str, says: str) -> None:
    key = tmp_path / "key.gpg"
    key.write_bytes(b"k")
    with pytest.raises(PackageError) as raised:
        parse_repository(line.replace("KEY", str(key)))
    message = str(raised.value)
    assert says in message and "\n" not in message and "--repository" in message, message


def test_a_lock_records_its_repositories_and_refuses_others(tmp_path: Path) -> None:
    line = "deb [signed-by=keys/company.gpg] http://127.0.0.1:8080/debian tests main"
    lock = Lock("bookworm", ("hello",), {"linux/amd64": PlatformLock("amd64", (REF,), {})}, (line,))
    path = tmp_path / "x.lock"
    path.write_bytes(lock.to_bytes())
    again = read_lock(path)
    assert again.repositories == (line,)
    again.check("bookworm", ("hello",), "linux/amd64", path, (line,))
    with pytest.raises(PackageError, match="repositor"):
        again.check("bookworm", ("hello",), "linux/amd64", path, ())
    with pytest.raises(PackageError, match="repositor"):
        Lock("bookworm", ("hello",), lock.platforms).check(
            "bookworm", ("hello",), "linux/amd64", path, (line,)
        )
