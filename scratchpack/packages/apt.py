"""apt, run in a private state: resolve Debian packages for any architecture and download them.

apt's own solver and its signature checks do the work; every directory apt
writes (lists, archives, its dpkg status, which stays empty so the solver
starts from a bare system) lives in a state directory of ours, one per suite,
architecture and set of sources, under the cache. The host's configuration
(``/etc/apt/apt.conf.d``: proxies) and keyrings are read; the host's sources,
pins, package lists and dpkg database are never used or touched.

Which sources: the host's own ``deb`` sources of Debian's archive (by URI:
``deb.debian.org``, ``security.debian.org``, ``ftp.*.debian.org``,
``snapshot.debian.org``; or a mirror under another name whose ``signed-by`` is
Debian's archive keyring, so that only Debian's signatures are accepted from
it) for its suite and that suite's siblings (``bookworm``, ``bookworm-updates``,
``bookworm-security``), with ``--suite`` replacing the codename in them; where the host
lists only the suite (debootstrap's default), its ``-updates`` and ``-security`` of
Debian's archive are added, so that nothing is resolved from unpatched packages
silently (``--only-listed-suites`` keeps exactly what the host lists). Other
repositories the host lists (Docker's ``bookworm``, ``bookworm-pgdg``,
``nodistro``) are left out whatever their suite. ``--repository`` adds a
source the user trusts, always with its own ``signed-by`` key.

Every word that reaches apt's command line after its options (package names,
versions, architectures) is checked against Debian's grammar first and comes
after ``--``: a lock file or a ``scratchpack.yaml`` is another party's data and
must never be able to hand apt an option.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchpack.errors import ScratchpackError
from scratchpack.notes import warn
from scratchpack.packages.control import NAME

APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
LISTS_MAX_AGE = 6 * 3600  # seconds before the package lists are fetched again
_INST = re.compile(r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) .*\[([^]]+)\]\)")
_ERROR = re.compile(r"^E: (.*)$", re.MULTILINE)
# "W: GPG error: …", or, where lists were fetched before, "W: An error occurred during the
# signature verification. … the previous index files will be used. GPG error: …" (apt 2.6).
_GPG_ERROR = re.compile(r"^W: (?:.*? )?GPG error: (\S+) (\S+) (?:In)?Release: (.*)$", re.MULTILINE)


class PackageError(ScratchpackError):
    """A package that cannot be resolved or fetched: unknown, gone from the mirror, unsigned."""


# Debian's grammar (policy 5.6.1, 5.6.7, 5.6.12): what a name, version or
# architecture may be. A word outside it never reaches apt, a path or a source.
# NAME: scratchpack.packages.control's (a build reads names without importing apt).
_EPOCH = r"(?:[0-9]+:)?"
VERSION = re.compile(
    rf"{_EPOCH}[0-9][A-Za-z0-9.+~]*"  # no revision: no hyphen in the upstream part
    rf"|{_EPOCH}[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9+.~]+"  # upstream-revision
)
ARCHITECTURES = frozenset({  # dpkg-architecture -L's Linux ports, release and unofficial
    "all", "amd64", "arm64", "armel", "armhf", "i386", "mips64el", "mipsel", "ppc64el",
    "riscv64", "s390x", "alpha", "arc", "hppa", "ia64", "loong64", "m68k", "mips", "mips64",
    "powerpc", "ppc64", "sh4", "sparc64", "x32",
})  # fmt: skip
SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # bookworm, bookworm-security, stable
_POOL_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+~%:/-]*")
_RELEASE_DATE = re.compile(r"[A-Za-z0-9 ,:+.-]{1,64}")


class Word(enum.Enum):
    """The kinds of word that reach apt, a path or a source; the value names them in errors."""

    NAME = "package name"
    VERSION = "version"
    ARCHITECTURE = "architecture"
    SUITE = "suite"
    POOL_PATH = "pool path"  # relative, inside the mirror: no "..", no leading "/" or "-"
    RELEASE_DATE = "release date"

    def matches(self, value: str) -> bool:
        if self is Word.ARCHITECTURE:
            return value in ARCHITECTURES
        if self is Word.POOL_PATH:
            parts = value.split("/")
            return _POOL_PATH.fullmatch(value) is not None and not {"", ".", ".."} & set(parts)
        pattern = {
            Word.NAME: NAME,
            Word.VERSION: VERSION,
            Word.SUITE: SUITE,
            Word.RELEASE_DATE: _RELEASE_DATE,
        }[self]
        return pattern.fullmatch(value) is not None


def check_word(kind: Word, value: object, where: str) -> str:
    """``value`` if it is a Debian word of ``kind``; else one line naming ``where``."""
    if not isinstance(value, str) or not kind.matches(value):
        raise PackageError(f"{where} is not a Debian {kind.value}: {quoted(value)}")
    return value


def quoted(value: object) -> str:
    """A hostile value, quoted on one line and cut short for an error message."""
    text = value if isinstance(value, str) else type(value).__name__
    text = text.encode("unicode_escape").decode("ascii")
    return f'"{text[:80]}…"' if len(text) > 80 else f'"{text}"'


def check_request(request: str, where: str) -> str:
    """``NAME[=VERSION]``, as ``--package`` takes it, in Debian's grammar; else one line."""
    name, equals, version = request.partition("=")
    if NAME.fullmatch(name) is None or (equals and VERSION.fullmatch(version) is None):
        raise PackageError(
            f"{where} {quoted(request)}: not a Debian package NAME[=VERSION] "
            "(lowercase letters, digits, + . -; a version as Debian writes it)"
        )
    return request


@dataclass(frozen=True)
class Source:
    """One apt source (deb822 fields), ``deb`` only."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None

    def deb822(self) -> str:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(self.uris)}",
            f"Suites: {' '.join(self.suites)}",
            f"Components: {' '.join(self.components)}",
        ]
        if self.signed_by:  # an inline key's lines continue the field
            lines.append(f"Signed-By: {self.signed_by}".replace("\n", "\n "))
        return "\n".join(lines) + "\n"

    def one_line(self) -> str:
        """``deb [signed-by=KEYRING] URI SUITE COMPONENT…``: how a lock records a repository."""
        options = f"[signed-by={self.signed_by}] " if self.signed_by else ""
        return f"deb {options}{' '.join(self.uris)} {' '.join(self.suites)} " + " ".join(
            self.components
        )


@dataclass(frozen=True)
class PackageRef:
    """A package as the mirror offers it: exactly what a lock file pins."""

    name: str
    version: str
    architecture: str
    filename: str  # the pool path on the mirror
    size: int
    sha256: str
    # The archive's own paragraph for this package (its Packages index entry, as apt-cache
    # show gives it): what status.d and the SBOM say, never the .deb's self-description.
    # Not part of a lock; empty for a ref read from one until apt has resolved it.
    index: str = field(default="", compare=False, repr=False)

    @property
    def archive_name(self) -> str:
        """apt's name for the downloaded file (an epoch's ``:`` becomes ``%3a``)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"

    @property
    def pinned(self) -> str:
        return f"{self.name}:{self.architecture}={self.version}"


@dataclass(frozen=True)
class Archive:
    """One suite of one repository that a resolution read: what a report names."""

    uri: str
    suite: str
    date: str | None = None  # its signed Release file's Date:; None before apt fetched it

    def to_json(self) -> dict[str, str | None]:
        return {"uri": self.uri, "suite": self.suite, "date": self.date}


@dataclass(frozen=True)
class Candidate:
    """The version apt would install of a package, and the archives that offer that version."""

    name: str
    version: str
    origins: tuple[Archive, ...]

    @property
    def suite(self) -> str:
        """Where it comes from, security first (``bookworm-security``): what a fix is read as."""
        suites = [origin.suite for origin in self.origins]
        ranked = sorted(suites, key=lambda name: not name.endswith("-security"))  # stable
        return ranked[0] if ranked else ""


def host_suite(os_release: Path = OS_RELEASE) -> str:
    """The host's Debian codename (``VERSION_CODENAME`` of os-release)."""
    try:
        text = os_release.read_text()
    except OSError as err:
        raise PackageError(f"cannot read {os_release}: give --suite") from err
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if match is None:
        raise PackageError(f"{os_release} names no VERSION_CODENAME: give --suite")
    return match.group(1)


def host_sources(etc: Path = APT_ETC) -> list[Source]:
    """The ``deb`` sources of the host: sources.list, ``*.list`` and deb822 ``*.sources``."""
    sources: list[Source] = []
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        with contextlib.suppress(OSError):
            sources += _one_line_sources(path.read_text())
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            sources += _deb822_sources(path.read_text())
    return sources


def _one_line_sources(text: str) -> list[Source]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed_by = None
        if words and words[0].startswith("["):
            options = []
            while words:
                options.append(words.pop(0))
                if options[-1].endswith("]"):
                    break
            for option in " ".join(options).strip("[]").split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    signed_by = value
        if len(words) >= 2:
            found.append(Source((words[0],), (words[1],), tuple(words[2:]), signed_by))
    return found


def _deb822_sources(text: str) -> list[Source]:
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        found.append(
            Source(
                tuple(fields.get("uris", "").split()),
                tuple(fields.get("suites", "").split()),
                tuple(fields.get("components", "").split()),
                fields.get("signed-by") or None,
            )
        )
    return found


# Debian's archive, by URI: its hosts and, on them, the archive's paths.
_DEBIAN_HOST = re.compile(
    r"(?:deb|security|ftp|snapshot|cdn-aws\.deb|cdn-fastly\.deb|ftp\.[a-z]{2})\.debian\.org"
)
_DEBIAN_PATH = re.compile(r"/debian(?:-security)?|/archive/debian(?:-security)?/[0-9]{8}T[0-9]{6}Z")
# A source signed by Debian's archive keys alone serves Debian's archive, whatever its name.
DEBIAN_KEYRINGS = frozenset(
    {
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "/usr/share/keyrings/debian-archive-keyring.pgp",
    }
)


def is_debian_archive(source: Source) -> bool:
    """Debian's own archive: a Debian URI, or a mirror apt checks against Debian's keys only."""
    if source.signed_by in DEBIAN_KEYRINGS:
        return True
    return bool(source.uris) and all(_is_debian_uri(uri) for uri in source.uris)


def _is_debian_uri(uri: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and port is None
        and not parts.username
        and _DEBIAN_HOST.fullmatch(parts.hostname or "") is not None
        and _DEBIAN_PATH.fullmatch(parts.path.rstrip("/")) is not None
    )


def sources_for(
    sources: Iterable[Source],
    host: str,
    suite: str,
    repositories: Iterable[Source] = (),
    only_listed: bool = False,
) -> list[Source]:
    """The host's Debian sources of its own suite family, with ``host`` replaced by ``suite``,
    and the suite's ``-updates`` and ``-security`` where the host lists only the suite (unless
    ``only_listed``); then the user's ``repositories``, as given."""
    check_word(Word.SUITE, suite, "--suite")
    chosen = []
    for source in sources:
        suites = tuple(
            suite + name[len(host) :]
            for name in source.suites
            if name == host or name.startswith(host + "-")
        )
        if suites and is_debian_archive(source):
            chosen.append(Source(source.uris, suites, source.components, source.signed_by))
        elif suites:  # a mirror under another name, a cache, or a third party: said, not used
            warn(
                f"left out this machine's apt source {' '.join(source.uris)} "
                f"{' '.join(source.suites)}: not Debian's archive (a mirror or cache of it is "
                "used through --repository 'deb [signed-by=/usr/share/keyrings/"
                "debian-archive-keyring.gpg] URI SUITE COMPONENT')"
            )
    if chosen and not only_listed:
        chosen += missing_siblings(chosen, suite)
    repositories = [_for_apt(one) for one in repositories]
    if not chosen and not repositories:
        raise PackageError(
            f"no apt source of this machine is Debian's archive for {host}: add one to "
            "/etc/apt/sources.list.d, or give --repository 'deb [signed-by=KEYRING] URI SUITE "
            "COMPONENT'"
        )
    return [*chosen, *repositories]


# Suites without -updates and -security: development never gets security support of its own.
UNSUPPORTED_SUITES = frozenset({"sid", "unstable", "experimental", "rc-buggy"})
DEBIAN_ARCHIVE = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
_SNAPSHOT = re.compile(r"(https?://snapshot\.debian\.org/archive/)debian(/[0-9]{8}T[0-9]{6}Z)/?")


def missing_siblings(chosen: list[Source], suite: str) -> list[Source]:
    """``SUITE-updates`` and ``SUITE-security`` of Debian's archive that ``chosen`` lacks.

    A host set up by debootstrap lists ``bookworm main`` alone: resolving from it
    would build from unpatched packages, silently. The additions take the URI and
    components of the suite's own source (a snapshot's security is the same
    moment's), and Debian's keyring: only Debian's signatures are accepted.
    """
    if suite in UNSUPPORTED_SUITES or re.fullmatch(r"[a-z]+", suite) is None:
        return []
    listed = {name for source in chosen for name in source.suites}
    base = next((source for source in chosen if suite in source.suites), None)
    uri = base.uris[0] if base else DEBIAN_ARCHIVE
    components = base.components if base else ("main",)
    snapshot = _SNAPSHOT.fullmatch(uri)
    security = f"{snapshot.group(1)}debian-security{snapshot.group(2)}" if snapshot else None
    keyring = debian_keyring()
    added = []
    if f"{suite}-updates" not in listed:
        added.append(Source((uri,), (f"{suite}-updates",), components, keyring))
    if f"{suite}-security" not in listed:
        added.append(
            Source((security or DEBIAN_SECURITY,), (f"{suite}-security",), components, keyring)
        )
    return added


def debian_keyring() -> str:
    """Debian's archive keyring as this machine has it (``.gpg``, or ``.pgp`` on newer ones)."""
    for path in sorted(DEBIAN_KEYRINGS):
        if os.path.isfile(path):
            return path
    return sorted(DEBIAN_KEYRINGS)[0]


def _for_apt(repository: Source) -> Source:
    """A ``--repository`` as apt reads it: its keyring by absolute path; ``file:`` as apt's
    ``copy:``, so that its packages land in our archives like a mirror's."""
    uris = tuple(
        "copy:" + uri[len("file:") :] if uri.startswith("file:") else uri for uri in repository.uris
    )
    return Source(
        uris, repository.suites, repository.components, os.path.abspath(repository.signed_by or "")
    )


_URI = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[^\s\[\]]*)?|file:/[^\s\[\]]*")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_repository(
    line: str, where: str = "--repository", keyring_must_exist: bool = True
) -> Source:
    """``deb [signed-by=KEYRING] URI SUITE COMPONENT…``, strictly: one line on anything else.

    ``signed-by`` is required: apt then checks the repository against that key
    alone, as it checks Debian's against Debian's.
    """
    if not isinstance(line, str) or not line.isprintable():
        raise PackageError(f"{where} {quoted(line)}: must be one line of text")
    words = line.split()
    if not words or words[0] != "deb":
        raise PackageError(f"{where} {quoted(line)}: must start with deb (binary packages)")
    options, words = _bracketed(words[1:], line, where)
    signed_by = _signed_by(options, line, where)
    if len(words) < 3:
        raise PackageError(
            f"{where} {quoted(line)}: needs URI SUITE COMPONENT… after the options "
            "(a flat repository without a component is not supported)"
        )
    uri, suite, components = words[0], words[1], words[2:]
    if _URI.fullmatch(uri) is None:
        raise PackageError(f"{where} {quoted(line)}: the URI must be http://, https:// or file:/")
    check_word(Word.SUITE, suite, f"{where} {quoted(line)}: the suite")
    for component in components:
        if _COMPONENT.fullmatch(component) is None:
            raise PackageError(f"{where} {quoted(line)}: not a component: {quoted(component)}")
    if keyring_must_exist and not os.path.isfile(signed_by):
        raise PackageError(f"{where}: the signed-by keyring {signed_by} is not a file")
    return Source((uri,), (suite,), tuple(components), signed_by)


def _bracketed(words: list[str], line: str, where: str) -> tuple[list[str], list[str]]:
    """The options of ``[ … ]`` (which may be split over words), and the words after it."""
    if not words or not words[0].startswith("["):
        return [], words
    for end, word in enumerate(words):
        if word.endswith("]"):
            inside = " ".join(words[: end + 1])[1:-1]
            return inside.split(), words[end + 1 :]
    raise PackageError(f"{where} {quoted(line)}: the options' [ has no closing ]")


def _signed_by(options: list[str], line: str, where: str) -> str:
    signed_by = None
    for option in options:
        key, equals, value = option.partition("=")
        if key != "signed-by" or not equals:
            raise PackageError(
                f"{where} {quoted(line)}: option {quoted(option)} is not accepted "
                "(only signed-by=KEYRING)"
            )
        signed_by = value
    if not signed_by or "," in signed_by:
        raise PackageError(
            f"{where} {quoted(line)}: needs [signed-by=KEYRING], one keyring file that apt "
            "checks the repository's signature against"
        )
    return signed_by


def cache_dir() -> Path:
    """``$SCRATCHPACK_CACHE``, or ``scratchpack`` in ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    if os.environ.get("SCRATCHPACK_CACHE"):
        return Path(os.environ["SCRATCHPACK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "scratchpack"


class Apt:
    """apt-get and apt-cache over a private state for one suite and architecture."""

    def __init__(
        self,
        suite: str,
        architecture: str,
        sources: list[Source],
        cache: Path | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.suite = check_word(Word.SUITE, suite, "the suite")
        self.architecture = check_word(Word.ARCHITECTURE, architecture, "the architecture")
        self.sources = sources
        text = "\n".join(source.deb822() for source in sources)
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        self.state = (cache or cache_dir()) / "apt" / f"{suite}-{architecture}-{key}"
        self.say = say or (lambda _message: None)
        for directory in ("sources.list.d", "preferences.d", "lists/partial", "archives/partial"):
            (self.state / directory).mkdir(parents=True, exist_ok=True)
        (self.state / "sources.list.d" / "scratchpack.sources").write_text(text)
        for name in ("sources.list", "preferences", "status"):
            (self.state / name).touch()

    def options(self) -> list[str]:
        state = self.state
        settings = {
            "Dir::Etc": str(APT_ETC),  # the host's apt.conf(.d) (proxies) and keyrings
            "Dir::Etc::SourceList": f"{state}/sources.list",
            "Dir::Etc::SourceParts": f"{state}/sources.list.d",
            "Dir::Etc::Preferences": f"{state}/preferences",
            "Dir::Etc::PreferencesParts": f"{state}/preferences.d",
            "Dir::State": str(state),
            "Dir::State::Lists": f"{state}/lists",
            "Dir::State::status": f"{state}/status",  # empty: solve for a bare system
            "Dir::Cache": str(state),
            "Dir::Cache::Archives": f"{state}/archives",
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": self.architecture,
            "APT::Architectures::": self.architecture,
            "APT::Install-Recommends": "false",
            "APT::Get::Assume-Yes": "true",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "1",  # our own lock (below) guards the state
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
        }
        options: list[str] = []
        for key, value in settings.items():
            options += ["-o", f"{key}={value}"]
        return options

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One scratchpack at a time in this state (apt's own locks are off)."""
        with open(self.state / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def update(self, force: bool = False) -> None:
        """Fetch the signed package lists, unless fresh ones are there."""
        stamp = self.state / "lists" / ".updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        self.say(f"fetching the package lists of Debian {self.suite} for {self.architecture}")
        self._run("apt-get", "update", what="fetch the package lists")
        stamp.touch()

    def resolve(self, requests: Iterable[str]) -> list[PackageRef]:
        """The packages apt would install on a bare system for ``requests`` (NAME[=VERSION])."""
        requests = [_apt_request(request) for request in requests]
        output = self._run(
            "apt-get", "install", "-s", "--", *requests, what="resolve " + " ".join(requests)
        )
        chosen = [
            (
                check_word(Word.NAME, match.group(1), "apt's choice"),
                check_word(Word.VERSION, match.group(2), f"apt's choice of {match.group(1)}"),
            )
            for line in output.splitlines()
            if (match := _INST.match(line))
        ]
        if not chosen:
            raise PackageError(f"apt chose no package for {' '.join(requests)}")
        pinned = [f"{name}={version}" for name, version in chosen]
        shown = self._run("apt-cache", "show", "--no-all-versions", "--", *pinned, what="describe")
        return _refs(shown, chosen, self.architecture)

    def download(self, refs: Iterable[PackageRef]) -> dict[str, Path]:
        """The ``.deb`` of each package, from the cache or the mirror, checked by SHA-256."""
        refs = list(refs)
        for ref in refs:
            _apt_request(ref.pinned)
        archives = self.state / "archives"
        wanted = [ref for ref in refs if not _matches(archives / ref.archive_name, ref.sha256)]
        if wanted:
            size = sum(ref.size for ref in wanted)
            self.say(f"downloading {len(wanted)} packages ({size / 1e6:.1f} MB)")
            self._run(
                "apt-get",
                "install",
                "--download-only",
                "--",
                *[ref.pinned for ref in wanted],
                what="download",
            )
        files: dict[str, Path] = {}
        for ref in refs:
            path = archives / ref.archive_name
            if not _matches(path, ref.sha256):
                raise PackageError(
                    f"{ref.name} {ref.version}: the downloaded file does not have the SHA-256 "
                    "the signed package list gives"
                )
            files[ref.name] = path
        return files

    def release_dates(self) -> dict[str, str]:
        """Each suite's ``Date:`` from its signed Release file."""
        dates: dict[str, str] = {}
        for path in sorted((self.state / "lists").glob("*_InRelease")):
            text = path.read_text(errors="replace")
            suite = re.search(r"^Suite: (\S+)", text, re.MULTILINE)
            codename = re.search(r"^Codename: (\S+)", text, re.MULTILINE)
            date = re.search(r"^Date: (.+)$", text, re.MULTILINE)
            if date and (codename or suite):
                name = path.name.split("_dists_", 1)[-1].split("_", 1)[0]
                when = date.group(1).strip()
                if Word.SUITE.matches(name) and Word.RELEASE_DATE.matches(when):
                    dates[name] = when
        return dates

    def archives(self) -> tuple[Archive, ...]:
        """Each source's suites with their Release dates, in the order of the sources."""
        lists = self.state / "lists"
        found = []
        for source in self.sources:
            for uri in source.uris:
                for suite in source.suites:
                    found.append(Archive(_shown_uri(uri), suite, _release_date(lists, uri, suite)))
        return tuple(found)

    def candidates(self, names: Iterable[str]) -> dict[str, Candidate]:
        """apt's candidate of each package the sources offer (absent: none offers it)."""
        names = [check_word(Word.NAME, name, "a package name") for name in names]
        found: dict[str, Candidate] = {}
        for start in range(0, len(names), _NAMES_PER_CALL):
            chunk = names[start : start + _NAMES_PER_CALL]
            shown = self._run("apt-cache", "policy", "--", *chunk, what="read the candidates")
            found.update(_policy(shown, set(chunk)))
        return found

    def describe(self, chosen: list[tuple[str, str]]) -> list[PackageRef]:
        """The index entry of each (name, version): what :meth:`download` takes."""
        if not chosen:
            return []
        pinned = [_apt_request(f"{name}={version}") for name, version in chosen]
        shown = self._run("apt-cache", "show", "--no-all-versions", "--", *pinned, what="describe")
        return _refs(shown, chosen, self.architecture)

    def _run(self, tool: str, *args: str, what: str) -> str:
        command = [tool, *self.options(), "-q", *args]
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"},
                check=False,
            )
        except FileNotFoundError as err:
            raise PackageError(f"--package needs {tool} (Debian's apt) on this machine") from err
        # A signature that does not verify fails the step, even where apt would only warn
        # and go on with the lists it had.
        if completed.returncode != 0 or _GPG_ERROR.search(completed.stderr):
            detail = _failure(completed.stderr) or f"exit {completed.returncode}"
            raise PackageError(
                f"apt could not {what} ({self.suite}, {self.architecture}): {detail}"
            )
        return completed.stdout


def _failure(stderr: str) -> str:
    """apt's reason, on one line: a signature that does not verify is said as such."""
    unsigned = _GPG_ERROR.findall(stderr)
    if unsigned:
        reasons = [
            f"the repository {uri} {suite} is not signed by its signed-by key ({why.strip()})"
            for uri, suite, why in unsigned
        ]
    else:
        reasons = _ERROR.findall(stderr) or stderr.strip().splitlines()[-1:]
    text = "; ".join(reason.strip() for reason in reasons)
    return text.replace("copy:/", "file:/")  # a --repository's file: is apt's copy: (_for_apt)


_NAMES_PER_CALL = 400  # package names on one apt-cache command line
_POLICY_ORIGIN = re.compile(r"^ {8}-?[0-9]+ (\S+) (\S+?)(?:/\S+)? \S+ Packages$")


def _policy(shown: str, asked: set[str]) -> dict[str, Candidate]:
    """``apt-cache policy`` read: each package's candidate and the archives that offer it."""
    found: dict[str, Candidate] = {}
    name = candidate = version = None
    origins: list[Archive] = []
    for line in [*shown.splitlines(), "end:"]:
        if not line.startswith(" ") and line.endswith(":"):
            if name in asked and candidate and Word.VERSION.matches(candidate):
                found[name] = Candidate(name, candidate, tuple(origins))
            name, candidate, version, origins = line[:-1].split(":")[0], None, None, []
        elif line.startswith("  Candidate: "):
            candidate = line.split(": ", 1)[1].strip()
        elif re.match(r"^ {5}(?:\*\*\* )?\S+ -?[0-9]+$", line):
            version = line.split()[-2]
        elif (match := _POLICY_ORIGIN.match(line)) and version == candidate:
            suite = match.group(2)
            if Word.SUITE.matches(suite):
                origins.append(Archive(_shown_uri(match.group(1)), suite))
    return found


def _shown_uri(uri: str) -> str:
    """A URI as the user gave it: a ``--repository``'s ``file:`` is apt's ``copy:``."""
    return "file:" + uri[len("copy:") :] if uri.startswith("copy:") else uri


def _release_date(lists: Path, uri: str, suite: str) -> str | None:
    """The ``Date:`` of the Release file apt fetched for ``uri`` ``suite`` (apt's file name)."""
    stem = re.sub(r"^[a-z+]+:(?://)?", "", uri).rstrip("/").replace("/", "_")
    for kind in ("InRelease", "Release"):
        try:
            text = (lists / f"{stem}_dists_{suite}_{kind}").read_text(errors="replace")
        except OSError:
            continue
        date = re.search(r"^Date: (.+)$", text, re.MULTILINE)
        when = date.group(1).strip() if date else ""
        return when if Word.RELEASE_DATE.matches(when) else None
    return None


def _refs(shown: str, chosen: list[tuple[str, str]], architecture: str) -> list[PackageRef]:
    """Match ``apt-cache show`` paragraphs to the chosen (name, version), in apt's order."""
    found: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
    for paragraph in shown.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for line in paragraph.splitlines()
            if ":" in line and not line.startswith(" ")
            for key, value in [line.split(":", 1)]
        )
        if {"Package", "Version", "Filename", "SHA256", "Size"} <= fields.keys():
            key = (fields["Package"], fields["Version"])
            found.setdefault(key, (fields, paragraph.strip("\n") + "\n"))
    refs = []
    for name, version in chosen:
        if (name, version) not in found:
            raise PackageError(f"{name} {version}: the package list has no SHA-256 for it")
        refs.append(_index_ref(*found[(name, version)], architecture))
    return refs


def _index_ref(fields: dict[str, str], paragraph: str, architecture: str) -> PackageRef:
    """A package list's entry, its fields checked: the index may be a repository's own."""
    at = f"the package list's entry for {quoted(fields['Package'])}:"
    size, sha256 = fields["Size"], fields["SHA256"]
    if not size.isdigit() or re.fullmatch(r"[0-9a-f]{64}", sha256) is None:
        raise PackageError(f"{at} Size or SHA256 is malformed")
    return PackageRef(
        fields["Package"],
        fields["Version"],
        check_word(
            Word.ARCHITECTURE, fields.get("Architecture", architecture), f"{at} Architecture"
        ),
        check_word(Word.POOL_PATH, fields["Filename"], f"{at} Filename"),
        int(size),
        sha256,
        paragraph,
    )


def _apt_request(word: str) -> str:
    """``NAME[:ARCH][=VERSION]`` in Debian's grammar: the only words apt gets, after ``--``."""
    name_arch, equals, version = word.partition("=")
    name, colon, arch = name_arch.partition(":")
    if not (
        NAME.fullmatch(name)
        and (not colon or arch in ARCHITECTURES)
        and (not equals or VERSION.fullmatch(version))
    ):
        raise PackageError(f"{quoted(word)} is not a Debian package NAME[:ARCH][=VERSION]")
    return word


def _matches(path: Path, sha256: str) -> bool:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256
