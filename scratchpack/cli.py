"""The ``scratchpack`` command line: thin wrappers over the pipeline's stages."""

from __future__ import annotations

import click

from scratchpack import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scratchpack")
def cli() -> None:
    """Turn a Linux binary into the smallest container image that still runs it."""


def main() -> None:
    cli()
