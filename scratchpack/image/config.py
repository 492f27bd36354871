"""Image configurations: what ``build`` asks for, and what an image's config file says.

Three shapes, each for one job:

- :class:`ImageConfig` is what a Dockerfile states (``build``'s options): the
  template renders it, the writer turns it into a config object.
- :class:`RuntimeConfig` is an image's ``config`` object as stored, checked
  field by field (someone else's image may put a number where a list belongs)
  and kept whole in ``raw``, so that ``shrink`` and ``debug`` copy it exactly,
  fields scratchpack does not know included.
- :class:`ConfigFile` is a whole config document: platform, the layers'
  ``diff_ids``, history, and the runtime configuration.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from scratchpack import __version__
from scratchpack.errors import InputError
from scratchpack.image.digest import Digest
from scratchpack.image.documents import (
    canonical_json,
    json_object,
    optional_object,
    optional_string,
    parse_json,
    string_list,
)
from scratchpack.image.media import Platform

_ENV_KEY = re.compile(r"^[^\s=]+$")
# EXPOSE's PORT[/PROTO]: what an image config's ExposedPorts key may be ("8080/tcp").
_EXPOSE = re.compile(r"^(\d{1,5})(?:/(tcp|udp|sctp))?$")


@dataclass(frozen=True)
class ImageConfig:
    """The image's run-time configuration, as a Dockerfile states it."""

    entrypoint: tuple[str, ...] | None  # None: the image has none (Cmd alone runs)
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None
    expose: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def check(self) -> None:
        """Refuse settings no image can mean: env keys with '=' or spaces, newlines in paths."""
        for key, _value in self.env:
            if not _ENV_KEY.match(key):
                raise InputError(f"--env {key!r}: a variable name has no spaces, '=' or newlines")
        for option, value in (
            ("--workdir", self.workdir),
            ("--user", self.user),
            *(("--expose", port) for port in self.expose),
            *(("--label", key) for key, _ in self.labels),
        ):
            if value is not None and ("\n" in value or "\r" in value or not value.strip()):
                raise InputError(f"{option} {value!r}: empty or with a newline")
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise InputError(f"--workdir {self.workdir}: must be an absolute path")
        for port in self.expose:
            _check_expose(port)

    def runtime_json(self) -> dict[str, Any]:
        """The image config's ``config`` object for these settings."""
        runtime: dict[str, Any] = {}
        if self.entrypoint is not None:
            runtime["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            runtime["Cmd"] = list(self.cmd)
        if self.env:
            runtime["Env"] = [f"{key}={value}" for key, value in self.env]
        if self.workdir:
            runtime["WorkingDir"] = self.workdir
        if self.user:
            runtime["User"] = self.user
        if self.expose:
            runtime["ExposedPorts"] = {
                port if "/" in port else f"{port}/tcp": {} for port in self.expose
            }
        if self.labels:
            runtime["Labels"] = dict(self.labels)
        return runtime


@dataclass(frozen=True)
class RuntimeConfig:
    """An image's ``config`` object: checked, typed, and kept whole for exact copies."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()  # KEY=VALUE as stored
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str | None = None
    healthcheck: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Any, where: str) -> RuntimeConfig:
        """The config object of an image someone else made, every field scratchpack uses checked."""
        raw = optional_object(value, f"{where}: the config's config")
        labels = optional_object(raw.get("Labels"), f"{where}: Labels")
        for key, label in labels.items():
            if not isinstance(label, str):
                raise InputError(f"{where}: the label {key!r} is not a string")
        healthcheck = raw.get("Healthcheck")
        if healthcheck is not None:
            healthcheck = json_object(healthcheck, f"{where}: Healthcheck")
            string_list(healthcheck.get("Test"), f"{where}: Healthcheck Test")
        env = string_list(raw.get("Env"), f"{where}: Env") or ()
        return cls(
            entrypoint=string_list(raw.get("Entrypoint"), f"{where}: Entrypoint"),
            cmd=string_list(raw.get("Cmd"), f"{where}: Cmd"),
            env=env,
            working_dir=optional_string(raw.get("WorkingDir"), f"{where}: WorkingDir") or None,
            user=optional_string(raw.get("User"), f"{where}: User") or None,
            exposed_ports=tuple(
                sorted(optional_object(raw.get("ExposedPorts"), f"{where}: ExposedPorts"))
            ),
            volumes=tuple(sorted(optional_object(raw.get("Volumes"), f"{where}: Volumes"))),
            labels=tuple(sorted(labels.items())),
            stop_signal=optional_string(raw.get("StopSignal"), f"{where}: StopSignal") or None,
            healthcheck=healthcheck,
            raw=copy.deepcopy(raw),
        )

    @property
    def env_map(self) -> dict[str, str]:
        """The environment as a mapping; a later KEY=... wins, as in the container."""
        result: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            result[key] = value
        return result

    def argv(self, cmd: list[str] | None = None) -> list[str]:
        """What the engine runs: Entrypoint + Cmd (``cmd`` replacing Cmd)."""
        return [*(self.entrypoint or ()), *(self.cmd or () if cmd is None else cmd)]

    def copy_json(self) -> dict[str, Any]:
        """A copy of the stored object, for a new image that keeps this configuration."""
        return copy.deepcopy(self.raw)


@dataclass(frozen=True)
class ConfigFile:
    """An image config document, checked."""

    platform: Platform
    runtime: RuntimeConfig
    diff_ids: tuple[str, ...]
    history: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, data: bytes, where: str) -> ConfigFile:
        document = json_object(parse_json(data, f"{where}: the image config"), f"{where}: config")
        architecture = optional_string(document.get("architecture"), f"{where}: architecture")
        os_name = optional_string(document.get("os"), f"{where}: os") or "linux"
        variant = optional_string(document.get("variant"), f"{where}: variant")
        rootfs = optional_object(document.get("rootfs"), f"{where}: rootfs")
        diff_ids = string_list(rootfs.get("diff_ids"), f"{where}: rootfs.diff_ids") or ()
        for diff_id in diff_ids:
            Digest.parse(diff_id, f"{where}: a diff_id")
        history = document.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise InputError(f"{where}: history must be a list of objects")
        return cls(
            platform=Platform(architecture or "", os_name, variant or None),
            runtime=RuntimeConfig.from_json(document.get("config"), where),
            diff_ids=diff_ids,
            history=tuple(history),
            raw=document,
        )


_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z: the last time RFC 3339 can write


def source_date_epoch(environ: dict[str, str] | None = None) -> int:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org), default 0."""
    import os

    raw = (environ if environ is not None else os.environ).get("SOURCE_DATE_EPOCH", "0")
    raw = raw.strip() or "0"
    if not raw.isdigit() or int(raw) > _LAST_SECOND:
        raise InputError(
            f"SOURCE_DATE_EPOCH={raw!r}: expected whole seconds since 1970, before the year 10000"
        )
    return int(raw)


def timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def history_entry(epoch: int, comment: str, empty: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "created": timestamp(epoch),
        "created_by": f"scratchpack {__version__}",
        "comment": comment,
    }
    if empty:
        entry["empty_layer"] = True
    return entry


def config_document(
    runtime: dict[str, Any],
    diff_ids: list[str],
    platform: Platform,
    epoch: int,
    history: list[dict[str, Any]],
) -> bytes:
    """The canonical bytes of a config document: fixed timestamps, so its digest is stable."""
    document: dict[str, Any] = {
        **platform.to_json(),
        "created": timestamp(epoch),
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    return canonical_json(document)


def _check_expose(port: str) -> None:
    """``--expose 8080``, ``53/udp``: a port the engine can publish (``docker build``
    would stop on ``abc`` only after the whole plan; the writer would write it)."""
    found = _EXPOSE.match(port)
    if found is None or not 1 <= int(found.group(1)) <= 65535:
        raise InputError(
            f"--expose {port!r}: expected PORT[/PROTO], a port from 1 to 65535 and tcp, udp or sctp"
        )
