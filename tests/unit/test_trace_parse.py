"""strace's log read back into paths, and the tracer packaged (no engine).

The parser tests feed hand-written strace output (both ``-o FILE`` and stderr
formats, unfinished/resumed halves, ``-y`` decorations, failures) and expect
exact sets; the tracer tests package the host's strace and run it through its
own loader. Real images are traced in tests/integration/test_trace.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import EXIT_TRACE
from scratchpack.image.config import RuntimeConfig
from scratchpack.trace.parse import parse_log, parse_strace
from scratchpack.trace.run import (
    _elf_interpreter,
    _environment,
    _shebang,
    _tcp_ports,
    signal_name,
)
from scratchpack.trace.tracer import (
    TRACER_MOUNT,
    TraceError,
    TracerTree,
    package_tracer,
)
from tests.conftest import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_INTERP = "/lib64/ld-linux-x86-64.so.2"
MUSL_LOADER = "/lib/x86_64-linux-musl/libc.so"


# -- parse_strace -------------------------------------------------------------------


O_FILE_LOG = r"""
1     execve("/app/server", ["/app/server", "--flag"], 0x7ffd340d1b10 /* 3 vars */) = 0
1     access("/etc/ld.so.preload", R_OK) = -1 ENOENT (No such file or directory)
1     openat(AT_FDCWD</srv>, "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
1     openat(AT_FDCWD</srv>, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3</usr/lib/x86_64-linux-gnu/libc.so.6>
1     newfstatat(3</usr/lib/x86_64-linux-gnu/libc.so.6>, "", {st_mode=S_IFREG|0755, st_size=1926232, ...}, AT_EMPTY_PATH) = 0
1     readlink("/proc/self/exe", "/app/server", 4096) = 11
1     openat(AT_FDCWD</srv>, "conf/app.ini", O_RDONLY) = 3</srv/conf/app.ini>
1     openat(AT_FDCWD</srv>, "/dev/null", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 4</dev/null>
1     openat(AT_FDCWD</srv>, "/sys/fs/cgroup/cpu.max", O_RDONLY) = 5</sys/fs/cgroup/cpu.max>
1     newfstatat(AT_FDCWD</srv>, "/etc/missing.conf", 0x7ffc29673cc0, 0) = -1 ENOENT (No such file or directory)
1     openat(AT_FDCWD</srv>, "/etc/we,ird\76name \"quoted\"\342\202\254", O_RDONLY) = 3</etc/we,ird\76name "quoted"\342\202\254>
1     openat(AT_FDCWD</srv>, "/var/www", O_RDONLY|O_DIRECTORY) = 6</var/www>
1     newfstatat(6</var/www>, "index.html", {st_mode=S_IFREG|0644, st_size=5, ...}, 0) = 0
1     newfstatat(7, "unknown-dir-relative", {st_mode=S_IFREG|0644, st_size=5, ...}, 0) = 0
1     newfstatat(7, "/abs/with/undecorated/fd", {st_mode=S_IFREG|0644, st_size=5, ...}, 0) = 0
1     clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7fe142c3aa10) = 12
12    chdir("/tmp/work") = 0
12    stat("data.bin", {st_mode=S_IFREG|0644, st_size=3, ...}) = 0
12    execve("./tool", ["./tool"], 0x7ffd340d1b10 /* 3 vars */) = 0
12    access("../sibling", F_OK) = 0
1     clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7fe142c39990, parent_tid=0x7fe142c39990, exit_signal=0, stack=0x7fe142439000, stack_size=0x7fff80, tls=0x7fe142c396c0} => {parent_tid=[13]}, 88) = 13
13    chdir("sub") = 0
1     access("shared.txt", R_OK) = 0
1     fchdir(6</var/www>) = 0
1     stat("after-fchdir", {st_mode=S_IFREG|0644, st_size=3, ...}) = 0
1     --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=12, si_uid=0, si_status=0} ---
1     wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 12
1     openat(AT_FDCWD</var/www>, "/run/app.pid", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 7</run/app.pid>
1     renameat2(AT_FDCWD</var/www>, "/run/app.tmp", AT_FDCWD</var/www>, "/run/state/app.new", RENAME_NOREPLACE) = 0
1     symlinkat("/target/is/only/text", AT_FDCWD</var/www>, "/run/link") = 0
1     mkdir("/run/cache", 0755) = 0
1     openat(AT_FDCWD</var/www>, "/opt/truncated/name"..., O_RDONLY) = 3</opt/truncated/name-is-longer>
1     execve(NULL, NULL, NULL) = 0
1     statx(AT_FDCWD</var/www>, "/.scratchpack-tracer/usr/bin/strace", AT_STATX_SYNC_AS_STAT, STATX_ALL, {stx_mask=STATX_ALL, ...}) = 0
1     openat(AT_FDCWD</var/www>, "/.scratchpack-trace-out/trace.log", O_RDONLY) = 3</.scratchpack-trace-out/trace.log>
1     newfstatat(AT_FDCWD</var/www>, "/", {st_mode=S_IFDIR|0755, st_size=4096, ...}, 0) = 0
1     newfstatat(AT_FDCWD</var/www>, "/usr//lib/./x.so/", {st_mode=S_IFREG|0644, st_size=4096, ...}, 0) = 0
1     +++ exited with 0 +++
"""  # noqa: E501

O_FILE_PATHS = {
    "/app/server",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/srv/conf/app.ini",
    '/etc/we,ird>name "quoted"\u20ac',
    "/var/www",
    "/var/www/index.html",
    "/abs/with/undecorated/fd",
    "/tmp/work",
    "/tmp/work/data.bin",
    "/tmp/work/tool",
    "/tmp/work/../sibling",
    "/srv/sub",  # the CLONE_FS thread changed the directory of its whole process ...
    "/srv/sub/shared.txt",  # ... which the parent then used
    "/var/www/after-fchdir",
    "/run/app.pid",
    "/run",  # the directory of a file a call may create
    "/run/app.tmp",
    "/run/state/app.new",
    "/run/state",
    "/run/link",
    "/run/cache",
    "/usr/lib/x.so",
}


def test_parse_o_file_format() -> None:
    assert parse_strace(O_FILE_LOG, "/srv") == O_FILE_PATHS


def test_parse_stderr_format_joins_unfinished_and_resumed_calls() -> None:
    log = r"""
execve("/bin/sh", ["sh", "-c", "x"], 0x7ffd5a0e9848 /* 35 vars */) = 0
clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f471c149a10) = 10751
[pid 10751] chdir("/etc" <unfinished ...>
[pid 10750] openat(AT_FDCWD, "/usr/share/a.txt", O_RDONLY <unfinished ...>
[pid 10751] <... chdir resumed>)        = 0
[pid 10751] newfstatat(AT_FDCWD, "hostname",  <unfinished ...>
[pid 10750] <... openat resumed>)       = 3
[pid 10751] <... newfstatat resumed>{st_mode=S_IFREG|0755, st_size=3, ...}, 0) = 0
[pid 10751] openat(AT_FDCWD, "failing", O_RDONLY <unfinished ...>
[pid 10751] <... openat resumed>)       = -1 ENOENT (No such file or directory)
[pid 10751] readlinkat(AT_FDCWD, "link", "target", 4096) = 6
[pid 10751] exit_group(0)               = ?
[pid 10751] +++ exited with 0 +++
access("relative", R_OK) = 0
"""  # noqa: E501
    assert parse_strace(log, "/home/user") == {
        "/bin/sh",
        "/etc",
        "/usr/share/a.txt",
        "/etc/hostname",
        "/etc/link",
        "/home/user/relative",  # the child's chdir did not move its parent
    }


def test_parse_keeps_each_process_directory_across_fork_order() -> None:
    # The child's first line comes before the parent's clone result: it still
    # starts in the parent's directory, not in the initial one.
    log = """
1 chdir("/a") = 0
2 stat("x", {st_mode=S_IFREG|0644, st_size=3, ...}) = 0
1 clone(child_stack=NULL, flags=SIGCHLD) = 2
1 chdir("/b") = 0
2 stat("y", {st_mode=S_IFREG|0644, st_size=3, ...}) = 0
1 stat("z", {st_mode=S_IFREG|0644, st_size=3, ...}) = 0
"""
    assert parse_strace(log) == {"/a", "/a/x", "/b", "/a/y", "/b/z"}


def test_parse_ignores_noise() -> None:
    log = "\n".join(
        [
            "strace: Process 1 attached",
            "1 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER, si_pid=0, si_uid=0} ---",
            "1 +++ killed by SIGTERM +++",
            "garbage without a call",
            '1 openat(AT_FDCWD, "/never/finished", O_RDONLY <unfinished ...>',
            '1 openat(AT_FDCWD, "/interrupted", O_RDONLY) = ? ERESTARTSYS',
            "",
        ]
    )
    assert parse_strace(log) == frozenset()


def test_elf_interpreter_and_shebang() -> None:
    head = Path("/bin/ls").read_bytes()[:65536]
    assert _elf_interpreter(head) == HOST_INTERP
    assert _elf_interpreter(b"#!/bin/sh\n") is None
    assert _elf_interpreter(b"\x7fELF" + b"\0" * 10) is None
    assert _shebang(b"#! /usr/bin/env  python3 -u\nprint()\n") == "/usr/bin/env"
    assert _shebang(b"\x7fELF") is None


def runtime(config: dict[str, Any]) -> RuntimeConfig:
    return RuntimeConfig.from_json(config, "test")


def test_argv_environment_and_ports() -> None:
    config = runtime({"Entrypoint": ["/bin/app", "-v"], "Cmd": ["serve"], "Env": ["PATH=/bin"]})
    assert config.argv(None) == ["/bin/app", "-v", "serve"]
    assert config.argv(["--help"]) == ["/bin/app", "-v", "--help"]
    assert config.argv([]) == ["/bin/app", "-v"]
    assert runtime({"Entrypoint": None, "Cmd": ["/bin/sh", "-c", "x"]}).argv(None) == [
        "/bin/sh",
        "-c",
        "x",
    ]
    environment, restore = _environment(("PATH=/bin", "LD_PRELOAD=/lib/x.so", "LD_AUDIT="))
    assert environment == ["PATH=/bin", "LD_PRELOAD=", "LD_AUDIT="]
    assert restore == ["LD_PRELOAD=/lib/x.so"]
    ports = {"ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "443": {}, "9000/tcp": {}}}
    assert _tcp_ports(runtime(ports)) == [443, 8080, 9000]


# -- whether PID 1 can receive its stop signal ----------------------------------------

_EXEC = '1     execve("/bin/server", ["server"], 0x7ffd /* 3 vars */) = 0'
_TERM_HANDLER = (
    "{} rt_sigaction(SIGTERM, {{sa_handler=0x4a3b20, sa_mask=[], sa_flags=SA_RESTORER, "
    "sa_restorer=0x7f3b}}, NULL, 8) = 0"
)
_TERM_DEFAULT = (
    "1     rt_sigaction(SIGTERM, {sa_handler=SIG_DFL, sa_mask=[], sa_flags=0}, NULL, 8) = 0"
)
_TERM_QUERY = (
    "1     rt_sigaction(SIGTERM, NULL, {sa_handler=0x4a3b20, sa_mask=[], sa_flags=0}, 8) = 0"
)
_THREAD = (
    "1     clone(child_stack=0x7f, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|"
    "CLONE_THREAD|CLONE_SYSVSEM, parent_tid=[7]) = 7"
)
_CHILD = "1     clone(child_stack=NULL, flags=SIGCHLD) = 8"


@pytest.mark.parametrize(
    ("lines", "receives"),
    [
        ([_EXEC], False),  # no handler: a namespace's init never gets it
        ([_EXEC, _TERM_HANDLER.format(1)], True),
        ([_EXEC, _TERM_HANDLER.format(1), _TERM_DEFAULT], False),  # put back to SIG_DFL
        ([_EXEC, _TERM_HANDLER.format(1), _TERM_QUERY.replace("0x4a3b20", "SIG_DFL")], True),
        ([_EXEC, _TERM_QUERY], False),  # a query changes nothing
        ([_EXEC, _THREAD, _TERM_HANDLER.format(7)], True),  # a thread shares the handlers
        ([_EXEC, _CHILD, _TERM_HANDLER.format(8)], False),  # a child's handler is its own
        ([_TERM_HANDLER.format(1), _EXEC], False),  # a new program starts without it
        ([_EXEC, "1     signalfd4(-1, [TERM], 8, SFD_CLOEXEC) = 3"], True),
        ([_EXEC, "1     rt_sigtimedwait([TERM INT], NULL, NULL, 8) = 15 (SIGTERM)"], True),
        ([_EXEC, _TERM_HANDLER.format(1).replace("= 0", "= -1 EFAULT (Bad address)")], False),
        # tini and dumb-init block every signal and sigwait (tini's, with a timeout,
        # fails until a signal comes): blocked is pending, not dropped.
        ([_EXEC, "1     rt_sigprocmask(SIG_SETMASK, ~[RTMIN RT_1], NULL, 8) = 0"], True),
        ([_EXEC, "1     rt_sigprocmask(SIG_BLOCK, [HUP TERM], [], 8) = 0"], True),
        ([_EXEC, "1     rt_sigprocmask(SIG_BLOCK, [INT], [], 8) = 0"], False),
        (
            [
                _EXEC,
                "1     rt_sigprocmask(SIG_BLOCK, ~[RTMIN RT_1], [], 8) = 0",  # around a fork
                "1     rt_sigprocmask(SIG_SETMASK, [], NULL, 8) = 0",
            ],
            False,
        ),
        (
            [
                _EXEC,
                "1     rt_sigprocmask(SIG_SETMASK, ~[KILL STOP], NULL, 8) = 0",
                "1     rt_sigprocmask(SIG_UNBLOCK, [TERM CHLD], NULL, 8) = 0",
            ],
            False,
        ),
        ([_EXEC, "1     rt_sigprocmask(SIG_BLOCK, NULL, [TERM], 8) = 0"], False),  # a query
        ([_EXEC, _CHILD, "8     rt_sigprocmask(SIG_BLOCK, [TERM], [], 8) = 0"], False),
    ],
)
def test_the_log_says_whether_pid_1_receives_its_stop_signal(
    lines: list[str], receives: bool
) -> None:
    parsed = parse_log(lines)
    assert parsed.init_receives("SIGTERM") is receives
    if not parsed.init_blocked[0]:  # nothing said of QUIT: only "all but" masks or reads
        assert not parsed.init_receives("SIGQUIT") or parsed.init_reads_signals


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (None, "SIGTERM"),
        ("SIGQUIT", "SIGQUIT"),
        ("term", "SIGTERM"),
        ("15", "SIGTERM"),
        ("SIGIOT", "SIGABRT"),  # strace writes the main name
        ("SIGRTMIN+3", None),
        ("SIGNOPE", None),
        ("99", None),
    ],
)
def test_stop_signal_names(given: str | None, name: str | None) -> None:
    assert signal_name(given) == name


def test_options_follow_the_strace_version() -> None:
    tree = TracerTree(Path("/x"), f"{TRACER_MOUNT}/usr/bin/strace", None, "", (6, 1))
    options = tree.options("/out/trace.log", ["LD_PRELOAD=/a.so"])
    assert options[:2] == ["-D", "-f"]
    assert "status=successful" in options and "--seccomp-bpf" in options
    assert options[-2:] == ["-o", "/out/trace.log"]
    assert options[options.index("-E") + 1] == "LD_PRELOAD=/a.so"
    old = TracerTree(Path("/x"), "/s", None, "", (5, 1)).options("/l")
    assert "status=successful" not in old and "--seccomp-bpf" not in old
    calls = options[options.index("-e") + 1]
    assert "rt_sigaction" in calls and "signalfd4" in calls and "?signalfd" in calls
    assert "rt_sigprocmask" in calls
    older = TracerTree(Path("/x"), "/s", None, "", (4, 16)).options("/l")
    assert "signalfd" not in older[older.index("-e") + 1].replace("signalfd4", "")
    assert tree.command == [f"{TRACER_MOUNT}/usr/bin/strace"]


# -- the tracer tree ----------------------------------------------------------------


def test_tracer_tree_runs_through_its_own_loader(tracer: TracerTree) -> None:
    assert tracer.loader is not None and tracer.loader.startswith(TRACER_MOUNT + "/")
    assert tracer.library_path.startswith(TRACER_MOUNT + "/")
    assert tracer.version >= (5, 3)
    host_command = [
        part.replace(TRACER_MOUNT, str(tracer.root)) for part in tracer.command
    ]  # the same tree, seen from the host
    done = subprocess.run([*host_command, "-V"], capture_output=True, text=True, check=True, env={})
    assert f"version {tracer.version[0]}.{tracer.version[1]}" in done.stdout
    assert (tracer.root.stat().st_mode & 0o777) == 0o755
    libc = [p for p in tracer.root.rglob("libc.so.6")]
    assert libc, "the tree holds its own libc"


def test_package_tracer_without_strace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    real_isfile = os.path.isfile
    monkeypatch.setattr(
        os.path, "isfile", lambda p: False if "strace" in str(p) else real_isfile(p)
    )
    with pytest.raises(TraceError, match="install Debian's strace") as caught:
        package_tracer(tmp_path / "tree")
    assert caught.value.exit_code == EXIT_TRACE == 6


def test_package_tracer_wants_an_empty_directory(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        unavailable("strace is missing: apt-get install strace")
    (tmp_path / "something").write_text("x")
    with pytest.raises(TraceError, match="not empty"):
        package_tracer(tmp_path)
