"""Render the Dockerfile of an image from a Jinja2 template.

The template ships inside the wheel (``scratchpack/templates``); in a source
checkout it is the repository's top-level ``templates/``. Users may pass their
own template with the same variables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchpack import __version__
from scratchpack.config import ImageConfig
from scratchpack.errors import InputError

DOCKERFILE_TEMPLATE = "Dockerfile.j2"


@dataclass(frozen=True)
class OwnedTree:
    """A directory of the context copied with an owner other than root."""

    uid: int
    gid: int
    source: str  # relative to the context
    dest: str  # in-image path


def templates_dir() -> Path:
    """Where the bundled templates are: inside the installed package, or the checkout's."""
    packaged = Path(__file__).parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).parent.parent / "templates"


def quote(value: str) -> str:
    """A Dockerfile double-quoted word: backslash, quote and ``$`` escaped.

    A Dockerfile cannot hold a newline inside a value; :func:`check_dockerfile_values`
    refuses those before rendering.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def literal(value: str) -> str:
    """A Dockerfile word taken literally: ``$`` escaped, so the builder expands nothing."""
    return value.replace("\\", "\\\\").replace("$", "\\$")


_STOP_SIGNAL = re.compile(r"^[A-Za-z0-9+]+$")


def check_dockerfile_values(config: ImageConfig) -> None:
    """Refuse what a Dockerfile cannot express, instead of building something else.

    The values may come from another image's config (shrink, debug): a newline
    would end the instruction and start one of the config's choosing (an ADD of
    a URL makes the engine download), so no field may hold one.
    """
    for option, pairs in (("--env", config.env), ("--label", config.labels)):
        for key, value in pairs:
            if _has_newline(key) or _has_newline(value):
                raise InputError(
                    f"{option} {key}: a Dockerfile cannot hold a newline in a value; "
                    "build with --engine none, whose image config can"
                )
    singles = [
        ("WORKDIR", config.workdir),
        ("USER", config.user),
        ("STOPSIGNAL", config.stop_signal),
        *(("EXPOSE", port) for port in config.expose),
        *(("VOLUME", volume) for volume in config.volumes),
        *(("HEALTHCHECK", str(part)) for part in (config.healthcheck or {}).get("Test") or []),
    ]
    for instruction, value in singles:
        if value is not None and _has_newline(value):
            raise InputError(
                f"{instruction} {value!r}: a newline cannot be written in a Dockerfile"
            )
    if config.stop_signal is not None and not _STOP_SIGNAL.match(config.stop_signal):
        raise InputError(f"STOPSIGNAL {config.stop_signal!r}: not a signal name or number")
    for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
        value = (config.healthcheck or {}).get(key)
        if value is not None and not isinstance(value, int):
            raise InputError(f"HEALTHCHECK {key} {value!r}: not a whole number")


def _has_newline(value: str) -> bool:
    return "\n" in value or "\r" in value


def exec_form(argv: list[str]) -> str:
    """A JSON array, the exec form that runs argv without a shell (there is none)."""
    return json.dumps(argv, ensure_ascii=False)


def healthcheck_instruction(healthcheck: dict[str, Any]) -> str:
    """``HEALTHCHECK ...`` from an image config's Healthcheck (durations in nanoseconds)."""
    test = list(healthcheck.get("Test") or [])
    if not test or test[0] == "NONE":
        return "HEALTHCHECK NONE"
    options = []
    for key, flag in (
        ("Interval", "interval"),
        ("Timeout", "timeout"),
        ("StartPeriod", "start-period"),
        ("Retries", "retries"),
    ):
        value = healthcheck.get(key)
        if value:
            options.append(f"--{flag}={value}" if key == "Retries" else f"--{flag}={value}ns")
    command = exec_form(test[1:]) if test[0] == "CMD" else " ".join(test[1:])
    return " ".join(["HEALTHCHECK", *options, "CMD", command])


def render_dockerfile(
    config: ImageConfig, owned: list[OwnedTree], template: Path | None = None, base: str = "scratch"
) -> str:
    """The Dockerfile text for ``config``; ``template`` replaces the bundled one."""
    check_dockerfile_values(config)
    import jinja2  # imported here: only builds through the engine render a Dockerfile

    if template is not None:
        loader = jinja2.FileSystemLoader(str(template.parent))
        name = template.name
    else:
        loader = jinja2.FileSystemLoader(str(templates_dir()))
        name = DOCKERFILE_TEMPLATE
    environment = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["quote"] = quote
    environment.filters["exec_form"] = exec_form
    environment.filters["literal"] = literal
    try:
        return environment.get_template(name).render(
            version=__version__,
            base=base,
            owned=owned,
            volumes=config.volumes,
            stop_signal=config.stop_signal,
            healthcheck=healthcheck_instruction(config.healthcheck) if config.healthcheck else None,
            env=config.env,
            labels=config.labels,
            expose=config.expose,
            workdir=config.workdir,
            user=config.user,
            entrypoint=config.entrypoint,
            cmd=config.cmd,
        )
    except jinja2.TemplateError as err:
        where = f"{template}" if template else name
        raise InputError(f"template {where}: {err}") from err
