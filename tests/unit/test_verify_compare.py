"""shrink --verify's comparison: two runs of the original against one of the result.

Table-driven over plain :class:`TraceResult` values, as the tracer returns them:
what the original does alike in both runs and the result does not is a
difference; what varies between the two original runs never is.
"""

from __future__ import annotations

import dataclasses

import pytest

from scratchpack.trace.compare import DifferenceKind, compare_runs, missing_paths
from scratchpack.trace.run import Probe, ProbeKind, TraceResult

BASE = TraceResult(
    paths=frozenset({"/bin/app", "/etc/app.conf", "/data/part-2.txt"}),
    exit_code=0,
    probes=(),
    log_lines=10,
    output="got two\n",
)


def run(**changes: object) -> TraceResult:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


HTTP_OK = Probe("80/tcp", ProbeKind.HTTP, True, "GET / -> HTTP/1.1 200 OK")
HTTP_404 = Probe("80/tcp", ProbeKind.HTTP, True, "GET / -> HTTP/1.1 404 Not Found")


@pytest.mark.parametrize(
    ("first", "second", "result", "expected"),
    [
        (BASE, BASE, BASE, []),
        (BASE, BASE, run(paths=BASE.paths | {"/extra"}), []),  # the result may use more
        (
            BASE,
            BASE,
            run(paths=BASE.paths - {"/data/part-2.txt"}, output="", exit_code=1),
            [
                (DifferenceKind.EXIT, "exit status"),
                (DifferenceKind.OUTPUT, "standard output, line 1"),
                (DifferenceKind.PATH, "/data/part-2.txt"),
            ],
        ),
        # A temporary name differs between the two original runs: not counted.
        (
            run(paths=BASE.paths | {"/tmp/a1b2"}),
            run(paths=BASE.paths | {"/tmp/c3d4"}),
            BASE,
            [],
        ),
        # Output with a timestamp varies in the original itself: not compared.
        (run(output="at 10:00\n"), run(output="at 10:01\n"), run(output="at 10:02\n"), []),
        (
            run(probes=(HTTP_OK,)),
            run(probes=(HTTP_OK,)),
            run(probes=(HTTP_404,)),
            [
                (DifferenceKind.PROBE, "probe 80/tcp"),
            ],
        ),
        (run(probes=(HTTP_OK,)), run(probes=(HTTP_404,)), run(probes=(HTTP_404,)), []),
    ],
)
def test_what_the_original_does_alike_and_the_result_does_not(
    first: TraceResult,
    second: TraceResult,
    result: TraceResult,
    expected: list[tuple[DifferenceKind, str]],
) -> None:
    found = compare_runs(first, second, result)
    assert [(item.kind, item.subject) for item in found] == expected


def test_command_probes_match_across_runs_whatever_their_ports() -> None:
    """A probe command's ports differ each run; the probe is the same probe."""
    ours = Probe("curl 127.0.0.1:40001", ProbeKind.COMMAND, True, "-> exit 0")
    again = Probe("curl 127.0.0.1:40002", ProbeKind.COMMAND, True, "-> exit 0")
    failed = Probe("curl 127.0.0.1:40003", ProbeKind.COMMAND, False, "-> exit 22", "404")
    found = compare_runs(run(probes=(ours,)), run(probes=(again,)), run(probes=(failed,)))
    assert [(item.kind, item.original, item.result) for item in found] == [
        (DifferenceKind.PROBE, "-> exit 0", "-> exit 22")
    ]


def test_missing_paths_are_what_fix_adds() -> None:
    found = compare_runs(BASE, BASE, run(paths=frozenset({"/bin/app"})))
    assert missing_paths(found) == ["/data/part-2.txt", "/etc/app.conf"]
    assert found[0].line == (
        "/data/part-2.txt: used in the original, not found or refused in the shrunk image"
    )
