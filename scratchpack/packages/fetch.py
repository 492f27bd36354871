"""From package names to an unpacked root: resolve, download (cached), unpack.

The one entry point the commands use; each step is in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from scratchpack.packages.apt import (
    Apt,
    Archive,
    PackageError,
    PackageRef,
    Source,
    check_request,
    host_sources,
    host_suite,
    parse_repository,
    sources_for,
)
from scratchpack.packages.lock import Lock, PlatformLock
from scratchpack.packages.root import SYSTEM_PACKAGES, PackageRoot, unpack_packages


@dataclass(frozen=True)
class PackageResolution:
    """What ``--package`` resolved: the unpacked root, the packages used (apt's order), each
    suite's Release date, and the archives read (what the build's report names)."""

    root: PackageRoot
    refs: tuple[PackageRef, ...]
    dates: dict[str, str]
    archives: tuple[Archive, ...]


def resolve_package_root(
    requests: Iterable[str],
    destination: Path,
    suite: str | None = None,
    architecture: str = "amd64",
    pinned: list[PackageRef] | None = None,
    say: Callable[[str], None] | None = None,
    repositories: tuple[str, ...] = (),
    only_listed: bool = False,
) -> PackageResolution:
    """Resolve ``requests`` (NAME[=VERSION]) for ``suite``/``architecture`` and unpack them.

    ``pinned``: a lock's packages, installed exactly instead of resolving.
    ``repositories``: ``--repository`` lines, added to Debian's sources.
    ``only_listed``: the suites this machine lists, without the added -updates/-security.
    """
    requests = [check_request(request, "--package") for request in requests]
    apt = package_apt(suite, architecture, repositories, only_listed, say)
    with apt.locked():
        apt.update()
        wanted = [*requests, *(name for name in SYSTEM_PACKAGES if name not in requests)]
        refs = apt.resolve([ref.pinned for ref in pinned] if pinned else wanted)
        if pinned:
            _check_pinned(refs, pinned)
        files = apt.download(refs)
        dates = apt.release_dates()
        archives = apt.archives()
    (say or (lambda _m: None))(f"unpacking {len(refs)} packages")
    destination.mkdir(parents=True, exist_ok=True)
    root = unpack_packages([(ref, files[ref.name]) for ref in refs], destination)
    return PackageResolution(root, tuple(refs), dates, archives)


def package_apt(
    suite: str | None,
    architecture: str,
    repositories: tuple[str, ...] = (),
    only_listed: bool = False,
    say: Callable[[str], None] | None = None,
) -> Apt:
    """The private apt state ``--package`` resolves in, for ``suite`` and ``architecture``."""
    sources = _sources(suite, repositories, only_listed)
    return Apt(suite or host_suite(), architecture, sources, say=say)


def _sources(suite: str | None, repositories: tuple[str, ...], only_listed: bool) -> list[Source]:
    """Debian's sources of this machine for ``suite``, then the user's repositories."""
    host = host_suite()
    users = [parse_repository(line) for line in repositories]
    return sources_for(host_sources(), host, suite or host, users, only_listed)


def _check_pinned(refs: list[PackageRef], pinned: list[PackageRef]) -> None:
    """What apt resolved is exactly what the lock names: file, size and digest included."""
    got = {_identity(ref) for ref in refs}
    for ref in pinned:
        if _identity(ref) not in got:
            raise PackageError(
                f"{ref.name} {ref.version}: the mirror no longer offers the locked file "
                f"{ref.filename} (sha256 {ref.sha256[:12]}…); refresh the lock with "
                "scratchpack lock"
            )
    if len(refs) != len(pinned):
        raise PackageError(
            "apt resolved other packages than the lock names; refresh the lock with "
            "scratchpack lock"
        )


def _identity(ref: PackageRef) -> tuple[str, str, str, str, int, str]:
    return (ref.name, ref.version, ref.architecture, ref.filename, ref.size, ref.sha256)


def resolve_lock(
    requests: tuple[str, ...],
    platforms: list[tuple[str, str]],
    suite: str | None = None,
    say: Callable[[str], None] | None = None,
    repositories: tuple[str, ...] = (),
    only_listed: bool = False,
) -> Lock:
    """A new lock: ``requests`` resolved afresh for each (platform name, Debian architecture)."""
    for request in requests:
        check_request(request, "--package")
    chosen = suite or host_suite()
    recorded = tuple(parse_repository(line).one_line() for line in repositories)
    locked: dict[str, PlatformLock] = {}
    for name, architecture in platforms:
        apt = package_apt(chosen, architecture, repositories, only_listed, say)
        with apt.locked():
            apt.update(force=True)  # a refresh asks the mirror, not the cache
            wanted = [*requests, *(pkg for pkg in SYSTEM_PACKAGES if pkg not in requests)]
            locked[name] = PlatformLock(
                architecture, tuple(apt.resolve(wanted)), apt.release_dates()
            )
    return Lock(chosen, requests, locked, recorded)
