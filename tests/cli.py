"""One way for the tests to run the command line: ``python -m scratchpack ARGS`` as a child.

Every test module runs the command through here, so the argument vector, the text decoding and
the composition of the child's environment are written once; a module that always passes the
same options (a package cache, no engine, a working directory) wraps this in a line or two.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from collections.abc import Collection, Mapping

COMMAND = (sys.executable, "-m", "scratchpack")

# The dynamic loader's variables, for the tests that keep the runner's own (a preload, a
# library path) away from the command and from what it builds.
LOADER_ENV = ("LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT", "GLIBC_TUNABLES")

# An engine address nothing answers on: the command must get by without Docker.
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}

Argument = str | os.PathLike[str]

# The PIDs of the commands this process started, oldest first. A run's engine objects and
# temporary names carry its owner, ``<pid namespace>-<pid>`` (scratchpack/owner.py): with
# these, a test counts only what its own runs left (tests/ownership.py) while other tests
# run beside it on the same engine (pytest-xdist).
STARTED: list[int] = []


def child_env(env: Mapping[str, str] | None = None, unset: Collection[str] = ()) -> dict[str, str]:
    """This process's environment without the ``unset`` names, plus ``env``.

    ``unset`` holds shell patterns (``LD_*``) as well as names. Removal comes first, so a
    name can be dropped and set again (``SOURCE_DATE_EPOCH``).
    """
    kept = {
        name: value
        for name, value in os.environ.items()
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in unset)
    }
    return {**kept, **(env or {})}


def scratchpack(
    *args: Argument,
    cwd: Argument | None = None,
    env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
    timeout: float | None = None,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end and return its exit status, stdout and stderr as text.

    ``env`` adds to (and ``unset`` removes from) this process's environment rather than
    replacing it, so a test names only what it changes; ``check`` raises on a non-zero exit.
    """
    with _started(
        [*COMMAND, *map(str, args)],
        cwd=cwd,
        env=child_env(env, unset),
        stdin=subprocess.PIPE if input is not None else None,
    ) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def start(
    *args: Argument,
    cwd: Argument | None = None,
    env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
) -> subprocess.Popen[str]:
    """Start the command with its stdout and stderr piped as text, for a test that signals it."""
    return _started([*COMMAND, *map(str, args)], cwd=cwd, env=child_env(env, unset))


def _started(
    argv: list[str], cwd: Argument | None, env: dict[str, str], stdin: int | None = None
) -> subprocess.Popen[str]:
    """The child, its PID noted in :data:`STARTED` (what it leaves in the engine is named by it)."""
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    STARTED.append(process.pid)
    return process
