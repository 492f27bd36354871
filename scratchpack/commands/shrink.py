"""``shrink``: keep only what an existing image's program needs, and its configuration.

The source (an engine image or an archive) is read and unpacked safely into a
temporary root (:mod:`scratchpack.image.unpack`), optionally traced, planned
(:mod:`scratchpack.plan.shrink`) and written by the built-in writer — to a
file, or loaded into the engine through the SDK. Nothing of the source is
rendered into a Dockerfile or run, but under the tracer when asked; its
configuration is copied exactly, owners and extended attributes included.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.commands.common import EngineMode, connected_engine, default_archive
from scratchpack.engine.client import TRACE_REPOSITORY, Confinement
from scratchpack.errors import EngineUnreachable, InputError, VerifyError, printable
from scratchpack.image.attest import (
    SHRINK_TYPE,
    BuildFacts,
    attached_json,
    attestations,
    attested,
    pinned_epoch,
    source_dependencies,
)
from scratchpack.image.config import history_entry, source_date_epoch
from scratchpack.image.media import Compression
from scratchpack.image.readers import SourceFormat, SourceImage
from scratchpack.image.reference import check_tag
from scratchpack.image.saved import open_and_unpack
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.lazyroot import LazyRoot
from scratchpack.ld.rootfs import RootFS
from scratchpack.notes import collected, warn
from scratchpack.plan.image_plan import loaded_first_json, loaded_first_lines
from scratchpack.plan.shrink import ShrinkInputs, ShrinkPlan, kept_sizes, plan_shrink
from scratchpack.progress import ByteProgress, terminal_progress
from scratchpack.publish import (
    check_new_directory,
    check_new_file,
    publication,
    to_engine,
    to_output,
    writing,
)
from scratchpack.trace.compare import Difference, compare_runs, missing_paths
from scratchpack.trace.run import Ending, TraceNetwork
from scratchpack.trace.tracer import TraceError

if TYPE_CHECKING:
    from collections.abc import Callable

    from scratchpack.engine.client import CommandEngine
    from scratchpack.image.attest import Artifact
    from scratchpack.image.model import Image
    from scratchpack.image.unpack import UnpackReport
    from scratchpack.trace.run import TraceResult


class SbomKind(str, Enum):
    """``--sbom-format`` of the SBOM ``--attest`` attaches."""

    SPDX = "spdx"
    CYCLONEDX = "cyclonedx"


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
    verify: bool = False  # run the original twice and the result once, compare
    fix: bool = False  # with verify: add what the result lacked, until they agree
    engine_mode: EngineMode = EngineMode.AUTO
    output: Path | None = None
    allow_missing: bool = False
    show_progress: bool = False
    max_unpacked: int | None = None  # bytes the source may unpack to (default: free space)
    confinement: Confinement = field(default_factory=Confinement)  # --run-memory, --run-pids
    compression: Compression = Compression.GZIP  # --compression: of the layer written
    attest: SbomKind | None = None  # --attest: attach an SBOM of this format and provenance


MAX_FIX_ROUNDS = 8  # --fix gives up after this many rounds, whatever is left


@dataclass(frozen=True)
class VerifyRound:
    """One build of the shrunk image and its run: what it added, what still differed."""

    number: int
    added: tuple[str, ...]  # paths --fix added before this round (reason "verify")
    differences: tuple[Difference, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.number,
            "added": list(self.added),
            "differences": [item.to_json() for item in self.differences],
        }


@dataclass(frozen=True)
class Verification:
    """``--verify``: the rounds it took for the shrunk image to behave like the original."""

    rounds: tuple[VerifyRound, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": not self.rounds[-1].differences,
            "rounds": [item.to_json() for item in self.rounds],
        }


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
    verification: Verification | None = None
    attestations: tuple[dict[str, str], ...] = ()  # --attest: artifact type, digest, subject

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
        if self.verification is not None:
            document["verify"] = self.verification.to_json()
        if self.plan.records.packages:  # the packages status.d declares
            document["records"] = list(self.plan.records.packages)
        if self.attestations:
            document["attestations"] = list(self.attestations)
        return document


def report_text(result: ShrinkResult) -> str:
    """The human report of ``shrink``, read from its result (``--json`` is ``to_json``)."""
    before, after = result.size_before, result.size or 0
    lines = [
        f"{result.source} ({before / 1e6:.1f} MB) -> {result.tag} ({after / 1e6:.1f} MB), "
        f"{100 * (1 - after / before) if before else 0:.0f}% smaller",
        f"programs: {', '.join(result.plan.programs)}",
    ]
    for reason, numbers in sorted(result.by_reason.items()):
        lines.append(f"  {reason:8} {numbers['files']:5} files {numbers['bytes'] / 1e6:8.2f} MB")
    if result.trace is not None:
        lines.extend(_trace_lines(result.trace))
    if result.verification is not None:
        for item in result.verification.rounds:
            added = f", added {len(item.added)} paths" if item.added else ""
            outcome = f"{len(item.differences)} differences" if item.differences else "same"
            lines.append(f"verify round {item.number}{added}: {outcome}")
    packages = sorted(result.plan.kept.packages)
    if packages:
        lines.append(f"packages: {', '.join(packages)}")
    records = result.plan.records.packages
    if records:
        lines.append(f"records: {len(records)} packages declared in /var/lib/dpkg/status.d")
    lines.extend(loaded_first_lines(loaded_first_json(result.plan.loaded_first)))
    for part in result.plan.partly_kept:
        lines.append(
            f"partly kept: {part.kind}, {part.kept} of {part.total} files of "
            f"{part.path} (--include {part.path} keeps the rest)"
        )
    for reason, paths in sorted(result.plan.kept.reasons.items()):
        lines.append(f"{reason}:")
        lines.extend(f"  {path}" for path in sorted(set(paths)))
    lines.extend(
        f"Attached {one['artifact_type']} {one['digest']} to {one['subject']}"
        for one in result.attestations
    )
    return "\n".join(lines) + "\n"


render_report = report_text  # the name cli.py imports until its shrink body reads report_text


def _trace_lines(trace: TraceResult) -> list[str]:
    """How the traced program ended, its network unless the default, and each probe."""
    how = {
        Ending.EXITED: f"exited {trace.exit_code}",
        Ending.STOPPED: f"stopped after its probes ({trace.stop_signal})",
        Ending.KILLED: f"killed after its probes: as PID 1 it has no handler for "
        f"{trace.stop_signal}, which the kernel drops",
    }[trace.ending]
    lines = [f"traced: the program {how}"]
    if trace.network is not TraceNetwork.BRIDGE:
        lines.append(f"  network: {trace.network.value}")
    for probe in trace.probes:
        mark = "" if probe.passed else " (failed)"
        lines.append(f"  probe {probe.target} {probe.summary}{mark}")
        lines.extend(f"    | {line}" for line in probe.output.splitlines())
    return lines


def _check(request: ShrinkRequest) -> Path | None:
    """Options and the output path, before any work; the writer's target if it is known."""
    check_tag(request.tag)
    if request.fix and not request.verify:
        raise InputError("--fix adds what --verify finds missing: add --verify")
    if not request.trace and not request.verify:
        for given, option in (
            (request.probe_cmd, "--probe-cmd"),
            (request.trace_args, "--trace-args"),
        ):
            if given is not None:
                raise InputError(
                    f"{option} only applies to traced runs: add --trace or --verify, or drop it"
                )
        for given_flag, option in (
            (request.trace_network is not TraceNetwork.BRIDGE, "--trace-network"),
            (request.allow_probe_failure, "--allow-probe-failure"),
            (request.confinement.memory != Confinement.memory, "--run-memory"),
            (request.confinement.pids != Confinement.pids, "--run-pids"),
        ):
            if given_flag:
                raise InputError(
                    f"{option} only applies to traced runs: add --trace or --verify, or drop it"
                )
    if request.trace_network is TraceNetwork.NONE and request.probe_cmd is not None:
        raise InputError(
            "--probe-cmd needs a network to reach the program: not --trace-network none"
        )
    if request.engine_mode is EngineMode.DOCKER and request.output is not None:
        raise InputError("-o/--output uses the built-in writer: drop --engine docker")
    if request.compression is not Compression.GZIP and request.output is None:
        raise InputError(
            f"--compression {request.compression.value} is how the built-in writer writes "
            "layers: add -o PATH (the engine takes gzip, and Docker 20.10 cannot load zstd)"
        )
    if request.attest is not None and request.output is None:
        raise InputError(
            "--attest attaches to an OCI layout or an archive: add -o DIR or -o FILE.tar"
        )
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


def _choose_engine(
    request: ShrinkRequest, in_engine: bool, target: Path | None, given: CommandEngine | None
) -> tuple[CommandEngine | None, Path | None]:
    """The engine (``given``, else the environment's) when the run needs or may load into one.

    Without an engine, the new image goes to the writer's target.
    """
    needed = in_engine or request.trace or request.verify
    if needed or request.engine_mode is EngineMode.DOCKER:
        return given if given is not None else connected_engine(), target
    if target is not None:
        return None, target
    try:
        return given if given is not None else connected_engine(), target
    except EngineUnreachable:
        return None, _output_target(request.tag, None)  # auto, and no engine: the writer


def run_shrink(request: ShrinkRequest, engine: CommandEngine | None = None) -> ShrinkResult:
    """Read the source, plan what to keep, write the new image; publish it or nothing.

    Temporary roots, containers and the images a trace loads are removed
    whatever happens (Ctrl-C too); the source image, and every image and tag
    of the engine, are only read. ``engine`` is the engine to read from, trace
    in and load into; without one, the environment's is connected when needed.
    """
    target = _check(request)
    in_engine = not os.path.lexists(os.path.expanduser(request.image))
    engine, target = _choose_engine(request, in_engine, target, engine)
    say = terminal_progress if request.show_progress else None
    with publication() as staged:
        work = staged.scratch()
        source, report, inputs = _unpacked(request, work, engine, say)
        assert report.lazy is not None
        tracing = None
        if request.trace or request.verify:
            assert engine is not None
            tracing = _Tracing(engine, request, source, work, say)
        with tracing or contextlib.nullcontext(), contextlib.closing(report.lazy):
            traced = None
            if tracing is not None and request.trace:
                traced = tracing.source_run()
                _check_probes(traced, request)
                if traced.exit_code not in (None, 0):
                    warn(
                        f"the traced program exited {traced.exit_code}: it may not have done "
                        "its normal work, so files it needs may be missing "
                        "(see --trace-args, --probe-cmd)"
                    )
            epoch = source_date_epoch()
            verification: Verification | None = None
            # Into the engine, a layer goes plain: docker load would only undo the gzip
            # (1.5 s of a 100,000-file shrink), and the image ID is the same either way.
            compression = request.compression if target is not None else Compression.NONE
            if tracing is not None and request.verify:
                plan, image, verification = _verified(
                    tracing, request, inputs, traced, (work, compression), epoch, say
                )
            else:
                store = BlobStore(
                    staged.directory(target)
                    if target is not None and target.suffix != ".tar"
                    else work / "out",
                    compression,
                )
                plan, image = _planned_image(request, inputs, traced, (), store, epoch)
            attached = _attestations(request, source, inputs, plan, image, engine)
        if target is not None:
            to_output(staged, attested(image, attached), target, request.tag, epoch)
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
        verification=verification,
        attestations=attached_json(attached),
    )


def _unpacked(
    request: ShrinkRequest,
    work: Path,
    engine: CommandEngine | None,
    say: Callable[[str], None] | None,
) -> tuple[SourceImage, UnpackReport, ShrinkInputs]:
    """The source image read and unpacked lazily into ``work/root``: of an image's files,
    shrink creates only those it reads or keeps."""
    if say:
        say(f"reading {request.image}")
    root_dir = work / "root"
    root_dir.mkdir()
    progress = ByteProgress("unpacking", 0, request.show_progress)
    with writing(work, f"the unpacked {request.image}"):
        source, report = open_and_unpack(
            request.image,
            work / "source",
            root_dir,
            engine,
            progress,
            request.max_unpacked,
            lazy=True,
        )
    assert report.lazy is not None
    progress.done()
    for message in report.warnings:
        warn(message)
    inputs = ShrinkInputs(
        LazyRoot(root_dir, report.lazy),
        source.image.config.runtime,
        source.image.platform,
        source.digest,
        report.owners,
        report.xattrs,
    )
    return source, report, inputs


def _planned_image(
    request: ShrinkRequest,
    inputs: ShrinkInputs,
    traced: TraceResult | None,
    verified: tuple[str, ...],
    store: BlobStore,
    epoch: int,
) -> tuple[ShrinkPlan, Image]:
    """Plan what to keep and write it as an image into ``store``."""
    # The plan creates the unpacked files it reads (a lazy root): the disk may fill.
    with writing(Path(os.fspath(inputs.root_dir)), "the unpacked files shrink reads"):
        plan = _plan(request, inputs, traced, verified)
    with writing(store.top, "the shrunk image's layer", plan.root.size):
        layer = store.write_layer(plan.root.sorted_entries(), epoch)
    history = [history_entry(epoch, f"shrink of {inputs.source_digest}")]
    return plan, assemble(store, [layer], plan.runtime, plan.platform, epoch, history)


def _attestations(
    request: ShrinkRequest,
    source: SourceImage,
    inputs: ShrinkInputs,
    plan: ShrinkPlan,
    image: Image,
    engine: CommandEngine | None,
) -> tuple[Artifact, ...]:
    """``--attest``: the shrunk image's SBOM (as build makes one of its plan) and its SLSA
    provenance, whose one input is the source image; read while the unpacked root is open."""
    if request.attest is None:
        return ()
    from scratchpack.image.sbom import render, sbom_files
    from scratchpack.plan.dpkg import DpkgIndex

    root = RootFS(inputs.root_dir)
    files = sbom_files(plan.root.entries.values(), DpkgIndex.load_any(root), root)
    sbom_format = request.attest.value
    sbom = render(sbom_format, files, request.tag, image.image_id, source_date_epoch())
    repo_digests: tuple[str, ...] = ()
    if source.format is SourceFormat.ENGINE and engine is not None:
        # the registry manifests the engine pulled or pushed it as, if any
        repo_digests = engine.image(source.digest).repo_digests
    dependencies = source_dependencies(
        request.image,
        source.format.value,
        source.digest,
        source.manifest_digest,
        repo_digests,
    )
    facts = BuildFacts(shrink_parameters(request), dependencies, pinned_epoch(), SHRINK_TYPE)
    return attestations(image, request.tag, sbom, sbom_format, facts)


def shrink_parameters(request: ShrinkRequest) -> dict[str, Any]:
    """The options that decide the shrunk image, for its provenance (no output paths)."""
    traced = request.trace or request.verify
    return {
        "tag": request.tag,
        "includes": list(request.includes),
        "excludes": list(request.excludes),
        "allow_missing": request.allow_missing,
        "trace": request.trace,
        "trace_args": list(request.trace_args) if request.trace_args is not None else None,
        "probe_cmd": list(request.probe_cmd) if request.probe_cmd is not None else None,
        "trace_network": request.trace_network.value if traced else None,
        "verify": request.verify,
        "fix": request.fix,
        "compression": request.compression.value,
    }


def _plan(
    request: ShrinkRequest,
    inputs: ShrinkInputs,
    traced: TraceResult | None,
    verified: tuple[str, ...],
) -> ShrinkPlan:
    return plan_shrink(
        inputs,
        request.includes,
        traced.paths if traced else (),
        request.excludes,
        static=not request.trace,
        allow_missing=request.allow_missing,
        trace_args=list(request.trace_args) if request.trace_args is not None else None,
        tracing=traced is not None,
        verified=verified,
    )


def _verified(
    tracing: _Tracing,
    request: ShrinkRequest,
    inputs: ShrinkInputs,
    traced: TraceResult | None,
    stores: tuple[Path, Compression],  # where each round's image is written, and how
    epoch: int,
    say: Any,
) -> tuple[ShrinkPlan, Image, Verification]:
    """``--verify``: the shrunk image, run as the original ran twice, until they agree.

    With ``--fix``, each round adds the paths only the result lacked (their
    closures, parents and links follow) and tries again, until nothing
    differs or a round has nothing to add. A difference that remains is a
    :class:`VerifyError`: nothing is published.
    """
    say = say or (lambda _message: None)
    first = traced if traced is not None else tracing.source_run()
    say("running the original again, to tell its own variation from a difference")
    second = tracing.source_run()
    root = RootFS(inputs.root_dir)
    added: list[str] = []
    rounds: list[VerifyRound] = []
    while True:
        number = len(rounds) + 1
        store = BlobStore(stores[0] / f"verify-{number}", stores[1])
        plan, image = _planned_image(request, inputs, traced, tuple(added), store, epoch)
        say(f"verify round {number}: running the shrunk image")
        candidate = tracing.candidate_run(image)
        differences = compare_runs(first, second, candidate)
        rounds.append(VerifyRound(number, tuple(_new_since(rounds, added)), tuple(differences)))
        if not differences:
            return plan, image, Verification(tuple(rounds))
        details = _verify_details(differences, candidate)
        if not request.fix:
            raise VerifyError(
                f"the shrunk {request.tag} does not behave like {request.image}: "
                f"{_counted(differences)} (nothing written; --fix adds the missing paths)",
                details,
            )
        wanted = [
            path
            for path in missing_paths(differences)
            if path not in added and root.trace(path) is not None
        ]
        if not wanted or number >= MAX_FIX_ROUNDS:
            raise VerifyError(
                f"the shrunk {request.tag} still does not behave like {request.image} after "
                f"{number} round{'s' if number > 1 else ''} of --fix: {_counted(differences)} "
                "that adding files does not mend (nothing written)",
                details,
            )
        added += wanted


def _verify_details(differences: list[Difference], candidate: TraceResult) -> tuple[str, ...]:
    """The differences, then the end of what the shrunk image wrote: the program's own
    words (``can't find the user memcache``) say more than its exit status."""
    lines = [printable(item.line) for item in differences]  # a path can hold anything
    if not candidate.output_tail:
        return (*lines, "the shrunk image wrote nothing")
    return (
        *lines,
        "the shrunk image's output ends:",
        *(f"  {line}" for line in candidate.output_tail),
    )


def _new_since(rounds: list[VerifyRound], added: list[str]) -> list[str]:
    """What this round added: the paths added after the previous rounds'."""
    before = sum(len(item.added) for item in rounds)
    return added[before:]


def _counted(differences: list[Difference]) -> str:
    count = len(differences)
    return f"{count} difference{'s' if count != 1 else ''}"


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


class _Tracing:
    """Traced runs of the source and of shrunk candidates, all the same way.

    The tracer is packaged once. The source is traced by its engine name, or
    by image ID when the engine already holds an archive's image; otherwise it
    is loaded under a throw-away tag only (the archive's own names could move
    the user's tags), removed when the ``with`` block ends. No image or tag of
    the engine is changed.
    """

    def __init__(
        self,
        engine: CommandEngine,
        request: ShrinkRequest,
        source: SourceImage,
        work: Path,
        say: Any,
    ) -> None:
        from scratchpack.trace.tracer import package_tracer

        self.engine = engine
        self.request = request
        self.source = source
        self.say = say
        self.tracer = package_tracer(work / "tracer")
        self.reference = request.image
        self.needs_load = source.format is not SourceFormat.ENGINE
        if self.needs_load and engine.has_image(source.digest):
            self.reference, self.needs_load = source.digest, False
        self.loading = contextlib.ExitStack()

    def __enter__(self) -> _Tracing:
        if self.needs_load:
            self.reference = self.loading.enter_context(
                self.engine.loaded(self.source.image, TRACE_REPOSITORY)
            )
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.loading.__exit__(*exc_info)

    def source_run(self) -> TraceResult:
        return self._run(self.reference)

    def candidate_run(self, image: Image) -> TraceResult:
        """A shrunk image, loaded under a throw-away name for its run, then untagged."""
        with self.engine.loaded(image) as name:
            return self._run(name)

    def _run(self, reference: str) -> TraceResult:
        from scratchpack.trace.run import trace_image

        request = self.request
        return trace_image(
            self.engine,
            reference,
            self.source.image.config.runtime,
            self.tracer,
            probe_cmd=list(request.probe_cmd) if request.probe_cmd is not None else None,
            trace_args=list(request.trace_args) if request.trace_args is not None else None,
            timeout=request.trace_timeout,
            progress=self.say,
            network=request.trace_network,
            confinement=request.confinement,
        )
