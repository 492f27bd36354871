"""Which installed packages have newer candidates, and what changed in between.

An image's package records (``status.d`` paragraphs or a full dpkg ``status``)
say what is installed; apt, in the private state ``--package`` resolves in, says
what the suite, ``-updates`` and ``-security`` offer now. For each package
whose candidate is newer, the candidate's own ``changelog.Debian.gz`` (read
from its ``.deb``, downloaded through the cache) gives the entries after the
installed version: their versions, urgencies and the CVE ids they name.

Records, ``.deb`` files and changelogs are other parties' data: every word is
checked against Debian's grammar, every read is bounded (a gzip bomb stops at
:data:`MAX_CHANGELOG`), and a link in a package is resolved inside it, never
followed out (one that leaves it makes the changelog refused, not read).
"""

from __future__ import annotations

import enum
import gzip
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian.changelog import Changelog, ChangelogParseError
from debian.debian_support import Version

from scratchpack.inroot import inside
from scratchpack.packages.apt import (
    ARCHITECTURES,
    NAME,
    VERSION,
    Apt,
    Candidate,
    PackageError,
    PackageRef,
    quoted,
)
from scratchpack.packages.deb import data_tar

MAX_RECORDS = 100_000  # packages in one image's records
MAX_CHANGELOG = 32 << 20  # bytes of a decompressed changelog (glibc's is about 1 MB)
MAX_CHANGELOG_GZ = 8 << 20  # bytes of the compressed member
MAX_ENTRIES = 500  # changelog entries reported for one package
MAX_DEB_MEMBERS = 1_000_000  # entries of a .deb searched for its changelog (Debian's most: ~100k)
MAX_CVES = 200  # CVE ids reported for one entry
_CVE = re.compile(r"\bCVE-[0-9]{4}-[0-9]{4,7}\b")
_URGENCY = re.compile(r"[a-z]{1,16}")
_SOURCE = re.compile(r"([a-z0-9][a-z0-9+.-]+)(?: \(([^()\s]+)\))?")
_DEBIAN_CODENAMES = {  # /etc/debian_version's major release -> its codename
    "8": "jessie", "9": "stretch", "10": "buster", "11": "bullseye", "12": "bookworm",
    "13": "trixie", "14": "forky", "15": "duke",
}  # fmt: skip


@dataclass(frozen=True)
class InstalledPackage:
    """One package record of an image: what dpkg (or distroless's status.d) says is there."""

    name: str
    version: str
    architecture: str
    source: str  # the source package's name (the package's own when it names none)


def parse_status(text: str, where: str, need_installed: bool = True) -> list[InstalledPackage]:
    """The installed packages of a dpkg ``status`` (or one ``status.d`` file).

    Only ``install ok installed`` paragraphs count; with ``need_installed`` false
    (distroless's status.d) a paragraph without a Status field counts too. A
    word outside Debian's grammar is one line naming ``where``.
    """
    found = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = _fields(paragraph)
        if not fields:
            continue
        status = fields.get("Status")
        if (status is None and need_installed) or status not in (None, "install ok installed"):
            continue
        found.append(_installed(fields, where))
        if len(found) > MAX_RECORDS:
            raise PackageError(f"{where}: more than {MAX_RECORDS} package records")
    return found


def _fields(paragraph: str) -> dict[str, str]:
    """A deb822 paragraph's single-line fields (continuation lines are not needed here)."""
    fields: dict[str, str] = {}
    for line in paragraph.splitlines():
        if line[:1] in (" ", "\t", "#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _installed(fields: dict[str, str], where: str) -> InstalledPackage:
    name, version = fields.get("Package", ""), fields.get("Version", "")
    architecture = fields.get("Architecture", "")
    if NAME.fullmatch(name) is None:
        raise PackageError(f"{where}: a record's Package is not a Debian name: {quoted(name)}")
    if VERSION.fullmatch(version) is None:
        raise PackageError(f"{where}: {name}'s Version is not a Debian version: {quoted(version)}")
    if architecture not in ARCHITECTURES:
        raise PackageError(
            f"{where}: {name}'s Architecture is not Debian's: {quoted(architecture)}"
        )
    return InstalledPackage(name, version, architecture, source_of(fields.get("Source"), name))


def source_of(field: str | None, name: str) -> str:
    """The source package a ``Source:`` field names (``openssl (3.0.11-1)`` -> ``openssl``)."""
    match = _SOURCE.fullmatch(field or "")
    return match.group(1) if match else name


def tell_suite(os_release: str | None, debian_version: str | None) -> str | None:
    """A Debian image's codename: os-release's VERSION_CODENAME (of Debian), else the release
    /etc/debian_version names (``12.5`` -> bookworm, ``trixie/sid`` -> trixie); None: not told."""
    if os_release is not None:
        fields = dict(
            (key, value.strip().strip("\"'"))
            for line in os_release.splitlines()
            if "=" in line
            for key, value in [line.split("=", 1)]
        )
        codename = fields.get("VERSION_CODENAME", "")
        if fields.get("ID") == "debian" and re.fullmatch(r"[a-z]{2,16}", codename):
            return codename
        if fields.get("ID") not in (None, "debian"):
            return None  # Ubuntu names its own codenames: not a suite of Debian's archive
    text = (debian_version or "").strip()
    major = re.fullmatch(r"([0-9]{1,2})(?:\.[0-9]{1,3})*", text)
    if major:
        return _DEBIAN_CODENAMES.get(major.group(1))
    testing = re.fullmatch(r"([a-z]{2,16})/sid", text)
    return testing.group(1) if testing else None


class ChangelogState(str, enum.Enum):
    READ = "read"  # the entries are the candidate's own changelog's
    ELSEWHERE = "elsewhere"  # the doc directory is a link to another package's (named)
    MISSING = "missing"  # the package ships no changelog
    REFUSED = "refused"  # hostile or unreadable: too large, a link out of the package


@dataclass(frozen=True)
class ChangeEntry:
    """One changelog entry newer than what is installed."""

    version: str
    urgency: str
    cves: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "urgency": self.urgency, "cves": list(self.cves)}


@dataclass(frozen=True)
class ChangelogNews:
    """What the candidate's changelog says since the installed version."""

    state: ChangelogState
    entries: tuple[ChangeEntry, ...] = ()
    note: str = ""  # where it is (ELSEWHERE), why not read (REFUSED)

    @property
    def cves(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cve for entry in self.entries for cve in entry.cves))


class UpdateState(str, enum.Enum):
    CURRENT = "current"
    OUTDATED = "outdated"
    NEWER = "newer"  # installed is newer than any the sources offer
    UNKNOWN = "unknown"  # no source offers the package


@dataclass(frozen=True)
class PackageUpdate:
    """One installed package against its candidate."""

    installed: InstalledPackage
    state: UpdateState
    candidate: Candidate | None = None
    source: str = ""  # the candidate's source package
    changes: ChangelogNews | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "package": self.installed.name,
            "architecture": self.installed.architecture,
            "installed": self.installed.version,
            "state": self.state.value,
            "source": self.source or self.installed.source,
        }
        if self.candidate is not None:
            document["candidate"] = self.candidate.version
            document["from"] = self.candidate.suite
            document["archives"] = [origin.to_json() for origin in self.candidate.origins]
        if self.changes is not None:
            document["changelog"] = {
                "state": self.changes.state.value,
                "note": self.changes.note,
                "entries": [entry.to_json() for entry in self.changes.entries],
            }
            document["cves"] = list(self.changes.cves)
        return document


def check_updates(
    apt: Apt, installed: Iterable[InstalledPackage], say: Callable[[str], None] | None = None
) -> tuple[PackageUpdate, ...]:
    """Each installed package against apt's candidate; the outdated ones with their news.

    ``apt`` is locked and its lists fetched by the caller.
    """
    installed = sorted(set(installed), key=lambda one: (one.name, one.architecture))
    candidates = apt.candidates(sorted({one.name for one in installed}))
    compared = [_compare(one, candidates.get(one.name)) for one in installed]
    outdated = [update for update in compared if update.state is UpdateState.OUTDATED]
    refs = apt.describe(
        sorted({(u.installed.name, u.candidate.version) for u in outdated if u.candidate})
    )
    if refs:
        (say or (lambda _m: None))(f"reading the changelogs of {len(refs)} updated packages")
    files = apt.download(refs)
    by_name = {ref.name: ref for ref in refs}
    return tuple(
        _with_news(update, by_name[update.installed.name], files[update.installed.name])
        if update.state is UpdateState.OUTDATED
        else update
        for update in compared
    )


def _compare(one: InstalledPackage, candidate: Candidate | None) -> PackageUpdate:
    if candidate is None:
        return PackageUpdate(one, UpdateState.UNKNOWN)
    order = Version(one.version)
    offered = Version(candidate.version)
    state = (
        UpdateState.OUTDATED
        if order < offered
        else UpdateState.CURRENT
        if order == offered
        else UpdateState.NEWER
    )
    return PackageUpdate(one, state, candidate)


def _with_news(update: PackageUpdate, ref: PackageRef, deb: Path) -> PackageUpdate:
    fields = _fields(ref.index)
    return PackageUpdate(
        update.installed,
        update.state,
        update.candidate,
        source_of(fields.get("Source"), ref.name),
        changelog_news(deb, ref.name, update.installed.version),
    )


def changelog_news(deb: Path, package: str, installed: str) -> ChangelogNews:
    """The entries of ``deb``'s own changelog newer than ``installed``."""
    try:
        found = _changelog_member(deb, package)
    except (PackageError, tarfile.TarError, OSError) as err:
        return ChangelogNews(ChangelogState.REFUSED, note=str(err))
    if isinstance(found, ChangelogNews):
        return found
    return newer_entries(found, installed)


def newer_entries(compressed: bytes, installed: str) -> ChangelogNews:
    """A gzip'd changelog's entries after ``installed``, bounded in bytes and entries."""
    try:
        with gzip.GzipFile(fileobj=_BytesReader(compressed)) as stream:
            data = stream.read(MAX_CHANGELOG + 1)
    except (OSError, EOFError, zlib.error) as err:
        return ChangelogNews(ChangelogState.REFUSED, note=f"not a gzip file ({err})")
    if len(data) > MAX_CHANGELOG:
        return ChangelogNews(
            ChangelogState.REFUSED, note=f"unpacks to more than {MAX_CHANGELOG >> 20} MiB"
        )
    try:
        changelog = Changelog(data.decode("utf-8", "replace"), strict=False)
    except (ChangelogParseError, ValueError) as err:
        return ChangelogNews(ChangelogState.REFUSED, note=f"not a Debian changelog ({err})")
    since = Version(installed)
    entries = []
    for block in changelog:
        version = str(block.version) if block.version is not None else ""
        if VERSION.fullmatch(version) is None or Version(version) <= since:
            break
        urgency = (block.urgency or "").lower()
        cves = tuple(dict.fromkeys(_CVE.findall("\n".join(block.changes()))))[:MAX_CVES]
        entries.append(ChangeEntry(version, urgency if _URGENCY.fullmatch(urgency) else "", cves))
        if len(entries) >= MAX_ENTRIES:
            break
    return ChangelogNews(ChangelogState.READ, tuple(entries))


class _BytesReader:
    """A read-only stream over bytes (gzip.GzipFile reads it lazily, so the bound holds)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, count: int = -1) -> bytes:
        end = len(self.data) if count < 0 else self.offset + count
        chunk, self.offset = self.data[self.offset : end], min(end, len(self.data))
        return chunk


def _changelog_member(deb: Path, package: str) -> bytes | ChangelogNews:
    """``usr/share/doc/PACKAGE/changelog.Debian.gz`` of ``deb`` (or ``changelog.gz``, a native
    package's), its links resolved inside the package; a link to a sibling's doc directory
    is said, not followed; a link that leaves the package is refused. Only the links that
    could lead to it are kept, and no member once passed: memory stays constant whatever
    the package holds, and its entries are capped."""
    doc = f"usr/share/doc/{package}"
    wanted = (f"{doc}/changelog.Debian.gz", f"{doc}/changelog.gz")
    links: dict[str, str] = {}
    with data_tar(deb) as tar:
        for count, member in enumerate(iter(tar.next, None), start=1):
            tar.members.clear()  # a stream is read once: nothing goes back to a member
            if count > MAX_DEB_MEMBERS:
                return ChangelogNews(
                    ChangelogState.REFUSED,
                    note=f"the package has more than {MAX_DEB_MEMBERS} entries",
                )
            name = "/".join(inside(member.name) or [])
            if name != doc and name not in wanted:
                continue
            if member.issym():
                links[name] = member.linkname
            elif member.islnk():  # a hard link names a member, from the package's top
                links[name] = "/" + "/".join(inside(member.linkname) or [])
            elif name in wanted and member.isreg():
                if member.size > MAX_CHANGELOG_GZ:
                    return ChangelogNews(
                        ChangelogState.REFUSED,
                        note=f"{name} is larger than {MAX_CHANGELOG_GZ >> 20} MiB",
                    )
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read(MAX_CHANGELOG_GZ)
    return _linked_changelog(links, doc, wanted)


def _linked_changelog(links: dict[str, str], doc: str, wanted: tuple[str, ...]) -> ChangelogNews:
    """Where a linked doc directory or changelog leads, resolved inside the package."""
    for name in (doc, *wanted):
        if name not in links:
            continue
        target = links[name]
        absolute = target.startswith("/")
        parts = inside(target if absolute else f"{name.rsplit('/', 1)[0]}/{target}")
        if parts is None:
            return ChangelogNews(
                ChangelogState.REFUSED, note=f"/{name} links out of the package ({quoted(target)})"
            )
        place = "/" + "/".join(parts)
        sibling = re.fullmatch(r"/usr/share/doc/([a-z0-9][a-z0-9+.-]+)(?:/.*)?", place)
        if sibling and sibling.group(1) != doc.rsplit("/", 1)[-1]:
            return ChangelogNews(
                ChangelogState.ELSEWHERE, note=f"in {sibling.group(1)}'s changelog ({place})"
            )
        return ChangelogNews(ChangelogState.REFUSED, note=f"/{name} links to {quoted(place)}")
    return ChangelogNews(ChangelogState.MISSING, note=f"no /{wanted[0]} in the package")
