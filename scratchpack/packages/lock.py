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
long as the mirror (or the cache) has the files. A ``repositories`` list holds
the ``--repository`` lines the lock was made with; a build must give the same.

A lock is another party's data (it is reviewed in pull requests): every name,
version, architecture, pool path, suite and date in it is checked against
Debian's grammar here, before apt or a path sees it, and it can only narrow
what the build's own sources offer, never add a source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchpack.bounded import read_bounded
from scratchpack.image.documents import parse_json
from scratchpack.packages.apt import (
    PackageError,
    PackageRef,
    Word,
    check_request,
    check_word,
    parse_repository,
    quoted,
)

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
    repositories: tuple[str, ...] = ()  # --repository lines, as one_line() writes them

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
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
        if self.repositories:  # absent from the locks of Debian's sources alone
            document["repositories"] = list(self.repositories)
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    def check(
        self,
        suite: str,
        requests: tuple[str, ...],
        platform: str,
        path: Path,
        repositories: tuple[str, ...] = (),
    ) -> None:
        """The lock was made for this build: same suite, packages, repositories and platform."""
        if suite != self.suite or sorted(requests) != sorted(self.requests):
            raise PackageError(
                f"{path} was made for --suite {self.suite} and --package "
                f"{' '.join(self.requests)}, not this build; run scratchpack lock to refresh it"
            )
        if sorted(repositories) != sorted(self.repositories):
            made = "; ".join(self.repositories) or "none"
            raise PackageError(
                f"{path} was made with other repositories (--repository: {made}); "
                "give the same, or run scratchpack lock to refresh it"
            )
        if platform not in self.platforms:
            raise PackageError(
                f"{path} has no packages for {platform}; run scratchpack lock to add them"
            )


def read_lock(path: Path) -> Lock:
    """A lock file, every field checked: one line naming what is wrong."""
    data = read_bounded(path, MAX_LOCK, "a lock file", PackageError)
    document = parse_json(data, str(path))
    where = str(path)
    if not isinstance(document, dict) or document.get("lockVersion") != LOCK_VERSION:
        raise PackageError(f"{where}: not a scratchpack lock (lockVersion {LOCK_VERSION})")
    suite = check_word(Word.SUITE, document.get("suite"), f"{where}: suite")
    requests = [
        check_request(item, f"{where}: requests") for item in _texts(document, "requests", where)
    ]
    repositories = [
        parse_repository(line, f"{where}: repositories[{i}]", keyring_must_exist=False).one_line()
        for i, line in enumerate(_texts(document, "repositories", where))
    ]
    platforms_doc = document.get("platforms")
    if not isinstance(platforms_doc, dict):
        raise PackageError(f"{where}: platforms must be an object")
    platforms = {
        _platform_name(name, where): _platform(entry, f"{where}: platforms.{name}")
        for name, entry in platforms_doc.items()
    }
    return Lock(suite, tuple(requests), platforms, tuple(repositories))


def _platform_name(name: str, where: str) -> str:
    if re.fullmatch(r"[a-z0-9]+/[a-z0-9]+(?:/[a-z0-9]+)?", name) is None:
        raise PackageError(f"{where}: platforms: {quoted(name)} is not an OS/ARCH[/VARIANT]")
    return name


def _platform(entry: Any, at: str) -> PlatformLock:
    if not isinstance(entry, dict):
        raise PackageError(f"{at} must be an object")
    architecture = check_word(Word.ARCHITECTURE, entry.get("architecture"), f"{at}.architecture")
    releases = entry.get("releases") or {}
    if not isinstance(releases, dict):
        raise PackageError(f"{at}.releases must map suites to dates")
    for suite, date in releases.items():
        check_word(Word.SUITE, suite, f"{at}.releases")
        check_word(Word.RELEASE_DATE, date, f"{at}.releases.{suite}")
    packages_doc = entry.get("packages")
    if not isinstance(packages_doc, list):
        raise PackageError(f"{at}.packages must be a list")
    refs = tuple(_ref(item, f"{at}.packages[{i}]") for i, item in enumerate(packages_doc))
    for i, ref in enumerate(refs):
        if ref.architecture not in (architecture, "all"):
            raise PackageError(f"{at}.packages[{i}].architecture is not {architecture} or all")
    return PlatformLock(architecture, refs, dict(releases))


def _ref(item: Any, at: str) -> PackageRef:
    if not isinstance(item, dict):
        raise PackageError(f"{at} must be an object")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PackageError(f"{at}.size must be a number of bytes")
    sha256 = item.get("sha256")
    if not isinstance(sha256, str) or re.fullmatch(r"[0-9a-f]{64}", sha256) is None:
        raise PackageError(f"{at}.sha256 must be 64 hex digits")
    return PackageRef(
        check_word(Word.NAME, item.get("name"), f"{at}.name"),
        check_word(Word.VERSION, item.get("version"), f"{at}.version"),
        check_word(Word.ARCHITECTURE, item.get("architecture"), f"{at}.architecture"),
        check_word(Word.POOL_PATH, item.get("filename"), f"{at}.filename"),
        size,
        sha256,
    )


def _texts(document: dict[str, Any], key: str, where: str) -> list[str]:
    """``document[key]``, a list of strings (absent: empty)."""
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PackageError(f"{where}: {key} must be a list of strings")
    return value
