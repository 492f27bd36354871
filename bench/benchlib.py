"""Pieces both benchmarks share: targets, ratios, progress on stderr."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Target:
    """One pass/fail goal; ``passed`` is None when it could not be measured."""

    name: str
    measured: float | None
    threshold: float
    unit: str
    passed: bool | None

    def line(self, width: int = 44) -> str:
        """The target as one table line, its name padded to ``width``."""
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        got = "not measured" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        return f"  {verdict}  {self.name:<{width}} measured {got}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` output stays clean."""
    print(message, file=sys.stderr, flush=True)
