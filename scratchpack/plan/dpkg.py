"""Which Debian package a file came from: the root's dpkg database, read directly.

``/var/lib/dpkg/status`` names the installed packages (version, architecture,
source package); ``/var/lib/dpkg/info/<package>[:<arch>].list`` lists the paths
each one shipped. Every file is read through the root (:class:`RootFS`), so a
symlink in the database resolves inside it and never reaches the host.

dpkg knows a file by the path in its package, so on a merged-``/usr`` system it
knows ``/lib/x86_64-linux-gnu/libc.so.6`` while the loader opens
``/usr/lib/x86_64-linux-gnu/libc.so.6``: :meth:`DpkgIndex.owner` tries both
spellings, then the in-root canonical path of the file and of its directory.
Diversions (``/var/lib/dpkg/diversions``) are honoured: the diverted
file belongs to the package whose file was moved aside, the diverting path to
the package that diverted it. A root without a dpkg database owns nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from scratchpack.ld.rootfs import RootFS

STATUS = "/var/lib/dpkg/status"
INFO_DIR = "/var/lib/dpkg/info"
DIVERSIONS = "/var/lib/dpkg/diversions"
# Top-level directories that merged /usr turns into links into /usr.
_MERGED = frozenset({"bin", "sbin", "lib", "lib64", "lib32", "libx32"})
# dpkg states in which the package's files are on disk.
_FILES_PRESENT = frozenset(
    {"installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending"}
)


@dataclass(frozen=True, slots=True)
class Package:
    """An installed Debian package."""

    name: str
    version: str
    architecture: str
    source: str | None  # the Source: field without its version; None when it is the name
    vendor: str = "debian"  # the purl namespace: ID from the root's os-release
    distro: str | None = None  # e.g. "debian-12": ID-VERSION_ID from the root's os-release

    @property
    def purl(self) -> str:
        """``pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12``."""
        purl = f"pkg:deb/{_purl_quote(self.vendor)}/{_purl_quote(self.name)}"
        purl += f"@{_purl_quote(self.version)}?arch={_purl_quote(self.architecture)}"
        if self.distro:
            purl += f"&distro={_purl_quote(self.distro)}"
        return purl


def _purl_quote(text: str) -> str:
    # Debian names and versions use [A-Za-z0-9.+~:-] only; ':' (epochs) and '+'
    # stay literal as in the purl spec's deb examples; anything else is encoded.
    safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_~+:"
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


class DpkgIndex:
    """Installed packages and the paths they shipped, from one root's dpkg database."""

    def __init__(
        self,
        root: RootFS,
        packages: dict[str, Package] | None = None,
        owners: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.packages = packages or {}  # key: the .list name ("curl", "libc6:amd64")
        self._owners = owners or {}  # path as dpkg lists it -> package key

    def __len__(self) -> int:
        return len(self.packages)

    @classmethod
    def load(cls, root: RootFS) -> DpkgIndex:
        """Read the status file and the installed packages' file lists (not the rest of info/)."""
        status = root.read_text(STATUS)
        info_dir = root.realpath(INFO_DIR)
        if status is None or info_dir is None:
            return cls(root)
        vendor, distro = _os_release(root)
        info_names = set(root.listdir(INFO_DIR) or ())
        packages: dict[str, Package] = {}
        for fields in _paragraphs(status):
            state = fields.get("Status", "").split()
            name = fields.get("Package")
            if not name or len(state) != 3 or state[2] not in _FILES_PRESENT:
                continue
            arch = fields.get("Architecture", "")
            source = fields.get("Source", "").split(" ", 1)[0] or None
            package = Package(name, fields.get("Version", ""), arch, source, vendor, distro)
            # Multi-Arch: same packages (and every package on a multiarch-converted
            # system) list their files as name:arch.list, the rest as name.list.
            for key in (f"{name}:{arch}", name):
                if f"{key}.list" in info_names:
                    packages[key] = package
                    break
        diversions = _diversions(root)
        diverted = {source for source, _, _ in diversions}
        owners: dict[str, str] = {}
        claims: dict[str, list[str]] = {}  # every package listing a diverted path
        for key in sorted(packages):
            # Through the root: a .list that is a symlink must not lead to the host.
            text = root.read_text(f"{info_dir}/{key}.list")
            if text is None:
                continue
            for path in text.splitlines():
                owners.setdefault(path, key)
                if path in diverted:
                    claims.setdefault(path, []).append(key)
        for source, target, diverter in diversions:
            listed = claims.get(source, [])
            mine = [key for key in listed if packages[key].name == diverter]
            others = [key for key in listed if packages[key].name != diverter]
            if mine:
                owners[source] = mine[0]
            else:
                owners.pop(source, None)  # a local diversion, or one to a file nobody ships
            if others:
                owners[target] = others[0]
        return cls(root, packages, owners)

    def files(self, key: str) -> list[str]:
        """The paths package ``key`` (a key of :attr:`packages`) shipped, as dpkg lists them."""
        if "/" in key:
            return []
        text = self.root.read_text(f"{INFO_DIR}/{key}.list")
        return [] if text is None else text.splitlines()

    def owner(self, path: str) -> Package | None:
        """The package that shipped in-root ``path``, or None."""
        if not self._owners:
            return None
        for candidate in self._candidates(path):
            key = self._owners.get(candidate)
            if key is not None:
                return self.packages[key]
        return None

    def _candidates(self, path: str) -> Iterator[str]:
        path = posixpath.normpath("/" + path.lstrip("/"))
        yield from _spellings(path)
        real = self.root.realpath(path)
        if real is not None and real != path:
            yield from _spellings(real)
        parent, name = posixpath.split(path)
        real_parent = self.root.realpath(parent)
        if real_parent is not None and real_parent != parent:
            yield from _spellings(posixpath.join(real_parent, name))


def _spellings(path: str) -> Iterator[str]:
    """``path`` and its merged-/usr twin: /lib/x <-> /usr/lib/x, /bin/x <-> /usr/bin/x."""
    yield path
    if path.startswith("/usr/"):
        if path[5:].split("/", 1)[0] in _MERGED:
            yield path[4:]
    elif path[1:].split("/", 1)[0] in _MERGED:
        yield "/usr" + path


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a deb822 file; continuation lines are dropped (no field needed has them)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
                fields = {}
        elif line[0] not in " \t":
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    if fields:
        yield fields


def _diversions(root: RootFS) -> list[tuple[str, str, str]]:
    """(diverted path, where its file went, diverting package) triples; ':' is a local one."""
    text = root.read_text(DIVERSIONS)
    if not text:
        return []
    lines = text.splitlines()
    return [(lines[i], lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]


def _os_release(root: RootFS) -> tuple[str, str | None]:
    """The purl vendor (os-release ID, default debian) and distro qualifier (ID-VERSION_ID)."""
    text = root.read_text("/etc/os-release") or root.read_text("/usr/lib/os-release") or ""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    vendor = values.get("ID", "").lower() or "debian"
    version = values.get("VERSION_ID")
    return vendor, f"{vendor}-{version}" if version else None
