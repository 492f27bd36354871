"""Whose is it: every temporary directory and engine object names the run that made it.

A run that is killed (SIGKILL, a power cut) cannot clean up after itself. So
everything it makes carries its owner — the PID namespace and the PID of the
scratchpack process — in its name or label, and a later run removes what
belongs to an owner that is gone (:mod:`scratchpack.commands.prune`). A PID
alone would not do: a run in another container, sharing the engine, has PIDs
of its own namespace; its objects are never taken for ours.
"""

from __future__ import annotations

import os
import re
from functools import cache

OWNER_LABEL = "org.scratchpack.owner"
# tmp dirs: scratchpack-<owner>-<random>; staged outputs: .scratchpack-<owner>-<random>;
# engine tags: scratchpack-staging/<owner>-<random>:<n> (also -verify/, -trace/).
_OWNER = re.compile(r"^(\d+)-(\d+)$")
_NAMED = re.compile(r"^\.?scratchpack-(?:[a-z]+-)?(\d+-\d+)-")
TAG_REPOSITORIES = ("scratchpack-staging", "scratchpack-verify", "scratchpack-trace")


@cache
def _namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def owner() -> str:
    """This process as an owner: ``<pid namespace>-<pid>``."""
    return f"{_namespace()}-{os.getpid()}"


def prefix(kind: str = "") -> str:
    """A name prefix for temporary things of this run: ``scratchpack-[kind-]<owner>-``."""
    return f"scratchpack-{kind + '-' if kind else ''}{owner()}-"


def owner_of(name: str) -> str | None:
    """The owner a file or tag name carries, if it is one of ours."""
    match = _NAMED.match(name.rsplit("/", 1)[-1])
    if match is None and "/" in name:
        repository, _, rest = name.partition("/")
        if repository in TAG_REPOSITORIES:
            match = re.match(r"^(\d+-\d+)-", rest)
    return match.group(1) if match else None


def gone(owner_text: str) -> bool:
    """Whether the run that owns something has ended (it is safe to remove it).

    Only owners of this PID namespace can be judged; any other is kept.
    """
    match = _OWNER.match(owner_text)
    if match is None or int(match.group(1)) != _namespace():
        return False
    pid = int(match.group(2))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False
