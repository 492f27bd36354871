"""glibc's ld.so.cache layout (``sysdeps/generic/dl-cache.h``), shared by reader and writer."""

from __future__ import annotations

import struct

NEW_MAGIC = b"glibc-ld.so.cache1.1"  # magic "glibc-ld.so.cache" + version "1.1"
OLD_MAGIC = b"ld.so-1.7.0"
# magic+version, nlibs, len_strings, flags (endianness), padding, extension offset, unused
HEADER_FORMAT = "20sIIB3xI12x"
HEADER = struct.Struct("<" + HEADER_FORMAT)
ENTRY_FORMAT = "iIIIQ"  # flags, key, value, osversion (unused), hwcap
ENTRY = struct.Struct("<" + ENTRY_FORMAT)
ENDIAN_LITTLE, ENDIAN_BIG = 2, 3
EXTENSION_MAGIC = 0xEAA42174
TAG_GENERATOR = 0
TAG_GLIBC_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62  # DL_CACHE_HWCAP_EXTENSION; the low 32 bits index the hwcaps names
HWCAP_INDEX_MASK = 0xFFFFFFFF
