"""Reading strace's log: every path a successful system call used, and what ran.

strace writes one call a line (``-f``: with the PID), splitting calls that
block into ``<unfinished ...>`` and ``<... resumed>`` halves; ``-y`` decorates
file descriptors with the paths they name. The parser joins the halves, keeps
the path arguments of the calls that succeeded, resolves relative paths
against each process's working directory, and leaves out kernel file systems
and the tracer's own mounts.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from scratchpack.trace.tracer import OUTPUT_MOUNT, TRACER_MOUNT

# Paths a trace never reports: kernel file systems and the tracer's own mounts.
EXCLUDED_PREFIXES = ("/proc", "/sys", "/dev", TRACER_MOUNT, OUTPUT_MOUNT)


# Where the path arguments are, per system call: (dirfd index or None, path index, role).
# Roles: "use" (the path must be there), "open" ("create" when O_CREAT/O_TMPFILE),
# "create" (the path may be new: its directory must be there), "exec", "cwd".
_PATH_ARGS: dict[str, tuple[tuple[int | None, int, str], ...]] = {
    "open": ((None, 0, "open"),),
    "openat": ((0, 1, "open"),),
    "openat2": ((0, 1, "open"),),
    "creat": ((None, 0, "create"),),
    "execve": ((None, 0, "exec"),),
    "execveat": ((0, 1, "exec"),),
    "chdir": ((None, 0, "cwd"),),
    "mkdir": ((None, 0, "create"),),
    "mkdirat": ((0, 1, "create"),),
    "mknod": ((None, 0, "create"),),
    "mknodat": ((0, 1, "create"),),
    "rename": ((None, 0, "use"), (None, 1, "create")),
    "renameat": ((0, 1, "use"), (2, 3, "create")),
    "renameat2": ((0, 1, "use"), (2, 3, "create")),
    "link": ((None, 0, "use"), (None, 1, "create")),
    "linkat": ((0, 1, "use"), (2, 3, "create")),
    "symlink": ((None, 1, "create"),),
    "symlinkat": ((1, 2, "create"),),
    "inotify_add_watch": ((None, 1, "use"),),
    "fanotify_mark": ((3, 4, "use"),),
}
_PLAIN_PATH = (
    "stat", "lstat", "stat64", "lstat64", "oldstat", "oldlstat", "statfs", "statfs64", "access",
    "readlink", "truncate", "truncate64", "chmod", "chown", "chown32", "lchown", "lchown32",
    "utime", "utimes", "getxattr", "lgetxattr", "setxattr", "lsetxattr", "listxattr",
    "llistxattr", "removexattr", "lremovexattr", "unlink", "rmdir", "chroot", "uselib", "acct",
    "swapon", "swapoff",
)  # fmt: skip
_AT_PATH = (
    "newfstatat", "fstatat64", "statx", "faccessat", "faccessat2", "readlinkat", "fchmodat",
    "fchmodat2", "fchownat", "futimesat", "utimensat", "unlinkat", "name_to_handle_at",
    "open_tree",
)  # fmt: skip
_PATH_ARGS.update({name: ((None, 0, "use"),) for name in _PLAIN_PATH})
_PATH_ARGS.update({name: ((0, 1, "use"),) for name in _AT_PATH})
_FORKS = ("clone", "clone3", "fork", "vfork")
_RELEVANT = frozenset((*_PATH_ARGS, *_FORKS, "fchdir"))

_PREFIX = re.compile(r"^\s*(?:\[pid\s+(\d+)\]\s*|(\d+)\s+)?(.*?)\s*$", re.DOTALL)
_UNFINISHED = re.compile(r"^(?P<head>.*?)\s*<unfinished \.\.\.>$", re.DOTALL)
_RESUMED = re.compile(r"^<\.\.\.\s+(?P<name>[\w]+)\s+resumed>\s?(?P<tail>.*)$", re.DOTALL)
_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\(")
_FD = re.compile(r"^(AT_FDCWD|-?\d+)(?:<(.*)>)?$", re.DOTALL)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"v": b"\v", b"f": b"\f"}


@dataclass
class ParsedLog:
    paths: set[str] = field(default_factory=set)
    executed: set[str] = field(default_factory=set)
    started: bool = False  # the traced program's first execve is there


@dataclass
class _Event:
    pid: int | None
    name: str
    args: list[str]
    ret: str


def parse_strace(text: str, workdir: str = "/") -> frozenset[str]:
    """Every absolute path a successful system call of the trace used.

    ``text`` is strace output with ``-f``: ``-o FILE`` lines (``PID call(...) =
    ret``) or stderr lines (``[pid N] call(...)``); ``<unfinished ...>`` /
    ``<... call resumed>`` pairs are joined, failed calls (``= -1 ...``) skipped.
    Only path arguments count (both names of rename/link, the new name of a
    symlink; paths a call may create bring their directory). Relative paths
    resolve against the caller's working directory: ``AT_FDCWD</dir>`` and
    ``3</dir>`` (``-y``) when strace decorated them, else the directory tracked
    per process (``chdir``, ``fchdir``, inherited over fork, shared by
    ``CLONE_FS`` threads; ``workdir`` at the start). A path relative to an
    undecorated directory descriptor is skipped. Paths are cleaned of ``//``
    and ``.`` but keep ``..`` (a symlink may precede it); ``/``, ``/proc``,
    ``/sys``, ``/dev`` and the tracer's mounts are left out.
    """
    return frozenset(parse_log(text, workdir).paths)


def parse_log(text: str, workdir: str = "/") -> ParsedLog:
    events = list(_events(text))
    parents: dict[int | None, tuple[int | None, bool]] = {}
    for event in events:
        if event.name in _FORKS and _succeeded(event.ret):
            child = _leading_int(event.ret)
            if child is not None and child not in parents:
                parents[child] = (event.pid, "CLONE_FS" in ",".join(event.args))

    parsed = ParsedLog()
    cwd_of_group: dict[int, str] = {}
    group_of: dict[int | None, int] = {}
    root_group: list[int] = []
    start = clean_path(workdir if workdir.startswith("/") else "/" + workdir)

    def group(pid: int | None) -> int:
        known = group_of.get(pid)
        if known is not None:
            return known
        parent = parents.get(pid)
        if parent is not None and parent[0] != pid and parent[0] in group_of:
            parent_group = group_of[parent[0]]
            if parent[1]:  # CLONE_FS: one working directory for both
                group_of[pid] = parent_group
                return parent_group
            inherited = cwd_of_group[parent_group]
        else:
            inherited = cwd_of_group[root_group[0]] if root_group else start
        new = len(cwd_of_group)
        cwd_of_group[new] = inherited
        group_of[pid] = new
        if not root_group:
            root_group.append(new)
        return new

    def keep(path: str) -> None:
        if not excluded(path):
            parsed.paths.add(path)

    for event in events:
        if not _succeeded(event.ret):
            continue
        number = group(event.pid)
        if event.name == "fchdir" and event.args:
            directory = _fd_path(event.args[0])
            if directory is not None:
                cwd_of_group[number] = directory
            continue
        specs = _PATH_ARGS.get(event.name)
        if specs is None:
            continue
        for dirfd_index, path_index, role in specs:
            if path_index >= len(event.args):
                continue
            raw = _string(event.args[path_index])
            if not raw:
                continue
            base = cwd_of_group[number]
            if dirfd_index is not None and dirfd_index < len(event.args):
                fd = _FD.match(event.args[dirfd_index])
                if fd is None:
                    continue
                decorated = _unescape(fd.group(2)) if fd.group(2) is not None else None
                if decorated is not None and not decorated.startswith("/"):
                    decorated = None
                if fd.group(1) == "AT_FDCWD":
                    if decorated is not None:
                        base = clean_path(decorated)
                        cwd_of_group[number] = base  # strace read it from /proc: the truth
                elif decorated is not None:
                    base = clean_path(decorated)
                elif not raw.startswith("/"):
                    continue  # relative to a directory descriptor we cannot name
            path = clean_path(raw if raw.startswith("/") else base + "/" + raw)
            if role == "open":
                flags = event.args[path_index + 1] if path_index + 1 < len(event.args) else ""
                role = "create" if "O_CREAT" in flags or "O_TMPFILE" in flags else "use"
            keep(path)
            if role == "create":
                keep(posixpath.dirname(path))
            elif role == "exec":
                if not excluded(path):
                    parsed.executed.add(path)
                parsed.started = True
            elif role == "cwd":
                cwd_of_group[number] = path
    return parsed


def _events(text: str) -> Iterator[_Event]:
    """Complete calls in log order, unfinished/resumed halves joined."""
    pending: dict[int | None, tuple[str, str]] = {}
    for line in text.splitlines():
        match = _PREFIX.match(line)
        if match is None:
            continue
        pid_text = match.group(1) or match.group(2)
        pid = int(pid_text) if pid_text else None
        body = match.group(3)
        if not body or body.startswith(("---", "+++", "strace:")):
            continue
        call_name = _CALL.match(body)
        if call_name is not None and call_name.group(1) not in _RELEVANT:
            continue  # wait4, exit, ...: neither a path nor a process of interest
        unfinished = _UNFINISHED.match(body)
        if unfinished is not None:
            head = unfinished.group("head")
            name = _CALL.match(head)
            if name is not None:
                pending[pid] = (name.group(1), head)
            continue
        resumed = _RESUMED.match(body)
        if resumed is not None:
            name = resumed.group("name")
            if pending.get(pid, ("",))[0] != name:
                # execve by a thread resumes under the leader's pid: take any pending one.
                pid = next((other for other, (n, _h) in pending.items() if n == name), -1)
            if pid not in pending:
                continue
            _name, head = pending.pop(pid)
            body = head + resumed.group("tail")
        call = _split_call(body)
        if call is not None:
            yield _Event(pid, *call)


def _split_call(text: str) -> tuple[str, list[str], str] | None:
    """``name(arg, arg) = ret`` into its parts, respecting strings, brackets and ``<...>``."""
    match = _CALL.match(text)
    if match is None:
        return None
    args: list[str] = []
    depth = 0
    index = start = match.end()
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index = _skip_string(text, index)
            continue
        if char == "<" and index > 0 and (text[index - 1].isalnum() or text[index - 1] == "_"):
            index = _skip_decoration(text, index)
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                if char != ")":
                    return None
                args.append(text[start:index].strip())
                rest = text[index + 1 :]
                returned = re.match(r"\s*=\s*(.*)$", rest, re.DOTALL)
                if returned is None:
                    return None
                if args == [""]:
                    args = []
                return match.group(1), args, returned.group(1).strip()
            depth -= 1
        elif char == "," and depth == 0:
            args.append(text[start:index].strip())
            start = index + 1
        index += 1
    return None


def _skip_string(text: str, index: int) -> int:
    index += 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == '"':
            return index + 1
        else:
            index += 1
    return index


def _skip_decoration(text: str, index: int) -> int:
    """Past the ``>`` that closes a ``-y`` decoration (``->`` in socket names is no end)."""
    index += 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == ">" and text[index - 1] != "-":
            return index + 1
        index += 1
    return index


def _string(arg: str) -> str | None:
    """A complete quoted string argument, unescaped; None for NULL, pointers, truncated text."""
    if len(arg) < 2 or arg[0] != '"' or arg[-1] != '"' or _skip_string(arg, 0) != len(arg):
        return None
    return _unescape(arg[1:-1])


def _unescape(text: str) -> str:
    """strace's C escapes (``\\"``, ``\\n``, ``\\342``, ``\\x41``) back to the file name."""
    if "\\" not in text:
        return text

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code[:1] == b"x" and len(code) > 1:
            return bytes([int(code[1:], 16)])
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return _SIMPLE_ESCAPES.get(code, code)

    raw = _ESCAPE.sub(one, text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _fd_path(arg: str) -> str | None:
    match = _FD.match(arg)
    if match is None or match.group(2) is None:
        return None
    path = _unescape(match.group(2))
    return clean_path(path) if path.startswith("/") else None


def _succeeded(ret: str) -> bool:
    return bool(ret) and not ret.startswith(("-", "?"))


def _leading_int(ret: str) -> int | None:
    match = re.match(r"(\d+)", ret)
    return int(match.group(1)) if match else None


def clean_path(path: str) -> str:
    """Absolute ``path`` without empty and ``.`` components (``..`` stays: links may precede it)."""
    parts = [part for part in path.split("/") if part and part != "."]
    return "/" + "/".join(parts)


def excluded(path: str) -> bool:
    normal = posixpath.normpath(path)
    if normal in ("/", "//"):
        return True
    return any(normal == prefix or normal.startswith(prefix + "/") for prefix in EXCLUDED_PREFIXES)
