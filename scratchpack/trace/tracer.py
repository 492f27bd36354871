"""The tracer: the host's strace and its closure, packaged to be mounted read-only.

Images hold no tools, so the tracer comes from the host: :func:`package_tracer`
copies the host's ``strace`` with its loader and libraries into a directory,
which is bind-mounted read-only at :data:`TRACER_MOUNT` and started through
*its own* loader, so the image's libc (glibc, musl or none) never matters.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scratchpack.errors import EXIT_TRACE, InputError, ScratchpackError
from scratchpack.ld.loaders import HwcapsChoice
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.owner import prefix
from scratchpack.plan.entries import Reason
from scratchpack.plan.rootplan import RootPlan, write_tree

TRACER_MOUNT = "/.scratchpack-tracer"
LOG_DIR = "/.scratchpack-trace-out"  # in the traced container's own layer
LOG_NAME = "trace.log"


class TraceError(ScratchpackError):
    """The trace could not be taken: no strace, a tracer that cannot start, a bad probe."""

    exit_code = EXIT_TRACE

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class TraceTimeout(TraceError):
    """The traced program neither finished nor got ready for its probes in time."""


@dataclass(frozen=True)
class TracerTree:
    """strace and its closure in a host directory, and how to start it once mounted."""

    root: Path  # host directory holding the tree (bind-mount it read-only at ``mount``)
    strace: str  # in-container path of the strace executable
    loader: str | None  # in-container path of its loader; None for a static strace
    library_path: str  # ':'-separated in-container library directories (for --library-path)
    version: tuple[int, int]  # strace's version, which decides the options
    mount: str = TRACER_MOUNT

    @property
    def command(self) -> list[str]:
        """The command prefix that starts strace through its own loader."""
        if self.loader is None:
            return [self.strace]
        return [self.loader, "--library-path", self.library_path, self.strace]

    def options(self, log: str, env: Iterable[str] = ()) -> list[str]:
        """strace's options, writing to ``log``; ``env`` are ``-E`` settings for the program."""
        options = ["-D", "-f", "-qq", "-y", "-s", "4096"]
        # bind: a server that listens on 127.0.0.1 only is told at once (trace.run).
        # rt_sigaction and friends: whether the program, as PID 1, can receive its stop
        # signal at all (trace.run kills one that cannot at once, as docker would later).
        # '?': signalfd is missing on some architectures (arm64); strace >= 4.17 skips it.
        calls = "%file,%process,fchdir,bind,rt_sigaction,rt_sigprocmask,signalfd4,rt_sigtimedwait"
        if self.version >= (4, 17):
            calls += ",?signalfd"
        options += ["-e", f"trace={calls}", "-e", "signal=none"]
        if self.version >= (5, 2):  # -e status= appeared in strace 5.2
            options += ["-e", "status=successful"]
        if self.version >= (5, 3):  # so did --seccomp-bpf in 5.3: stop only on traced calls
            options.append("--seccomp-bpf")
        for setting in env:
            options += ["-E", setting]
        return [*options, "-o", log]


# -- packaging the tracer ----------------------------------------------------------


def find_strace() -> str:
    """The host's strace, or a :class:`TraceError` saying how to get it."""
    found = shutil.which("strace") or (
        "/usr/bin/strace" if os.path.isfile("/usr/bin/strace") else None
    )
    if found is None:
        raise TraceError(
            "--trace needs strace on this machine: install Debian's strace (apt-get install strace)"
        )
    return os.path.abspath(found)


def strace_version(strace: str) -> tuple[int, int]:
    """``strace -V``'s version as (major, minor)."""
    try:
        completed = subprocess.run(
            [strace, "-V"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TraceError(f"{strace} does not run: {err}") from err
    match = re.search(r"version\s+(\d+)\.(\d+)", completed.stdout)
    if completed.returncode != 0 or match is None:
        raise TraceError(f"{strace} -V does not say which strace it is; install Debian's strace")
    return int(match.group(1)), int(match.group(2))


def package_tracer(destination: Path) -> TracerTree:
    """Copy the host's strace, its loader and libraries under ``destination`` (new or empty).

    Every file keeps its host path (and the symlinks on its way), so the tree
    mounted at :data:`TRACER_MOUNT` holds e.g. ``usr/bin/strace`` and
    ``usr/lib/x86_64-linux-gnu/libc.so.6``. The command refers to the files'
    real paths: an absolute symlink such as ``/lib64/ld-linux-x86-64.so.2``
    would point into the image, not into the tree.
    """
    strace = find_strace()
    version = strace_version(strace)
    resolver = Resolver(None, library_path="", hwcaps=HwcapsChoice("none"))
    try:
        closure = resolver.resolve(strace)
    except InputError as err:
        raise TraceError(f"cannot package the tracer: {err}") from err
    if closure.missing:
        names = ", ".join(item.soname for item in closure.missing)
        raise TraceError(f"cannot package the tracer: {strace} misses {names}")
    plan = RootPlan(source_parent_modes=False)
    try:
        strace_path = _add(plan, resolver.root, strace)
        loader = None
        if not closure.static and closure.interpreter:
            loader = _add(plan, resolver.root, closure.interpreter)
        directories: list[str] = []
        for library in closure.libraries:
            directory = posixpath.dirname(_add(plan, resolver.root, library.path))
            if directory not in directories:
                directories.append(directory)
    except InputError as err:
        raise TraceError(f"cannot package the tracer: {err}") from err
    destination = Path(destination).absolute()  # a bind mount needs an absolute source
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise TraceError(f"{destination}: not empty; the tracer needs a new or empty directory")
    write_tree(plan.sorted_entries(), str(destination))
    destination.chmod(0o755)  # the mount's top: any user of the image must get through
    mount = TRACER_MOUNT
    return TracerTree(
        root=destination,
        strace=mount + strace_path,
        loader=None if loader is None else mount + loader,
        library_path=":".join(mount + directory for directory in directories),
        version=version,
    )


@contextlib.contextmanager
def packaged_tracer() -> Iterator[TracerTree]:
    """:func:`package_tracer` into a temporary directory, removed afterwards."""
    top = tempfile.mkdtemp(prefix=prefix("tracer"))
    try:
        yield package_tracer(Path(top) / "tree")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _add(plan: RootPlan, root: RootFS, path: str) -> str:
    placed = plan.add_path(root, path, Reason.TRACER)
    assert placed is not None  # no --exclude applies to the tracer
    return placed
