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
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        cwd=cwd,
        env=child_env(env, unset),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def start(
    *args: Argument,
    cwd: Argument | None = None,
    env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
) -> subprocess.Popen[str]:
    """Start the command with its stdout and stderr piped as text, for a test that signals it."""
    return subprocess.Popen(
        [*COMMAND, *map(str, args)],
        cwd=cwd,
        env=child_env(env, unset),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
