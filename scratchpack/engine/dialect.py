"""What each engine's Docker-compatible API does differently: one named place per difference.

scratchpack speaks the Docker Engine API; Podman (``podman system service``) answers
the same requests, but not always the same way. The engine is recognised once per
connection from its ``/version`` answer (:func:`dialect_of`), and the code that
meets a difference asks the :class:`Dialect` instead of testing for Podman itself.
Measured against Debian 12's Podman 4.3.1 (rootful service):

- **exit status of an auto-removed container** (:attr:`Dialect.exit_wait`): Docker
  keeps it for a ``wait?condition=removed`` request made before the start; Podman
  answers that request with status 0 whatever the process returned, while
  ``condition=next-exit`` returns the real status. ``debug --attach`` waits with
  the dialect's condition.
- **qualified image names** (:attr:`Dialect.qualifies_names`): Podman stores every
  name with a registry (``scratchpack-verify/X:0`` becomes
  ``localhost/scratchpack-verify/X:0``, a build's ``NAME:TAG`` becomes
  ``docker.io/library/NAME:TAG``), and its ``reference`` filter matches that full
  name only. ``prune`` lists throw-away tags with :meth:`Dialect.tag_filters`
  and reads their owner from :meth:`Dialect.familiar` names.
- **filters with several values** (:attr:`Dialect.ands_filter_values`): Docker lists
  what matches any value of one filter, Podman what matches all of them; so on
  Podman each throw-away repository is listed by a request of its own.
- **IPC mode** (:attr:`Dialect.reports_ipc_mode`): Podman reports every container's
  ``HostConfig.IpcMode`` as ``shareable``, even one started with ``--ipc=host``.
  On Podman a sidecar never joins the target's IPC namespace, and the target's
  mode is read from the ``podman`` command that created it (:func:`created_ipc_mode`,
  from :data:`PODMAN_INSPECT`). A container created through the API (docker CLI,
  compose) keeps no such command: its ``--ipc=host`` cannot be seen.
- **a missing command** fails when the attach connection is opened on Podman
  ("preparing container … for attach: … executable file not found"), at the
  start on Docker: both are read by :func:`missing_command`.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class EngineKind(enum.Enum):
    DOCKER = "Docker"
    PODMAN = "Podman"


@dataclass(frozen=True)
class Dialect:
    """How one kind of engine answers the requests whose answers differ."""

    kind: EngineKind
    exit_wait: str  # the wait condition that keeps an auto-removed container's exit status
    qualifies_names: bool  # image names are stored with their registry (localhost/, docker.io/)
    reports_ipc_mode: bool  # HostConfig.IpcMode tells the container's real IPC mode
    ands_filter_values: bool  # a list request's filter with two values matches both, not either

    def tag_filters(self, repositories: Sequence[str]) -> list[list[str]]:
        """``reference`` filter values that list every tag of ``repositories``: a request each.

        Docker finds an image matching any value of a filter, Podman only one matching all.
        """
        domain = "*/" if self.qualifies_names else ""
        patterns = [f"{domain}{repository}/*" for repository in repositories]
        return [[pattern] for pattern in patterns] if self.ands_filter_values else [patterns]

    def familiar(self, name: str) -> str:
        """``name`` as the user gave it: without the registry this engine put in front."""
        return familiar(name) if self.qualifies_names else name


DOCKER = Dialect(
    EngineKind.DOCKER,
    exit_wait="removed",
    qualifies_names=False,
    reports_ipc_mode=True,
    ands_filter_values=False,
)
PODMAN = Dialect(
    EngineKind.PODMAN,
    exit_wait="next-exit",
    qualifies_names=True,
    reports_ipc_mode=False,
    ands_filter_values=True,
)
# Podman's own inspect (the compatible one lacks ``Config.CreateCommand``).
PODMAN_INSPECT = "/v4.0.0/libpod/containers/{0}/json"

_PODMAN_COMPONENT = "Podman Engine"
# The registries Podman puts in front of a name given without one.
_IMPLIED_REGISTRIES = ("localhost/", "docker.io/library/", "docker.io/")


def dialect_of(version: Any) -> Dialect:
    """The dialect of an engine from its ``/version`` answer (Podman names itself there)."""
    components = version.get("Components") if isinstance(version, Mapping) else None
    for component in components if isinstance(components, list) else ():
        if isinstance(component, Mapping) and component.get("Name") == _PODMAN_COMPONENT:
            return PODMAN
    return DOCKER


def familiar(name: str) -> str:
    """``name`` without the registry Podman adds to names given without one."""
    for registry in _IMPLIED_REGISTRIES:
        if name.startswith(registry):
            return name[len(registry) :]
    return name


def created_ipc_mode(attrs: Mapping[str, Any]) -> str | None:
    """The ``--ipc`` mode of the ``podman`` command that created a container, if it gave one.

    Podman keeps that command (``Config.CreateCommand``); Docker does not. The
    words are not parsed as podman would (the image's own arguments may say
    ``--ipc`` too), so the widest mode named anywhere counts: ``host``, then a
    namespace path, then a container's.
    """
    config = attrs.get("Config")
    argv = config.get("CreateCommand") if isinstance(config, Mapping) else None
    if not isinstance(argv, list):
        return None
    words = [str(word) for word in argv]
    modes = [word.partition("=")[2] for word in words if word.startswith("--ipc=")]
    modes += [after for word, after in itertools.pairwise(words) if word == "--ipc"]
    for widest in ("host", "ns:", "container:"):
        for mode in modes:
            if mode.startswith(widest):
                return mode
    return modes[0] if modes else None


_MISSING = re.compile(
    r'exec: ".*?: (executable file not found in \$PATH|no such file or directory)'
)


def missing_command(text: str) -> str | None:
    """Why the engine could not run a container's command, when that is the refusal."""
    found = _MISSING.search(text)
    return found.group(1) if found else None
