"""Media types, annotations and platforms: declared once for every reader and writer."""

from __future__ import annotations

import platform as _host_platform
from dataclasses import dataclass
from enum import Enum

from scratchpack.errors import InputError


class MediaType(str, Enum):
    """The media types scratchpack reads and writes (OCI image spec, Docker's v2 schema 2)."""

    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
    OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"  # containerd's name
    DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    def __str__(self) -> str:
        return self.value

    @property
    def is_index(self) -> bool:
        return self in (MediaType.OCI_INDEX, MediaType.DOCKER_LIST)

    @property
    def is_manifest(self) -> bool:
        return self in (MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST)

    @property
    def is_layer(self) -> bool:
        return self.name.startswith(("OCI_LAYER", "DOCKER_LAYER"))


class Compression(Enum):
    """How a layer blob is stored; told by its first bytes, whatever its media type says.

    A zstd stream may open with a skippable frame (magic ``0x184D2A50``-``5F``):
    ``zstd:chunked`` layers carry their table of contents in such frames.
    """

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"

    @classmethod
    def sniff(cls, head: bytes) -> Compression:
        for magic, compression in _MAGIC:
            if head.startswith(magic):
                return compression
        if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18":
            return cls.ZSTD  # a skippable frame first
        return cls.NONE

    @property
    def writable(self) -> bool:
        """What the built-in writer can write (``--compression``)."""
        return self in (Compression.GZIP, Compression.ZSTD, Compression.NONE)

    def layer_media_type(self, manifest: MediaType = MediaType.OCI_MANIFEST) -> MediaType:
        """The media type of a layer stored so, in an OCI or a Docker manifest."""
        docker = manifest is MediaType.DOCKER_MANIFEST
        found = (_DOCKER_LAYERS if docker else _OCI_LAYERS).get(self)
        if found is None:
            raise InputError(f"no {manifest} layer media type for {self.value} compression")
        return found


_MAGIC = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)


_OCI_LAYERS = {
    Compression.NONE: MediaType.OCI_LAYER,
    Compression.GZIP: MediaType.OCI_LAYER_GZIP,
    Compression.ZSTD: MediaType.OCI_LAYER_ZSTD,
}
_DOCKER_LAYERS = {
    Compression.NONE: MediaType.DOCKER_LAYER,
    Compression.GZIP: MediaType.DOCKER_LAYER_GZIP,
    Compression.ZSTD: MediaType.DOCKER_LAYER_ZSTD,
}


def media_type(value: object) -> MediaType | None:
    """A known media type, or None for anything else (a document names what it likes)."""
    try:
        return MediaType(value)
    except ValueError:
        return None


# Annotations: the tag of an image in an OCI layout, and containerd's full name.
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


# -- platforms ------------------------------------------------------------------------------

# e_machine numbers (the ELF spec's): no pyelftools import for a table lookup.
EM_386, EM_ARM, EM_PPC64, EM_S390, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 40, 21, 22, 62, 183, 243


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``linux/arm64/v8``."""

    architecture: str
    os: str = "linux"
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64``, ``linux/arm/v7`` or ``arm64``: a platform scratchpack knows."""
        parts = text.strip().split("/")
        if len(parts) == 1:
            parts = ["linux", *parts]
        if len(parts) not in (2, 3) or not all(parts):
            raise InputError(f"platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")
        os_name, architecture = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else None
        if os_name != "linux":
            raise InputError(f"platform {text!r}: only linux images are supported")
        known = [p for p in _PLATFORMS.values() if p.architecture == architecture]
        if not known:
            names = ", ".join(sorted({str(p) for p in _PLATFORMS.values()}))
            raise InputError(f"platform {text!r}: unknown architecture (known: {names})")
        if variant is None:
            variant = known[0].variant
        return cls(architecture, os_name, variant)

    @classmethod
    def from_elf(cls, machine: int, bits: int) -> Platform:
        """The platform of an ELF file's ``e_machine`` and class."""
        found = _PLATFORMS.get((machine, bits))
        if found is None:
            raise InputError(f"no OCI platform known for e_machine {machine} ({bits}-bit)")
        return found

    @classmethod
    def host(cls) -> Platform | None:
        """This machine's platform, as the engine would name it."""
        return _UNAME.get(_host_platform.machine())

    def elf_machine(self) -> tuple[int, int]:
        """(e_machine, bits) of this platform: the inverse of :meth:`from_elf`."""
        for key, known in _PLATFORMS.items():
            if known.architecture == self.architecture:
                return key
        raise InputError(f"no ELF machine known for the architecture {self.architecture!r}")

    def matches(self, architecture: str, variant: str | None = None) -> bool:
        """Whether an image config's architecture (and variant, when both say one) is ours."""
        if architecture != self.architecture:
            return False
        return not (variant and self.variant and variant != self.variant)

    @classmethod
    def from_debian(cls, architecture: str) -> Platform:
        """The platform of a dpkg architecture (``armhf`` is linux/arm/v7)."""
        found = DEBIAN_ARCHITECTURES.get(architecture)
        if found is None:
            raise InputError(f"no OCI platform known for the Debian architecture {architecture}")
        return found

    @property
    def debian_architecture(self) -> str:
        """dpkg's name for it: ``arm64``, ``armhf`` for arm/v7, ``ppc64el``, ``i386``."""
        for debian, platform in DEBIAN_ARCHITECTURES.items():
            if platform.architecture == self.architecture and (
                platform.variant == self.variant or not self.variant
            ):
                return debian
        raise InputError(f"platform {self}: no Debian architecture builds for it")

    def to_json(self) -> dict[str, str]:
        document = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            document["variant"] = self.variant
        return document


_PLATFORMS: dict[tuple[int, int], Platform] = {
    (EM_X86_64, 64): Platform("amd64"),
    (EM_AARCH64, 64): Platform("arm64", variant="v8"),
    (EM_386, 32): Platform("386"),
    (EM_ARM, 32): Platform("arm", variant="v7"),
    (EM_PPC64, 64): Platform("ppc64le"),
    (EM_S390, 64): Platform("s390x"),
    (EM_RISCV, 64): Platform("riscv64"),
}
# dpkg's architectures and the OCI platforms of their images.
DEBIAN_ARCHITECTURES: dict[str, Platform] = {
    "amd64": _PLATFORMS[(EM_X86_64, 64)],
    "arm64": _PLATFORMS[(EM_AARCH64, 64)],
    "i386": _PLATFORMS[(EM_386, 32)],
    "armhf": _PLATFORMS[(EM_ARM, 32)],
    "armel": Platform("arm", variant="v5"),
    "ppc64el": _PLATFORMS[(EM_PPC64, 64)],
    "s390x": _PLATFORMS[(EM_S390, 64)],
    "riscv64": _PLATFORMS[(EM_RISCV, 64)],
    "mips64el": Platform("mips64le"),
}
# uname -m to the platform the engine reports for this machine.
_UNAME: dict[str, Platform] = {
    "x86_64": _PLATFORMS[(EM_X86_64, 64)],
    "aarch64": _PLATFORMS[(EM_AARCH64, 64)],
    "i686": _PLATFORMS[(EM_386, 32)],
    "armv7l": _PLATFORMS[(EM_ARM, 32)],
    "ppc64le": _PLATFORMS[(EM_PPC64, 64)],
    "s390x": _PLATFORMS[(EM_S390, 64)],
    "riscv64": _PLATFORMS[(EM_RISCV, 64)],
}
