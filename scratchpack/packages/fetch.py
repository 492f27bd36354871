"""From package names to an unpacked root: resolve, download (cached), unpack.

The one entry point the commands use; each step is in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from scratchpack.packages.apt import Apt, PackageRef, host_sources, host_suite, sources_for
from scratchpack.packages.lock import Lock, PlatformLock
from scratchpack.packages.root import SYSTEM_PACKAGES, PackageRoot, unpack_packages


def package_root(
    requests: Iterable[str],
    destination: Path,
    suite: str | None = None,
    architecture: str = "amd64",
    pinned: list[PackageRef] | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[PackageRoot, list[PackageRef], dict[str, str]]:
    """Resolve ``requests`` (NAME[=VERSION]) for ``suite``/``architecture`` and unpack them.

    ``pinned``: a lock's packages, installed exactly instead of resolving.
    Returns the root, the packages used (apt's order) and each suite's Release date.
    """
    host = host_suite()
    apt = Apt(
        suite or host, architecture, sources_for(host_sources(), host, suite or host), say=say
    )
    with apt.locked():
        apt.update()
        wanted = [*requests, *(name for name in SYSTEM_PACKAGES if name not in requests)]
        refs = apt.resolve([ref.pinned for ref in pinned] if pinned else wanted)
        if pinned:
            _check_pinned(refs, pinned)
        files = apt.download(refs)
        dates = apt.release_dates()
    (say or (lambda _m: None))(f"unpacking {len(refs)} packages")
    destination.mkdir(parents=True, exist_ok=True)
    root = unpack_packages([(ref, files[ref.name]) for ref in refs], destination)
    return root, refs, dates


def _check_pinned(refs: list[PackageRef], pinned: list[PackageRef]) -> None:
    from scratchpack.packages.apt import PackageError

    got = {(ref.name, ref.version, ref.sha256) for ref in refs}
    for ref in pinned:
        if (ref.name, ref.version, ref.sha256) not in got:
            raise PackageError(
                f"{ref.name} {ref.version}: the mirror no longer offers the locked file "
                f"(sha256 {ref.sha256[:12]}…); refresh the lock with scratchpack lock"
            )


def resolve_lock(
    requests: tuple[str, ...],
    platforms: list[tuple[str, str]],
    suite: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Lock:
    """A new lock: ``requests`` resolved afresh for each (platform name, Debian architecture)."""
    host = host_suite()
    chosen = suite or host
    locked: dict[str, PlatformLock] = {}
    for name, architecture in platforms:
        apt = Apt(chosen, architecture, sources_for(host_sources(), host, chosen), say=say)
        with apt.locked():
            apt.update(force=True)  # a refresh asks the mirror, not the cache
            wanted = [*requests, *(pkg for pkg in SYSTEM_PACKAGES if pkg not in requests)]
            locked[name] = PlatformLock(
                architecture, tuple(apt.resolve(wanted)), apt.release_dates()
            )
    return Lock(chosen, requests, locked)
