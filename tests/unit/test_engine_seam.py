"""The commands take their engine: a fake in memory stands in for Docker.

``build`` verifies a written image in the engine it is given; ``shrink`` reads
an archive and writes the result to ``-o`` or into the engine, tracing it and
verifying the result in scripted runs when asked; ``debug`` reads an image of
the engine and loads its variant back. Nothing is published unless every step
succeeded: a failure leaves no output and no tag.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scratchpack.commands.build import BuildRequest, ImageTarget, run_build
from scratchpack.commands.common import DebugShell, EngineMode, VerifyRequest
from scratchpack.commands.debug import DebugImageRequest, run_debug
from scratchpack.commands.shrink import ShrinkRequest, run_shrink
from scratchpack.errors import EngineError, InputError, VerifyError
from scratchpack.image.config import ImageConfig
from scratchpack.image.readers import open_image
from scratchpack.plan.image_plan import BuildOptions
from scratchpack.trace.tracer import TraceError
from tests.unit.fake_engine import FakeEngine, ScriptedRun, recorded


def _request(output: Path, verify: bool = True) -> BuildRequest:
    return BuildRequest(
        options=BuildOptions(binaries=("/bin/true",)),
        config=ImageConfig(entrypoint=None),
        tag="seam:test",
        target=ImageTarget(engine_mode=EngineMode.NONE, output=output),
        verify=VerifyRequest(("--version",)) if verify else None,
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image of ``/bin/true``, written by the built-in writer without any engine."""
    output = tmp_path_factory.mktemp("source") / "true.tar"
    run_build(_request(output, verify=False), FakeEngine())
    return output


@pytest.mark.parametrize("exit_code", [0, 3])
def test_build_verifies_in_the_engine_it_is_given(tmp_path: Path, exit_code: int) -> None:
    engine = FakeEngine(exit_code)
    output = tmp_path / "seam.tar"
    if exit_code:
        with pytest.raises(VerifyError, match="exited 3"):
            run_build(_request(output), engine)
    else:
        result = run_build(_request(output), engine)
        assert result.verify is not None and result.verify.exit_code == 0
    throwaway = engine.calls[0][1]
    assert throwaway.startswith("scratchpack-verify/")
    assert engine.calls == [
        ("load", throwaway),
        ("run", throwaway, "--version"),
        ("untag", throwaway),
    ]
    assert engine.names == {}
    published = [] if exit_code else ["seam.tar"]
    assert sorted(path.name for path in tmp_path.iterdir()) == published


def test_shrink_of_an_archive_writes_the_output_and_asks_no_engine(
    archive: Path, tmp_path: Path
) -> None:
    engine = FakeEngine()
    output = tmp_path / "thin.tar"
    result = run_shrink(ShrinkRequest(str(archive), "thin:1", output=output), engine)
    assert result.engine is EngineMode.NONE and result.output == str(output)
    assert open_image(str(output), tmp_path / "read").image.image_id == result.image
    assert engine.calls == []


def test_shrink_of_an_archive_publishes_into_the_engine(archive: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    result = run_shrink(ShrinkRequest(str(archive), "thin:1"), engine)
    assert result.engine is EngineMode.DOCKER and result.output is None
    ((_, throwaway),) = recorded(engine, "load")
    assert throwaway.startswith("scratchpack-staging/")
    assert recorded(engine, "tag", "untag") == [
        ("tag", result.image, "thin:1"),
        ("untag", throwaway),
    ]
    assert engine.names == {"thin:1": result.image}
    assert engine.image("thin:1").size == result.size


def test_a_failed_load_into_the_engine_tags_nothing(archive: Path, tmp_path: Path) -> None:
    engine = FakeEngine(refuse_loads=True)
    with pytest.raises(EngineError, match="refused to load"):
        run_shrink(ShrinkRequest(str(archive), "thin:1"), engine)
    ((_, throwaway),) = recorded(engine, "load")
    assert recorded(engine, "tag", "untag") == [("untag", throwaway)]  # rolled back
    assert engine.names == {}


def test_debug_reads_an_image_of_the_engine_and_loads_its_variant(
    archive: Path, tmp_path: Path
) -> None:
    source = open_image(str(archive), tmp_path / "source").image
    engine = FakeEngine().holding(source, "app:1")
    request = DebugImageRequest("app:1", "app:1-debug", shell=DebugShell.BUSYBOX)
    result = run_debug(engine, request)
    assert result.tag == "app:1-debug" and result.shell is DebugShell.BUSYBOX
    assert recorded(engine, "save") == [("save", "app:1")]
    variant = engine.images[engine.names["app:1-debug"]]
    assert variant.image_id == result.image
    assert [layer.diff_id for layer in variant.layers[:-1]] == [
        layer.diff_id for layer in source.layers
    ]  # the source's layers, reused; the shell's layer on top
    assert engine.names["app:1"] == source.image_id
    assert not [name for name in engine.names if name.startswith("scratchpack-")]


# -- shrink --trace and --verify: the traced runs are scripted ------------------------------

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="the tracer is packaged from the host's strace"
)
_STARTED = '1 execve("/bin/true", ["/bin/true"], 0x7ffd340d1b10 /* 3 vars */) = 0\n'
_GREETED = '1 openat(AT_FDCWD</>, "/etc/app/greeting", O_RDONLY) = 3</etc/app/greeting>\n'
_LACKING = '1 openat(AT_FDCWD</>, "/etc/app/greeting", O_RDONLY) = -1 ENOENT (No such file)\n'
GREETING = ScriptedRun(_STARTED + _GREETED, stdout="hello\n")  # what the original does


@pytest.fixture(scope="module")
def app_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/bin/true`` as its entrypoint, and data under ``/etc/app`` only a trace keeps."""
    top = tmp_path_factory.mktemp("app")
    (top / "data").mkdir()
    (top / "data/greeting").write_text("hello\n")
    (top / "data/unused").write_text("never read\n")
    request = BuildRequest(
        options=BuildOptions(binaries=("/bin/true",), includes=(f"{top}/data:/etc/app",)),
        config=ImageConfig(entrypoint=("/bin/true",)),
        tag="seam:app",
        target=ImageTarget(engine_mode=EngineMode.NONE, output=top / "app.tar"),
    )
    run_build(request, FakeEngine())
    return top / "app.tar"


def _throwaway_tags_removed(engine: FakeEngine) -> None:
    loads = [tag for _verb, tag in recorded(engine, "load") if not tag.startswith("scratchpack-s")]
    assert loads and all(("untag", tag) in engine.calls for tag in loads)
    assert not [name for name in engine.names if name.startswith("scratchpack-")]


@needs_strace
def test_shrink_trace_keeps_what_the_traced_run_used(app_archive: Path) -> None:
    engine = FakeEngine(runs=[GREETING])
    result = run_shrink(ShrinkRequest(str(app_archive), "thin:1", trace=True), engine)
    assert result.plan.kept.reasons["trace"] == ["/etc/app/greeting"]
    assert "/etc/app/unused" not in {
        path for paths in result.plan.kept.reasons.values() for path in paths
    }
    assert result.trace is not None and result.trace.exit_code == 0
    assert result.trace.output == "hello\n"
    ((_, traced),) = recorded(engine, "container")
    ((_, loaded), _staged) = recorded(engine, "load")
    assert loaded.startswith("scratchpack-trace/") and ("untag", loaded) in engine.calls
    assert engine.image(traced).id != result.image  # the original ran, not the result
    assert engine.names == {"thin:1": result.image}


@needs_strace
def test_a_tracer_that_never_started_publishes_nothing(app_archive: Path) -> None:
    refused = "strace: ptrace(PTRACE_SEIZE, 7): Operation not permitted"
    engine = FakeEngine(runs=[ScriptedRun("", exit_code=1, stderr=refused + "\n")])
    with pytest.raises(TraceError, match=r"could not start /bin/true .*: strace: ptrace"):
        run_shrink(ShrinkRequest(str(app_archive), "thin:1", trace=True), engine)
    assert recorded(engine, "tag") == [] and engine.names == {}
    _throwaway_tags_removed(engine)


@needs_strace
@pytest.mark.parametrize(
    ("candidate", "difference"),
    [
        (ScriptedRun(_STARTED + _LACKING, stdout="hello\n"), "/etc/app/greeting: used"),
        (ScriptedRun(_STARTED + _GREETED, 1, "hello\n"), "exit status: exited 0"),
        (ScriptedRun(_STARTED + _GREETED, stdout="bye\n"), "standard output, line 1"),
    ],
)
def test_shrink_verify_failure_rolls_back(
    app_archive: Path, candidate: ScriptedRun, difference: str
) -> None:
    engine = FakeEngine(runs=[GREETING, GREETING, candidate])
    request = ShrinkRequest(str(app_archive), "thin:1", verify=True)
    with pytest.raises(VerifyError, match="does not behave like") as failed:
        run_shrink(request, engine)
    assert [line for line in failed.value.details if line.startswith(difference)]
    assert engine.runs == []
    (_, original), (_, again), (_, shrunk) = recorded(engine, "container")
    assert original == again != shrunk  # the original twice, then the result
    assert len([tag for _, tag in recorded(engine, "load") if "-verify/" in tag]) == 1
    assert recorded(engine, "tag") == [] and engine.names == {}
    _throwaway_tags_removed(engine)


@needs_strace
def test_shrink_verify_fix_adds_what_the_result_lacked(app_archive: Path) -> None:
    lacking = ScriptedRun(_STARTED + _LACKING, stdout="hello\n")
    engine = FakeEngine(runs=[GREETING, GREETING, lacking, GREETING])
    request = ShrinkRequest(str(app_archive), "thin:1", verify=True, fix=True)
    result = run_shrink(request, engine)
    assert result.verification is not None
    rounds = [
        (item.number, item.added, len(item.differences)) for item in result.verification.rounds
    ]
    assert rounds == [(1, (), 1), (2, ("/etc/app/greeting",), 0)]
    assert "/etc/app/greeting" in result.plan.kept.reasons["verify"]
    assert engine.names == {"thin:1": result.image}
    _throwaway_tags_removed(engine)


# -- a failed --verify shows what the image itself said, made safe for a terminal ------------

_HOSTILE = "\x1b[2J\x1b]0;owned\x07red\r\n"  # clears the screen, retitles the terminal


def _printable(lines: tuple[str, ...]) -> bool:
    return all(char.isprintable() for line in lines for char in line)


@needs_strace
@pytest.mark.parametrize("fix", [False, True])
def test_a_failed_shrink_verify_shows_the_shrunk_images_own_output(
    app_archive: Path, fix: bool
) -> None:
    """memcached's ``can't find the user memcache`` explains its exit status 67."""
    chatter = "".join(f"starting {number}\n" for number in range(1, 31))
    dying = ScriptedRun(
        _STARTED + _GREETED, 67, "hello\n", chatter + "can't find the user memcache\n"
    )
    engine = FakeEngine(runs=[GREETING, GREETING, dying])
    request = ShrinkRequest(str(app_archive), "thin:1", verify=True, fix=fix)
    with pytest.raises(VerifyError, match="behave like") as failed:
        run_shrink(request, engine)
    details = failed.value.details
    assert "exit status: exited 0 in the original, exited 67 in the shrunk image" in details
    at = details.index("the shrunk image's output ends:")
    shown = [line.removeprefix("  ") for line in details[at + 1 :]]
    assert shown == [f"starting {number}" for number in range(12, 31)] + [
        "can't find the user memcache"
    ]
    assert engine.names == {}


@needs_strace
def test_a_failed_shrink_verify_shows_no_control_characters(app_archive: Path) -> None:
    dying = ScriptedRun(_STARTED + _GREETED, 1, "hello\n", _HOSTILE + "x" * 100_000 + "\n")
    engine = FakeEngine(runs=[GREETING, GREETING, dying])
    with pytest.raises(VerifyError) as failed:
        run_shrink(ShrinkRequest(str(app_archive), "thin:1", verify=True), engine)
    details = failed.value.details
    assert _printable(details), details
    assert any("red" in line and "\\x1b" in line for line in details), details
    assert max(len(line) for line in details) < 1000


@needs_strace
def test_a_shrunk_image_that_wrote_nothing_says_so(app_archive: Path) -> None:
    engine = FakeEngine(runs=[GREETING, GREETING, ScriptedRun(_STARTED + _GREETED, 1)])
    with pytest.raises(VerifyError) as failed:
        run_shrink(ShrinkRequest(str(app_archive), "thin:1", verify=True), engine)
    assert failed.value.details[-1] == "the shrunk image wrote nothing"


def test_a_failed_build_verify_shows_no_control_characters(tmp_path: Path) -> None:
    engine = FakeEngine(3, output="fine\n" + _HOSTILE + "y" * 100_000 + "\n")
    with pytest.raises(VerifyError, match="its output ends") as failed:
        run_build(_request(tmp_path / "seam.tar"), engine)
    details = failed.value.details
    assert details[0] == "fine" and _printable(details), details
    assert any("red" in line and "\\x1b" in line for line in details), details
    assert max(len(line) for line in details) < 1000


# -- build --package: usage errors come before the packages are resolved (~10 s of apt) -------


def _resolved(*_args: object, **_options: object) -> object:
    raise AssertionError("the packages were resolved before a usage error")


def _package_request(tmp_path: Path, **changes: object) -> BuildRequest:
    from scratchpack.commands.build import DebugRequest
    from scratchpack.plan.essentials import Essentials

    options: dict[str, object] = {"binaries": (), "packages": ("curl",)}
    if "shell" in changes:
        options["essentials"] = Essentials(shell=str(changes.pop("shell")))
    for listed in ("excludes", "includes"):
        if listed in changes:
            options[listed] = changes.pop(listed)
    debug = changes.pop("debug_busybox", None)
    return BuildRequest(
        options=BuildOptions(**options),  # type: ignore[arg-type]
        config=ImageConfig(entrypoint=None, user=changes.pop("user", None)),  # type: ignore[arg-type]
        tag="seam:packages",
        target=ImageTarget(engine_mode=EngineMode.NONE, output=tmp_path / "out.tar"),
        debug=DebugRequest(shell=DebugShell.BUSYBOX, busybox=str(debug)) if debug else None,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"excludes": ("/",)}, "would leave out everything"),
        ({"excludes": ("usr/share",)}, "a pattern with '/' is an in-image path"),
        ({"shell": "/no/such/busybox"}, r"--shell busybox: no /no/such/busybox"),
        ({"shell": "/bin/true"}, "--shell busybox: /bin/true is not statically linked"),
        ({"debug_busybox": "/no/such/busybox"}, "--debug-shell busybox: no /no/such/busybox"),
        ({"debug_busybox": "/bin/true"}, "no busybox applet table"),
        ({"user": "a:b:c"}, r"--user a:b:c: expected"),
        ({"user": "app:"}, r"--user app:: expected"),
        ({"user": ":staff"}, r"--user :staff: expected"),
        ({"user": "-x"}, r"--user -x: expected"),
        ({"includes": (":/etc/x",)}, r"--include :/etc/x: expected SRC\[:DEST\]"),
        ({"includes": ("/etc/x:rel",)}, r"--include /etc/x:rel: DEST must be an absolute"),
        ({"includes": ("/etc/x:/a/../b",)}, r"DEST must be an absolute path .* without '\.\.'"),
    ],
)
def test_build_package_usage_errors_come_before_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], message: str
) -> None:
    from scratchpack.commands.build import check_request

    monkeypatch.setattr("scratchpack.packages.fetch.resolve_package_root", _resolved)
    monkeypatch.setattr("scratchpack.packages.apt.host_suite", lambda: "bookworm")
    request = _package_request(tmp_path, **changes)
    with pytest.raises(InputError, match=message):
        check_request(request)
        run_build(request, FakeEngine())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("user", ["nonroot", "1000:1000", "www-data:staff", "_apt", "0"])
def test_a_well_formed_user_passes_the_early_checks(tmp_path: Path, user: str) -> None:
    from scratchpack.commands.build import check_request

    check_request(_package_request(tmp_path, user=user))
