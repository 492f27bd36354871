"""Image references, ``[REGISTRY/]NAME[:TAG]``, parsed once by Docker's rules.

Tags for the engine, names in archives, the debug variant's tag and the push
target all come from here, so they cannot disagree about what a name means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scratchpack.errors import InputError

DOCKER_HUB = "docker.io"
# Docker's reference grammar (distribution/reference), enough to split and validate.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY_RE = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``registry`` is None when none was written (Docker Hub)."""

    registry: str | None
    repository: str  # as written: no ``library/`` prefix added
    tag: str

    @classmethod
    def parse(cls, text: str, what: str = "image reference") -> Reference:
        """Split and validate like Docker; raise :class:`InputError` with one line."""
        if "@" in text:
            raise InputError(f"{what} {text!r}: digests are not supported; use NAME:TAG")
        first, slash, rest = text.partition("/")
        # The first component is a registry only if it looks like a host.
        if slash and (
            "." in first or ":" in first or first == "localhost" or first != first.lower()
        ):
            registry: str | None = first
            remainder = rest
        else:
            registry, remainder = None, text
        name, tag = remainder, "latest"
        colon = remainder.rfind(":")
        if colon > remainder.rfind("/"):
            name, tag = remainder[:colon], remainder[colon + 1 :]
        if registry is not None and not _REGISTRY_RE.fullmatch(registry):
            raise InputError(f"{what} {text!r}: invalid registry {registry!r}")
        if not _REPOSITORY_RE.fullmatch(name) or len(text) > 255:
            raise InputError(
                f"{what} {text!r}: invalid name {name!r} (lower-case letters, "
                "digits and . _ - separators, components split by /)"
            )
        if not _TAG_RE.fullmatch(tag):
            raise InputError(
                f"{what} {text!r}: invalid tag {tag!r} (up to 128 of A-Z a-z 0-9 _ . -)"
            )
        return cls(registry, name, tag)

    @property
    def name(self) -> str:
        """``[REGISTRY/]NAME`` as written."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    def with_suffix(self, suffix: str) -> Reference:
        """``app:1.0`` + ``-debug`` gives ``app:1.0-debug``."""
        return Reference.parse(f"{self.name}:{self.tag}{suffix}")

    def archive_name(self) -> str:
        """``hello_latest.tar`` for ``hello:latest``: a file name for the image."""
        base = f"{self.repository.rsplit('/', 1)[-1]}_{self.tag}"
        return "".join(c if c.isalnum() or c in "_.-" else "_" for c in base) + ".tar"

    def push_target(self) -> tuple[str, str, str]:
        """(registry, repository, tag) as a registry API sees it: Hub names get ``library/``."""
        registry = DOCKER_HUB if self.registry in (None, "index.docker.io") else self.registry
        repository = self.repository
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        assert registry is not None
        return registry, repository, self.tag


def check_tag(text: str) -> str:
    """The tag as the user wrote it, if the engine (and docker-py) would accept it.

    docker-py refuses upper case anywhere in a build tag, registry included,
    though Docker's grammar allows an upper-case registry host: refuse it here,
    before any work, rather than after the build.
    """
    reference = Reference.parse(text, "invalid tag")
    if reference.registry and reference.registry != reference.registry.lower():
        raise InputError(f"invalid tag {text!r}: write the registry host in lower case")
    return text
