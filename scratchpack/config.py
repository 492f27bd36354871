"""An image's run-time configuration: what ENTRYPOINT, ENV, USER... say.

Shared by every stage that needs it: planning fills it, the Dockerfile
renderer and the built-in writer both write it, shrink and debug read it
from existing images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scratchpack.errors import InputError


@dataclass
class ImageConfig:
    """The image's run-time configuration, as a Dockerfile states it."""

    entrypoint: list[str] | None  # None: the image has none (Cmd alone runs)
    cmd: list[str] | None = None
    env: list[tuple[str, str]] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    labels: list[tuple[str, str]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    healthcheck: dict[str, Any] | None = None  # as in an image config: Test, Interval (ns), ...


def config_from_summary(summary: dict[str, Any]) -> ImageConfig:
    """An existing image's run-time settings (``unpack.image_config_summary``), unchanged."""
    env = [str(item).split("=", 1) for item in summary.get("Env") or [] if "=" in str(item)]
    return ImageConfig(
        entrypoint=summary.get("Entrypoint"),
        cmd=summary.get("Cmd"),
        env=[(key, value) for key, value in env],
        workdir=summary.get("WorkingDir"),
        user=summary.get("User"),
        expose=list(summary.get("ExposedPorts") or []),
        labels=sorted((summary.get("Labels") or {}).items()),
        volumes=list(summary.get("Volumes") or []),
        stop_signal=summary.get("StopSignal"),
        healthcheck=summary.get("Healthcheck"),
    )


_ENV_KEY = re.compile(r"^[^\s=]+$")


def check_config(config: ImageConfig) -> None:
    """Refuse settings no image can mean: env keys with '=' or spaces, newlines in paths."""
    for key, _value in config.env:
        if not _ENV_KEY.match(key):
            raise InputError(f"--env {key!r}: a variable name has no spaces, '=' or newlines")
    for option, value in (
        ("--workdir", config.workdir),
        ("--user", config.user),
        ("STOPSIGNAL", config.stop_signal),
        *(("--expose", port) for port in config.expose),
        *(("VOLUME", volume) for volume in config.volumes),
        *(("--label", key) for key, _ in config.labels),
    ):
        if value is not None and ("\n" in value or "\r" in value or not value.strip()):
            raise InputError(f"{option} {value!r}: empty or with a newline")
    if config.workdir is not None and not config.workdir.startswith("/"):
        raise InputError(f"--workdir {config.workdir}: must be an absolute path")
