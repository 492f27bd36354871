"""What an interpreter cannot start without, beyond the libraries its loader maps.

A closure is what ELF headers name. Interpreters also read files at start-up
that no header names, and an image without them dies before the user's code
runs. One small rule per runtime finds them the way the loader rules find
libraries: from the binaries themselves (their names, their read-only data)
and the root, never by running anything, and never from a list per program.

- **Python X.Y**: ``pythonX.Y`` imports ``encodings`` from its standard
  library, ``PREFIX/lib/pythonX.Y`` (PREFIX: the parent of the directory the
  real file is in), before it runs a line. Kept without the regression tests
  (``test/``), the build files of ``-dev`` (``config-X.Y-*``), the user's
  ``site-packages``/``dist-packages`` and ``__pycache__``: the image's files
  carry a fixed mtime, so every timestamp ``.pyc`` made on the host is stale
  there and would only be recompiled. In a package root this is what
  ``libpythonX.Y-minimal`` and ``libpythonX.Y-stdlib`` ship. A program that links
  ``libpythonX.Y.so`` embeds the same interpreter (gdb: "Python not initialized"
  without it) and gets the same library, found beside the library's directory
  (``/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0`` -> ``/usr/lib/python3.11``).
- **Node.js**: Debian's ``libnode`` reads its "externalized builtins" (acorn,
  cjs-module-lexer, undici) from ``/usr/share/nodejs`` at start and aborts
  without them; their paths are compiled into it. A self-contained Node names
  none and needs nothing more.
"""

from __future__ import annotations

import fnmatch
import mmap
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from scratchpack.ld.rootfs import RootFS


class Runtime(str, Enum):
    PYTHON = "python"
    NODE = "node"

    @classmethod
    def of(cls, name: str) -> Runtime | None:
        """The runtime a program named ``name`` (``python3``, ``nodejs``) belongs to."""
        if name.startswith("python"):
            return cls.PYTHON
        if name in ("node", "nodejs"):
            return cls.NODE
        return None


@dataclass(frozen=True)
class RuntimeFiles:
    """Files one runtime reads at start, in one root; planned unless the user has them."""

    runtime: Runtime
    what: str  # for the note: "Python 3.11's standard library"
    top: str  # the directory they are in: what a user would --include instead
    paths: tuple[str, ...]  # in-root files, or directory trees (walked with ``skip``)
    skip: tuple[str, ...] = ()  # fnmatch patterns on paths relative to ``top``
    missing: tuple[str, ...] = ()  # named but not in the root (the runtime will fail)

    def skipped(self, path: str) -> bool:
        relative = posixpath.relpath(path, self.top)
        return any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.skip)

    def note(self, count: int, size: int) -> str:
        """What a build says it added: ``kept Python 3.11's standard library (…, 30.1 MB)``."""
        noun = "file" if count == 1 else "files"
        drop = "; --exclude to drop parts" if self.skip else ""
        return f"kept {self.what} ({self.top}, {count} {noun}, {size / 1e6:.1f} MB){drop}"


PYTHON_FILE = re.compile(r"^python(\d+)\.(\d+)$")
# Left out of a standard library: tests, -dev build files, the user's packages, bytecode.
PYTHON_SKIP = (
    "test", "site-packages", "dist-packages", "config-*", "__pycache__", "*/__pycache__",
)  # fmt: skip
LIBPYTHON_FILE = re.compile(r"^libpython(\d+)\.(\d+)d?\.so(\.[0-9]+)*$")
NODE_FILE = re.compile(r"^(node|nodejs|libnode\.so(\.[0-9]+)*)$")
NODE_BUILTINS = "/usr/share/nodejs"
_NODE_PATH = re.compile(rb"/usr/share/nodejs(?:/[A-Za-z0-9@._+-]{1,255}){1,16}")
_SCAN_LIMIT = 1 << 30  # bytes of one binary scanned for builtin paths
_MAX_NAMED = 256  # builtin paths taken from one binary


def python_stdlib(root: RootFS, program: str) -> RuntimeFiles | None:
    """``pythonX.Y`` (or a link to it, as ``python3``): its standard library, if in the root."""
    real = root.realpath(program)
    match = PYTHON_FILE.match(posixpath.basename(real or ""))
    if real is None or match is None:
        return None
    version = f"{match[1]}.{match[2]}"
    prefix = posixpath.dirname(posixpath.dirname(real))
    top = posixpath.join(prefix, "lib", f"python{version}")
    if not root.is_dir(top):
        return None
    return RuntimeFiles(
        Runtime.PYTHON, f"Python {version}'s standard library", top, (top,), PYTHON_SKIP
    )


def embedded_python_stdlib(root: RootFS, library: str) -> RuntimeFiles | None:
    """``libpythonX.Y.so``: the standard library of the interpreter it embeds, if in the root.

    Looked for as ``pythonX.Y`` in the library's directory, then in its parent
    (a multiarch directory's ``lib``): where ``pythonX.Y`` itself finds it.
    """
    real = root.realpath(library)
    match = LIBPYTHON_FILE.match(posixpath.basename(real or ""))
    if real is None or match is None:
        return None
    version = f"{match[1]}.{match[2]}"
    directory = posixpath.dirname(real)
    for candidate in (directory, posixpath.dirname(directory)):
        top = posixpath.join(candidate, f"python{version}")
        if root.is_dir(top):
            return RuntimeFiles(
                Runtime.PYTHON, f"Python {version}'s standard library", top, (top,), PYTHON_SKIP
            )
    return None


def node_builtins(root: RootFS, binaries: Iterable[str]) -> RuntimeFiles | None:
    """The files under /usr/share/nodejs that a node or libnode among ``binaries`` names."""
    named: dict[str, None] = {}
    for binary in binaries:
        if NODE_FILE.match(posixpath.basename(binary)):
            host = root.host_path(binary)
            named.update(dict.fromkeys(_named_builtins(host) if host else ()))
    if not named:
        return None
    present = tuple(path for path in named if root.trace(path) is not None)
    missing = tuple(path for path in named if path not in present)
    return RuntimeFiles(
        Runtime.NODE, "the builtins Node.js loads at start", NODE_BUILTINS, present, (), missing
    )


def _named_builtins(host: str) -> list[str]:
    """Paths under /usr/share/nodejs in an ELF file's bytes, in order, each once.

    A bounded scan of the whole file (mapped, not read): the paths sit in
    ``.rodata`` and again in the embedded build configuration.
    """
    try:
        with open(host, "rb") as stream:
            if stream.read(4) != b"\x7fELF":
                return []
            size = os.fstat(stream.fileno()).st_size
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found: dict[str, None] = {}
                for match in _NODE_PATH.finditer(data, 0, min(size, _SCAN_LIMIT)):
                    path = posixpath.normpath(match[0].decode("ascii"))
                    if path.startswith(NODE_BUILTINS + "/"):  # no way out through ".."
                        found[path] = None
                    if len(found) >= _MAX_NAMED:
                        break
                return list(found)
    except (OSError, ValueError):
        return []


def runtime_files(
    root: RootFS, interpreters: Iterable[str], loaded: Iterable[str]
) -> list[RuntimeFiles]:
    """What the runtimes among ``interpreters`` (programs' ELF files) and ``loaded`` (every
    file of the closures) read at start, each runtime once."""
    found: list[RuntimeFiles] = []
    loaded = list(dict.fromkeys(loaded))
    stdlibs = [python_stdlib(root, interpreter) for interpreter in dict.fromkeys(interpreters)]
    stdlibs += [
        embedded_python_stdlib(root, path)
        for path in loaded
        if LIBPYTHON_FILE.match(posixpath.basename(path))
    ]
    for stdlib in stdlibs:
        if stdlib is not None and all(stdlib.top != seen.top for seen in found):
            found.append(stdlib)
    node = node_builtins(root, loaded)
    if node is not None:
        found.append(node)
    return found


def runtime_paths(root: RootFS, files: RuntimeFiles) -> Iterator[str]:
    """The in-root paths to plan: each file, and each tree's files and links, less ``skip``.

    A link in a tree is a path of its own (planning it brings its target); a
    link to a directory is not walked into.
    """
    for path in files.paths:
        top = root.host_path(path)
        if top is None or not os.path.isdir(top):
            yield path
            continue
        for current, dirs, names in root.walk(path):
            relative = os.path.relpath(current, top)
            directory = path if relative == "." else f"{path}/{relative}"
            for name in list(dirs):
                inside = f"{directory}/{name}"
                if files.skipped(inside) or os.path.islink(os.path.join(current, name)):
                    dirs.remove(name)
                    if not files.skipped(inside):
                        yield inside
            dirs.sort()
            for name in sorted(names):
                inside = f"{directory}/{name}"
                if not files.skipped(inside) and root.trace(inside) is not None:
                    yield inside
