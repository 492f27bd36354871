"""apt, run in a private state: resolve Debian packages for any architecture and download them.

apt's own solver and its signature checks do the work; every directory apt
writes (lists, archives, its dpkg status, which stays empty so the solver
starts from a bare system) lives in a state directory of ours, one per suite,
architecture and set of sources, under the cache. The host's configuration
(``/etc/apt/apt.conf.d``: proxies) and keyrings are read; the host's sources,
pins, package lists and dpkg database are never used or touched.

Which sources: the host's own ``deb`` sources for its Debian suite and that
suite's siblings (``bookworm``, ``bookworm-updates``, ``bookworm-security``),
with ``--suite`` replacing the codename in them; other repositories the host
lists (third-party, ``nodistro``) are left out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchpack.errors import ScratchpackError

APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
LISTS_MAX_AGE = 6 * 3600  # seconds before the package lists are fetched again
_INST = re.compile(r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) .*\[([^]]+)\]\)")
_ERROR = re.compile(r"^E: (.*)$", re.MULTILINE)


class PackageError(ScratchpackError):
    """A package that cannot be resolved or fetched: unknown, gone from the mirror, unsigned."""


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
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


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


def sources_for(sources: Iterable[Source], host: str, suite: str) -> list[Source]:
    """The host's sources of its own suite family, with ``host`` replaced by ``suite``."""
    chosen = []
    for source in sources:
        suites = tuple(
            suite + name[len(host) :]
            for name in source.suites
            if name == host or name.startswith(host + "-")
        )
        if suites and source.uris:
            chosen.append(Source(source.uris, suites, source.components, source.signed_by))
    if not chosen:
        raise PackageError(
            f"no apt source of this machine serves Debian {host}: "
            "add one to /etc/apt/sources.list.d"
        )
    return chosen


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
        self.suite = suite
        self.architecture = architecture
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
        requests = list(requests)
        output = self._run(
            "apt-get", "install", "-s", *requests, what="resolve " + " ".join(requests)
        )
        chosen = [
            match.groups()[:2] for line in output.splitlines() if (match := _INST.match(line))
        ]
        if not chosen:
            raise PackageError(f"apt chose no package for {' '.join(requests)}")
        pinned = [f"{name}={version}" for name, version in chosen]
        shown = self._run("apt-cache", "show", "--no-all-versions", *pinned, what="describe")
        return _refs(shown, chosen, self.architecture)

    def download(self, refs: Iterable[PackageRef]) -> dict[str, Path]:
        """The ``.deb`` of each package, from the cache or the mirror, checked by SHA-256."""
        refs = list(refs)
        archives = self.state / "archives"
        wanted = [ref for ref in refs if not _matches(archives / ref.archive_name, ref.sha256)]
        if wanted:
            size = sum(ref.size for ref in wanted)
            self.say(f"downloading {len(wanted)} packages ({size / 1e6:.1f} MB)")
            self._run(
                "apt-get",
                "install",
                "--download-only",
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
                dates[name] = date.group(1).strip()
        return dates

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
        if completed.returncode != 0:
            errors = _ERROR.findall(completed.stderr) or completed.stderr.strip().splitlines()[-1:]
            detail = "; ".join(error.strip() for error in errors) or f"exit {completed.returncode}"
            raise PackageError(
                f"apt could not {what} ({self.suite}, {self.architecture}): {detail}"
            )
        return completed.stdout


def _refs(shown: str, chosen: list[tuple[str, str]], architecture: str) -> list[PackageRef]:
    """Match ``apt-cache show`` paragraphs to the chosen (name, version), in apt's order."""
    found: dict[tuple[str, str], PackageRef] = {}
    for paragraph in shown.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for line in paragraph.splitlines()
            if ":" in line and not line.startswith(" ")
            for key, value in [line.split(":", 1)]
        )
        if {"Package", "Version", "Filename", "SHA256", "Size"} <= fields.keys():
            ref = PackageRef(
                fields["Package"],
                fields["Version"],
                fields.get("Architecture", architecture),
                fields["Filename"],
                int(fields["Size"]),
                fields["SHA256"],
                paragraph.strip("\n") + "\n",
            )
            found.setdefault((ref.name, ref.version), ref)
    refs = []
    for name, version in chosen:
        ref = found.get((name, version))
        if ref is None:
            raise PackageError(f"{name} {version}: the package list has no SHA-256 for it")
        refs.append(ref)
    return refs


def _matches(path: Path, sha256: str) -> bool:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256
