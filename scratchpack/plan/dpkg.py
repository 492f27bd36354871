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

An image's database is another party's: it is streamed, each file within a
bound (``MAX_*`` below), and one beyond them is an :class:`InputError` (exit 2)
naming the file, never a MemoryError or minutes of parsing. A package listed
twice, or named like a path, is not taken at its word.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scratchpack.errors import InputError, printable
from scratchpack.ld.rootfs import RootFS, open_regular
from scratchpack.packages.control import NAME, Md5sums, parse_md5sums

STATUS = "/var/lib/dpkg/status"
STATUS_D = "/var/lib/dpkg/status.d"  # distroless's database: a paragraph file per package
INFO_DIR = "/var/lib/dpkg/info"
DIVERSIONS = "/var/lib/dpkg/diversions"
# Bounds on what a database is read up to: far beyond any real system (a full Debian
# desktop has ~5 MiB of status, ~300,000 listed paths), short of what memory allows.
MAX_STATUS_BYTES = 64 << 20
MAX_PARAGRAPH_BYTES = 1 << 20
MAX_PACKAGES = 100_000  # paragraphs of the status file
MAX_LIST_BYTES = 64 << 20  # one info/PKG.list
MAX_LISTS_BYTES = 128 << 20  # all of them
MAX_PATHS = 1_000_000  # paths of all lists together
MAX_DIVERSIONS_BYTES = 16 << 20
_MAX_LINE = 64 << 10  # one path (PATH_MAX is 4 KiB)
_MAX_OS_RELEASE = 64 << 10
# Debian's grammar for package names and architectures: nothing that is a path.
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
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
    def source_name(self) -> str:
        """The source package: ``openssl`` for libssl3, the name itself when it has none."""
        return self.source or self.name

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
        files: dict[str, tuple[str, ...]] | None = None,
        paragraphs: dict[str, str] | None = None,
        md5sums_files: dict[str, str] | None = None,
        diversions: list[tuple[str, str, str]] | None = None,
    ) -> None:
        self.root = root
        self.packages = packages or {}  # key: the .list name ("curl", "libc6:amd64")
        # path as dpkg lists it -> package key; None: made from the lists when first asked
        # (or, for the paths given to prime(), only theirs: a build holds a few dozen)
        self._owners = owners if owners is not None or files else {}
        self._files = files or {}  # package key -> its .list, as read (bounded) at load
        self._diversions = diversions or []  # (diverted, where it went, diverting package)
        self._primed: dict[str, str] = {}  # the owners of _primed_paths only
        self._primed_paths: set[str] = set()  # spellings whose owner (or none) is known
        # package key -> its status paragraph as the database has it (continuations kept)
        self.paragraphs = paragraphs or {}
        self._md5sums_files = md5sums_files or {}  # package key -> in-root md5sums path

    def __len__(self) -> int:
        return len(self.packages)

    @classmethod
    def load(cls, root: RootFS) -> DpkgIndex:
        """Read the status file and the installed packages' file lists (not the rest of info/).

        Every file is streamed within its bound (see :data:`MAX_STATUS_BYTES` and the
        rest): a database beyond them is an :class:`InputError`, never a MemoryError.
        """
        info_dir = root.realpath(INFO_DIR)
        if not _is_file(root, STATUS) or info_dir is None:
            return cls(root)
        vendor, distro = _os_release(root)
        packages: dict[str, Package] = {}
        paragraphs: dict[str, str] = {}
        listed = set(root.listdir(info_dir) or ())  # one listing, not a failed stat per name
        for package, paragraph in _installed(root, vendor, distro):
            name, arch = package.name, package.architecture
            # Multi-Arch: same packages (and every package on a multiarch-converted
            # system) list their files as name:arch.list, the rest as name.list.
            keys = [f"{name}:{arch}"] if _ARCH.match(arch) else []
            for key in [*keys, name]:
                if f"{key}.list" in listed and _is_file(root, f"{info_dir}/{key}.list"):
                    packages[key] = package
                    paragraphs[key] = paragraph
                    break
        files = _lists(root, info_dir, sorted(packages))
        md5sums = {key: f"{info_dir}/{key}.md5sums" for key in packages}
        return cls(root, packages, None, files, paragraphs, md5sums, _diversions(root))

    @classmethod
    def load_cached(cls, root: RootFS) -> DpkgIndex:
        """:meth:`load`, once per process for a root's database while it is unchanged: a
        build reads it for its records, its layers and its SBOM (a host's few hundred
        packages take ~0.2 s each time)."""
        paths = [root.host_path(path) for path in (STATUS, INFO_DIR)]
        try:
            stats = [os.stat(path) for path in paths if path is not None]
        except OSError:
            return cls.load(root)
        if len(stats) != len(paths):  # a root not on disk (a lazy one): read it each time
            return cls.load(root)
        key = (root.top, *((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats))
        cached = _INDEXES.get(key)
        if cached is None:
            _INDEXES.clear()
            cached = _INDEXES[key] = cls.load(root)
        return cached

    @classmethod
    def load_status_d(cls, root: RootFS) -> DpkgIndex:
        """A distroless-style database: ``status.d/NAME`` paragraphs, ``NAME.md5sums`` files.

        Each package's files are what its md5sums lists (a package without one
        ships nothing that can be told). Bounded as :meth:`load` is: each file,
        and all paragraphs and all lists together; a name outside Debian's
        grammar is skipped, so no paragraph names the path of a file read.
        """
        names = root.listdir(STATUS_D) if root.realpath(STATUS_D) == STATUS_D else None
        if not names:
            return cls(root)
        vendor, distro = _os_release(root)
        packages: dict[str, Package] = {}
        paragraphs: dict[str, str] = {}
        for package, paragraph in _status_d_paragraphs(root, names, vendor, distro):
            key = package.name
            if key in packages:
                key = f"{package.name}:{package.architecture}"
            if key not in packages and _ARCH.match(package.architecture):
                packages[key] = package
                paragraphs[key] = paragraph
        md5sums = {key: f"{STATUS_D}/{package.name}.md5sums" for key, package in packages.items()}
        files = _md5sums_lists(root, md5sums)
        owners: dict[str, str] = {}
        for key in sorted(files):
            for path in files[key]:
                owners.setdefault(path, key)  # the first claim stands, as in _owners
        return cls(root, packages, owners, files, paragraphs, md5sums)

    @classmethod
    def load_any(cls, root: RootFS) -> DpkgIndex:
        """The root's dpkg database (:meth:`load`), else its ``status.d``."""
        index = cls.load(root)
        return index if index.packages else cls.load_status_d(root)

    def md5sums(self, key: str) -> Md5sums:
        """Package ``key``'s md5sums (the host's ``info/KEY.md5sums``), its lines checked."""
        path = self._md5sums_files.get(key)
        if path is None:
            return Md5sums()
        return parse_md5sums(_text(self.root, path, MAX_LIST_BYTES, _MAX_LINE))

    def owned(self, path: str) -> tuple[str, str] | None:
        """(package key, the path as the package lists it) of in-root ``path``, or None."""
        if self._owners is not None and not self._owners:
            return None  # no database, or nothing listed
        candidates = list(self._candidates(path))
        owners = self._primed
        if self._owners is not None or not self._primed_paths.issuperset(candidates):
            owners = self._all_owners()
        for candidate in candidates:
            key = owners.get(candidate)
            if key is not None:
                return key, candidate
        return None

    def prime(self, paths: Iterable[str]) -> None:
        """Find the owners of in-root ``paths`` (as :meth:`owned` will ask) in one pass over
        the lists, without the map of every path they hold: a build asks about a few
        dozen files of a database listing a hundred thousand."""
        if self._owners is not None:
            return
        wanted = {one for path in paths for one in self._candidates(path)}
        wanted -= self._primed_paths
        if wanted:
            self._primed.update(_owners(self.packages, self._files, self._diversions, wanted))
            self._primed_paths |= wanted

    def _all_owners(self) -> dict[str, str]:
        if self._owners is None:
            self._owners = _owners(self.packages, self._files, self._diversions)
        return self._owners

    def files(self, key: str) -> list[str]:
        """The paths package ``key`` (a key of :attr:`packages`) shipped, as dpkg lists them."""
        return list(self._files.get(key, ()))

    def owner(self, path: str) -> Package | None:
        """The package that shipped in-root ``path``, or None."""
        owned = self.owned(path)
        return self.packages[owned[0]] if owned is not None else None

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


_INDEXES: dict[tuple[object, ...], DpkgIndex] = {}  # (root, status's and info/'s stat) -> index


def _spellings(path: str) -> Iterator[str]:
    """``path`` and its merged-/usr twin: /lib/x <-> /usr/lib/x, /bin/x <-> /usr/bin/x."""
    yield path
    if path.startswith("/usr/"):
        if path[5:].split("/", 1)[0] in _MERGED:
            yield path[4:]
    elif path[1:].split("/", 1)[0] in _MERGED:
        yield "/usr" + path


def _installed(root: RootFS, vendor: str, distro: str | None) -> Iterator[tuple[Package, str]]:
    """(package, its paragraph) of each status paragraph whose files are on disk.

    A name outside Debian's grammar (``../../srv/x``) is skipped: it names a
    ``.list`` path. A (name, architecture) listed twice is refused: dpkg writes
    one paragraph each, and a second could only be there to replace the first.
    """
    seen: set[tuple[str, str]] = set()
    lines = _lines(root, STATUS, MAX_STATUS_BYTES, MAX_PARAGRAPH_BYTES)
    for count, (fields, paragraph) in enumerate(_paragraphs(lines), 1):
        name = fields.get("Package", "")
        if count > MAX_PACKAGES:
            raise InputError(f"{STATUS}: more than {MAX_PACKAGES} packages, not read")
        arch = fields.get("Architecture", "")
        if (name, arch) in seen:
            raise InputError(f"{STATUS}: package {printable(f'{name}:{arch}')} is listed twice")
        seen.add((name, arch))
        state = fields.get("Status", "").split()
        if len(state) == 3 and state[2] in _FILES_PRESENT:
            yield from _packages_of([(fields, paragraph)], vendor, distro)


def _packages_of(
    paragraphs: Iterable[tuple[dict[str, str], str]], vendor: str, distro: str | None
) -> Iterator[tuple[Package, str]]:
    """The :class:`Package` of each paragraph whose name is in Debian's grammar."""
    for fields, paragraph in paragraphs:
        name, arch = fields.get("Package", ""), fields.get("Architecture", "")
        if NAME.fullmatch(name):
            source = fields.get("Source", "").split(" ", 1)[0] or None
            package = Package(name, fields.get("Version", ""), arch, source, vendor, distro)
            yield package, paragraph


def _status_d_paragraphs(
    root: RootFS, names: list[str], vendor: str, distro: str | None
) -> Iterator[tuple[Package, str]]:
    """The packages of the status.d files ``names`` (md5sums files left out), each file
    within :data:`MAX_PARAGRAPH_BYTES`, all within :data:`MAX_STATUS_BYTES`."""
    total = 0
    files = [name for name in sorted(names) if not name.endswith(".md5sums")]
    if len(files) > MAX_PACKAGES:
        raise InputError(f"{STATUS_D}: more than {MAX_PACKAGES} packages, not read")
    for name in files:
        path = f"{STATUS_D}/{name}"
        if not _is_file(root, path):
            continue
        for package, paragraph in _packages_of(
            _paragraphs(_lines(root, path, MAX_PARAGRAPH_BYTES, _MAX_LINE)), vendor, distro
        ):
            total += len(paragraph)
            if total > MAX_STATUS_BYTES:
                raise InputError(f"{STATUS_D}: more than {_size(MAX_STATUS_BYTES)}, not read")
            yield package, paragraph


def _md5sums_lists(root: RootFS, md5sums: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Each package's files as its md5sums lists them (well-formed lines only), absolute
    as a .list has them; all within the bounds of the lists (:func:`_lists`)."""
    lists: dict[str, tuple[str, ...]] = {}
    total_paths = total_bytes = 0
    for key, path in sorted(md5sums.items()):
        text = _text(root, path, MAX_LIST_BYTES, _MAX_LINE)
        lists[key] = tuple("/" + listed for _, listed in parse_md5sums(text).lines)
        total_paths += len(lists[key])
        total_bytes += len(text)
        if total_paths > MAX_PATHS or total_bytes > MAX_LISTS_BYTES:
            raise InputError(
                f"{STATUS_D}: the md5sums list more than {MAX_PATHS} paths or "
                f"{_size(MAX_LISTS_BYTES)} together, not read"
            )
    return lists


def _lists(root: RootFS, info_dir: str, keys: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each package's ``.list``, read through the root: a link there must not reach the host."""
    lists: dict[str, tuple[str, ...]] = {}
    total_paths = total_bytes = 0
    for key in keys:
        lines, size = _read_lines(root, f"{info_dir}/{key}.list", MAX_LIST_BYTES, _MAX_LINE)
        listed = tuple(filter(None, lines))
        lists[key] = listed
        total_paths += len(listed)
        total_bytes += size
        if total_paths > MAX_PATHS or total_bytes > MAX_LISTS_BYTES:
            raise InputError(
                f"{INFO_DIR}: the packages list more than {MAX_PATHS} paths or "
                f"{_size(MAX_LISTS_BYTES)} together, not read"
            )
    return lists


def _owners(
    packages: dict[str, Package],
    lists: dict[str, tuple[str, ...]],
    diversions: list[tuple[str, str, str]],
    wanted: set[str] | None = None,
) -> dict[str, str]:
    """Path -> the key of the package that shipped it, diversions honoured; of the
    ``wanted`` paths only when given (the same answers for them, less work)."""
    diverted = {source for source, _, _ in diversions}
    looked = diverted if wanted is None else diverted | wanted
    owners: dict[str, str] = {}
    claims: dict[str, list[str]] = {}  # every package listing a diverted path
    for key, listed in reversed(lists.items()):  # the first claim stands: it is set last
        if wanted is None:
            owners.update(dict.fromkeys(listed, key))
        found = looked.intersection(listed) if looked else ()
        for path in found:
            if wanted is not None and path in wanted:
                owners[path] = key
            if path in diverted:
                claims.setdefault(path, []).insert(0, key)  # in the lists' order
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
    if wanted is not None:
        owners = {path: key for path, key in owners.items() if path in wanted}
    return owners


def _is_file(root: RootFS, path: str) -> bool:
    host = root.host_path(path)
    return host is not None and os.path.isfile(host)


def _text(root: RootFS, path: str, limit: int, line_limit: int) -> str:
    """The whole of regular file ``path`` in the root, within ``limit`` bytes, each line
    within ``line_limit``: "" when it is absent (see :func:`_lines`)."""
    data = _read(root, path, limit)
    text = data.decode("utf-8", "surrogateescape")
    if len(data) > line_limit:
        _check_lines(text.split("\n"), path, line_limit)
    return text


def _lines(root: RootFS, path: str, limit: int, line_limit: int) -> list[str]:
    """The lines of regular file ``path`` in the root (split at newlines only, none at the
    end); nothing when it is absent; its bounds as :func:`_text`'s."""
    return _read_lines(root, path, limit, line_limit)[0]


def _read_lines(root: RootFS, path: str, limit: int, line_limit: int) -> tuple[list[str], int]:
    """:func:`_lines`, and the file's size. Split once: the lines are measured as they
    are, not split a second time as bytes (10 lists over 64 KiB, 5.6 MB of this
    machine's 7.4, took 30 ms to measure that way)."""
    data = _read(root, path, limit)
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if len(data) > line_limit:
        _check_lines(lines, path, line_limit)
    if lines[-1] == "":
        lines.pop()
    return lines, len(data)


def _check_lines(lines: list[str], path: str, line_limit: int) -> None:
    """Each line within ``line_limit`` bytes. A decoded line has at most as many characters
    as bytes and at least a quarter as many (UTF-8; an undecodable byte is one), so only a
    line of over a quarter of the bound is encoded again to be measured."""
    if max(map(len, lines)) * 4 <= line_limit:
        return
    for line in lines:
        if len(line) * 4 > line_limit and (
            len(line) > line_limit or len(line.encode("utf-8", "surrogateescape")) > line_limit
        ):
            raise _long_line(path, line_limit)


def _long_line(path: str, line_limit: int) -> InputError:
    return InputError(f"{printable(path)}: a line of more than {_size(line_limit)}, not read")


def _read(root: RootFS, path: str, limit: int) -> bytes:
    """The bytes of regular file ``path`` in the root, read whole within ``limit``: as much
    as it holds (a read of the bound would allocate the bound), then whatever it grew by
    since, up to one byte beyond the bound; b"" when it is absent."""
    host = root.host_path(path)
    try:
        fd = None if host is None else open_regular(host, follow=root.is_host)
    except OSError:
        fd = None
    if fd is None:
        return b""
    try:
        size = os.fstat(fd).st_size
        data = _read_upto(fd, size + 1) if size <= limit else b""
        if len(data) > size:
            data += _read_upto(fd, limit + 1 - len(data))
    finally:
        os.close(fd)
    if size > limit or len(data) > limit:
        raise InputError(
            f"{printable(path)}: more than {_size(limit)}, not read (a dpkg database is smaller)"
        )
    return data


def _read_upto(fd: int, count: int) -> bytes:
    """Up to ``count`` bytes of ``fd``, fewer only at its end."""
    pieces = []
    while count > 0:
        piece = os.read(fd, min(count, 1 << 30))
        if not piece:
            break
        pieces.append(piece)
        count -= len(piece)
    return b"".join(pieces)


_FIELD_NAMES = ("Package", "Architecture", "Status", "Source", "Version")  # the ones read
_FIELDS = tuple(f"{name}:" for name in _FIELD_NAMES)


def _paragraphs(lines: Iterable[str]) -> Iterator[tuple[dict[str, str], str]]:
    """The stanzas of a deb822 file, each at most :data:`MAX_PARAGRAPH_BYTES`: the
    fields this module reads (:data:`_FIELDS`), and the stanza's text as written (for
    the image's records); a stanza of continuation lines alone is none.

    A line of blanks ends a stanza, as in Debian's parsers; continuation lines
    are left out of the fields (no field needed has them) but kept in the text.
    """
    fields: dict[str, str] = {}
    text: list[str] = []
    size = 0
    named = False  # a field line was seen
    for line in lines:
        if not line or line.isspace():  # what str.strip() would leave empty
            if named:
                yield fields, "\n".join(text) + "\n"
            fields, text, size, named = {}, [], 0, False
            continue
        size += len(line) + 1
        if size > MAX_PARAGRAPH_BYTES:
            raise InputError(
                f"{STATUS}: a paragraph of more than {_size(MAX_PARAGRAPH_BYTES)}, not read"
            )
        text.append(line)
        if line[0] not in " \t":
            named = True
            if line.startswith(_FIELDS) or line in _FIELD_NAMES:  # no colon: claimed, empty
                name, _, value = line.partition(":")
                fields.setdefault(name, value.strip())
    if named:
        yield fields, "\n".join(text) + "\n"


def _diversions(root: RootFS) -> list[tuple[str, str, str]]:
    """(diverted path, where its file went, diverting package) triples; ':' is a local one."""
    lines = _lines(root, DIVERSIONS, MAX_DIVERSIONS_BYTES, _MAX_LINE)
    return [(lines[i], lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]


def _os_release(root: RootFS) -> tuple[str, str | None]:
    """The purl vendor (os-release ID, default debian) and distro qualifier (ID-VERSION_ID)."""
    data = root.read_bytes("/etc/os-release", _MAX_OS_RELEASE)
    if data is None:
        data = root.read_bytes("/usr/lib/os-release", _MAX_OS_RELEASE)
    text = (data or b"").decode("utf-8", "replace")
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    vendor = values.get("ID", "").lower() or "debian"
    version = values.get("VERSION_ID")
    return vendor, f"{vendor}-{version}" if version else None


def _size(limit: int) -> str:
    """``64 MiB``, ``1 KiB``, ``300 bytes``: a bound for a message."""
    for shift, unit in ((20, "MiB"), (10, "KiB")):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"
