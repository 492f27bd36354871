"""Content digests, and streams that hash what passes through them once, as it passes.

Every blob scratchpack writes is hashed while it is written, and every blob it
reads from someone else's image is checked while it is read: no second pass
over the bytes, and nothing held whole in memory.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from scratchpack.errors import InputError


def new_hash(algorithm: str) -> Any:
    """A hash object of ``algorithm``. hashlib is imported here, when first hashing:
    it loads OpenSSL's libcrypto, a few milliseconds an engine build never needs."""
    import hashlib

    return hashlib.new(algorithm)


_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_LENGTHS = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class Digest:
    """``sha256:<hex>`` (or sha512): the algorithms the OCI spec registers."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: object, what: str = "digest") -> Digest:
        """Check a digest from a document someone else wrote; :class:`InputError` if odd."""
        match = _DIGEST.match(text) if isinstance(text, str) else None
        if match is None or len(match[2]) != _LENGTHS[match[1]]:
            shown = text if isinstance(text, str) and len(text) < 200 else type(text).__name__
            raise InputError(f"{what}: invalid digest {shown!r} (sha256:<64 hex> or sha512)")
        return cls(match[1], match[2])

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Any:
        return new_hash(self.algorithm)

    @property
    def blob_path(self) -> str:
        """Where an OCI layout keeps this blob: ``blobs/sha256/<hex>``."""
        return f"blobs/{self.algorithm}/{self.hex}"


def sha256_digest(data: bytes) -> str:
    hasher = new_hash("sha256")
    hasher.update(data)
    return "sha256:" + hasher.hexdigest()


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what it passes on to ``sink``."""

    def __init__(self, sink: BinaryIO | None, algorithm: str = "sha256") -> None:
        self.sink = sink
        self.hash = new_hash(algorithm)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += len(view)
        if self.sink is not None:
            self.sink.write(view)
        return len(view)

    @property
    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts what is read through it.

    ``limit`` bounds how much may be read (a blob longer than its descriptor
    says is refused, not read on forever); ``progress(n)`` hears each read.
    """

    def __init__(
        self,
        inner: BinaryIO,
        algorithm: str = "sha256",
        progress: Any = None,
        limit: int | None = None,
    ) -> None:
        self.inner = inner
        self.hash = new_hash(algorithm)
        self.size = 0
        self.progress = progress
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer)
        if self.limit is not None:
            wanted = min(wanted, self.limit - self.size + 1)  # one byte more shows an overrun
            if wanted <= 0:
                return 0
        data = self.inner.read(wanted)
        count = len(data)
        buffer[:count] = data
        self.hash.update(data)
        self.size += count
        if self.limit is not None and self.size > self.limit:
            raise InputError(f"a blob is longer than the {self.limit} bytes its descriptor says")
        if self.progress is not None and count:
            self.progress(count)
        return count

    def drain(self) -> str:
        """Read to the end and return the digest of everything read."""
        while self.read(1 << 20):
            pass
        return self.digest

    @property
    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"
