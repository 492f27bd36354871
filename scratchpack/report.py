"""The renderers every command's report shares: the ``--json`` document and sizes in words.

A command returns a frozen result; the command line prints it one of two
ways. The JSON renderer reads the result's ``to_json()`` (the documented
interface); each text renderer reads the typed result itself and lives beside
its type, as ``report_text`` in the command's module (``commands.build``,
``shrink``, ``debug``, ``deps``, ``lock``, ``prune``), so neither is derived
from the other. This module sits on the ground floor, so every command may use it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol


class Reportable(Protocol):
    """A command's result: what ``--json`` prints is its ``to_json()``."""

    def to_json(self) -> Any: ...


def json_text(document: object) -> str:
    """Indented for a person on a terminal; compact in pipes, where the C encoder is 5x faster."""
    if sys.stdout.isatty():
        return json.dumps(document, indent=2)
    return json.dumps(document)


def json_report(result: Reportable) -> str:
    """The ``--json`` renderer: the result's document, as :func:`json_text` prints it."""
    return json_text(result.to_json())


def size_text(count: int) -> str:
    """``34.6 kB`` under 100 kB, ``5.43 MB`` from there: a size as the reports print it."""
    return f"{count / 1e6:.2f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"
