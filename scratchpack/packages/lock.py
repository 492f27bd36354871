"""``--lock FILE``: the exact packages a build used, per platform, so the next build uses them.

A lock is JSON, sorted and indented, meant to be committed::

    {"lockVersion": 1, "suite": "bookworm", "requests": ["curl"],
     "platforms": {"linux/amd64": {"architecture": "amd64",
                                   "releases": {"bookworm": "Sat, 11 Jul 2026 10:16:37 UTC"},
                                   "packages": [{"name": "curl", "version": "7.88.1-10+deb12u15",
                                                 "architecture": "amd64", "filename": "pool/…",
                                                 "size": 315000, "sha256": "…"}, …]}}}

With a lock, apt installs exactly those versions and every file must have the
locked SHA-256, so builds are byte-identical across machines and days for as
long as the mirror (or the cache) has the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchpack.image.documents import parse_json
from scratchpack.packages.apt import PackageError, PackageRef

LOCK_VERSION = 1
MAX_LOCK = 16 << 20  # bytes


@dataclass(frozen=True)
class PlatformLock:
    architecture: str
    packages: tuple[PackageRef, ...]
    releases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lock:
    suite: str
    requests: tuple[str, ...]
    platforms: dict[str, PlatformLock]  # "linux/amd64" -> its packages

    def to_bytes(self) -> bytes:
        document = {
            "lockVersion": LOCK_VERSION,
            "suite": self.suite,
            "requests": list(self.requests),
            "platforms": {
                name: {
                    "architecture": locked.architecture,
                    "releases": dict(sorted(locked.releases.items())),
                    "packages": [
                        {
                            "name": ref.name,
                            "version": ref.version,
                            "architecture": ref.architecture,
                            "filename": ref.filename,
                            "size": ref.size,
                            "sha256": ref.sha256,
                        }
                        for ref in locked.packages
                    ],
                }
                for name, locked in sorted(self.platforms.items())
            },
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    def check(self, suite: str, requests: tuple[str, ...], platform: str, path: Path) -> None:
        """The lock was made for this build: same suite, packages and platform."""
        if suite != self.suite or sorted(requests) != sorted(self.requests):
            raise PackageError(
                f"{path} was made for --suite {self.suite} and --package "
                f"{' '.join(self.requests)}, not this build; run scratchpack lock to refresh it"
            )
        if platform not in self.platforms:
            raise PackageError(
                f"{path} has no packages for {platform}; run scratchpack lock to add them"
            )


def read_lock(path: Path) -> Lock:
    """A lock file, every field checked: one line naming what is wrong."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_LOCK + 1)
    except OSError as err:
        raise PackageError(f"{path}: {err.strerror or err}") from err
    if len(data) > MAX_LOCK:
        raise PackageError(f"{path}: more than {MAX_LOCK >> 20} MiB: not a lock file")
    document = parse_json(data, str(path))
    where = str(path)
    if not isinstance(document, dict) or document.get("lockVersion") != LOCK_VERSION:
        raise PackageError(f"{where}: not a scratchpack lock (lockVersion {LOCK_VERSION})")
    suite = _text(document.get("suite"), f"{where}: suite")
    requests = _texts(document.get("requests"), f"{where}: requests")
    platforms_doc = document.get("platforms")
    if not isinstance(platforms_doc, dict):
        raise PackageError(f"{where}: platforms must be an object")
    platforms = {}
    for name, entry in platforms_doc.items():
        at = f"{where}: platforms.{name}"
        if not isinstance(entry, dict):
            raise PackageError(f"{at} must be an object")
        releases = entry.get("releases") or {}
        if not isinstance(releases, dict) or not all(isinstance(v, str) for v in releases.values()):
            raise PackageError(f"{at}.releases must map suites to dates")
        packages_doc = entry.get("packages")
        if not isinstance(packages_doc, list):
            raise PackageError(f"{at}.packages must be a list")
        refs = tuple(_ref(item, f"{at}.packages[{i}]") for i, item in enumerate(packages_doc))
        platforms[name] = PlatformLock(
            _text(entry.get("architecture"), f"{at}.architecture"), refs, dict(releases)
        )
    return Lock(suite, tuple(requests), platforms)


def _ref(item: Any, at: str) -> PackageRef:
    if not isinstance(item, dict):
        raise PackageError(f"{at} must be an object")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PackageError(f"{at}.size must be a number of bytes")
    sha256 = _text(item.get("sha256"), f"{at}.sha256")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise PackageError(f"{at}.sha256 must be 64 hex digits")
    return PackageRef(
        _text(item.get("name"), f"{at}.name"),
        _text(item.get("version"), f"{at}.version"),
        _text(item.get("architecture"), f"{at}.architecture"),
        _text(item.get("filename"), f"{at}.filename"),
        size,
        sha256,
    )


def _text(value: Any, at: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\n\0 "):
        raise PackageError(f"{at} must be a word of text")
    return value


def _texts(value: Any, at: str) -> list[str]:
    if not isinstance(value, list):
        raise PackageError(f"{at} must be a list")
    return [_text(item, at) for item in value]
