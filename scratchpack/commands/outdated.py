"""``outdated``: which packages of an image (or a lock) have fixes, and which CVEs they close.

The image's own records (dpkg's ``status`` or ``status.d``) say what is
installed; its os-release or ``/etc/debian_version`` its suite. apt, in the
private state ``--package`` resolves in, gives the candidates of that suite,
``-updates`` and ``-security``; the candidate's changelog what changed. The
exit status tells CI: 0 all current, :data:`~scratchpack.errors.EXIT_OUTDATED`
when an update exists. Nothing of the image runs, nothing is unpacked.

A multi-platform index is compared platform by platform: each image's records
against the candidates of its own architecture (apt's state is per architecture).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchpack.errors import InputError, printable
from scratchpack.image.media import Platform
from scratchpack.image.readers import ImageSaver, open_images
from scratchpack.image.records import ImageRecords, read_records
from scratchpack.packages.apt import Archive, Word, check_word
from scratchpack.packages.fetch import package_apt
from scratchpack.packages.lock import read_lock
from scratchpack.packages.updates import (
    InstalledPackage,
    PackageUpdate,
    UpdateState,
    check_updates,
)
from scratchpack.publish import publication, writing


@dataclass(frozen=True)
class OutdatedRequest:
    """An image (engine name or file) or a lock, and where candidates come from."""

    image: str | None = None
    lock: Path | None = None
    suite: str | None = None  # None: the image's (or the lock's) own
    repositories: tuple[str, ...] = ()  # checked --repository lines
    only_listed_suites: bool = False


@dataclass(frozen=True)
class PlatformUpdates:
    """One platform's packages against the candidates of its suite."""

    platform: str
    suite: str
    packages: tuple[PackageUpdate, ...]
    archives: tuple[Archive, ...]

    def of(self, state: UpdateState) -> tuple[PackageUpdate, ...]:
        return tuple(update for update in self.packages if update.state is state)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "suite": self.suite,
            "packages": len(self.packages),
            "archives": [archive.to_json() for archive in self.archives],
            "outdated": [update.to_json() for update in self.of(UpdateState.OUTDATED)],
            "unknown": [update.installed.name for update in self.of(UpdateState.UNKNOWN)],
            "newer": [update.installed.name for update in self.of(UpdateState.NEWER)],
        }


@dataclass(frozen=True)
class OutdatedResult:
    """What was compared (an image or a lock), per platform."""

    subject: str
    from_lock: bool
    platforms: tuple[PlatformUpdates, ...]

    @property
    def outdated(self) -> int:
        return sum(len(one.of(UpdateState.OUTDATED)) for one in self.platforms)

    def to_json(self) -> dict[str, Any]:
        return {
            "lock" if self.from_lock else "image": self.subject,
            "outdated": self.outdated,
            "platforms": [one.to_json() for one in self.platforms],
        }


def run_outdated(
    request: OutdatedRequest,
    engine: ImageSaver | None = None,
    say: Callable[[str], None] | None = None,
) -> OutdatedResult:
    """Compare the image's (or lock's) packages with their candidates, per platform."""
    if request.suite is not None:
        check_word(Word.SUITE, request.suite, "--suite")
    if request.lock is not None:
        return _lock_updates(request, request.lock, say)
    if not request.image:
        raise InputError("outdated needs an IMAGE, or --lock FILE")
    platforms = tuple(
        _compare(request, one.suite, one.platform, list(one.packages), say)
        for one in _image_packages(request, engine, say)
    )
    return OutdatedResult(request.image, False, platforms)


@dataclass(frozen=True)
class _ImagePackages:
    """One platform's image: its packages as its records say, and its suite."""

    platform: Platform
    suite: str
    packages: tuple[InstalledPackage, ...]


def _image_packages(
    request: OutdatedRequest, engine: ImageSaver | None, say: Callable[[str], None] | None
) -> list[_ImagePackages]:
    """The installed packages and suite (or --suite) of each platform's image."""
    assert request.image is not None
    shown = printable(request.image)
    if say:
        say(f"reading the package records of {shown}")
    found = []
    with publication() as staged:
        work = staged.scratch()
        with writing(work, f"{shown} as read for its package records"):
            sources = open_images(request.image, work / "source", engine)
            for source in sources:
                platform = source.image.platform
                where = shown if len(sources) == 1 else f"{shown} ({platform})"
                records = read_records(source.image, where)
                suite = _suite(request, records, where)
                found.append(_ImagePackages(platform, suite, records.packages))
    return found


def _suite(request: OutdatedRequest, records: ImageRecords, where: str) -> str:
    """--suite, else the image's own; an image with no records or no Debian suite is refused."""
    if not records.packages:
        raise InputError(
            f"{where} holds no package records (no /var/lib/dpkg/status, no status.d): "
            "outdated compares Debian packages only"
        )
    suite = request.suite or records.suite
    if suite is None:
        raise InputError(
            f"{where}: cannot tell its Debian suite (no Debian VERSION_CODENAME in its "
            "os-release, no /etc/debian_version): give --suite if it is Debian-based"
        )
    return suite


def _lock_updates(
    request: OutdatedRequest, path: Path, say: Callable[[str], None] | None
) -> OutdatedResult:
    """A lock's packages, each platform against its architecture's candidates."""
    lock = read_lock(path)
    suite = request.suite or lock.suite
    platforms = []
    for name, locked in sorted(lock.platforms.items()):
        packages = [
            InstalledPackage(ref.name, ref.version, ref.architecture, ref.name)
            for ref in locked.packages
        ]
        platform = Platform.from_debian(locked.architecture)
        platforms.append(_compare(request, suite, platform, packages, say, name))
    return OutdatedResult(str(path), True, tuple(platforms))


def _compare(
    request: OutdatedRequest,
    suite: str,
    platform: Platform,
    packages: list[InstalledPackage],
    say: Callable[[str], None] | None,
    name: str | None = None,
) -> PlatformUpdates:
    apt = package_apt(
        suite, platform.debian_architecture, request.repositories, request.only_listed_suites, say
    )
    with apt.locked():
        apt.update(force=True)  # a gate asks the mirror, not a cache hours old
        updates = check_updates(apt, packages, say)
        archives = apt.archives()
    return PlatformUpdates(name or str(platform), suite, updates, archives)


def report_text(result: OutdatedResult) -> str:
    """Each outdated package: versions, source, origin, and the changelog's news; then a sum."""
    lines: list[str] = []
    for one in result.platforms:
        outdated = one.of(UpdateState.OUTDATED)
        lines.append(
            f"{printable(result.subject)} ({one.platform}, Debian {one.suite}): "
            f"{len(outdated)} of {len(one.packages)} packages have updates"
        )
        for update in outdated:
            lines += _update_lines(update)
        unknown = [update.installed.name for update in one.of(UpdateState.UNKNOWN)]
        for number, shown in enumerate(_rows(tuple(unknown))):
            lines.append(f"not offered by the sources: {shown}" if number == 0 else f"  {shown}")
        lines.append(
            "compared with: "
            + ", ".join(f"{archive.uri} {archive.suite}" for archive in one.archives)
        )
    return "".join(f"{printable(line)}\n" for line in lines)


_ROW = 80  # characters of CVE ids on one line of the text report


def _rows(words: tuple[str, ...]) -> list[str]:
    """``words`` joined by commas in rows of about :data:`_ROW` characters."""
    rows: list[list[str]] = [[]]
    width = 0
    for word in words:
        if rows[-1] and width + len(word) > _ROW:
            rows.append([])
            width = 0
        rows[-1].append(word)
        width += len(word) + 2
    return [", ".join(row) for row in rows if row]


def _update_lines(update: PackageUpdate) -> list[str]:
    assert update.candidate is not None
    installed = update.installed
    source = update.source or installed.source
    lines = [
        f"  {installed.name} {installed.version} -> {update.candidate.version} "
        f"(source {source}, from {update.candidate.suite})"
    ]
    changes = update.changes
    if changes is None:
        return lines
    for entry in changes.entries:
        urgency = f" urgency {entry.urgency}" if entry.urgency else ""
        head = f"    {entry.version}{urgency}"
        if not entry.cves:
            lines.append(head)
        for number, shown in enumerate(_rows(entry.cves)):  # every id, in lines a reader takes
            lines.append(f"{head}: {shown}" if number == 0 else f"      {shown}")
    if changes.note:
        lines.append(f"    changelog {changes.state.value}: {changes.note}")
    return lines


def needs_engine(request: OutdatedRequest) -> bool:
    """An image named, not found as a file: it is the engine's."""
    return request.lock is None and bool(request.image) and not os.path.lexists(request.image)
