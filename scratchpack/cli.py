"""The ``scratchpack`` command line: thin wrappers over the pipeline's stages.

Exit statuses (documented in the README): 0 success, 1 something is missing
(the output is still complete), 2 usage errors and unusable inputs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from scratchpack import __version__
from scratchpack.errors import EXIT_MISSING, EXIT_OK, ScratchpackError
from scratchpack.loaders import HwcapsChoice
from scratchpack.report import render_tree
from scratchpack.resolve import Resolver

F = TypeVar("F", bound=Callable[..., Any])


def clear_errors(command: F) -> F:
    """Turn a :class:`ScratchpackError` into one line on stderr and its exit status."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ScratchpackError as err:
            click.echo(f"scratchpack: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("scratchpack: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scratchpack")
def cli() -> None:
    """Turn a Linux binary into the smallest container image that still runs it."""


@cli.command()
@click.argument("binaries", nargs=-1, required=True, metavar="BINARY...")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Resolve inside this root filesystem (an unpacked image, a sysroot); "
    "BINARY paths are then paths inside it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per BINARY.")
@click.option(
    "--library-path",
    metavar="PATHS",
    help="Use PATHS as LD_LIBRARY_PATH (default: the environment's; '' for none).",
)
@click.option(
    "--hwcaps",
    default="auto",
    show_default=True,
    metavar="auto|none|LEVELS",
    help="glibc-hwcaps levels to search: the running CPU's (auto), none, or a comma list "
    "such as x86-64-v3,x86-64-v2.",
)
@clear_errors
def deps(
    binaries: tuple[str, ...],
    root: str | None,
    as_json: bool,
    library_path: str | None,
    hwcaps: str,
) -> None:
    """Show the shared libraries the runtime loader would map for each BINARY.

    Nothing is executed: the closure is resolved statically with the loader's
    own rules, so foreign-architecture binaries and other roots work too.
    """
    resolver = Resolver(root=root, library_path=library_path, hwcaps=HwcapsChoice.parse(hwcaps))
    closures = resolver.resolve_all(binaries)
    if as_json:
        click.echo(json.dumps([closure.to_json() for closure in closures], indent=2))
    else:
        click.echo("\n".join(render_tree(closure) for closure in closures), nl=False)
    for closure in closures:
        for item in closure.missing:
            if item.reason:
                click.echo(f"scratchpack: {closure.path}: {item.soname}: {item.reason}", err=True)
    sys.exit(EXIT_OK if all(closure.complete for closure in closures) else EXIT_MISSING)


def main() -> None:
    cli()
