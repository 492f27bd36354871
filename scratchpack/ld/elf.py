"""Read the few ELF facts the runtime loader acts on, and nothing else.

Resolution touches every candidate library on every search path, so this is the
hot path: one ``open``, a handful of ``pread`` calls and ``struct`` unpacking of
the ELF header, the program headers, the dynamic segment and its string table.
A full pyelftools ``ELFFile`` walk costs about 1.7 ms a file because it builds
construct parsers and section tables we never use. The few constants are the
ELF specification's numbers (importing pyelftools' tables costs 10 ms at every
start); pyelftools stays the tool for deeper reads and for machine names.

Every offset read from the file is checked against the file's size, so a
truncated or corrupt file ends in :class:`ElfError` with a reason, never in an
``IndexError`` or a runaway read.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from dataclasses import dataclass
from typing import NamedTuple

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_NONE, ET_REL, ET_EXEC, ET_DYN, ET_CORE = 0, 1, 2, 3, 4
ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3
PN_XNUM = 0xFFFF

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH = 0, 1, 5, 10, 14, 15
DT_RUNPATH = 29
DT_FLAGS_1 = 0x6FFFFFFB
DT_FILTER, DT_AUXILIARY = 0x7FFFFFFF, 0x7FFFFFFD

EM_386, EM_ARM, EM_PPC64, EM_S390, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 40, 21, 22, 62, 183, 243

DF_1_NODEFLIB = 0x00000800


# Refuse to read absurd tables from a corrupt header instead of allocating gigabytes.
_MAX_PHDR_BYTES = 65536  # binfmt_elf's limit on the program header table
_MAX_DYNAMIC_BYTES = 16 << 20
_MAX_STRTAB_BYTES = 64 << 20

_STRING_TAGS = {DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FILTER, DT_AUXILIARY}
_DEPENDENCY_KINDS = {DT_NEEDED: "needed", DT_FILTER: "filter", DT_AUXILIARY: "auxiliary"}


class ElfError(Exception):
    """The file is not an ELF object the loader could map; the message says why.

    ``identity`` is its (EI_CLASS, EI_DATA, EI_OSABI, e_machine) when the header got
    that far: ld.so skips a file of another class, or of another machine once the
    byte order and OS ABI passed, before it looks any further.
    """

    identity: tuple[int, int, int, int] | None = None


class NotElfError(ElfError):
    """The file does not start with the ELF magic (a script, a text file, empty)."""


class Dependency(NamedTuple):
    """One DT_NEEDED, DT_FILTER or DT_AUXILIARY entry, in dynamic-section order."""

    name: str
    kind: str  # "needed" | "filter" | "auxiliary"


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """What the loader reads from one ELF file."""

    elf_class: int  # ELFCLASS32 or ELFCLASS64
    data: int  # ELFDATA2LSB or ELFDATA2MSB
    osabi: int
    abiversion: int
    ident_padding_zero: bool
    elf_type: int
    machine: int
    flags: int
    interpreter: str | None
    has_dynamic: bool
    dependencies: tuple[Dependency, ...]
    soname: str | None
    rpath: str | None
    runpath: str | None
    flags_1: int

    @property
    def bits(self) -> int:
        return 64 if self.elf_class == ELFCLASS64 else 32

    @property
    def machine_name(self) -> str:
        return machine_name(self.machine)

    @property
    def is_static(self) -> bool:
        """Nothing for a loader to resolve: static executables, static-pie, self-contained objects.

        A static-pie has PT_DYNAMIC but no PT_INTERP and no DT_NEEDED. A shared
        library without dependencies is alike for the loader (``ldd`` says
        "statically linked" for both); one with dependencies is not.
        """
        return self.interpreter is None and not self.dependencies


def machine_name(machine: int) -> str:
    """``EM_X86_64`` style name for an ``e_machine`` value, for messages."""
    return _machine_names().get(machine, f"machine {machine}")


@functools.cache
def _machine_names() -> dict[int, str]:
    from elftools.elf.enums import ENUM_E_MACHINE  # only for messages

    return {value: name for name, value in ENUM_E_MACHINE.items() if isinstance(value, int)}


def read_elf(path: str) -> ElfInfo:
    """Parse ``path`` (a host path) once; raise :class:`ElfError` if it is not a usable ELF.

    The file is opened non-blocking and must be a regular file: a FIFO, a socket
    or a device is refused at once instead of blocking or streaming forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError as err:
        raise ElfError("is a directory") from err
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ElfError("is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ElfError("not a regular file")
        return _parse(fd, st.st_size)
    finally:
        os.close(fd)


def _read(fd: int, offset: int, length: int, size: int, what: str) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ElfError(f"truncated or corrupt: {what} lies outside the file")
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ElfError(f"truncated: short read of {what}")
    return data


class _Header(NamedTuple):
    ident: bytes
    endian: str  # struct byte order: "<" or ">"
    is64: bool
    elf_type: int
    machine: int
    flags: int
    phoff: int
    phentsize: int
    phnum: int
    shoff: int
    shentsize: int
    shnum: int


def _header(fd: int) -> _Header:
    try:
        ident = os.pread(fd, 64, 0)
    except IsADirectoryError as err:
        raise ElfError("is a directory") from err
    if len(ident) < 4 or ident[:4] != ELF_MAGIC:
        raise NotElfError("not an ELF file")
    if len(ident) < 16:
        raise ElfError("truncated ELF header")
    elf_class, data = ident[4], ident[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64):
        raise ElfError(f"invalid ELF class {elf_class}")
    if data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ElfError(f"invalid ELF data encoding {data}")
    endian = "<" if data == ELFDATA2LSB else ">"
    is64 = elf_class == ELFCLASS64
    if len(ident) < (64 if is64 else 52):
        raise ElfError("truncated ELF header")
    fields = struct.unpack_from(endian + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"), ident, 16)
    elf_type, machine, _version, _entry, phoff, shoff, flags = fields[:7]
    _ehsize, phentsize, phnum, shentsize, shnum, _shstrndx = fields[7:]
    return _Header(
        ident,
        endian,
        is64,
        elf_type,
        machine,
        flags,
        phoff,
        phentsize,
        phnum,
        shoff,
        shentsize,
        shnum,
    )


def _parse(fd: int, size: int) -> ElfInfo:
    header = _header(fd)
    try:
        return _parse_tables(fd, size, header)
    except ElfError as err:
        err.identity = (header.ident[4], header.ident[5], header.ident[7], header.machine)
        raise


def _parse_tables(fd: int, size: int, header: _Header) -> ElfInfo:
    _check_program_headers(header)
    interpreter, dynamic, loads = _segments(fd, size, header)
    dependencies, soname, rpath, runpath, flags_1 = (
        _NO_DYNAMIC if dynamic is None else _dynamic_entries(fd, size, header, dynamic, loads)
    )
    ident = header.ident
    return ElfInfo(
        elf_class=ident[4],
        data=ident[5],
        osabi=ident[7],
        abiversion=ident[8],
        ident_padding_zero=not any(ident[9:16]),
        elf_type=header.elf_type,
        machine=header.machine,
        flags=header.flags,
        interpreter=interpreter,
        has_dynamic=dynamic is not None,
        dependencies=dependencies,
        soname=soname,
        rpath=rpath,
        runpath=runpath,
        flags_1=flags_1,
    )


def _check_program_headers(header: _Header) -> None:
    """Refuse what Linux's binfmt_elf (load_elf_phdrs) and ld.so refuse.

    No extended numbering (PN_XNUM is for core dumps), the ABI's header size, a
    table of at most 64 KiB, and at least one header for anything that is loaded.
    """
    phnum, phentsize = header.phnum, header.phentsize
    phdr_size = 56 if header.is64 else 32
    if phnum == PN_XNUM:
        raise ElfError("corrupt: e_phnum is 0xffff (PN_XNUM), which the kernel refuses to load")
    if phnum and phentsize != phdr_size:
        raise ElfError(f"corrupt: program header size {phentsize}, expected {phdr_size}")
    if phnum * phdr_size > _MAX_PHDR_BYTES:
        raise ElfError(f"corrupt: {phnum} program headers, more than the kernel loads")
    if phnum == 0 and header.elf_type in (ET_EXEC, ET_DYN):
        raise ElfError("corrupt: no program headers, so the kernel cannot load it")


# The steps below return plain tuples, unpacked into names at once: building a
# NamedTuple costs ten times as much, about 2% of a file's parse each.
_Load = tuple[int, int, int]  # a PT_LOAD segment: (vaddr, filesz, offset)
_SegmentFacts = tuple[str | None, tuple[int, int] | None, list[_Load]]
_DynamicFacts = tuple[tuple[Dependency, ...], str | None, str | None, str | None, int]
_NO_DYNAMIC: _DynamicFacts = ((), None, None, None, 0)


def _segments(fd: int, size: int, header: _Header) -> _SegmentFacts:
    """The interpreter, the dynamic segment's (offset, filesz) and the PT_LOAD segments."""
    interpreter: str | None = None
    dynamic: tuple[int, int] | None = None
    loads: list[_Load] = []
    if not header.phnum:
        return interpreter, dynamic, loads
    phdr_size = 56 if header.is64 else 32
    table = _read(fd, header.phoff, header.phnum * phdr_size, size, "program header table")
    if header.is64:
        records = struct.iter_unpack(header.endian + "IIQQQQQQ", table)
        segments = ((r[0], r[2], r[3], r[5]) for r in records)
    else:
        records = struct.iter_unpack(header.endian + "IIIIIIII", table)
        segments = ((r[0], r[1], r[2], r[4]) for r in records)
    for p_type, p_offset, p_vaddr, p_filesz in segments:
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            raw = _read(fd, p_offset, p_filesz, size, "PT_INTERP")
            interpreter = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return interpreter, dynamic, loads


def _dynamic_entries(
    fd: int, size: int, header: _Header, dynamic: tuple[int, int], loads: list[_Load]
) -> _DynamicFacts:
    """Dependencies, DT_SONAME, DT_RPATH, DT_RUNPATH and DT_FLAGS_1, up to DT_NULL."""
    offset, length = dynamic
    if length > _MAX_DYNAMIC_BYTES:
        raise ElfError("corrupt: dynamic segment is implausibly large")
    raw = _read(fd, offset, length, size, "dynamic segment")
    entry_size = 16 if header.is64 else 8
    raw = raw[: len(raw) - len(raw) % entry_size]
    string_refs: list[tuple[int, int]] = []
    strtab = strsz = None
    flags_1 = 0
    for tag, value in struct.iter_unpack(header.endian + ("qQ" if header.is64 else "iI"), raw):
        if tag == DT_NULL:
            break
        if tag in _STRING_TAGS:
            string_refs.append((tag, value))
        elif tag == DT_STRTAB:
            strtab = value
        elif tag == DT_STRSZ:
            strsz = value
        elif tag == DT_FLAGS_1:
            flags_1 = value
    if not string_refs:
        return (), None, None, None, flags_1
    strings = _read_strtab(fd, size, strtab, strsz, loads)
    return (*_dynamic_strings(strings, string_refs), flags_1)


def _dynamic_strings(
    strings: bytes, string_refs: list[tuple[int, int]]
) -> tuple[tuple[Dependency, ...], str | None, str | None, str | None]:
    """Dependencies in their order, the soname; DT_RPATH and DT_RUNPATH joined with ':'."""
    dependencies: list[Dependency] = []
    soname = rpath = runpath = None
    for tag, value in string_refs:
        text = _string_at(strings, value)
        kind = _DEPENDENCY_KINDS.get(tag)
        if kind is not None:
            dependencies.append(Dependency(text, kind))
        elif tag == DT_SONAME:
            soname = text
        elif tag == DT_RPATH:
            rpath = text if rpath is None else rpath + ":" + text
        elif tag == DT_RUNPATH:
            runpath = text if runpath is None else runpath + ":" + text
    return tuple(dependencies), soname, rpath, runpath


def _read_strtab(
    fd: int, size: int, strtab: int | None, strsz: int | None, loads: list[_Load]
) -> bytes:
    """Map DT_STRTAB (a virtual address) to its bytes through the PT_LOAD segments."""
    if strtab is None or strsz is None:
        raise ElfError("corrupt: dynamic section names strings but has no DT_STRTAB/DT_STRSZ")
    if strsz > _MAX_STRTAB_BYTES:
        raise ElfError("corrupt: dynamic string table is implausibly large")
    for vaddr, filesz, offset in loads:
        if vaddr <= strtab < vaddr + filesz:
            if strtab + strsz > vaddr + filesz:
                raise ElfError("corrupt: dynamic string table runs past its segment")
            return _read(fd, offset + (strtab - vaddr), strsz, size, "dynamic string table")
    raise ElfError("corrupt: DT_STRTAB is not inside any loadable segment")


def _string_at(strings: bytes, offset: int) -> str:
    end = strings.find(b"\0", offset)
    if offset >= len(strings) or end < 0:
        raise ElfError("corrupt: dynamic string offset outside the string table")
    return strings[offset:end].decode("utf-8", "surrogateescape")


SHT_DYNSYM = 11


def type_description(elf_type: int) -> str | None:
    """Why an ELF file of ``elf_type`` is no program or library; None for ET_EXEC/ET_DYN."""
    if elf_type in (ET_EXEC, ET_DYN):
        return None
    if elf_type == ET_REL:
        return "a relocatable object (.o), not a program or library"
    if elf_type == ET_CORE:
        return "a core dump, not a program or library"
    return f"an ELF file of type {elf_type:#x}, not a program or library"


def undefined_symbols(path: str) -> frozenset[str]:
    """Names of the dynamic symbols a file imports (undefined in its .dynsym).

    Read through the section headers with ``struct``: building pyelftools
    symbol objects for libcrypto's 5,000 symbols alone takes 0.1 s. A file
    without section headers answers the empty set.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ElfError("not a regular file")
        size = st.st_size
        header = _header(fd)
        section_size = 64 if header.is64 else 40
        if not header.shoff or not header.shnum or header.shentsize != section_size:
            return frozenset()
        table = _read(fd, header.shoff, header.shnum * section_size, size, "section headers")
        layout = header.endian + ("IIQQQQIIQQ" if header.is64 else "IIIIIIIIII")
        sections = list(struct.iter_unpack(layout, table))
        # (sh_type, sh_offset, sh_size, sh_link): the same positions in both classes
        brief = [(sec[1], sec[4], sec[5], sec[6]) for sec in sections]
        dynsym = next((sec for sec in brief if sec[0] == SHT_DYNSYM), None)
        if dynsym is None or dynsym[3] >= len(brief):
            return frozenset()
        _type, str_offset, str_size, _link = brief[dynsym[3]]
        strings = _read(fd, str_offset, str_size, size, "dynamic string table")
        symbols = _read(fd, dynsym[1], dynsym[2], size, "dynamic symbol table")
    finally:
        os.close(fd)
    entry = 24 if header.is64 else 16
    symbols = symbols[: len(symbols) - len(symbols) % entry]
    if header.is64:
        records = ((r[0], r[3]) for r in struct.iter_unpack(header.endian + "IBBHQQ", symbols))
    else:
        records = ((r[0], r[5]) for r in struct.iter_unpack(header.endian + "IIIBBH", symbols))
    names = set()
    for name_offset, section_index in records:
        if section_index == 0 and name_offset:
            end = strings.find(b"\0", name_offset)
            if end > name_offset:
                names.add(strings[name_offset:end].decode("utf-8", "surrogateescape"))
    return frozenset(names)
