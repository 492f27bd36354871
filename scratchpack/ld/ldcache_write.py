"""Write an ``/etc/ld.so.cache`` for an image root, as glibc's ldconfig would.

An image root has no cache, so libraries the build host found through
``/etc/ld.so.conf`` (directories outside the loader's defaults) would not be
found in the image. Writing the cache ourselves maps each needed name to the
exact path resolved on the host, without running the image's ldconfig.

The layout follows glibc 2.32+ (``sysdeps/generic/dl-cache.h``, ``elf/cache.c``):
only the new format "glibc-ld.so.cache1.1", little endian, with the extension
directory that carries the generator string and the glibc-hwcaps names.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key

from scratchpack.ld import ldcache_format as fmt

GENERATOR = b"scratchpack"

_EXTENSION = struct.Struct("<II")  # magic, count
_SECTION = struct.Struct("<IIII")  # tag, flags, offset, size
_DIGITS = frozenset(b"0123456789")


@dataclass(frozen=True)
class CacheRecord:
    """One cache entry: the loader maps ``name`` to ``path`` for libraries of ``flags``."""

    name: str  # the name looked up (a SONAME / DT_NEEDED name), e.g. "libfoo.so.1"
    path: str  # absolute in-image path the loader should open
    flags: int  # ldconfig flags, e.g. 0x0303 for x86-64 libc6
    hwcaps_subdir: str | None = None  # e.g. "x86-64-v3" for a glibc-hwcaps entry


def libcmp(left: str | bytes, right: str | bytes) -> int:
    """glibc's ``_dl_cache_libcmp``: digit runs compare as numbers, other bytes as C chars.

    ld.so binary-searches the cache with this order, so the writer must sort by
    it exactly. Like the C code (x86-64, signed ``char``, 32-bit ``int``), bytes
    above 0x7f compare as negative and long digit runs wrap.
    """
    p1 = _encode(left) + b"\0"
    p2 = _encode(right) + b"\0"
    i = j = 0
    while p1[i]:
        if p1[i] in _DIGITS:
            if p2[j] not in _DIGITS:
                return 1
            val1, i = _number(p1, i)
            val2, j = _number(p2, j)
            if val1 != val2:
                return _int32(val1 - val2)
        elif p2[j] in _DIGITS:
            return -1
        elif p1[i] != p2[j]:
            return _schar(p1[i]) - _schar(p2[j])
        else:
            i += 1
            j += 1
    return _schar(p1[i]) - _schar(p2[j])


def sort_records(records: Iterable[CacheRecord]) -> list[CacheRecord]:
    """Records in ldconfig's order, the first of duplicate (name, flags, hwcaps) kept.

    ldconfig's ``compare`` (elf/cache.c) puts names in descending libcmp order,
    then flags descending, then glibc-hwcaps entries (by subdirectory name)
    before the plain entry: ``search_cache`` stops at the first plain entry.
    Exact name and path break the remaining ties so the output is deterministic.
    """
    unique: dict[tuple[str, int, str | None], CacheRecord] = {}
    for record in records:
        _check(record)
        unique.setdefault((record.name, record.flags, record.hwcaps_subdir), record)
    return sorted(unique.values(), key=cmp_to_key(_compare))


def render_cache(records: Iterable[CacheRecord]) -> bytes:
    """Bytes of an ld.so.cache (new format 1.1, little-endian) that glibc 2.32+ ld.so accepts."""
    return _layout(sort_records(records))


def _layout(entries: list[CacheRecord]) -> bytes:
    """Serialize ``entries`` in the given order, laid out as ldconfig's ``save_cache`` does."""
    hwcaps = sorted({_encode(e.hwcaps_subdir) for e in entries if e.hwcaps_subdir is not None})
    hwcaps_index = {name: index for index, name in enumerate(hwcaps)}
    # String offsets count from the start of the file; the table follows the entries.
    strings = bytearray()
    offsets: dict[bytes, int] = {}
    base = fmt.HEADER.size + len(entries) * fmt.ENTRY.size

    def intern(text: bytes) -> int:
        if text not in offsets:
            offsets[text] = base + len(strings)
            strings.extend(text + b"\0")
        return offsets[text]

    table = bytearray()
    for entry in entries:
        key = intern(_encode(entry.name))
        value = intern(_encode(entry.path))
        hwcap = 0
        if entry.hwcaps_subdir is not None:
            hwcap = fmt.HWCAP_EXTENSION | hwcaps_index[_encode(entry.hwcaps_subdir)]
        table += fmt.ENTRY.pack(entry.flags, key, value, 0, hwcap)
    hwcaps_array = b"".join(struct.pack("<I", intern(name)) for name in hwcaps)

    # ldconfig rounds the extension directory up to 4 bytes (cache_extension_load
    # rejects a misaligned one: ld.so then ignores every hwcaps entry) and writes
    # the directory, the hwcaps array (sorted by strcmp), then the generator string.
    extension_offset = _align4(base + len(strings))
    sections = 1 + bool(hwcaps)
    data_offset = extension_offset + _EXTENSION.size + sections * _SECTION.size
    directory = _EXTENSION.pack(fmt.EXTENSION_MAGIC, sections)
    directory += _SECTION.pack(
        fmt.TAG_GENERATOR, 0, data_offset + len(hwcaps_array), len(GENERATOR)
    )
    if hwcaps:
        directory += _SECTION.pack(fmt.TAG_GLIBC_HWCAPS, 0, data_offset, len(hwcaps_array))
    header = fmt.HEADER.pack(
        fmt.NEW_MAGIC, len(entries), len(strings), fmt.ENDIAN_LITTLE, extension_offset
    )
    padding = bytes(extension_offset - base - len(strings))
    return header + table + strings + padding + directory + hwcaps_array + GENERATOR


def _compare(e1: CacheRecord, e2: CacheRecord) -> int:
    result = libcmp(e2.name, e1.name)  # swapped, as in ldconfig: descending
    if result:
        return result
    if e1.flags != e2.flags:
        return -1 if e1.flags > e2.flags else 1
    if (e1.hwcaps_subdir is None) != (e2.hwcaps_subdir is None):
        return -1 if e1.hwcaps_subdir is not None else 1
    tie1 = (_encode(e1.hwcaps_subdir or ""), _encode(e1.name), _encode(e1.path))
    tie2 = (_encode(e2.hwcaps_subdir or ""), _encode(e2.name), _encode(e2.path))
    return (tie1 > tie2) - (tie1 < tie2)  # strcmp order of the subdirectory first


def _check(record: CacheRecord) -> None:
    """Reject what ld.so could never use, rather than writing a silently broken cache."""
    name, path, subdir = record.name, record.path, record.hwcaps_subdir
    if not name or "/" in name or "\0" in name:
        raise ValueError(f"cache name must be a bare file name: {name!r}")
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"cache path must be absolute: {path!r}")
    if subdir is not None and (not subdir or "/" in subdir or "\0" in subdir):
        raise ValueError(f"bad glibc-hwcaps subdirectory: {subdir!r}")
    if not -(2**31) <= record.flags < 2**31:
        raise ValueError(f"cache flags do not fit int32: {record.flags:#x}")


def _encode(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _number(data: bytes, index: int) -> tuple[int, int]:
    value = 0
    while data[index] in _DIGITS:
        value = _int32(value * 10 + data[index] - 48)
        index += 1
    return value, index


def _int32(value: int) -> int:
    return (value + 2**31) % 2**32 - 2**31


def _schar(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def _align4(offset: int) -> int:
    return (offset + 3) & ~3
