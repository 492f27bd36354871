"""The rules of the loader a binary names in PT_INTERP, read statically from its root.

glibc's search directories, ``$LIB`` and hwcaps levels are build-time and
CPU-time facts of the loader; we read them from the interpreter file itself
(its compiled-in ``system_dirs``) and, for hwcaps, from the CPU of the machine
we run on — never by executing the loader. musl's rules are fixed and its one
setting is the ``/etc/ld-musl-ARCH.path`` file.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field

from scratchpack.errors import InputError
from scratchpack.ld.elf import (
    ELFCLASS32,
    ELFCLASS64,
    EM_386,
    EM_AARCH64,
    EM_ARM,
    EM_PPC64,
    EM_RISCV,
    EM_S390,
    EM_X86_64,
    ElfInfo,
)
from scratchpack.ld.rootfs import RootFS

# ldconfig's cache flags: FLAG_ELF_LIBC6 (3) plus the architecture's bits.
_FLAG_ELF_LIBC6 = 0x0003


@dataclass(frozen=True)
class Arch:
    """Per-architecture facts of Debian's and upstream glibc."""

    triplet: str  # Debian's multiarch directory name
    interpreter: str  # the ABI's PT_INTERP: the glibc loader every program names
    platform: str | None  # AT_PLATFORM, the value of $PLATFORM
    cache_flags: int | None
    hwcaps: tuple[str, ...] = ()  # glibc-hwcaps subdirectory names, best first


_X86_64_HWCAPS = ("x86-64-v4", "x86-64-v3", "x86-64-v2")

_ARCHES: dict[tuple[int, int], Arch] = {
    (EM_X86_64, ELFCLASS64): Arch(
        "x86_64-linux-gnu", "/lib64/ld-linux-x86-64.so.2", "x86_64", 0x0303, _X86_64_HWCAPS
    ),
    (EM_X86_64, ELFCLASS32): Arch(
        "x86_64-linux-gnux32", "/libx32/ld-linux-x32.so.2", "x86_64", 0x0803, _X86_64_HWCAPS
    ),
    (EM_386, ELFCLASS32): Arch("i386-linux-gnu", "/lib/ld-linux.so.2", "i686", _FLAG_ELF_LIBC6),
    (EM_AARCH64, ELFCLASS64): Arch(
        "aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1", "aarch64", 0x0A03
    ),
    (EM_ARM, ELFCLASS32): Arch("arm-linux-gnueabihf", "/lib/ld-linux-armhf.so.3", None, 0x0903),
    (EM_PPC64, ELFCLASS64): Arch(
        "powerpc64le-linux-gnu", "/lib64/ld64.so.2", None, 0x0503, ("power10", "power9")
    ),
    (EM_S390, ELFCLASS64): Arch(
        "s390x-linux-gnu", "/lib/ld64.so.1", None, 0x0403, ("z16", "z15", "z14", "z13")
    ),
    (EM_RISCV, ELFCLASS64): Arch(
        "riscv64-linux-gnu", "/lib/ld-linux-riscv64-lp64d.so.1", "riscv64", 0x1003
    ),
}
# Every glibc-hwcaps level name glibc knows (2.36's sysdeps/*/dl-hwcaps-subdirs.c,
# plus z16 from later releases); --hwcaps accepts only these.
HWCAPS_LEVELS: tuple[str, ...] = tuple(
    dict.fromkeys(level for arch in _ARCHES.values() for level in arch.hwcaps)
)


def arch_for(machine: int, elf_class: int) -> Arch | None:
    """The facts of the glibc architecture ``(e_machine, EI_CLASS)``, if we know it."""
    return _ARCHES.get((machine, elf_class))


# glibc-hwcaps levels, best first, with the /proc/cpuinfo flags each one needs
# on top of the previous level (glibc's sysdeps/x86/get-isa-level.h).
X86_64_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("x86-64-v2", frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})),
    ("x86-64-v3", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"})),
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)
# glibc <= 2.36 also searches these legacy subdirectories on x86-64 (AT_PLATFORM
# and the "x86_64" hwcap, with and without "tls"), as `ld.so --list-diagnostics`
# and LD_DEBUG=libs show on Debian 12. glibc 2.37 removed them.
_X86_64_LEGACY_SUBDIRS = ("tls/x86_64/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64")

_MUSL_INTERP = re.compile(r"(?:^|/)ld-musl-([A-Za-z0-9_]+)\.so\.1$")
_MUSL_DEFAULT_PATH = ("/lib", "/usr/local/lib", "/usr/lib")
# A run of NUL-terminated absolute directories ending in "/": glibc's system_dirs.
_SYSTEM_DIRS = re.compile(rb"(?:/(?:[A-Za-z0-9_.+-]+/)+\0){2,}")


@dataclass(frozen=True)
class HwcapsChoice:
    """Which glibc-hwcaps levels to search: the running CPU's, none, or a given list."""

    mode: str = "auto"  # "auto" | "none" | "list"
    levels: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> HwcapsChoice:
        """``auto``, ``none`` or a comma list of known level names; else :class:`InputError`."""
        text = text.strip()
        if text in ("auto", "none"):
            return cls(text)
        levels = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        unknown = [level for level in levels if level not in HWCAPS_LEVELS]
        if not levels or unknown:
            what = f"unknown level {', '.join(unknown)}" if unknown else "no level given"
            raise InputError(
                f"--hwcaps {text!r}: {what}; use auto, none or a comma list of "
                f"glibc-hwcaps levels ({', '.join(HWCAPS_LEVELS)})"
            )
        return cls("list", levels)


@dataclass(frozen=True)
class LoaderRules:
    """How one loader searches, for one target architecture."""

    kind: str  # "glibc" | "musl"
    elf_class: int
    machine: int
    default_dirs: tuple[str, ...]
    lib_token: str | None = None  # value of $LIB
    platform: str | None = None  # value of $PLATFORM
    hwcaps_levels: tuple[str, ...] = ()  # supported glibc-hwcaps levels, best first
    legacy_subdirs: tuple[str, ...] = ()
    cache_flags: frozenset[int] | None = None
    musl_arch: str | None = None
    subdirs: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        hwcaps = tuple(f"glibc-hwcaps/{level}" for level in self.hwcaps_levels)
        object.__setattr__(self, "subdirs", (*hwcaps, *self.legacy_subdirs))

    @property
    def hwcaps_priority(self) -> dict[str, int]:
        count = len(self.hwcaps_levels)
        return {level: count - index for index, level in enumerate(self.hwcaps_levels)}


def musl_arch(interpreter: str | None) -> str | None:
    """``x86_64`` for ``/lib/ld-musl-x86_64.so.1``; None for any other interpreter."""
    if not interpreter:
        return None
    match = _MUSL_INTERP.search(interpreter)
    return match.group(1) if match else None


def rules_for(
    root: RootFS,
    target: ElfInfo,
    interpreter: str | None,
    interpreter_bytes: bytes | None,
    hwcaps: HwcapsChoice,
) -> LoaderRules:
    """The loader rules for ``target`` (the main program) in ``root``."""
    arch_name = musl_arch(interpreter)
    if arch_name is not None:
        return LoaderRules(
            kind="musl",
            elf_class=target.elf_class,
            machine=target.machine,
            default_dirs=_musl_search_path(root, interpreter or "", arch_name),
            musl_arch=arch_name,
        )
    arch = arch_for(target.machine, target.elf_class)
    default_dirs = _glibc_default_dirs(root, arch, target, interpreter_bytes)
    first = default_dirs[0] if default_dirs else "/lib"
    lib_token = first.lstrip("/")
    legacy: tuple[str, ...] = ()
    if (
        target.machine == EM_X86_64
        and target.elf_class == ELFCLASS64
        and interpreter_bytes is not None
        and b"haswell\0" in interpreter_bytes
    ):
        legacy = _X86_64_LEGACY_SUBDIRS
    supports_hwcaps = interpreter_bytes is None or b"glibc-hwcaps" in interpreter_bytes
    levels = _hwcaps_levels(hwcaps, target) if supports_hwcaps else ()
    cache_flags = frozenset({arch.cache_flags}) if arch and arch.cache_flags else None
    return LoaderRules(
        kind="glibc",
        elf_class=target.elf_class,
        machine=target.machine,
        default_dirs=default_dirs,
        lib_token=lib_token,
        platform=arch.platform if arch else None,
        hwcaps_levels=levels,
        legacy_subdirs=legacy,
        cache_flags=cache_flags,
    )


def _glibc_default_dirs(
    root: RootFS, arch: Arch | None, target: ElfInfo, interpreter_bytes: bytes | None
) -> tuple[str, ...]:
    """The loader's compiled-in search directories, read from its own bytes when we can."""
    if interpreter_bytes is not None:
        for match in _SYSTEM_DIRS.finditer(interpreter_bytes):
            dirs = [d.decode() for d in match.group(0).split(b"\0") if d]
            if any(d.endswith("/lib/") or d.endswith("lib64/") for d in dirs):
                return tuple(d.rstrip("/") or "/" for d in dirs)
    if arch is not None and (
        root.is_dir(f"/lib/{arch.triplet}") or root.is_dir(f"/usr/lib/{arch.triplet}")
    ):
        return (f"/lib/{arch.triplet}", f"/usr/lib/{arch.triplet}", "/lib", "/usr/lib")
    if target.elf_class == ELFCLASS64 and (root.is_dir("/lib64") or root.is_dir("/usr/lib64")):
        return ("/lib64", "/usr/lib64")
    return ("/lib", "/usr/lib")


def _musl_search_path(root: RootFS, interpreter: str, arch_name: str) -> tuple[str, ...]:
    """musl's system path: ``<prefix>/etc/ld-musl-ARCH.path`` if present, else its default."""
    # musl takes the prefix as the interpreter's path minus its last two components.
    parts = interpreter.split("/")
    prefix = "/".join(parts[:-2]) if interpreter.startswith("/") and len(parts) > 2 else ""
    text = root.read_text(f"{prefix}/etc/ld-musl-{arch_name}.path")
    if text is None:
        return _MUSL_DEFAULT_PATH
    return tuple(d for d in re.split(r"[:\n]", text) if d)


def _hwcaps_levels(choice: HwcapsChoice, target: ElfInfo) -> tuple[str, ...]:
    if choice.mode == "none":
        return ()
    if choice.mode == "list":
        # Best first, as the loader orders them; another architecture's levels never apply.
        arch = arch_for(target.machine, target.elf_class)
        return tuple(level for level in arch.hwcaps if level in choice.levels) if arch else ()
    if target.machine != EM_X86_64 or target.elf_class != ELFCLASS64:
        return ()
    if platform.machine() != "x86_64":
        return ()
    return cpu_x86_64_levels()


def cpu_x86_64_levels(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The x86-64 ISA levels this CPU supports, best first (as ld.so's cpu features do)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as stream:
            flags: set[str] = set()
            for line in stream:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    break
    except OSError:
        return ()
    supported: list[str] = []
    for name, needed in X86_64_LEVELS:
        if not needed <= flags:
            break
        supported.append(name)
    return tuple(reversed(supported))
