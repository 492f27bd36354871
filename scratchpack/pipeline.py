"""``build`` from request to published outputs: check everything, then do, then publish.

Every check that needs no work runs first (conflicting options, output paths,
the tag and the push reference), so a mistake costs nothing. Local outputs
(the context, the image archive or layout, the SBOM, the debug variant) are
staged beside their targets and appear only when every step succeeded,
including ``--verify`` and ``--push``; images built in the engine for a run
that then fails are removed again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from scratchpack.build import (
    BuildOptions,
    ImagePlan,
    context_archive,
    plan_image,
    split_layers,
    write_context,
)
from scratchpack.config import ImageConfig, check_config
from scratchpack.errors import InputError, VerifyError
from scratchpack.oci import (
    WrittenImage,
    archive_layout,
    platform_for,
    source_date_epoch,
    write_layout,
)
from scratchpack.progress import ByteProgress, terminal_progress
from scratchpack.reference import Reference, check_tag

if TYPE_CHECKING:
    from scratchpack.engine import Engine


@dataclass(frozen=True)
class DebugRequest:
    suffix: str = "-debug"
    shell: str = "base"  # "base" | "busybox"
    base: str = "alpine:3.20"
    busybox: str = "/bin/busybox"


@dataclass
class BuildRequest:
    """Everything ``scratchpack build`` was asked to do."""

    options: BuildOptions
    config: ImageConfig
    tag: str | None
    engine_mode: str = "auto"  # "auto" | "docker" | "none"
    output: Path | None = None
    split_layers: bool = False
    context_dir: Path | None = None
    no_build: bool = False
    template: Path | None = None
    verify: list[str] | None = None
    push: str | None = None
    credentials: Any = None  # registry.Credentials, resolved by the caller
    insecure: bool = False
    sbom: Path | None = None
    sbom_format: str = "spdx"
    debug: DebugRequest | None = None
    show_progress: bool = False


# -- checks before any work -------------------------------------------------------------------


def check_request(request: BuildRequest) -> None:
    """Refuse contradictions and unusable output paths before anything is resolved."""
    if request.no_build:
        if request.context_dir is None:
            raise InputError("--no-build writes only the build context: give --context DIR")
        for given, option in (
            (request.output, "-o/--output"),
            (request.push, "--push"),
            (request.verify is not None, "--verify"),
            (request.debug, "--debug"),
        ):
            if given:
                raise InputError(f"--no-build builds nothing: {option} has nothing to work on")
    elif not request.tag:
        raise InputError("missing -t/--tag NAME[:TAG]")
    if request.tag:
        check_tag(request.tag)
    if request.engine_mode == "docker":
        for given, option in (
            (request.output, "-o/--output"),
            (request.push, "--push"),
            (request.split_layers, "--layers split"),
        ):
            if given:
                raise InputError(f"{option} uses the built-in writer: drop --engine docker")
    if request.debug is not None:
        if not request.debug.suffix:
            raise InputError("--debug-suffix must not be empty: the variant needs a tag of its own")
        if request.push and request.output is None:
            raise InputError("--debug with --push: a push-only run keeps nothing locally; add -o")
    targets: list[tuple[Path, str]] = []
    if request.context_dir is not None:
        _check_new_directory(request.context_dir, "--context")
        targets.append((request.context_dir, "--context"))
    if request.output is not None:
        _check_output(request.output, "--output")
        targets.append((request.output, "--output"))
        if request.debug is not None:
            from scratchpack.debug import debug_output

            debug_target = debug_output(request.output, request.debug.suffix)
            _check_output(debug_target, "the debug variant's output")
            targets.append((debug_target, "the debug variant's output"))
    if request.sbom is not None:
        _check_new_file(request.sbom, "--sbom", may_exist=True)
        targets.append((request.sbom, "--sbom"))
    seen: dict[Path, str] = {}
    for path, option in targets:
        resolved = path.absolute().resolve()
        if resolved in seen:
            raise InputError(f"{option} and {seen[resolved]} both name {path}")
        seen[resolved] = option
    if request.template is not None:
        try:
            request.template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--template {request.template}: cannot read it ({err})") from err
    check_config(request.config)
    source_date_epoch()  # a bad SOURCE_DATE_EPOCH fails now, not after the build


def _check_output(path: Path, option: str) -> None:
    """An image output: a ``.tar`` file (replaced if it exists) or a new or empty directory."""
    if path.suffix == ".tar":
        _check_new_file(path, option, may_exist=True)
    else:
        _check_new_directory(path, option)


def _check_new_directory(path: Path, option: str) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{option} {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{option} {path}: exists and is not empty; choose a new path")
    _check_parent(path, option)


def _check_new_file(path: Path, option: str, may_exist: bool = False) -> None:
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    if path.exists() and not may_exist:
        raise InputError(f"{option} {path}: exists; choose a new path")
    _check_parent(path, option)


def _check_parent(path: Path, option: str) -> None:
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in {parent}")


# -- staged outputs ---------------------------------------------------------------------------


@dataclass
class Outputs:
    """Outputs staged beside their targets, published together or not at all."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)  # (staged, target)
    scratch: list[Path] = field(default_factory=list)  # temporary, always removed
    # Images built under a throw-away tag: (engine, image ID, throw-away tag, final tag).
    # Publishing gives them their final tag; a failure removes them and leaves the
    # user's image that holds the final tag as it was.
    images: list[tuple[Engine, str, str, str]] = field(default_factory=list)

    def engine_tag(self, engine: Engine, final: str) -> str:
        """A throw-away tag to build ``final`` under until everything has succeeded."""
        temporary = f"scratchpack-staging/{os.getpid()}-{os.urandom(4).hex()}:{len(self.images)}"
        self.images.append((engine, "", temporary, final))
        return temporary

    def built(self, temporary: str, image_id: str) -> None:
        self.images = [
            (engine, image_id if tmp == temporary else known, tmp, final)
            for engine, known, tmp, final in self.images
        ]

    def directory(self, target: Path) -> Path:
        target = target.absolute()
        staged = Path(tempfile.mkdtemp(prefix=".scratchpack-", dir=target.parent))
        self.moves.append((staged, target))
        return staged

    def file(self, target: Path) -> Path:
        target = target.absolute()
        staged = Path(tempfile.mkdtemp(prefix=".scratchpack-", dir=target.parent)) / target.name
        self.moves.append((staged, target))
        return staged

    def temporary(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="scratchpack-"))
        self.scratch.append(path)
        return path

    def publish(self) -> None:
        umask = os.umask(0)
        os.umask(umask)
        while self.moves:
            staged, target = self.moves[0]
            if staged.is_dir() and staged.name.startswith(".scratchpack-"):
                if target.is_dir():
                    target.rmdir()  # checked empty before the work began
                staged.rename(target)
            else:
                os.chmod(staged, 0o666 & ~umask)
                os.replace(staged, target)
                staged.parent.rmdir()
            self.moves.pop(0)
        while self.images:
            engine, image_id, temporary, final = self.images[0]
            engine.tag(image_id, final)
            engine.remove_image(temporary)  # the name only: the image keeps its final tag
            self.images.pop(0)

    def discard(self) -> None:
        for staged, _target in self.moves:
            holder = staged if staged.name.startswith(".scratchpack-") else staged.parent
            shutil.rmtree(holder, ignore_errors=True)
        for engine, _image_id, temporary, _final in self.images:
            engine.remove_image(temporary)
        self.moves.clear()
        self.images.clear()

    def cleanup(self) -> None:
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staged_outputs() -> Iterator[Outputs]:
    outputs = Outputs()
    try:
        yield outputs
        outputs.publish()
    except BaseException:
        outputs.discard()  # what publishing had not yet moved into place
        raise
    finally:
        outputs.cleanup()


# -- the run ----------------------------------------------------------------------------------


def choose_engine(mode: str, output: Path | None) -> Engine | None:
    """The engine to build in, or None for the built-in writer."""
    if mode == "none" or output is not None:
        return None
    # The docker SDK takes a tenth of a second to import: only when an engine is wanted.
    from scratchpack.engine import Engine, EngineError

    if mode == "docker":
        return Engine()
    try:
        return Engine()
    except EngineError:
        return None


def default_archive(tag: str) -> Path:
    """``hello_latest.tar`` for ``hello:latest``, in the working directory."""
    return Path(Reference.parse(tag).archive_name())


def run_build(request: BuildRequest, warn: Callable[[str], None]) -> dict[str, Any]:
    """Plan, build or write, verify, push, debug variant, SBOM; then publish every output."""
    check_request(request)
    push_only = request.push is not None and request.output is None
    engine = (
        None
        if request.no_build or request.push
        else choose_engine(request.engine_mode, request.output)
    )
    if request.debug and request.debug.shell == "base" and engine is None and not request.no_build:
        raise InputError(
            "a debug variant on a base image needs the Docker engine that holds the base; "
            "--debug-shell busybox needs none"
        )
    plan = plan_image(request.options, request.config)
    if engine is not None:
        plan.warnings.extend(
            f"{entry.path}: the engine's build drops its file capabilities; "
            "--engine none keeps them"
            for entry in plan.root.files
            if entry.xattrs
        )
    for warning in plan.warnings:
        warn(warning)
    result: dict[str, Any] = {
        "tag": request.tag,
        "files": len(plan.root.files),
        "content_bytes": plan.root.size,
        "context": str(request.context_dir.absolute()) if request.context_dir else None,
        "warnings": plan.warnings,
    }
    progress = terminal_progress if request.show_progress else None
    with staged_outputs() as outputs:
        if request.context_dir is not None:
            write_context(plan, str(outputs.directory(request.context_dir)), request.template)
        if request.no_build:
            pass
        elif engine is not None:
            assert request.tag is not None
            built = _engine_build(engine, plan, request.tag, request, outputs, progress)
            built_as = built.pop("built_as")
            result.update(engine="docker", **built)
            if request.verify is not None:
                result["verify"] = verify_image(
                    request.tag, request.verify, engine, built_as=built_as
                )
        else:
            assert request.tag is not None
            target = None if push_only else (request.output or default_archive(request.tag))
            written = _write(
                plan, request.tag, target, request.split_layers, request.show_progress, outputs
            )
            result.update(
                engine="none",
                output=str(target) if target else None,
                image=written.image_id,
                manifest_digest=written.manifest.digest,
                diff_ids=[layer.diff_id for layer in written.layers],
                size=sum(layer.uncompressed_size for layer in written.layers),
            )
            if request.verify is not None:
                result["verify"] = verify_image(request.tag, request.verify, layout=written.layout)
            if request.push is not None:
                result["push"] = _push(written.layout, request, progress)
        if request.debug is not None and not request.no_build:
            assert request.tag is not None
            result["debug"] = _debug(plan, request, engine, outputs, progress)
        if request.sbom is not None:
            result["sbom"] = _sbom(plan, request, str(result.get("image", "")), outputs)
    return result


def _engine_build(
    engine: Engine,
    plan: ImagePlan,
    tag: str,
    request: BuildRequest,
    outputs: Outputs,
    progress: Callable[[str], None] | None,
    base: str = "scratch",
) -> dict[str, Any]:
    temporary = outputs.engine_tag(engine, tag)
    with context_archive(plan, request.template, base) as context:
        image_id = engine.build(context, temporary, progress)
    outputs.built(temporary, image_id)
    info = engine.image(image_id)
    return {"image": info.id, "size": info.size, "built_as": temporary}


def write_image(
    plan: ImagePlan, tag: str, target: Path, split: bool = False, show_progress: bool = False
) -> WrittenImage:
    """The built-in writer on its own: ``target`` appears only if everything succeeded."""
    with staged_outputs() as outputs:
        written = _write(plan, tag, target, split, show_progress, outputs)
    written.layout = target
    return written


def _write(
    plan: ImagePlan,
    tag: str,
    target: Path | None,
    split: bool,
    show_progress: bool,
    outputs: Outputs,
) -> WrittenImage:
    """The built-in writer: a layout staged for ``target`` (or temporary, push-only)."""
    if target is None or target.suffix == ".tar":
        layout = outputs.temporary() / "layout"
    else:
        layout = outputs.directory(target)
    epoch = source_date_epoch()
    progress = ByteProgress("writing layers", plan.root.size, enabled=show_progress)
    written = write_layout(
        split_layers(plan.root, split),
        plan.config,
        platform_for(plan.machine, plan.bits),
        tag,
        layout,
        epoch,
        progress.advance,
    )
    progress.done()
    if target is not None and target.suffix == ".tar":
        with open(outputs.file(target), "wb") as stream:
            archive_layout(layout, stream, epoch)
    return written


def verify_image(
    tag: str,
    args: list[str],
    engine: Engine | None = None,
    layout: Path | None = None,
    built_as: str | None = None,
) -> dict[str, object]:
    """Run the new image with ``args`` and no network; fail (exit 4) if it fails.

    An image from the built-in writer (its staged ``layout``) is loaded into an
    engine under a throw-away tag just for this, and removed afterwards: the
    engine's own images and tags are left as they were.
    """
    from scratchpack.engine import Engine, EngineError

    reference = built_as or tag
    loaded = False
    if engine is None:
        assert layout is not None
        try:
            engine = Engine()
        except EngineError as err:
            raise EngineError(f"--verify runs the image in a Docker engine: {err}") from err
        reference = f"scratchpack-verify/{os.getpid()}:{os.urandom(4).hex()}"
        with _loadable_archive(layout, reference) as archive:
            engine.load(archive)
        loaded = True
    try:
        run = engine.run(reference, args)
    except EngineError as err:  # it could not even start: the image fails its check
        outcome = "nothing written" if loaded else "image removed"
        raise VerifyError(
            f"{tag} cannot run --verify {shlex.join(args)!r}: {err} ({outcome})"
        ) from err
    finally:
        if loaded:
            engine.remove_image(reference)
    if run.exit_code != 0:
        last = run.output.strip().splitlines()[-1:] or [""]
        outcome = "nothing written" if loaded else "image removed"  # removed by the rollback
        raise VerifyError(
            f"{tag} exited {run.exit_code} with --verify {shlex.join(args)!r}: {last[0]} "
            f"({outcome})"
        )
    return {"args": args, "exit_code": run.exit_code, "output": run.output}


@contextmanager
def _loadable_archive(layout: Path, tag: str) -> Iterator[BinaryIO]:
    """The layout as a ``docker load`` tar whose manifest.json names ``tag`` instead."""
    import json

    staged = Path(tempfile.mkdtemp(prefix="scratchpack-load-"))
    try:
        copy = staged / "layout"
        shutil.copytree(layout, copy, copy_function=os.link)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest[0]["RepoTags"] = [tag]
        (copy / "manifest.json").unlink()
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with tempfile.TemporaryFile() as stream:
            archive_layout(copy, stream, 0)
            stream.seek(0)
            yield stream
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _push(layout: Path, request: BuildRequest, progress: Callable[[str], None] | None) -> dict:
    from scratchpack.registry import push_layout  # imports requests: only to push

    assert request.push is not None
    pushed = push_layout(
        layout, request.push, request.credentials, insecure=request.insecure, progress=progress
    )
    return {"reference": pushed.reference, "digest": pushed.manifest_digest}


def _debug(
    plan: ImagePlan,
    request: BuildRequest,
    engine: Engine | None,
    outputs: Outputs,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    from scratchpack.debug import debug_output, debug_plan, debug_tag

    assert request.debug is not None and request.tag is not None
    settings = request.debug
    tag = check_tag(debug_tag(request.tag, settings.suffix))
    variant = debug_plan(plan, settings.shell, settings.base, settings.busybox, engine)
    result: dict[str, Any] = {
        "tag": tag,
        "shell": settings.shell,
        "base": settings.base if settings.shell == "base" else None,
    }
    if engine is not None:
        base = settings.base if settings.shell == "base" else "scratch"
        built = _engine_build(engine, variant, tag, request, outputs, progress, base)
        built.pop("built_as")
        result.update(built)
        return result
    main = request.output or default_archive(request.tag)
    target = debug_output(main, settings.suffix)
    written = _write(variant, tag, target, request.split_layers, request.show_progress, outputs)
    result.update(image=written.image_id, output=str(target))
    return result


def _sbom(plan: ImagePlan, request: BuildRequest, digest: str, outputs: Outputs) -> dict:
    from scratchpack.dpkg import DpkgIndex
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.sbom import render, sbom_files

    assert request.sbom is not None
    root = RootFS(request.options.root)
    files = sbom_files(plan.root.entries.values(), DpkgIndex.load(root), root)
    data = render(request.sbom_format, files, request.tag or "image", digest, source_date_epoch())
    outputs.file(request.sbom).write_bytes(data)
    packages = {file.package for file in files if file.package is not None}
    return {
        "path": str(request.sbom.absolute()),
        "format": request.sbom_format,
        "files": len(files),
        "packages": len(packages),
    }
