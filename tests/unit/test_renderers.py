"""The two renderers of shrink, debug, prune, lock and deps, each over a hand-made result.

The expected text and JSON were captured from the command line of before the
typed results (``render_report`` over ``ShrinkResult.to_json()``, the other
reports printed inline in ``cli.py``) with these results, byte for byte. The
text renderers read the typed result: ``to_json`` raising does not stop them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scratchpack.commands import debug, deps, lock, prune, shrink
from scratchpack.commands.common import DebugResult, DebugShell, EngineMode
from scratchpack.commands.shrink import ShrinkResult, Verification, VerifyRound
from scratchpack.engine.attach import AttachResult
from scratchpack.errors import InputError
from scratchpack.image.media import Platform
from scratchpack.ld.resolve import Closure, Library, Missing
from scratchpack.plan.image_plan import LoadedFirst
from scratchpack.plan.records import Records
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.shrink import Kept, PartlyKept, ShrinkPlan
from scratchpack.report import json_report
from scratchpack.trace.compare import Difference, DifferenceKind
from scratchpack.trace.run import Ending, Probe, ProbeKind, TraceNetwork, TraceResult

# -- shrink -----------------------------------------------------------------------------------


def _plan(
    packages: tuple[str, ...] = (),
    loaded: tuple[LoadedFirst, ...] = (),
    partly: tuple[PartlyKept, ...] = (),
) -> ShrinkPlan:
    kept = Kept({"program": ["/app", "/app"], "library": ["/lib/b.so", "/lib/a.so"]}, [*packages])
    return ShrinkPlan(RootPlan(), {}, Platform("amd64"), kept, ("/app", "/bin/sh"), loaded, partly)


BY_REASON = {"program": {"files": 1, "bytes": 1_500_000}, "library": {"files": 2, "bytes": 20_000}}
TRACE = TraceResult(
    frozenset({"/app"}),
    None,
    (
        Probe("8080/tcp", ProbeKind.HTTP, True, "GET / -> HTTP/1.0 200 OK"),
        Probe("probe command", ProbeKind.COMMAND, False, "exit 2", "line one\nline two\n"),
    ),
    10,
    TraceNetwork.HOST,
    ending=Ending.KILLED,
    stop_signal="SIGQUIT",
)
VERIFIED = Verification(
    (
        VerifyRound(1, (), (Difference(DifferenceKind.PATH, "/etc/x", "read", "absent"),)),
        VerifyRound(2, ("/etc/x", "/etc/y"), ()),
    )
)
KEPT_TEXT = "library:\n  /lib/a.so\n  /lib/b.so\nprogram:\n  /app\n"
REASONS_TEXT = "  library      2 files     0.02 MB\n  program      1 files     1.50 MB\n"
SHRINK_JSON: dict[str, Any] = {
    "source": "app:1",
    "source_digest": "sha256:aaa",
    "size_before": 10000000,
    "size_after": 2500000,
    "programs": ["/app", "/bin/sh"],
    "packages": [],
    "kept": {"program": ["/app"], "library": ["/lib/a.so", "/lib/b.so"]},
    "loaded_first": [],
    "partly_kept": [],
    "by_reason": BY_REASON,
    "trace": None,
    "warnings": [],
    "tag": "app:small",
    "engine": "docker",
    "image": "sha256:bbb",
    "size": 2500000,
}
TRACE_JSON = {"exit_code": None, "ended": "stopped", "stop_signal": "SIGTERM", "network": "bridge"}


def _shrunk(**changes: Any) -> ShrinkResult:
    fields: dict[str, Any] = dict(
        source="app:1",
        source_digest="sha256:aaa",
        size_before=10_000_000,
        plan=_plan(),
        by_reason=BY_REASON,
        tag="app:small",
        engine=EngineMode.DOCKER,
        image="sha256:bbb",
        size=2_500_000,
        output=None,
        trace=None,
        warnings=(),
    )
    return ShrinkResult(**{**fields, **changes})


SHRINK: dict[str, tuple[ShrinkResult, str, dict[str, Any]]] = {
    "plain": (
        _shrunk(),
        "app:1 (10.0 MB) -> app:small (2.5 MB), 75% smaller\nprograms: /app, /bin/sh\n"
        + REASONS_TEXT
        + KEPT_TEXT,
        SHRINK_JSON,
    ),
    "everything": (
        _shrunk(
            plan=_plan(
                ("libc6", "base-files"),
                (LoadedFirst("libz.so.1", "/opt/libzip.so", "/opt/libz.so.1"),),
                (PartlyKept("time zones", "/usr/share/zoneinfo", 3, 600),),
            ),
            engine=EngineMode.NONE,
            output="app_small.tar",
            trace=TRACE,
            warnings=("a warning",),
            verification=VERIFIED,
        ),
        "app:1 (10.0 MB) -> app:small (2.5 MB), 75% smaller\nprograms: /app, /bin/sh\n"
        + REASONS_TEXT
        + "traced: the program killed after its probes: as PID 1 it has no handler for "
        "SIGQUIT, which the kernel drops\n"
        "  network: host\n"
        "  probe 8080/tcp GET / -> HTTP/1.0 200 OK\n"
        "  probe probe command exit 2 (failed)\n"
        "    | line one\n"
        "    | line two\n"
        "verify round 1: 1 differences\n"
        "verify round 2, added 2 paths: same\n"
        "packages: base-files, libc6\n"
        "loaded first: libz.so.1 => /opt/libz.so.1 (named by 1 library the program opens "
        "after it)\n"
        "partly kept: time zones, 3 of 600 files of /usr/share/zoneinfo (--include "
        "/usr/share/zoneinfo keeps the rest)\n" + KEPT_TEXT,
        {
            **SHRINK_JSON,
            "packages": ["base-files", "libc6"],
            "loaded_first": [
                {"soname": "libz.so.1", "path": "/opt/libz.so.1", "needed_by": ["/opt/libzip.so"]}
            ],
            "partly_kept": [
                {"kind": "time zones", "path": "/usr/share/zoneinfo", "kept": 3, "total": 600}
            ],
            "trace": {
                "exit_code": None,
                "ended": "killed",
                "stop_signal": "SIGQUIT",
                "network": "host",
                "probes": [
                    {
                        "target": "8080/tcp",
                        "kind": "http",
                        "passed": True,
                        "summary": "GET / -> HTTP/1.0 200 OK",
                        "output": "",
                    },
                    {
                        "target": "probe command",
                        "kind": "command",
                        "passed": False,
                        "summary": "exit 2",
                        "output": "line one\nline two\n",
                    },
                ],
            },
            "warnings": ["a warning"],
            "engine": "none",
            "output": "app_small.tar",
            "verify": {
                "passed": True,
                "rounds": [
                    {
                        "round": 1,
                        "added": [],
                        "differences": [
                            {
                                "kind": "path",
                                "subject": "/etc/x",
                                "original": "read",
                                "result": "absent",
                            }
                        ],
                    },
                    {"round": 2, "added": ["/etc/x", "/etc/y"], "differences": []},
                ],
            },
        },
    ),
    "exited, empty source": (
        _shrunk(
            size_before=0,
            by_reason={},
            engine=EngineMode.AUTO,
            size=0,
            trace=TraceResult(frozenset(), 3, (), 5),
        ),
        "app:1 (0.0 MB) -> app:small (0.0 MB), 0% smaller\nprograms: /app, /bin/sh\n"
        "traced: the program exited 3\n" + KEPT_TEXT,
        {
            **SHRINK_JSON,
            "size_before": 0,
            "size_after": 0,
            "by_reason": {},
            "trace": {**TRACE_JSON, "exit_code": 3, "ended": "exited", "probes": []},
            "engine": "auto",
            "size": 0,
        },
    ),
    "stopped": (
        _shrunk(
            size_before=90_000,
            engine=EngineMode.AUTO,
            size=80_000,
            trace=TraceResult(frozenset(), None, (), 5, ending=Ending.STOPPED),
        ),
        "app:1 (0.1 MB) -> app:small (0.1 MB), 11% smaller\nprograms: /app, /bin/sh\n"
        + REASONS_TEXT
        + "traced: the program stopped after its probes (SIGTERM)\n"
        + KEPT_TEXT,
        {
            **SHRINK_JSON,
            "size_before": 90000,
            "size_after": 80000,
            "trace": {**TRACE_JSON, "probes": []},
            "engine": "auto",
            "size": 80000,
        },
    ),
}


@pytest.mark.parametrize("name", SHRINK)
def test_shrink_renders_its_result(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result, text, document = SHRINK[name]
    assert json_report(result) == json.dumps(document)  # captured, not a terminal: compact
    _without_to_json(monkeypatch, ShrinkResult)
    assert shrink.report_text(result) == text
    assert shrink.render_report is shrink.report_text  # cli.py's name, until it reads the new


# -- debug ------------------------------------------------------------------------------------

OPEN = "Open a shell with: docker run --rm -it --entrypoint sh"
DEBUG: dict[str, tuple[debug.DebugImageResult, str, dict[str, Any]]] = {
    "base": (
        debug.DebugImageResult(
            "app:1",
            DebugResult("app:1-debug", DebugShell.BASE, "alpine:3.20", "sha256:ccc", 7_654_321),
        ),
        f"Built app:1-debug sha256:ccc (7.65 MB)\n{OPEN} app:1-debug\n",
        {
            "source": "app:1",
            "tag": "app:1-debug",
            "shell": "base",
            "base": "alpine:3.20",
            "image": "sha256:ccc",
            "size": 7654321,
        },
    ),
    "busybox, small": (
        debug.DebugImageResult(
            "sha256:0123456789ab",
            DebugResult("dbg:1", DebugShell.BUSYBOX, None, "sha256:ddd", 12_345),
        ),
        f"Built dbg:1 sha256:ddd (12.3 kB)\n{OPEN} dbg:1\n",
        {
            "source": "sha256:0123456789ab",
            "tag": "dbg:1",
            "shell": "busybox",
            "base": None,
            "image": "sha256:ddd",
            "size": 12345,
        },
    ),
    "no size": (
        debug.DebugImageResult(
            "app:1", DebugResult("app:1-debug", DebugShell.BUSYBOX, None, "sha256:eee")
        ),
        f"Built app:1-debug sha256:eee (0.0 kB)\n{OPEN} app:1-debug\n",
        {
            "source": "app:1",
            "tag": "app:1-debug",
            "shell": "busybox",
            "base": None,
            "image": "sha256:eee",
        },
    ),
}


@pytest.mark.parametrize("name", DEBUG)
def test_debug_renders_its_result(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result, text, document = DEBUG[name]
    assert json_report(result) == json.dumps(document)
    _without_to_json(monkeypatch, debug.DebugImageResult, DebugResult)
    assert debug.report_text(result) == text


@pytest.mark.parametrize(
    ("result", "text"),
    [(AttachResult(0, "PID USER\n1 root\n"), "PID USER\n1 root\n"), (AttachResult(0, None), "")],
)
def test_attach_prints_the_commands_output_as_it_was(result: AttachResult, text: str) -> None:
    assert debug.attach_text(result) == text


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (dict(tag="x:1"), "--attach opens a shell in a sidecar: -t do not apply"),
        (
            dict(shell="busybox", busybox="/opt/busybox"),
            "--attach opens a shell in a sidecar: --debug-shell, --busybox do not apply",
        ),
        (dict(base="debian:12"), "--attach opens a shell in a sidecar: --debug-base do not apply"),
        (dict(container=" "), "--attach needs the name or ID of a running container"),
    ],
)
def test_attach_refuses_a_variants_options(given: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = dict(
        container="web", tag=None, shell="base", base="alpine:3.20", busybox="/bin/busybox"
    )
    with pytest.raises(InputError) as caught:
        debug.check_attach(**{**options, **given})
    assert str(caught.value) == message


def test_a_variant_is_named_after_its_image() -> None:
    assert debug.variant_names(("app:1",), None, False) == ("app:1", "app:1-debug")
    assert debug.variant_names(("sha256:0123456789ab",), "d:1", False) == (
        "sha256:0123456789ab",
        "d:1",
    )
    for args, tag, host, message in (
        (("app:1",), None, True, "--allow-host-access goes with --attach CONTAINER"),
        ((), None, False, "debug takes one IMAGE (or --attach CONTAINER)"),
        (
            ("0123456789abcdef",),
            None,
            False,
            "0123456789abcdef is an image ID: name the debug variant with -t NAME[:TAG]",
        ),
    ):
        with pytest.raises(InputError) as caught:
            debug.variant_names(args, tag, host)
        assert str(caught.value) == message


# -- prune, lock ------------------------------------------------------------------------------

REMOVED = ("directory /tmp/scratchpack-1-x", "image scratchpack-staging/1-y")


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (prune.PruneResult(()), "nothing to remove\n"),
        (
            prune.PruneResult(REMOVED),
            "removed directory /tmp/scratchpack-1-x\nremoved image scratchpack-staging/1-y\n",
        ),
    ],
)
def test_prune_renders_its_result(
    result: prune.PruneResult, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert json_report(result) == json.dumps({"removed": list(result.removed)})
    _without_to_json(monkeypatch, prune.PruneResult)
    assert prune.report_text(result) == text


@pytest.mark.parametrize(
    ("result", "text", "document"),
    [
        (
            lock.LockResult("scratchpack.lock", "bookworm", (("linux/amd64", 42),)),
            "linux/amd64: 42 packages\nWrote scratchpack.lock\n",
            {"lock": "scratchpack.lock", "suite": "bookworm", "packages": {"linux/amd64": 42}},
        ),
        (
            lock.LockResult(
                "./locks/app.lock", "trixie", (("linux/amd64", 40), ("linux/arm64", 41))
            ),
            "linux/amd64: 40 packages\nlinux/arm64: 41 packages\nWrote ./locks/app.lock\n",
            {
                "lock": "./locks/app.lock",
                "suite": "trixie",
                "packages": {"linux/amd64": 40, "linux/arm64": 41},
            },
        ),
    ],
)
def test_lock_renders_its_result(
    result: lock.LockResult, text: str, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert json_report(result) == json.dumps(document)
    _without_to_json(monkeypatch, lock.LockResult)
    assert lock.report_text(result) == text


# -- deps -------------------------------------------------------------------------------------

APP = Closure(
    "/bin/app",
    "/lib64/ld-linux-x86-64.so.2",
    False,
    [
        Library("libc.so.6", "/lib/libc.so.6", "/bin/app", "cache"),
        Library("libz.so.1", "/lib/libz.so.1", "/bin/app"),
        Library("libm.so.6", "/lib/libm.so.6", "/lib/libz.so.1"),
    ],
)
PRELOAD = Missing("/lib/pre.so", "/etc/ld.so.preload", "not found")
BAD = Closure(
    "/bin/bad",
    "/lib/ld-musl-x86_64.so.1",
    False,
    [Library("libc.musl-x86_64.so.1", "/lib/ld-musl-x86_64.so.1", "/bin/bad")],
    [Missing("libgone.so", "/bin/bad"), Missing("libwrong.so", "/bin/bad", "wrong architecture")],
    preload_missing=[PRELOAD],
)
NO_LOADER = Closure(
    "/bin/bad2",
    "/lib/ld.so",
    False,
    [],
    [Missing("/lib/ld.so", "/bin/bad2")],
    preload_missing=[PRELOAD, Missing("/lib/pre2.so", "/etc/ld.so.preload")],
)
APP_TEXT = (
    "/bin/app\n    interpreter => /lib64/ld-linux-x86-64.so.2\n"
    "    libc.so.6 => /lib/libc.so.6\n    libz.so.1 => /lib/libz.so.1\n"
    "        libm.so.6 => /lib/libm.so.6\n"
)
APP_JSON = {
    "path": "/bin/app",
    "interpreter": "/lib64/ld-linux-x86-64.so.2",
    "static": False,
    "libraries": [
        {"soname": "libc.so.6", "path": "/lib/libc.so.6"},
        {"soname": "libz.so.1", "path": "/lib/libz.so.1"},
        {"soname": "libm.so.6", "path": "/lib/libm.so.6"},
    ],
    "missing": [],
}
DEPS: dict[str, tuple[tuple[Closure, ...], str, list[Any], list[str], int]] = {
    "complete": (
        (APP, Closure("/bin/busybox", None, True)),
        APP_TEXT + "\n/bin/busybox\n    (statically linked: needs no libraries)\n",
        [
            APP_JSON,
            {
                "path": "/bin/busybox",
                "interpreter": None,
                "static": True,
                "libraries": [],
                "missing": [],
            },
        ],
        [],
        0,
    ),
    "missing": (
        (APP, BAD, NO_LOADER),
        APP_TEXT + "\n/bin/bad\n    interpreter => /lib/ld-musl-x86_64.so.1\n"
        "    libc.musl-x86_64.so.1 => /lib/ld-musl-x86_64.so.1\n"
        "    libgone.so => not found\n    libwrong.so => not found (wrong architecture)\n"
        "\n/bin/bad2\n    interpreter => /lib/ld.so\n    interpreter not found\n",
        [
            APP_JSON,
            {
                "path": "/bin/bad",
                "interpreter": "/lib/ld-musl-x86_64.so.1",
                "static": False,
                "libraries": [
                    {"soname": "libc.musl-x86_64.so.1", "path": "/lib/ld-musl-x86_64.so.1"}
                ],
                "missing": ["libgone.so", "libwrong.so"],
            },
            {
                "path": "/bin/bad2",
                "interpreter": "/lib/ld.so",
                "static": False,
                "libraries": [],
                "missing": ["/lib/ld.so"],
            },
        ],
        [
            "scratchpack: warning: /lib/pre.so from /etc/ld.so.preload cannot be preloaded "
            "(not found): ignored, as ld.so does",
            "scratchpack: /bin/bad: libwrong.so: wrong architecture",
            "scratchpack: warning: /lib/pre2.so from /etc/ld.so.preload cannot be preloaded: "
            "ignored, as ld.so does",
        ],
        1,
    ),
}


@pytest.mark.parametrize("name", DEPS)
def test_deps_renders_its_result(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    closures, text, document, warnings, exit_code = DEPS[name]
    result = deps.DepsResult(closures)
    assert json_report(result) == json.dumps(document)
    assert result.exit_code == exit_code
    _without_to_json(monkeypatch, deps.DepsResult, Closure)
    assert deps.report_text(result) == text
    assert deps.warning_lines(result) == warnings


def _without_to_json(monkeypatch: pytest.MonkeyPatch, *types: type) -> None:
    """Make ``to_json`` of ``types`` raise: a text renderer that reached for it fails."""

    def refused(self: object) -> Any:
        raise AssertionError(f"the text renderer called {type(self).__name__}.to_json()")

    for kind in types:
        monkeypatch.setattr(kind, "to_json", refused)


# -- build ------------------------------------------------------------------------------------


def _index_result(output: str | None) -> Any:
    from scratchpack.commands.build import BuildResult

    return BuildResult(
        tag="curl",
        files=40,
        content_bytes=2_900_000,
        context=None,
        warnings=(),
        platforms=tuple(
            {"platform": name, "image": f"sha256:{n}", "manifest_digest": "", "size": 1}
            for n, name in enumerate(("linux/amd64", "linux/arm64/v8"))
        ),
        index_digest="sha256:" + "ab" * 32,
        engine=EngineMode.NONE,
        output=output,
        size=3_000_000,
    )


@pytest.mark.parametrize(
    ("output", "text"),
    [
        ("out", " to out (3.00 MB, 40 files)\n"),
        (None, " (3.00 MB, 40 files)\n"),  # a push-only run keeps nothing here
        ("curl.tar", " to curl.tar (3.00 MB, 40 files)\nLoad it with: docker load -i curl.tar\n"),
    ],
)
def test_build_names_the_index_it_wrote(output: str | None, text: str) -> None:
    """Several --platform make an index: its digest and its platforms, never ``None``."""
    from scratchpack.commands.build import report_text

    index = f"sha256:{'ab' * 32} (an index of 2 images: linux/amd64, linux/arm64/v8)"
    assert report_text(_index_result(output)) == f"Wrote curl {index}{text}"


@pytest.mark.parametrize(
    ("records", "lines", "document"),
    [
        (Records(), "", None),  # no dpkg database: the report and document as before
        (
            Records(("libc6", "libssl3")),
            "Records: 2 packages (status.d)\n",
            {"packages": ["libc6", "libssl3"], "unknown": []},
        ),
        (
            Records(("libc6",), ("/app/hello",)),
            "Records: 1 package (status.d)\n"
            "Not from a package (no record dates them): /app/hello\n",
            {"packages": ["libc6"], "unknown": ["/app/hello"]},
        ),
    ],
)
def test_build_names_the_packages_it_declares_and_the_files_none_dates(
    records: Records, lines: str, document: dict[str, Any] | None
) -> None:
    """What outdated will see, and what it never can (the user's own binary)."""
    import dataclasses

    from scratchpack.commands.build import report_text

    result = dataclasses.replace(_index_result("out"), records=records)
    assert report_text(result).endswith(f"(3.00 MB, 40 files)\n{lines}")
    assert result.to_json().get("records") == document
