"""Reading strace's log: every path a successful system call used, and what ran.

strace writes one call a line (``-f``: with the PID), splitting calls that
block into ``<unfinished ...>`` and ``<... resumed>`` halves; ``-y`` decorates
file descriptors with the paths they name. The parser joins the halves, keeps
the path arguments of the calls that succeeded, resolves relative paths
against each process's working directory, and leaves out kernel file systems
and the tracer's own mounts.
"""

from __future__ import annotations

import codecs
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from scratchpack.trace.tracer import LOG_DIR, TRACER_MOUNT

# Paths a trace never reports: kernel file systems and the tracer's own mounts.
EXCLUDED_PREFIXES = ("/proc", "/sys", "/dev", TRACER_MOUNT, LOG_DIR)


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
# How the container's PID 1 takes signals: a handler, a signalfd/sigwait that reads them,
# or a mask that blocks them (tini, dumb-init: sigwait with a timeout fails until one comes).
_SIGNAL_CALLS = ("rt_sigaction", "rt_sigprocmask", "signalfd", "signalfd4", "rt_sigtimedwait")
_RELEVANT = frozenset((*_PATH_ARGS, *_FORKS, *_SIGNAL_CALLS, "fchdir"))
INIT_PID = 1  # strace -D leaves the traced program as its container's init

_PID = re.compile(r"\s*(?:\[pid\s+(\d+)\]\s*|(\d+)\s+)?")
_CALL = re.compile(r"([a-z_][a-z0-9_]*)\(")
_RESUMED = re.compile(r"<\.\.\.\s+([\w]+)\s+resumed>\s?")
_UNFINISHED = "<unfinished ...>"
_SPECIAL = re.compile(r'["<()\[\]{},]')
_FD = re.compile(r"^(AT_FDCWD|-?\d+)(?:<(.*)>)?$", re.DOTALL)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"v": b"\v", b"f": b"\f"}
# How many leading arguments each call needs read (the rest of a long line is never
# scanned: an execve's argv can fill kilobytes); open flags follow the path.
_WANTED = {
    name: max(
        max(d if d is not None else 0, i + (1 if role == "open" else 0)) for d, i, role in specs
    )
    + 1
    for name, specs in _PATH_ARGS.items()
}
_WANTED["fchdir"] = 1
_WANTED.update({name: 2 for name in _SIGNAL_CALLS})
_HANDLER = re.compile(r"\s*\{\s*sa_handler=(\w+)")
_SIGSET = re.compile(r"\s*(~?)\[([^\]]*)\]\s*$")  # [HUP TERM], ~[RTMIN RT_1], []
MAX_LINE = 1 << 20  # longer lines are not strace's (-s 4096) and are skipped


@dataclass
class ParsedLog:
    paths: set[str] = field(default_factory=set)
    executed: set[str] = field(default_factory=set)
    started: bool = False  # the traced program's first execve is there
    lines: int = 0
    binds: set[tuple[str, int]] = field(default_factory=set)  # (address, port) of bind()s
    # PID 1's own handlers, by signal name (SIGTERM): True for a function, False for
    # SIG_DFL or SIG_IGN. The kernel drops a signal a namespace's init has no handler
    # for, so ``docker stop`` can only wait out its grace for such a program.
    init_handlers: dict[str, bool] = field(default_factory=dict)
    init_reads_signals: bool = False  # PID 1 made a signalfd or waited in sigwait
    # PID 1's own signal mask, as strace names signals (TERM): (all but these?, names).
    # A blocked signal is kept pending, not dropped: who reads it is not always logged.
    init_blocked: tuple[bool, frozenset[str]] = (False, frozenset())

    def init_receives(self, name: str) -> bool:
        """Whether signal ``name`` sent to PID 1 may reach the program, as far as the log shows."""
        all_but, names = self.init_blocked
        blocked = (name.removeprefix("SIG") in names) != all_but
        return self.init_reads_signals or blocked or self.init_handlers.get(name, False)


# bind(3<TCP:[123]>, {sa_family=AF_INET, sin_port=htons(6379), sin_addr=inet_addr("127.0.0.1")}
# bind(3<...>, {sa_family=AF_INET6, sin6_port=htons(80), ..., inet_pton(AF_INET6, "::1", ...
_BIND = re.compile(
    r'\bbind\(.*?sin6?_port=htons\((\d+)\).*?(?:inet_addr\("([^"]*)"\)|inet_pton\(AF_INET6,\s*"([^"]*)")'
)


def bind_of(line: str) -> tuple[str, int] | None:
    """The ``(address, port)`` a successful ``bind()`` line of the log names, if it is one."""
    if "bind(" not in line:
        return None
    match = _BIND.search(line)
    if match is None or not line.rstrip().endswith("= 0"):
        return None
    return match.group(2) or match.group(3) or "", int(match.group(1))


def loopback_only(binds: Iterable[tuple[str, int]]) -> dict[int, str]:
    """Ports bound to a loopback address and to no other: port -> the address."""
    by_port: dict[int, set[str]] = {}
    for address, port in binds:
        by_port.setdefault(port, set()).add(address)
    return {
        port: sorted(addresses)[0]
        for port, addresses in by_port.items()
        if all(address.startswith("127.") or address == "::1" for address in addresses)
    }


@dataclass
class _Event:
    pid: int | None
    name: str
    args: list[str]
    ret: str


class _Processes:
    """The working directory of every process: inherited at fork, shared with CLONE_FS."""

    def __init__(self, start: str) -> None:
        self.start = start
        self.cwd: dict[int, str] = {}  # group -> directory
        self.group_of: dict[int | None, int] = {}
        self.born: dict[int, tuple[int | None, bool]] = {}  # child -> (parent, CLONE_FS)
        self.last: int | None = None  # the process of the latest event

    def group(self, pid: int | None) -> int:
        known = self.group_of.get(pid)
        if known is not None:
            return known
        parent, shared = (
            self.born.get(pid, (self.last, False)) if pid is not None else (None, False)
        )
        parent_group = self.group_of.get(parent) if parent != pid else None
        if parent_group is not None and shared:
            self.group_of[pid] = parent_group
            return parent_group
        # A child seen before its parent's clone returns starts where the process
        # that ran last is: strace logs a parent's clone when it returns.
        inherited = self.cwd[parent_group] if parent_group is not None else self._first_cwd()
        new = len(self.cwd)
        self.cwd[new] = inherited
        self.group_of[pid] = new
        return new

    def _first_cwd(self) -> str:
        return self.cwd[0] if self.cwd else self.start

    def forked(self, parent: int | None, child: int, shared: bool) -> None:
        if child in self.group_of:
            if shared:  # a thread that ran before its clone returned: one directory for both
                self.group_of[child] = self.group(parent)
            return
        self.born[child] = (parent, shared)


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
    return frozenset(parse_log(text.splitlines(), workdir).paths)


def parse_log(lines: Iterable[str], workdir: str = "/") -> ParsedLog:
    """:func:`parse_strace` over lines as they come: one pass, memory by distinct paths."""
    parsed = ParsedLog()
    processes = _Processes(clean_path(workdir if workdir.startswith("/") else "/" + workdir))
    pending: dict[int | None, tuple[str, str]] = {}  # pid -> (call name, first half)
    for line in lines:
        parsed.lines += 1
        if len(line) > MAX_LINE:
            continue
        bound = bind_of(line)
        if bound is not None:
            parsed.binds.add(bound)
            continue
        event = _event(line.rstrip("\r\n"), pending)
        if event is not None:
            _apply(event, processes, parsed)
    return parsed


def lines_of(stream: IO[bytes], chunk: int = 1 << 20) -> Iterator[str]:
    """The lines of a byte stream, decoded as they arrive (no seeking, no whole read)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    rest = ""
    while data := stream.read(chunk):
        rest += decoder.decode(data)
        *complete, rest = rest.split("\n")
        yield from complete
        if len(rest) > MAX_LINE:  # no newline for a megabyte: not a log line; drop it
            rest = ""
    rest += decoder.decode(b"", final=True)
    if rest:
        yield rest


def _event(line: str, pending: dict[int | None, tuple[str, str]]) -> _Event | None:
    """The complete call a line ends, if it ends one we care about."""
    match = _PID.match(line)
    assert match is not None  # the pattern matches the empty string
    pid_text = match.group(1) or match.group(2)
    pid = int(pid_text) if pid_text else None
    body = line[match.end() :].rstrip()
    if not body or body.startswith(("---", "+++", "strace:")):
        return None
    if body.startswith("<..."):
        resumed = _RESUMED.match(body)
        if resumed is None:
            return None
        name = resumed.group(1)
        if pending.get(pid, ("",))[0] != name:
            # execve by a thread resumes under the leader's pid: take any pending one.
            pid = next((other for other, (n, _h) in pending.items() if n == name), -1)
        if pid not in pending:
            return None
        _name, head = pending.pop(pid)
        body = head + body[resumed.end() :]
    call = _CALL.match(body)
    if call is None:
        return None
    name = call.group(1)
    if name not in _RELEVANT:
        return None  # wait4, exit, ...: neither a path nor a process of interest
    if body.endswith(_UNFINISHED):
        pending[pid] = (name, body[: -len(_UNFINISHED)].rstrip())
        return None
    ret = _returned(body)
    if ret is None:
        return None
    if name in _FORKS:
        return _Event(pid, name, [body], ret)
    args = _split_args(body, call.end(), _WANTED[name])
    return None if args is None else _Event(pid, name, args, ret)


def _returned(body: str) -> str | None:
    """What follows the last ``) = `` of a complete call (strings may hold the text too)."""
    index = body.rfind("= ")
    while index > 0:
        if body[:index].rstrip().endswith(")"):
            return body[index + 2 :].strip()
        index = body.rfind("= ", 0, index)
    return None


def _apply(event: _Event, processes: _Processes, parsed: ParsedLog) -> None:
    if not _succeeded(event.ret):
        return
    number = processes.group(event.pid)
    processes.last = event.pid
    if event.name in _FORKS:
        child = _leading_int(event.ret)
        if child is not None:
            processes.forked(event.pid, child, "CLONE_FS" in event.args[0])
        return
    if event.name in _SIGNAL_CALLS:
        if number == processes.group_of.get(INIT_PID, processes.group_of.get(None)):
            _init_signal(event, parsed)
        return
    if event.name == "fchdir" and event.args:
        directory = _fd_path(event.args[0])
        if directory is not None:
            processes.cwd[number] = directory
        return
    for dirfd_index, path_index, role in _PATH_ARGS[event.name]:
        if path_index >= len(event.args):
            continue
        raw = _string(event.args[path_index])
        if not raw:
            continue
        base = processes.cwd[number]
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
                    processes.cwd[number] = base  # strace read it from /proc: the truth
            elif decorated is not None:
                base = clean_path(decorated)
            elif not raw.startswith("/"):
                continue  # relative to a directory descriptor we cannot name
        path = clean_path(raw if raw.startswith("/") else base + "/" + raw)
        if role == "open":
            flags = event.args[path_index + 1] if path_index + 1 < len(event.args) else ""
            role = "create" if "O_CREAT" in flags or "O_TMPFILE" in flags else "use"
        _keep(parsed, path)
        if role == "create":
            _keep(parsed, posixpath.dirname(path))
        elif role == "exec":
            if not excluded(path):
                parsed.executed.add(path)
            parsed.started = True
            if event.pid in (INIT_PID, None):  # a new program: no handler of its own yet
                parsed.init_handlers.clear()
                parsed.init_reads_signals = False
        elif role == "cwd":
            processes.cwd[number] = path


def _init_signal(event: _Event, parsed: ParsedLog) -> None:
    """How a call of PID 1 (or of a thread sharing its handlers) changes what it receives."""
    if event.name == "rt_sigprocmask":
        if event.pid in (INIT_PID, None) and len(event.args) > 1:  # a mask is per thread
            parsed.init_blocked = _masked(parsed.init_blocked, event.args[0], event.args[1])
        return
    if event.name != "rt_sigaction":
        parsed.init_reads_signals = True
        return
    handler = _HANDLER.match(event.args[1]) if len(event.args) > 1 else None
    if handler is not None:  # NULL: a query, nothing changed
        parsed.init_handlers[event.args[0]] = handler.group(1) not in ("SIG_DFL", "SIG_IGN")


def _masked(mask: tuple[bool, frozenset[str]], how: str, given: str) -> tuple[bool, frozenset[str]]:
    """``mask`` after ``rt_sigprocmask(how, given)``; unchanged for a query (NULL)."""
    found = _SIGSET.match(given)
    if found is None:
        return mask
    change = (found.group(1) == "~", frozenset(found.group(2).split()))
    if how == "SIG_SETMASK":
        return change
    (all_but, names), (change_all_but, change_names) = mask, change
    if how == "SIG_BLOCK":  # union of the two sets, each maybe a complement
        if all_but and change_all_but:
            return True, names & change_names
        if all_but or change_all_but:
            return True, (names - change_names) if all_but else (change_names - names)
        return False, names | change_names
    if how == "SIG_UNBLOCK":  # mask minus the change
        if change_all_but:
            return False, (change_names - names) if all_but else (names & change_names)
        return all_but, (names | change_names) if all_but else (names - change_names)
    return mask


def _keep(parsed: ParsedLog, path: str) -> None:
    if not excluded(path):
        parsed.paths.add(path)


def _split_args(text: str, start: int, wanted: int) -> list[str] | None:
    """The first ``wanted`` arguments of the call whose ``(`` ends at ``start``.

    Strings, brackets and ``-y`` decorations are skipped by jumps between the
    characters that matter, so a long argument costs nothing once passed.
    """
    args: list[str] = []
    depth = 0
    index = begin = start
    length = len(text)
    while index < length:
        found = _SPECIAL.search(text, index)
        if found is None:
            return None
        index = found.start()
        char = text[index]
        if char == '"':
            index = _skip_string(text, index)
            continue
        if char == "<":
            if index > 0 and (text[index - 1].isalnum() or text[index - 1] == "_"):
                index = _skip_decoration(text, index)
            else:
                index += 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                args.append(text[begin:index].strip())
                return [] if args == [""] else args
            depth -= 1
        elif depth == 0:  # a comma between arguments
            args.append(text[begin:index].strip())
            if len(args) >= wanted:
                return args
            begin = index + 1
        index += 1
    return None


# Unrolled loops: runs of ordinary characters are taken whole, not one by one.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DECORATION_REST = re.compile(r"[^>\\-]*(?:(?:\\.|->?)[^>\\-]*)*>", re.DOTALL)


def _skip_string(text: str, index: int) -> int:
    """Past the quote that closes the string opening at ``index`` (or to the end)."""
    found = _STRING_REST.match(text, index + 1)
    return found.end() if found is not None else len(text)


def _skip_decoration(text: str, index: int) -> int:
    """Past the ``>`` that closes a ``-y`` decoration (``->`` in socket names is no end)."""
    found = _DECORATION_REST.match(text, index + 1)
    return found.end() if found is not None else len(text)


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
