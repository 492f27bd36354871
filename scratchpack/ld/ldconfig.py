"""What ldconfig leaves for the loader: ``/etc/ld.so.cache`` and ``/etc/ld.so.conf``.

glibc's ld.so consults only the cache; ld.so.conf matters to it only through
the cache ldconfig built from it. A root without a cache (an unpacked image, a
sysroot) is read as if ldconfig had built one: :func:`read_conf_dirs` gives the
conf directories in ldconfig's order and nothing else. The trusted directories
ldconfig would append are the loader's default directories, which the resolver
searches right after this stand-in cache anyway.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scratchpack.ld import ldcache_format as fmt
from scratchpack.ld.rootfs import RootFS

CACHE_PATH = "/etc/ld.so.cache"
CONF_PATH = "/etc/ld.so.conf"

_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One ld.so.cache line: ``name (flags, hwcaps) => path``."""

    flags: int
    path: str
    hwcaps_subdir: str | None  # a glibc-hwcaps level such as "x86-64-v3"
    legacy_hwcap: int  # legacy hwcap bits; entries with them are not chosen


class LdCache:
    """A parsed ld.so.cache: library names to entries, in the cache's order."""

    def __init__(self, entries: dict[str, list[CacheEntry]]) -> None:
        self.entries = entries

    def lookup(
        self, name: str, accept_flags: frozenset[int] | None, hwcaps_priority: dict[str, int]
    ) -> str | None:
        """The path ld.so takes from the cache for ``name``, as ``search_cache`` picks it.

        Entries with a glibc-hwcaps subdirectory come first; the supported one
        of highest priority wins, otherwise the first plain entry.
        """
        best: CacheEntry | None = None
        best_priority = 0
        for entry in self.entries.get(name, ()):
            if accept_flags is not None and entry.flags not in accept_flags:
                continue
            if entry.hwcaps_subdir is not None:
                priority = hwcaps_priority.get(entry.hwcaps_subdir, 0)
                if priority > best_priority:
                    best, best_priority = entry, priority
                continue
            if best is not None:
                break
            if entry.legacy_hwcap:
                continue
            return entry.path
        return best.path if best is not None else None


def read_cache(root: RootFS) -> LdCache | None:
    """The root's ld.so.cache, or None when it is absent or in a format we do not read."""
    data = root.read_bytes(CACHE_PATH)
    if data is None:
        return None
    try:
        return parse_cache(data)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError):
        return None


def parse_cache(data: bytes) -> LdCache | None:
    """Parse the glibc 2.32+ cache format (optionally behind the old-format header)."""
    start = 0
    if data.startswith(fmt.OLD_MAGIC):
        (old_count,) = struct.unpack_from("<I", data, 12)
        start = 16 + old_count * 12
        start = (start + 7) & ~7
    if data[start : start + len(fmt.NEW_MAGIC)] != fmt.NEW_MAGIC:
        return None
    # The endianness flag is a single byte, so it reads the same in either order.
    order = ">" if data[start + 28] == fmt.ENDIAN_BIG else "<"
    _magic, count, _len_strings, _endian, extension_offset = struct.unpack_from(
        order + fmt.HEADER_FORMAT, data, start
    )
    hwcaps_names = _read_hwcaps_extension(data, start, extension_offset, order)
    entries: dict[str, list[CacheEntry]] = {}
    table = start + fmt.HEADER.size
    for flags, key, value, _osversion, hwcap in struct.iter_unpack(
        order + fmt.ENTRY_FORMAT, data[table : table + count * fmt.ENTRY.size]
    ):
        name = _c_string(data, start + key)
        path = _c_string(data, start + value)
        subdir = None
        legacy = 0
        if hwcap & fmt.HWCAP_EXTENSION:
            index = hwcap & fmt.HWCAP_INDEX_MASK
            subdir = hwcaps_names[index] if index < len(hwcaps_names) else ""
        else:
            legacy = hwcap
        entries.setdefault(name, []).append(CacheEntry(flags, path, subdir, legacy))
    return LdCache(entries)


def _read_hwcaps_extension(data: bytes, start: int, offset: int, order: str) -> list[str]:
    if not offset or start + offset + 8 > len(data):
        return []
    base = start + offset
    magic, count = struct.unpack_from(order + "II", data, base)
    if magic != fmt.EXTENSION_MAGIC:
        return []
    names: list[str] = []
    for index in range(count):
        tag, _flags, section_offset, size = struct.unpack_from(
            order + "IIII", data, base + 8 + 16 * index
        )
        if tag == fmt.TAG_GLIBC_HWCAPS:
            for (string_offset,) in struct.iter_unpack(
                order + "I", data[start + section_offset : start + section_offset + size]
            ):
                names.append(_c_string(data, start + string_offset))
    return names


def _c_string(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8", "surrogateescape")


def read_conf_dirs(root: RootFS, path: str = CONF_PATH) -> list[str]:
    """Directories named by ld.so.conf and its ``include`` globs, in ldconfig's order."""
    directories: list[str] = []
    _read_conf(root, path, directories, depth=0)
    return list(dict.fromkeys(directories))


def _read_conf(root: RootFS, path: str, out: list[str], depth: int) -> None:
    if depth > _MAX_INCLUDE_DEPTH:
        return
    text = root.read_text(path)
    if text is None:
        return
    base = path.rsplit("/", 1)[0] or "/"
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                absolute = pattern if pattern.startswith("/") else f"{base}/{pattern}"
                for included in root.glob(absolute):
                    _read_conf(root, included, out, depth + 1)
        elif words[0] == "hwcap":
            continue
        else:
            for word in line.replace(",", " ").replace(":", " ").split():
                directory = word.split("=", 1)[0]  # legacy "dir=TYPE" syntax
                if directory.startswith("/"):
                    out.append(directory.rstrip("/") or "/")
