"""``shrink``: keep only what an existing image's program needs, and its configuration.

The source (an engine image or an archive) is read and unpacked safely into a
temporary root (:mod:`scratchpack.image.unpack`), optionally traced, planned
(:mod:`scratchpack.plan.shrink`) and written by the built-in writer — to a
file, or loaded into the engine through the SDK. Nothing of the source is
rendered into a Dockerfile or run, but under the tracer when asked; its
configuration is copied exactly, owners and extended attributes included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.commands.build import EngineMode, default_archive
from scratchpack.errors import EngineUnreachable, InputError
from scratchpack.image.config import history_entry, source_date_epoch
from scratchpack.image.readers import SourceFormat, SourceImage, open_image
from scratchpack.image.reference import check_tag
from scratchpack.image.unpack import unpack
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.notes import collected, warn
from scratchpack.owner import owner
from scratchpack.plan.image_plan import loaded_first_json, loaded_first_lines
from scratchpack.plan.shrink import ShrinkInputs, ShrinkPlan, kept_sizes, plan_shrink
from scratchpack.progress import ByteProgress, terminal_progress
from scratchpack.publish import (
    check_new_directory,
    check_new_file,
    deferred_signals,
    leftover,
    publication,
    to_engine,
    to_output,
    writing,
)
from scratchpack.trace.run import TraceNetwork
from scratchpack.trace.tracer import TraceError

if TYPE_CHECKING:
    from scratchpack.engine.client import Engine
    from scratchpack.trace.run import TraceResult


@dataclass(frozen=True)
class ShrinkRequest:
    image: str
    tag: str
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()  # --exclude GLOB
    trace: bool = False
    probe_cmd: tuple[str, ...] | None = None
    trace_args: tuple[str, ...] | None = None
    trace_timeout: float = 60
    trace_network: TraceNetwork = TraceNetwork.BRIDGE
    allow_probe_failure: bool = False  # a failed probe of the original is then a warning
    engine_mode: EngineMode = EngineMode.AUTO
    output: Path | None = None
    allow_missing: bool = False
    show_progress: bool = False
    max_unpacked: int | None = None  # bytes the source may unpack to (default: free space)


@dataclass(frozen=True)
class ShrinkResult:
    """What ``shrink`` did: sizes, the new image, and why each file is in it."""

    source: str
    source_digest: str
    size_before: int
    plan: ShrinkPlan
    by_reason: dict[str, dict[str, int]]
    tag: str
    engine: EngineMode
    image: str
    size: int
    output: str | None
    trace: TraceResult | None
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        kept = {reason: sorted(set(paths)) for reason, paths in self.plan.kept.reasons.items()}
        document: dict[str, Any] = {
            "source": self.source,
            "source_digest": self.source_digest,
            "size_before": self.size_before,
            "size_after": self.size,
            "programs": list(self.plan.programs),
            "packages": sorted(self.plan.kept.packages),
            "kept": kept,
            "loaded_first": loaded_first_json(self.plan.loaded_first),
            "partly_kept": [item.to_json() for item in self.plan.partly_kept],
            "by_reason": self.by_reason,
            "trace": self.trace.to_json() if self.trace is not None else None,
            "warnings": list(self.warnings),
            "tag": self.tag,
            "engine": self.engine.value,
            "image": self.image,
            "size": self.size,
        }
        if self.output is not None:
            document["output"] = self.output
        return document


def render_report(result: ShrinkResult) -> str:
    """The human-readable report: sizes, then the kept files grouped by reason."""
    data = result.to_json()
    before, after = data["size_before"], data["size_after"] or 0
    lines = [
        f"{data['source']} ({before / 1e6:.1f} MB) -> {data['tag']} ({after / 1e6:.1f} MB), "
        f"{100 * (1 - after / before) if before else 0:.0f}% smaller",
        f"programs: {', '.join(data['programs'])}",
    ]
    for reason, numbers in sorted(data["by_reason"].items()):
        lines.append(f"  {reason:8} {numbers['files']:5} files {numbers['bytes'] / 1e6:8.2f} MB")
    if data["trace"] is not None:
        code = data["trace"]["exit_code"]
        how = "stopped after its probes" if code is None else f"exited {code}"
        lines.append(f"traced: the program {how}")
        if data["trace"]["network"] != "bridge":
            lines.append(f"  network: {data['trace']['network']}")
        for probe in data["trace"]["probes"]:
            mark = "" if probe["passed"] else " (failed)"
            lines.append(f"  probe {probe['target']} {probe['summary']}{mark}")
            lines.extend(f"    | {line}" for line in probe["output"].splitlines())
    if data["packages"]:
        lines.append(f"packages: {', '.join(data['packages'])}")
    lines.extend(loaded_first_lines(data["loaded_first"]))
    for item in data["partly_kept"]:
        lines.append(
            f"partly kept: {item['kind']}, {item['kept']} of {item['total']} files of "
            f"{item['path']} (--include {item['path']} keeps the rest)"
        )
    for reason, paths in sorted(data["kept"].items()):
        lines.append(f"{reason}:")
        lines.extend(f"  {path}" for path in paths)
    return "\n".join(lines) + "\n"


def _check(request: ShrinkRequest) -> Path | None:
    """Options and the output path, before any work; the writer's target if it is known."""
    check_tag(request.tag)
    if not request.trace:
        for given, option in (
            (request.probe_cmd, "--probe-cmd"),
            (request.trace_args, "--trace-args"),
        ):
            if given is not None:
                raise InputError(f"{option} only applies to a trace: add --trace, or drop it")
        for given_flag, option in (
            (request.trace_network is not TraceNetwork.BRIDGE, "--trace-network"),
            (request.allow_probe_failure, "--allow-probe-failure"),
        ):
            if given_flag:
                raise InputError(f"{option} only applies to a trace: add --trace, or drop it")
    if request.trace_network is TraceNetwork.NONE and request.probe_cmd is not None:
        raise InputError(
            "--probe-cmd needs a network to reach the program: not --trace-network none"
        )
    if request.engine_mode is EngineMode.DOCKER and request.output is not None:
        raise InputError("-o/--output uses the built-in writer: drop --engine docker")
    if request.engine_mode is EngineMode.NONE or request.output is not None:
        return _output_target(request.tag, request.output)
    return None


def _output_target(tag: str, output: Path | None) -> Path:
    """Where the built-in writer writes (``-o``, else build's default name), checked."""
    if output is None:
        target = default_archive(tag)
        check_new_file(target, "the default output", may_exist=True)
    elif output.suffix == ".tar":
        target = output
        check_new_file(target, "--output", may_exist=True)
    else:
        target = output
        check_new_directory(target, "--output")
    return target


def run_shrink(request: ShrinkRequest) -> ShrinkResult:
    """Read the source, plan what to keep, write the new image; publish it or nothing.

    Temporary roots, containers and the images a trace loads are removed
    whatever happens (Ctrl-C too); the source image, and every image and tag
    of the engine, are only read.
    """
    from scratchpack.engine.client import Engine

    target = _check(request)
    in_engine = not os.path.lexists(os.path.expanduser(request.image))
    engine: Engine | None = None
    if in_engine or request.trace or request.engine_mode is EngineMode.DOCKER:
        engine = Engine.connect()
    elif target is None:
        try:
            engine = Engine.connect()
        except EngineUnreachable:
            target = _output_target(request.tag, None)  # auto, and no engine: the writer
    say = terminal_progress if request.show_progress else None
    with publication() as staged:
        work = staged.scratch()
        if say:
            say(f"reading {request.image}")
        with writing(work, f"{request.image} as read for shrinking"):
            source = open_image(request.image, work / "source", engine)
        root_dir = work / "root"
        root_dir.mkdir()
        progress = ByteProgress("unpacking", source.layers_size, request.show_progress)
        with writing(root_dir, f"the unpacked {request.image}"):
            report = unpack(
                source.image, root_dir, request.image, progress.advance, request.max_unpacked
            )
        progress.done()
        for message in report.warnings:
            warn(message)
        traced = None
        if request.trace:
            assert engine is not None
            traced = _trace(engine, request, source, work, say)
            _check_probes(traced, request)
        plan = plan_shrink(
            ShrinkInputs(
                root_dir,
                source.image.config.runtime,
                source.image.platform,
                source.digest,
                report.owners,
                report.xattrs,
            ),
            request.includes,
            traced.paths if traced else (),
            request.excludes,
            static=not request.trace,
            allow_missing=request.allow_missing,
            trace_args=list(request.trace_args) if request.trace_args is not None else None,
            tracing=traced is not None,
        )
        if traced is not None and traced.exit_code not in (None, 0):
            warn(
                f"the traced program exited {traced.exit_code}: it may not have done its "
                "normal work, so files it needs may be missing (see --trace-args, --probe-cmd)"
            )
        epoch = source_date_epoch()
        store = BlobStore(
            staged.directory(target)
            if target is not None and target.suffix != ".tar"
            else work / "out"
        )
        with writing(store.top, "the shrunk image's layer", plan.root.size):
            layer = store.write_layer(plan.root.sorted_entries(), epoch)
        history = [history_entry(epoch, f"shrink of {source.digest}")]
        image = assemble(store, [layer], plan.runtime, plan.platform, epoch, history)
        if target is not None:
            to_output(staged, image, target, request.tag, epoch)
        else:
            assert engine is not None
            to_engine(staged, engine, image, request.tag)
    return ShrinkResult(
        source=request.image,
        source_digest=source.digest,
        size_before=report.bytes,
        plan=plan,
        by_reason=kept_sizes(plan.root),
        tag=request.tag,
        engine=EngineMode.NONE if target is not None else EngineMode.DOCKER,
        image=image.image_id,
        size=image.size,
        output=str(target) if target is not None else None,
        trace=traced,
        warnings=tuple(collected()),
    )


def _check_probes(traced: TraceResult, request: ShrinkRequest) -> None:
    """A probe that fails on the original image: the trace saw a broken run (exit 6).

    What a failed run touched is not what the program needs; with
    ``--allow-probe-failure`` it is kept anyway, with a warning.
    """
    failed = traced.failed_probes
    if not failed:
        return
    names = "; ".join(probe.line for probe in failed)
    if request.allow_probe_failure:
        warn(f"a probe of {request.image} failed ({names}); kept what the trace saw anyway")
        return
    details = tuple(line for probe in failed for line in [probe.line, *probe.output.splitlines()])
    raise TraceError(
        f"a probe of the original {request.image} failed ({names}), so the trace saw a broken "
        "run; fix the probe, or keep what it saw with --allow-probe-failure",
        details,
    )


def _trace(
    engine: Engine, request: ShrinkRequest, source: SourceImage, work: Path, say: Any
) -> TraceResult:
    """Run the source under the tracer.

    An archive whose image is already in the engine (same image ID) is traced by
    that ID, nothing loaded. Otherwise it is loaded under a throw-away tag only
    (the archive's own names could move the user's tags) and that tag removed
    afterwards: no image or tag of the engine is changed.
    """
    from scratchpack.trace.run import trace_image
    from scratchpack.trace.tracer import package_tracer

    tracer = package_tracer(work / "tracer")
    reference = request.image
    loaded = None
    if source.format is not SourceFormat.ENGINE:
        if engine.has_image(source.digest):
            reference = source.digest
        else:
            loaded = reference = f"scratchpack-trace/{owner()}-{os.urandom(4).hex()}:0"
    try:
        if loaded:
            engine.load(source.image, loaded)
        result = trace_image(
            engine,
            reference,
            source.image.config.runtime,
            tracer,
            probe_cmd=list(request.probe_cmd) if request.probe_cmd is not None else None,
            trace_args=list(request.trace_args) if request.trace_args is not None else None,
            timeout=request.trace_timeout,
            progress=say,
            network=request.trace_network,
        )
    except BaseException:
        if loaded:
            with leftover(f"the image {loaded}", f"docker rmi {loaded}"):
                engine.untag(loaded)
        raise
    if loaded:
        with deferred_signals():
            engine.untag(loaded)
    return result
