"""Resolve shared-library closures statically, rule for rule as the runtime loader.

One :class:`Resolver` serves many binaries: every file is parsed once, and the
cache, ld.so.conf and loader rules are read once per root. The algorithm is
glibc's ``_dl_map_object_deps``: breadth-first over DT_NEEDED (and
DT_FILTER/DT_AUXILIARY) in dynamic-section order; a name that matches a loaded
object's name or SONAME, or a file already loaded under another name (same
device and inode), reuses that object; otherwise the requester's search path is
walked (see :meth:`_Session._glibc_steps` and :meth:`_Session._musl_steps`).

Relative paths (a relative RPATH element, ``LD_LIBRARY_PATH=.``, a relative
DT_NEEDED) are opened by the loader against its working directory: the
``cwd`` given to :class:`Resolver`, by default this process's for the host root
and ``/`` (an image's default WORKDIR) for another root.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scratchpack.errors import InputError
from scratchpack.ld.elf import (
    DF_1_NODEFLIB,
    ELFOSABI_GNU,
    ELFOSABI_SYSV,
    ET_DYN,
    ET_EXEC,
    ElfError,
    ElfInfo,
    NotElfError,
    read_elf,
    type_description,
)
from scratchpack.ld.ldconfig import LdCache, read_cache, read_conf_dirs
from scratchpack.ld.loaders import HwcapsChoice, LoaderRules, arch_for, musl_arch, rules_for
from scratchpack.ld.rootfs import RootFS, open_regular

PRELOAD_PATH = "/etc/ld.so.preload"
# glibc accepts GNU ABI versions below LIBC_ABI_MAX (4 in 2.36).
_GNU_ABI_MAX = 4
# musl resolves these to itself (ldso/dynlink.c "reserved").
_MUSL_RESERVED = ("c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet.")

FileId = tuple[int, int]
Subdirs = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Library:
    """A loaded library: the name that first asked for it and the path the loader opens."""

    soname: str
    path: str
    needed_by: str  # path of the object whose request loaded it
    # rpath | library-path | runpath | cache | default | path | dlopen; a library
    # named by /etc/ld.so.preload keeps the step that found it. "loaded": no search
    # finds it, a library of the image carries its soname (plan.image_plan).
    via: str = "path"


@dataclass(frozen=True, slots=True)
class Missing:
    """A dependency no search found, or a file the loader would refuse (``reason``)."""

    soname: str
    needed_by: str
    reason: str | None = None


@dataclass(slots=True)
class Closure:
    """Everything one binary makes the loader map."""

    path: str
    interpreter: str | None
    static: bool
    libraries: list[Library] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    rules: LoaderRules | None = None  # the loader's rules; None for static objects
    dlopen_missing: list[Missing] = field(default_factory=list)  # warnings, not failures
    # /etc/ld.so.preload entries the loader cannot load: it says "cannot be preloaded
    # ... ignored" and runs the program anyway, so these are warnings, not failures.
    preload_missing: list[Missing] = field(default_factory=list)

    @property
    def loader(self) -> str | None:
        """``glibc`` or ``musl``; None when nothing is loaded (static)."""
        return self.rules.kind if self.rules else None

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        """The documented ``deps --json`` object; keep it stable."""
        return {
            "path": self.path,
            "interpreter": self.interpreter,
            "static": self.static,
            "libraries": [{"soname": lib.soname, "path": lib.path} for lib in self.libraries],
            "missing": [item.soname for item in self.missing],
        }


@dataclass(eq=False, slots=True)
class _Object:
    """An object in the simulated link map."""

    path: str  # in-root path as opened
    info: ElfInfo | None  # None for a missing placeholder
    loader: _Object | None
    origin: str | None  # $ORIGIN: the directory of ``path``


@dataclass(frozen=True, slots=True)
class _Candidate:
    path: str
    file_id: FileId
    info: ElfInfo | None
    error: str | None
    identity: tuple[int, int, int, int] | None = None  # what a failed parse still told


class _LoadError(Exception):
    """ld.so would stop here (a file it must not skip): reported as missing with a reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Resolver:
    """Resolves closures inside one root with one environment; reuse it for many binaries."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        library_path: str | None = None,
        hwcaps: HwcapsChoice | None = None,
        cwd: str | None = None,
    ) -> None:
        """``cwd`` is the loader's working directory inside the root (an image's
        WORKDIR), against which relative search paths and names are opened; by
        default this process's working directory for the host root, ``/`` otherwise.
        """
        self.root = RootFS(root)
        if library_path is None:
            library_path = os.environ.get("LD_LIBRARY_PATH", "")
        self.library_path = library_path
        if cwd is not None and not cwd.startswith("/"):
            cwd = posixpath.join(self._default_cwd(), cwd)
        self._cwd = cwd
        self.hwcaps = hwcaps or HwcapsChoice()
        self._files: dict[
            FileId, tuple[ElfInfo | None, str | None, tuple[int, int, int, int] | None]
        ] = {}
        self._dir_exists: dict[str, bool] = {}
        self._rules: dict[tuple[str | None, int, int], LoaderRules] = {}
        self._cache: LdCache | bool | None = False  # False: not read yet
        self._conf_dirs: list[str] | None = None
        self._preload: list[str] | None = None

    # -- paths ---------------------------------------------------------------------

    def _default_cwd(self) -> str:
        return os.getcwd() if self.root.is_host else "/"

    @property
    def cwd(self) -> str:
        """The loader's in-root working directory (see :meth:`__init__`)."""
        return self._cwd if self._cwd is not None else self._default_cwd()

    def _absolute(self, path: str) -> str:
        """In-root absolute ``path``: a relative one is taken from :attr:`cwd`, as open(2) does."""
        return path if path.startswith("/") else posixpath.join(self.cwd, path)

    def _origin_of(self, path: str) -> str:
        """The directory of a loaded object; glibc prefixes a relative name with the cwd."""
        return posixpath.dirname(self._absolute(path)) or "/"

    # -- reading files -------------------------------------------------------------

    def _probe(self, path: str) -> _Candidate | None:
        """Stat and parse a candidate once per file; None when nothing is there."""
        host = self._host(path)
        if host is None:
            return None
        try:
            st = os.stat(host)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        file_id = (st.st_dev, st.st_ino)
        known = self._files.get(file_id)
        if known is None:
            try:
                known = (read_elf(host), None, None)
            except ElfError as err:
                known = (None, str(err), err.identity)
            except OSError as err:
                known = (None, err.strerror or str(err), None)
            self._files[file_id] = known
        return _Candidate(path, file_id, *known)

    def _host(self, path: str) -> str | None:
        return self.root.host_path(self._absolute(path))

    def _directory_exists(self, directory: str) -> bool:
        known = self._dir_exists.get(directory)
        if known is None:
            host = self._host(directory)
            known = host is not None and os.path.isdir(host)
            self._dir_exists[directory] = known
        return known

    def _ld_cache(self) -> LdCache | None:
        if self._cache is False:
            self._cache = read_cache(self.root)
        return self._cache  # type: ignore[return-value]

    def _ld_conf_dirs(self) -> list[str]:
        if self._conf_dirs is None:
            self._conf_dirs = read_conf_dirs(self.root)
        return self._conf_dirs

    def _preloads(self) -> list[str]:
        if self._preload is None:
            text = self.root.read_text(PRELOAD_PATH) or ""
            self._preload = text.replace(":", " ").split()
        return self._preload

    def rules_for(self, info: ElfInfo) -> LoaderRules:
        """The rules of the loader ``info`` names, read once per interpreter and root."""
        key = (info.interpreter, info.machine, info.elf_class)
        rules = self._rules.get(key)
        if rules is None:
            interpreter_bytes = None
            if info.interpreter and musl_arch(info.interpreter) is None:
                interpreter_bytes = self.root.read_bytes(info.interpreter)
            if interpreter_bytes is None and musl_arch(info.interpreter) is None:
                # A library given as an argument names no interpreter: use the root's usual one.
                arch = arch_for(info.machine, info.elf_class)
                interpreter_bytes = self.root.read_bytes(arch.interpreter) if arch else None
            rules = rules_for(self.root, info, info.interpreter, interpreter_bytes, self.hwcaps)
            self._rules[key] = rules
        return rules

    # -- the main entry point --------------------------------------------------------

    def read_input(self, path: str) -> ElfInfo:
        """Parse a command-line argument, raising :class:`InputError` with one clear line.

        Only a regular ELF program or library is accepted: a directory, FIFO,
        socket or device is refused after a ``stat`` (never opened to block), and
        so are relocatable objects and core dumps. The parse is cached with the
        files the resolution probes, so an input is read once per Resolver.
        """
        host = self.root.host_path(self._absolute(path))
        where = f" inside {self.root.top}" if not self.root.is_host else ""
        try:
            if host is None:
                raise FileNotFoundError(path)
            st = os.stat(host)
        except FileNotFoundError as err:
            raise InputError(f"{path}: no such file{where}") from err
        except PermissionError as err:
            raise InputError(f"{path}: permission denied") from err
        except OSError as err:
            raise InputError(f"{path}: {err.strerror or err}") from err
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not an ELF file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file ({_file_type(st.st_mode)})")
        file_id = (st.st_dev, st.st_ino)
        known = self._files.get(file_id)
        info = known[0] if known is not None else None
        if info is None:
            try:
                info = read_elf(host)
            except NotElfError as err:
                raise InputError(f"{path}: {_describe_non_elf(host) or err}") from err
            except ElfError as err:
                self._files[file_id] = (None, str(err))
                raise InputError(f"{path}: {err}") from err
            except PermissionError as err:
                raise InputError(f"{path}: permission denied") from err
            except OSError as err:
                raise InputError(f"{path}: {err.strerror or err}") from err
            self._files[file_id] = (info, None)
        problem = type_description(info.elf_type)
        if problem is not None:
            raise _NotLoadable(f"{path}: {problem}")
        return info

    def read_loadable(self, path: str) -> ElfInfo | None:
        """:meth:`read_input` of an ELF file found in a tree: None for one no loader maps.

        A tree that ``--include`` copies holds object files and core dumps as
        data (``config-3.11-x86_64-linux-gnu/python.o``); only programs and
        libraries bring a closure. A corrupt ELF file is still an error.
        """
        try:
            return self.read_input(path)
        except _NotLoadable:
            return None

    def resolve(
        self,
        path: str,
        info: ElfInfo | None = None,
        dlopen: Iterable[tuple[str, str | None]] = (),
    ) -> Closure:
        """The closure of one binary or library given by in-root ``path``.

        ``dlopen`` adds libraries the program opens at run time, as
        ``(name, requester)`` pairs: the requester is the soname of the loaded
        object that calls dlopen (its search path applies), None for the program.
        """
        if info is None:
            info = self.read_input(path)
        closure = Closure(path=path, interpreter=info.interpreter, static=info.is_static)
        if info.is_static:
            return closure
        rules = self.rules_for(info)
        closure.rules = rules
        real = self.root.realpath(self._absolute(path))
        # The kernel starts the program through /proc/self/exe: $ORIGIN is its real directory.
        main = _Object(path, info, None, os.path.dirname(real) if real else None)
        _Session(self, rules, closure, main).run(tuple(dlopen))
        return closure

    def resolve_all(self, paths: Iterable[str]) -> list[Closure]:
        """Resolve several arguments; every input is checked before any work is done."""
        paths = list(paths)
        infos = [self.read_input(path) for path in paths]
        return [self.resolve(path, info) for path, info in zip(paths, infos, strict=True)]


class _Session:
    """One binary's simulated link map, filled breadth-first."""

    def __init__(self, resolver: Resolver, rules: LoaderRules, closure: Closure, main: _Object):
        self.resolver = resolver
        self.rules = rules
        self.closure = closure
        self.main = main
        self.by_name: dict[str, _Object] = {}
        self.by_id: dict[FileId, _Object] = {}
        self.queue: list[_Object] = [main]
        self.interpreter: _Object | None = None
        self.missing_names: set[str] = set()

    def run(self, dlopen: tuple[tuple[str, str | None], ...] = ()) -> None:
        main = self.main
        main_candidate = self.resolver._probe(main.path)
        if main_candidate is not None:
            self.by_id[main_candidate.file_id] = main
        self._name(main, main.info)
        self._map_interpreter()
        if self.rules.kind == "glibc":
            for name in self.resolver._preloads():
                self._request(main, name, "preload")
        self._drain(0)
        for name, requester_name in dlopen:
            requester = self.by_name.get(requester_name, main) if requester_name else main
            start = len(self.queue)
            self._request(requester, name, "dlopen")
            self._drain(start)

    def _drain(self, index: int) -> None:
        """Load the needs of every queued object from ``index`` on, breadth-first."""
        while index < len(self.queue):
            obj = self.queue[index]
            index += 1
            assert obj.info is not None
            for dependency in obj.info.dependencies:
                self._request(obj, dependency.name, dependency.kind)

    def _map_interpreter(self) -> None:
        interp = self.closure.interpreter
        if not interp:
            return
        candidate = self.resolver._probe(interp)
        if candidate is None or candidate.info is None:
            reason = "interpreter not found" if candidate is None else candidate.error
            self.closure.missing.append(Missing(interp, self.main.path, reason))
            return
        obj = _Object(interp, candidate.info, None, os.path.dirname(interp))
        self.interpreter = obj
        self.by_id[candidate.file_id] = obj
        self.by_name[interp] = obj
        self._name(obj, candidate.info)

    def _name(self, obj: _Object, info: ElfInfo | None) -> None:
        # musl matches only the names objects were requested by; glibc also SONAMEs.
        if info is not None and info.soname and self.rules.kind == "glibc":
            self.by_name.setdefault(info.soname, obj)

    def _request(self, requester: _Object, raw_name: str, kind: str) -> None:
        name = raw_name
        if "$" in name:
            expanded = self._expand(name, requester)
            if expanded is None:
                self._missing(raw_name, requester, kind, "cannot substitute its tokens")
                return
            name = expanded
        if name in self.by_name or name in self.missing_names:
            return
        if self.rules.kind == "musl" and self._musl_reserved(name):
            if self.interpreter is not None:
                self.by_name[name] = self.interpreter
            return
        try:
            candidate, via = self._find(name, requester)
        except _LoadError as err:
            self._missing(raw_name, requester, kind, err.reason)
            return
        if candidate is None:
            self._missing(raw_name, requester, kind, None)
            return
        existing = self.by_id.get(candidate.file_id)
        if existing is not None:
            self.by_name[name] = existing
            return
        assert candidate.info is not None
        origin = self.resolver._origin_of(candidate.path)
        obj = _Object(candidate.path, candidate.info, requester, origin)
        self.by_name[name] = obj
        self.by_name.setdefault(candidate.path, obj)
        self.by_id[candidate.file_id] = obj
        self._name(obj, candidate.info)
        self.queue.append(obj)
        via = "dlopen" if kind == "dlopen" else via
        self.closure.libraries.append(Library(raw_name, candidate.path, requester.path, via))

    def _missing(self, name: str, requester: _Object, kind: str, reason: str | None) -> None:
        # ld.so ignores an auxiliary filtee it cannot find.
        if kind == "auxiliary" and reason is None:
            return
        if kind == "dlopen":
            self.closure.dlopen_missing.append(Missing(name, requester.path, reason))
            return
        if kind == "preload":
            # rtld.c: "object ... cannot be preloaded ...: ignored"; a later
            # DT_NEEDED of the same name is still searched and may be missing.
            self.closure.preload_missing.append(Missing(name, PRELOAD_PATH, reason))
            return
        if name not in self.missing_names:
            self.missing_names.add(name)
            self.closure.missing.append(Missing(name, requester.path, reason))

    @staticmethod
    def _musl_reserved(name: str) -> bool:
        return name.startswith("lib") and name[3:].startswith(_MUSL_RESERVED)

    # -- searching -----------------------------------------------------------------------

    def _find(self, name: str, requester: _Object) -> tuple[_Candidate | None, str]:
        """The file the loader opens for ``name`` and which step of its search found it."""
        if "/" in name:
            candidate = self.resolver._probe(name)
            if candidate is None or not self._acceptable(candidate):
                return None, "path"
            return candidate, "path"
        steps = (
            self._musl_steps(requester)
            if self.rules.kind == "musl"
            else self._glibc_steps(requester)
        )
        for via, directories, subdirs in steps:
            if via == "cache":
                found = self._search_cache(name, bool(requester.info.flags_1 & DF_1_NODEFLIB))
            else:
                found = self._search_dirs(name, directories, subdirs)
            if found is not None:
                return found, via
        return None, "not found"

    def _glibc_steps(self, requester: _Object) -> Iterator[tuple[str, Iterable[str], Subdirs]]:
        """dl-load.c ``_dl_map_object``: RPATH chain, LD_LIBRARY_PATH, RUNPATH, cache, defaults."""
        info = requester.info
        assert info is not None
        subdirs = self.rules.subdirs
        if info.runpath is None:
            obj: _Object | None = requester
            while obj is not None:
                # An object with both tags behaves as if it had only DT_RUNPATH.
                if obj.info is not None and obj.info.rpath and obj.info.runpath is None:
                    yield "rpath", self._path_list(obj.info.rpath, obj), subdirs
                obj = obj.loader
        if self.resolver.library_path:
            library_path = self._path_list(self.resolver.library_path, self.main, separators=":;")
            yield "library-path", library_path, subdirs
        if info.runpath is not None:
            yield "runpath", self._path_list(info.runpath, requester), subdirs
        yield "cache", (), subdirs
        if not info.flags_1 & DF_1_NODEFLIB:
            yield "default", self.rules.default_dirs, subdirs

    def _musl_steps(self, requester: _Object) -> Iterator[tuple[str, Iterable[str], Subdirs]]:
        """musl ``load_library``: LD_LIBRARY_PATH, every loader's RPATH/RUNPATH, system path."""
        if self.resolver.library_path:
            yield "library-path", _split(self.resolver.library_path, ":\n"), ()
        obj: _Object | None = requester
        while obj is not None:
            assert obj.info is not None
            search_path = obj.info.runpath if obj.info.runpath is not None else obj.info.rpath
            if search_path:
                via = "runpath" if obj.info.runpath is not None else "rpath"
                yield via, self._path_list(search_path, obj, separators=":\n", drop_empty=True), ()
            obj = obj.loader
        yield "default", self.rules.default_dirs, ()

    def _search_cache(self, name: str, nodeflib: bool) -> _Candidate | None:
        cache = self.resolver._ld_cache()
        defaults = self.rules.default_dirs
        if cache is not None:
            path = cache.lookup(name, self.rules.cache_flags, self.rules.hwcaps_priority)
            if path is None:
                return None
            if nodeflib and any(path.startswith(d.rstrip("/") + "/") for d in defaults):
                return None
            candidate = self.resolver._probe(path)
            if candidate is not None and self._acceptable(candidate):
                return candidate
            return None
        # No cache in this root: read it as the cache ldconfig would build from ld.so.conf.
        dirs = [d for d in self.resolver._ld_conf_dirs() if not (nodeflib and d in defaults)]
        return self._search_dirs(name, dirs, self.rules.subdirs[: len(self.rules.hwcaps_levels)])

    def _search_dirs(
        self, name: str, directories: Iterable[str], subdirs: Subdirs
    ) -> _Candidate | None:
        """The first acceptable ``DIR/SUBDIR/name``; hwcaps subdirectories come before DIR."""
        for directory in directories:
            for sub in subdirs:
                found = self._try(f"{directory}/{sub}", name)
                if found is not None:
                    return found
            found = self._try(directory, name)
            if found is not None:
                return found
        return None

    def _try(self, directory: str, name: str) -> _Candidate | None:
        if not self.resolver._directory_exists(directory):
            return None
        candidate = self.resolver._probe(f"{directory}/{name}")
        if candidate is None:
            return None
        if self.rules.kind == "musl":
            # musl takes the first file that opens and fails if it cannot map it.
            if candidate.info is None:
                raise _LoadError(candidate.path, candidate.error or "cannot load")
            return candidate
        return candidate if self._acceptable(candidate) else None

    def _acceptable(self, candidate: _Candidate) -> bool:
        """glibc ``open_verify``: skip another class or machine; refuse what it cannot load."""
        info = candidate.info
        if info is None:
            # ld.so's order: another class is skipped; then byte order and OS ABI are
            # fatal; then another machine is skipped, before anything else is read.
            identity = candidate.identity
            main_info = self.main.info
            if identity is not None and main_info is not None:
                elf_class, data, osabi, machine = identity
                if elf_class != self.rules.elf_class:
                    return False
                if (
                    data == main_info.data
                    and osabi in (ELFOSABI_SYSV, ELFOSABI_GNU)
                    and machine != self.rules.machine
                ):
                    return False
            raise _LoadError(candidate.path, candidate.error or "invalid ELF header")
        if info.elf_class != self.rules.elf_class:
            return False
        main = self.main.info
        assert main is not None
        if info.data != main.data:
            raise _LoadError(candidate.path, "ELF file data encoding does not match")
        if info.osabi not in (ELFOSABI_SYSV, ELFOSABI_GNU):
            raise _LoadError(candidate.path, "ELF file OS ABI invalid")
        if info.abiversion and not (info.osabi == ELFOSABI_GNU and info.abiversion < _GNU_ABI_MAX):
            raise _LoadError(candidate.path, "ELF file ABI version invalid")
        if not info.ident_padding_zero:
            raise _LoadError(candidate.path, "nonzero padding in e_ident")
        if info.machine != self.rules.machine:
            return False
        if info.elf_type not in (ET_DYN, ET_EXEC):
            raise _LoadError(candidate.path, "only ET_DYN and ET_EXEC can be loaded")
        return True

    # -- path lists and tokens ---------------------------------------------------------

    def _path_list(
        self, value: str, obj: _Object, separators: str = ":", drop_empty: bool = False
    ) -> Iterator[str]:
        """Directories of an RPATH/RUNPATH/LD_LIBRARY_PATH string, tokens expanded.

        An element with a token that cannot be substituted is dropped; an empty
        one means the working directory (glibc), or nothing (musl).
        """
        for element in _split(value, separators, keep_empty=not drop_empty):
            expanded = self._expand(element, obj) if "$" in element else element
            if expanded is None:
                continue
            if not expanded:
                expanded = "."
            yield expanded.rstrip("/") or "/"

    def _expand(self, text: str, obj: _Object) -> str | None:
        """Substitute ``$ORIGIN``, ``$LIB``, ``$PLATFORM`` (bare or in braces) like dl-load.c."""
        tokens = {"ORIGIN": obj.origin}
        if self.rules.kind == "glibc":
            tokens["LIB"] = self.rules.lib_token
            tokens["PLATFORM"] = self.rules.platform
        out: list[str] = []
        index = 0
        while True:
            dollar = text.find("$", index)
            if dollar < 0:
                out.append(text[index:])
                return "".join(out)
            out.append(text[index:dollar])
            token, length = _match_token(text, dollar + 1, tokens)
            if token is None:
                out.append("$")
                index = dollar + 1
                continue
            value = tokens[token]
            if value is None:
                return None
            out.append(value)
            index = dollar + 1 + length


def _match_token(text: str, start: int, tokens: dict[str, str | None]) -> tuple[str | None, int]:
    curly = text.startswith("{", start)
    begin = start + 1 if curly else start
    for token in tokens:
        if not text.startswith(token, begin):
            continue
        end = begin + len(token)
        if curly:
            if text.startswith("}", end):
                return token, len(token) + 2
        elif end >= len(text) or not (text[end].isalnum() or text[end] == "_"):
            return token, len(token)
    return None, 0


def _split(value: str, separators: str, keep_empty: bool = False) -> list[str]:
    parts = [value]
    for separator in separators:
        parts = [piece for part in parts for piece in part.split(separator)]
    return parts if keep_empty else [part for part in parts if part]


class _NotLoadable(InputError):
    """An ELF file that is no program or library (ET_REL, ET_CORE)."""


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "an unknown file type"


def _describe_non_elf(host: str) -> str | None:
    """A better line than "not an ELF file" for the common cases."""
    try:
        with os.fdopen(open_regular(host), "rb") as stream:
            head = stream.read(256)
    except OSError:
        return None
    if not head:
        return "empty file, not an ELF file"
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        return f"a script for {interpreter!r}, not an ELF file"
    return None
