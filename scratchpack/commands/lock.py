"""``lock``: resolve the packages afresh and (re)write the lock file ``build --lock`` obeys.

Each platform is resolved against its own architecture's archive; the lock is
written through a publication, so a failed run leaves the old file as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchpack.image.media import Platform
from scratchpack.packages.fetch import resolve_lock
from scratchpack.packages.root import host_architecture
from scratchpack.publish import publication, writing


@dataclass(frozen=True)
class LockRequest:
    """What to pin; the command line has checked the packages and repositories already."""

    packages: tuple[str, ...]  # PKG[=VERSION], as build --package takes them
    suite: str | None  # None: this machine's
    repositories: tuple[str, ...]  # one-line --repository entries, as a lock records them
    platforms: tuple[Platform, ...]  # empty: this machine's
    lock: str  # the file, as given (the report names it so)
    only_listed_suites: bool = False  # no -updates/-security added to what the host lists


@dataclass(frozen=True)
class LockResult:
    """The lock file written, its suite, and how many packages each platform pins."""

    lock: str
    suite: str
    counts: tuple[tuple[str, int], ...]  # (platform, packages), by platform

    def to_json(self) -> dict[str, Any]:
        return {"lock": self.lock, "suite": self.suite, "packages": dict(self.counts)}


def report_text(result: LockResult) -> str:
    """The human report of ``lock``: the packages per platform, then the file written."""
    lines = [f"{platform}: {count} packages" for platform, count in result.counts]
    lines.append(f"Wrote {result.lock}")
    return "".join(f"{line}\n" for line in lines)


def run_lock(request: LockRequest, say: Callable[[str], None] | None = None) -> LockResult:
    """Resolve ``request.packages`` for each platform and write the lock, all or nothing."""
    chosen = request.platforms or (Platform.from_debian(host_architecture()),)
    resolved = resolve_lock(
        request.packages,
        [(str(platform), platform.debian_architecture) for platform in chosen],
        request.suite,
        say=say,
        repositories=request.repositories,
        only_listed=request.only_listed_suites,
    )
    with publication() as staged:
        path = staged.file(Path(request.lock))
        with writing(path, f"the lock file {request.lock}"):
            path.write_bytes(resolved.to_bytes())
    counts = tuple(
        (name, len(locked.packages)) for name, locked in sorted(resolved.platforms.items())
    )
    return LockResult(request.lock, resolved.suite, counts)
