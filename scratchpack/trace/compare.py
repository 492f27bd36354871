"""Does the shrunk image behave like the original? Three traced runs compared.

The original runs twice, the result once, each the same way (configuration,
``--trace-args``, probes) under the tracer. What differs between the two runs
of the original (timestamps, PIDs, temporary names) is the program's own
variation and is never counted; what the original did the same both times
and the result did not is a :class:`Difference`:

- its exit status, or its standard output;
- a probe's outcome, summary or output;
- a path the original used successfully (opened, executed, stat'ed) both
  times that the result did not: missing, unreadable, a library its dlopen
  did not find.

A pure function over :class:`~scratchpack.trace.run.TraceResult` values:
testable without an engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from scratchpack.trace.run import TraceResult

_SHOWN_OUTPUT = 120  # characters of a differing output line in a report


class DifferenceKind(str, Enum):
    EXIT = "exit"  # the program's exit status
    OUTPUT = "output"  # its standard output
    PROBE = "probe"  # a probe's outcome
    PATH = "path"  # a path the original used that the result did not


@dataclass(frozen=True)
class Difference:
    kind: DifferenceKind
    subject: str  # the path, the probe's target, "exit status", "standard output"
    original: str  # what the original did
    result: str  # what the result did

    @property
    def line(self) -> str:
        return f"{self.subject}: {self.original} in the original, {self.result} in the shrunk image"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "original": self.original,
            "result": self.result,
        }


def compare_runs(first: TraceResult, second: TraceResult, result: TraceResult) -> list[Difference]:
    """What both runs of the original did alike and ``result`` did not, in a stable order."""
    differences: list[Difference] = []
    if first.exit_code == second.exit_code and result.exit_code != first.exit_code:
        differences.append(
            Difference(
                DifferenceKind.EXIT,
                "exit status",
                _status(first.exit_code),
                _status(result.exit_code),
            )
        )
    if first.output == second.output and result.output != first.output:
        differences.append(_output_difference(first.output, result.output))
    differences += _probe_differences(first, second, result)
    stable = first.paths & second.paths
    for path in sorted(stable - result.paths):
        differences.append(Difference(DifferenceKind.PATH, path, "used", "not found or refused"))
    return differences


def missing_paths(differences: Iterable[Difference]) -> list[str]:
    # PATH differences name the path as their subject.
    """The paths the result lacked: what ``--fix`` adds."""
    return [item.subject for item in differences if item.kind is DifferenceKind.PATH]


def _status(code: int | None) -> str:
    return "stopped after its probes" if code is None else f"exited {code}"


def _output_difference(original: str, result: str) -> Difference:
    """The first line where the outputs part, as a report can show it."""
    ours, theirs = original.splitlines(), result.splitlines()
    for number, (left, right) in enumerate(zip(ours, theirs, strict=False), 1):
        if left != right:
            return Difference(
                DifferenceKind.OUTPUT,
                f"standard output, line {number}",
                repr(left[:_SHOWN_OUTPUT]),
                repr(right[:_SHOWN_OUTPUT]),
            )
    number = min(len(ours), len(theirs)) + 1
    return Difference(
        DifferenceKind.OUTPUT,
        f"standard output, line {number}",
        f"{len(ours)} lines",
        f"{len(theirs)} lines",
    )


def _probe_differences(
    first: TraceResult, second: TraceResult, result: TraceResult
) -> list[Difference]:
    found = []
    theirs = {probe.target_key: probe for probe in result.probes}
    again = {probe.target_key: probe for probe in second.probes}
    for probe in first.probes:
        twin = again.get(probe.target_key)
        if twin is None or twin.outcome != probe.outcome:
            continue  # the original itself varies here
        other = theirs.get(probe.target_key)
        subject = f"probe {probe.target_key}"
        if other is None:
            found.append(Difference(DifferenceKind.PROBE, subject, probe.summary, "not run"))
        elif other.outcome != probe.outcome:
            found.append(Difference(DifferenceKind.PROBE, subject, probe.summary, other.summary))
    return found
