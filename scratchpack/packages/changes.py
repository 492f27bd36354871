"""What a fresh resolution changes against a lock: the packages that moved, per platform.

``build --update`` reports it before it rebuilds; a lock whose packages are all
current yields no change, and the rebuild is then byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from scratchpack.packages.apt import PackageRef
from scratchpack.packages.lock import Lock


class ChangeKind(str, Enum):
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"  # the suite withdrew a version (rare, but said)
    ADDED = "added"  # a new dependency
    REMOVED = "removed"  # no longer needed

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PackageChange:
    platform: str  # "linux/amd64"
    name: str
    kind: ChangeKind
    old: str | None  # the locked version (None: added)
    new: str | None  # the resolved version (None: removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "name": self.name,
            "change": self.kind.value,
            "old": self.old,
            "new": self.new,
        }


def lock_changes(old: Lock, new: Lock) -> tuple[PackageChange, ...]:
    """Per platform and package name, in that order: what ``new`` does differently."""
    changes: list[PackageChange] = []
    for platform in sorted(set(old.platforms) | set(new.platforms)):
        before = _versions(old.platforms[platform].packages if platform in old.platforms else ())
        after = _versions(new.platforms[platform].packages if platform in new.platforms else ())
        for name in sorted(set(before) | set(after)):
            kind = _kind(before.get(name), after.get(name))
            if kind is not None:
                changes.append(
                    PackageChange(platform, name, kind, before.get(name), after.get(name))
                )
    return tuple(changes)


def _versions(refs: Iterable[PackageRef]) -> dict[str, str]:
    return {ref.name: ref.version for ref in refs}


def _kind(old: str | None, new: str | None) -> ChangeKind | None:
    from debian.debian_support import Version  # 30 ms: only when a lock is compared

    if old is None:
        return ChangeKind.ADDED
    if new is None:
        return ChangeKind.REMOVED
    if old == new:
        return None
    return ChangeKind.UPGRADED if Version(new) > Version(old) else ChangeKind.DOWNGRADED
