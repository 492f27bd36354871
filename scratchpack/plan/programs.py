"""What runs: a program found through PATH, and for a script, the interpreters it names.

``build`` takes programs as paths; ``shrink`` finds an image's program from its
Entrypoint and Cmd through the image's own PATH. Both then need the same
thing: the ELF files that really run (a script's ``#!`` interpreter, the
program ``#!/usr/bin/env NAME`` runs) and a warning for interpreters that need
a library tree the closure does not show (Python's standard library, ...).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import warn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Interpreters whose programs also need a library tree (stdlib, modules).
TREE_INTERPRETERS = re.compile(r"^(python|perl|ruby|node|nodejs|php|lua|tclsh|Rscript|java)")
SHELLS = frozenset({"sh", "bash", "dash", "ash", "busybox"})
SHELL = "/bin/sh"  # where --shell busybox puts its busybox
_SHEBANG_LIMIT = 256
_SCRIPT_LIMIT = 1 << 20  # a shell script's text is scanned for commands up to this


@dataclass(frozen=True)
class Program:
    """A program and the files that run it."""

    path: str  # in-root path of the program itself
    runs: tuple[str, ...]  # the ELF files to resolve: itself, or its interpreters
    name: str  # what runs it, by name: "curl", or "python3" for a Python script
    script: str | None = None  # the text of a script (for a shell's command scan)

    @property
    def needs_tree(self) -> bool:
        """Whether its interpreter needs a library tree the closure does not show."""
        return bool(TREE_INTERPRETERS.match(self.name))


def which(
    root: RootFS, name: str, search_path: str, workdir: str = "/", executable: bool = True
) -> str | None:
    """The in-root path PATH finds for ``name``; a name with a ``/`` is taken as a path."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.normpath(f"{workdir}/{name}")
        return path if root.exists(path) else None
    for directory in search_path.split(":"):
        candidate = f"{directory.rstrip('/')}/{name}"
        host = root.host_path(candidate)
        if host is None or not os.path.isfile(host):
            continue
        if not executable or os.access(host, os.X_OK):
            return candidate
    return None


def program(
    root: RootFS, path: str, search_path: str, workdir: str = "/", shell: str | None = None
) -> Program:
    """The program at in-root ``path``: itself if not a script, else what its ``#!`` runs.

    ``shell`` is the static busybox ``--shell busybox`` puts at ``/bin/sh``:
    a ``#!/bin/sh`` script then runs nothing of the root (its ``runs`` are
    empty), since that busybox, not the root's shell, is what the image holds.
    """
    head = root.read_bytes(path, _SHEBANG_LIMIT)
    if head is None:
        where = f" inside {root.top}" if not root.is_host else ""
        raise InputError(f"{path}: no such file{where}")
    if not head.startswith(b"#!"):
        return Program(path, (path,), os.path.basename(path))
    text = (root.read_bytes(path, _SCRIPT_LIMIT) or head).decode("utf-8", "surrogateescape")
    words = text[2:_SHEBANG_LIMIT].split("\n", 1)[0].split()
    if not words:
        raise InputError(f"{path}: a script with an empty #! line")
    interpreter, arguments = words[0], words[1:]
    if shell and interpreter == SHELL:
        return Program(path, (), "sh", text)
    found = which(root, interpreter, search_path, workdir, executable=False)
    if found is None:
        raise InputError(_no_interpreter(path, interpreter, root, shell))
    runs = [found]
    name = os.path.basename(interpreter)
    if name == "env":
        target = next((w for w in arguments if not w.startswith("-") and "=" not in w), None)
        if target is not None:
            located = which(root, target, search_path, workdir)
            if located is None:
                raise InputError(
                    f"{path}: its interpreter {target} is not on PATH ({search_path}) in {root.top}"
                )
            runs.append(located)
            name = os.path.basename(target)
    return Program(path, tuple(runs), name, text)


def _no_interpreter(path: str, interpreter: str, root: RootFS, shell: str | None) -> str:
    """Why a script cannot run, and the way to the shell it names when there is one."""
    message = f"{path}: its interpreter {interpreter} is not in {root.top}"
    name = os.path.basename(interpreter)
    if interpreter == SHELL:
        return f"{message}; add --shell busybox (a static busybox at {SHELL})"
    if name in SHELLS and shell:
        return (
            f"{message}; --shell busybox gives {SHELL} only, and busybox's sh is not {name}: "
            f"add the package that has {interpreter}, or make the script #!{SHELL}"
        )
    return message


def shell_commands(
    root: RootFS, text: str, search_path: str, workdir: str, where: str, quiet: bool = False
) -> list[str]:
    """Commands a shell snippet or script names, found by a static scan (best effort).

    Variables and functions defeat it: a warning says so, and that ``--trace``
    sees what really runs.
    """
    found: list[str] = []
    unresolved: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        for command in re.split(r"&&|\|\||[;|]", line):
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            while words and (words[0] in ("exec", "then", "else", "do", "!", "command")):
                words = words[1:]
            if not words or "=" in words[0] or not re.match(r"^[\w./+-]+$", words[0]):
                continue
            path = which(root, words[0], search_path, workdir)
            if path is not None:
                found.append(path)
            elif words[0] not in _SHELL_WORDS:
                unresolved.append(words[0])
    if (unresolved or "$" in text) and not quiet:
        warn(
            f"{where}: a shell script; its commands were found by a static scan, which cannot "
            "follow variables or functions — use --trace to see what really runs"
        )
    return found


_SHELL_WORDS = {
    "if", "fi", "for", "while", "until", "case", "esac", "done", "in", "set", "export", "local",
    "echo", "printf", "test", "[", "[[", "]]", "cd", "shift", "return", "exit", "read", "true",
    "false", "trap", "unset", "eval", "wait", ":", ".", "source", "function", "elif", "{", "}",
}  # fmt: skip
