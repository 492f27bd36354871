"""``build``: from request to published outputs. Check everything, then do, then publish.

Every check that needs no work runs first (conflicting options, output paths,
the tag and the push reference), so a mistake costs nothing. Then the plan
(:func:`~scratchpack.plan.image_plan.plan_image`), the image — built in the
engine from the rendered Dockerfile, or written by the built-in writer — its
``--verify`` run, its push, its debug variant and its SBOM. Every output goes
through one :func:`~scratchpack.publish.publication`: nothing appears, and no
tag moves, unless every step succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.commands.common import (
    DebugResult,
    DebugShell,
    EngineMode,
    PackageSources,
    VerifyRequest,
    VerifyResult,
    connected_engine,
    default_archive,
    parse_size,
    run_confinement,
    verify_image,
    verify_written,
)
from scratchpack.errors import BuildRaced, EngineError, EngineUnreachable, InputError, printable
from scratchpack.image.config import source_date_epoch
from scratchpack.image.media import Compression, Platform
from scratchpack.image.reference import check_tag
from scratchpack.notes import collected, warn
from scratchpack.plan.entries import Entry
from scratchpack.plan.image_plan import (
    BuildOptions,
    ImagePlan,
    LoadedFirst,
    loaded_first_json,
    loaded_first_lines,
    plan_files,
    plan_image,
    with_records,
)
from scratchpack.plan.records import Records
from scratchpack.progress import ByteProgress, terminal_progress
from scratchpack.publish import (
    Publication,
    check_distinct,
    check_new_directory,
    check_new_file,
    check_output,
    publication,
    to_engine,
    to_output,
    writing,
)
from scratchpack.report import size_text

if TYPE_CHECKING:
    from scratchpack.engine.client import CommandEngine
    from scratchpack.image.attest import Artifact, BuildFacts
    from scratchpack.image.changes import ImageChanges
    from scratchpack.image.config import ImageConfig
    from scratchpack.image.model import Image, ImageIndex
    from scratchpack.image.registry import Credentials, PushResult
    from scratchpack.image.writer import BlobStore
    from scratchpack.packages.apt import Archive
    from scratchpack.packages.changes import PackageChange
    from scratchpack.packages.lock import Lock, PlatformLock
    from scratchpack.plan.layers import Origin


class Layering(str, Enum):
    """``--layers``: one layer, the shared libraries in a layer other images share, or a
    layer per source package (:func:`~scratchpack.plan.layers.package_layers`)."""

    ONE = "one"
    SPLIT = "split"
    PACKAGES = "packages"  # a layer per source package (or group), the user's files last


class SbomFormat(str, Enum):
    SPDX = "spdx"  # SPDX 2.3 JSON
    CYCLONEDX = "cyclonedx"  # CycloneDX 1.5 JSON


@dataclass(frozen=True)
class ImageTarget:
    """Where the image goes: the engine or the built-in writer (``-o``), and the context."""

    engine_mode: EngineMode = EngineMode.AUTO
    output: Path | None = None
    layering: Layering = Layering.ONE
    max_layers: int = 20  # --max-layers, with --layers packages (containerd refuses > 127)
    context_dir: Path | None = None  # --context: the build context kept here
    no_build: bool = False  # only the build context
    template: Path | None = None  # the user's Dockerfile template
    compression: Compression = Compression.GZIP  # --compression: of the layers written

    @property
    def split(self) -> bool:
        return self.layering is Layering.SPLIT


@dataclass(frozen=True)
class PushRequest:
    """``--push``: where to, how, and who logs in (resolved by :func:`logged_in`)."""

    reference: str
    insecure: bool = False
    retries: int = 5  # transient registry failures retried per step
    user: str | None = None  # --registry-user: the password comes from stdin
    password_stdin: bool = False
    credentials: Credentials | None = None


@dataclass(frozen=True)
class SbomRequest:
    path: Path
    format: SbomFormat = SbomFormat.SPDX

    @classmethod
    def from_options(
        cls, path: str | None, sbom_format: str, attest: bool = False
    ) -> SbomRequest | None:
        """``--sbom PATH --sbom-format F``: a format with neither a path nor --attest is a
        mistake worth saying."""
        if sbom_format != SbomFormat.SPDX.value and not path and not attest:
            raise InputError("--sbom-format goes with --sbom PATH")
        return cls(Path(path), SbomFormat(sbom_format)) if path else None


def verify_from_options(
    args: tuple[str, ...] | None, timeout: float, memory: str, pids: int
) -> VerifyRequest | None:
    """``--verify ARGS`` and the bounds of its run; bounds without a run are a mistake."""
    from scratchpack.engine.client import DEFAULT_RUN_MEMORY, DEFAULT_RUN_PIDS

    if args is None:
        if pids != DEFAULT_RUN_PIDS or parse_size(memory, "--run-memory") != DEFAULT_RUN_MEMORY:
            raise InputError("--run-memory and --run-pids bound the run of --verify: add --verify")
        return None
    return VerifyRequest(args, timeout, run_confinement(memory, pids))


@dataclass(frozen=True)
class AttestRequest:
    """``--attest``: an SBOM in this format and SLSA provenance, attached to each image."""

    sbom_format: SbomFormat = SbomFormat.SPDX


@dataclass(frozen=True)
class DebugRequest:
    suffix: str = "-debug"
    shell: DebugShell = DebugShell.BASE
    base: str = "alpine:3.20"
    busybox: str = "/bin/busybox"


@dataclass(frozen=True)
class BuildRequest:
    """Everything ``scratchpack build`` was asked to do, in groups; :func:`check_request`
    refuses what the groups cannot mean together."""

    options: BuildOptions
    config: ImageConfig
    tag: str | None
    target: ImageTarget = field(default_factory=ImageTarget)
    sources: PackageSources = field(default_factory=PackageSources)
    verify: VerifyRequest | None = None
    push: PushRequest | None = None
    sbom: SbomRequest | None = None
    attest: AttestRequest | None = None
    debug: DebugRequest | None = None
    show_progress: bool = False


@dataclass(frozen=True)
class SbomResult:
    path: str
    format: str
    files: int
    packages: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PlatformChanges:
    """One platform's new image against its previous one (``build --update``)."""

    platform: str  # "linux/amd64"
    changes: ImageChanges

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform, **self.changes.to_json()}


@dataclass(frozen=True)
class UpdateResult:
    """What ``build --update`` changed: the packages (old lock against the fresh
    resolution), and each platform's layers against the image it replaces."""

    lock: str
    packages: tuple[PackageChange, ...]
    digest: str  # the new image's manifest digest (an index's digest for several platforms)
    compared_with: str | None  # where the previous image was read; None: nothing to compare
    not_compared: str = ""  # why nothing was compared (no previous image, unreadable...)
    images: tuple[PlatformChanges, ...] = ()

    @property
    def identical(self) -> bool:
        """The rebuilt image is the very image it replaces (every platform's)."""
        return bool(self.images) and all(one.changes.identical for one in self.images)

    @property
    def upload_bytes(self) -> int | None:
        """What a push sends that the previous image's blobs do not hold (None: unknown)."""
        return sum(one.changes.upload_bytes for one in self.images) if self.images else None

    def to_json(self) -> dict[str, Any]:
        return {
            "lock": self.lock,
            "packages": [change.to_json() for change in self.packages],
            "digest": self.digest,
            "compared_with": self.compared_with,
            "not_compared": self.not_compared or None,
            "identical": self.identical,
            "upload_bytes": self.upload_bytes,
            "images": [one.to_json() for one in self.images],
        }


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` made; ``to_json`` is the ``--json`` document."""

    tag: str | None
    files: int
    content_bytes: int
    context: str | None
    warnings: tuple[str, ...]
    loaded_first: tuple[LoadedFirst, ...] = ()
    moved: tuple[tuple[str, str], ...] = ()  # (host path, image path): the user's files, to /app
    platforms: tuple[dict[str, Any], ...] = ()  # an index's images: platform, digest, size
    index_digest: str | None = None
    lock: str | None = None  # the lock file written or obeyed
    engine: EngineMode | None = None  # None: --no-build
    image: str | None = None
    size: int | None = None
    output: str | None = None  # the built-in writer's archive or layout
    manifest_digest: str | None = None
    diff_ids: tuple[str, ...] = ()
    loaded: bool = False  # the written image was loaded into the engine (--layers, no -o)
    verify: VerifyResult | None = None
    push: PushResult | None = None
    debug: DebugResult | None = None
    sbom: SbomResult | None = None
    archives: tuple[Archive, ...] = ()  # --package: the suites resolved from, with their dates
    update: UpdateResult | None = None  # --update: what changed
    records: Records = field(default_factory=Records)  # the packages the image declares
    loadable: bool = True  # docker load takes the archive (not with zstd layers)
    attestations: tuple[dict[str, str], ...] = ()  # --attest: artifact type, digest, subject

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tag": self.tag,
            "files": self.files,
            "content_bytes": self.content_bytes,
            "context": self.context,
            "warnings": list(self.warnings),
            "loaded_first": loaded_first_json(self.loaded_first),
            "moved": [{"from": host, "to": image} for host, image in self.moved],
        }
        if self.platforms:
            document.update(platforms=list(self.platforms), index_digest=self.index_digest)
        if self.lock is not None:
            document["lock"] = self.lock
        if self.archives:  # package builds only: other documents stay as they were
            document["archives"] = [archive.to_json() for archive in self.archives]
        if self.records.packages or self.records.unknown:
            document["records"] = {
                "packages": list(self.records.packages),
                "unknown": list(self.records.unknown),
            }
        if self.engine is not None:
            document.update(engine=self.engine.value, image=self.image, size=self.size)
        if self.engine is EngineMode.NONE:
            document.update(
                output=self.output,
                manifest_digest=self.manifest_digest,
                diff_ids=list(self.diff_ids),
            )
            if self.loaded:  # written, then loaded into the engine (a layered build, no -o)
                document["loaded"] = True
        if self.verify is not None:
            document["verify"] = self.verify.to_json()
        if self.push is not None:
            document["push"] = {
                "reference": self.push.reference,
                "digest": self.push.manifest_digest,
            }
        if self.debug is not None:
            document["debug"] = self.debug.to_json()
        if self.sbom is not None:
            document["sbom"] = self.sbom.to_json()
        if self.update is not None:
            document["update"] = self.update.to_json()
        if self.attestations:
            document["attestations"] = list(self.attestations)
        return document


def report_text(result: BuildResult) -> str:
    """The human report of ``build``, read from its result (``--json`` is ``to_json``)."""
    if result.engine is None:
        lines = [
            f"Wrote the build context to {result.context} "
            f"({result.files} files, {size_text(result.content_bytes)})"
        ]
    else:
        size = f"({size_text(result.size or 0)}, {result.files} files)"
        if result.engine is EngineMode.DOCKER:
            lines = [f"Built {result.tag} {result.image} {size}"]
        else:
            where = f" to {result.output}" if result.output else ""
            lines = [f"Wrote {result.tag} {_written_image(result)}{where} {size}"]
            if result.output and result.output.endswith(".tar") and result.loadable:
                lines.append(f"Load it with: docker load -i {result.output}")
            if result.loaded:
                lines.append(f"Loaded {result.tag} into the engine ({len(result.diff_ids)} layers)")
    if result.archives:
        lines.append(archives_line(result.archives))
    lines.extend(records_lines(result.records))
    if result.update is not None:
        lines.extend(update_lines(result.update))
    lines.extend(f"Moved {host} -> {image}" for host, image in result.moved)
    groups = loaded_first_json(result.loaded_first)
    lines.extend(line[0].upper() + line[1:] for line in loaded_first_lines(groups))
    if result.push is not None:
        lines.append(f"Pushed {result.push.reference} {result.push.manifest_digest}")
    if result.debug is not None:
        where = f" to {result.debug.output}" if result.debug.output else ""
        lines.append(f"Debug variant {result.debug.tag} {result.debug.image}{where}")
    if result.sbom is not None:
        lines.append(f"SBOM ({result.sbom.format}) in {result.sbom.path}")
    lines.extend(
        f"Attached {one['artifact_type']} {one['digest']} to {one['subject']}"
        for one in result.attestations
    )
    return "".join(f"{line}\n" for line in lines)


def records_lines(records: Records) -> list[str]:
    """How many packages the image declares to scanners and ``outdated``, and the files
    nothing can date: what a user must keep patched by other means."""
    lines = []
    if records.packages:
        count = len(records.packages)
        lines.append(f"Records: {count} package{'s' if count != 1 else ''} (status.d)")
    if records.unknown:
        shown = ", ".join(records.unknown[:5]) + (", …" if len(records.unknown) > 5 else "")
        lines.append(f"Not from a package (no record dates them): {shown}")
    return lines


def archives_line(archives: tuple[Archive, ...]) -> str:
    """``Archives: deb.debian.org/debian bookworm (2024-08-10), bookworm-updates (…), …``:
    each repository once, then its suites with their Release dates."""
    parts: list[str] = []
    shown_uri = None
    for archive in archives:
        uri = re.sub(r"^[a-z][a-z0-9+.-]*://", "", archive.uri).rstrip("/")
        date = f" ({_day(archive.date)})" if archive.date else ""
        head = f"{printable(uri)} " if uri != shown_uri else ""
        parts.append(f"{head}{printable(archive.suite)}{date}")
        shown_uri = uri
    return "Archives: " + ", ".join(parts)


def _day(date: str) -> str:
    """A Release file's ``Date:`` as its day (``2024-08-10``), or as written if it is odd."""
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(date).strftime("%Y-%m-%d")
    except (TypeError, ValueError, IndexError):
        return printable(date)


def update_lines(update: UpdateResult) -> list[str]:
    """``--update``'s part of the report: packages old -> new, layers kept and new, bytes."""
    count = len(update.packages)
    if not update.packages and update.identical:
        return [
            f"Update of {update.lock}: no package changed: the image is byte-identical "
            f"(digest {update.digest})"
        ]
    if update.packages:
        lines = [f"Update of {update.lock}: {count} package{'s' * (count != 1)} changed"]
    else:
        lines = [f"Update of {update.lock}: no package changed (digest {update.digest})"]
    lines.extend(f"  {_package_change(change)}" for change in update.packages)
    if update.compared_with is None:
        lines.append(f"Nothing to compare the image with: {printable(update.not_compared)}")
        return lines
    for one in update.images:
        changes = one.changes
        new = changes.new_layers
        digests = ", ".join(layer.digest[:19] for layer in new)
        listed = f" ({digests})" if new else ""
        on = f" ({one.platform})" if len(update.images) > 1 else ""
        lines.append(
            f"Layers against {printable(update.compared_with)}{on}: "
            f"{len(changes.layers) - len(new)} "
            f"kept, {len(new)} new{listed}"
        )
    config = ", config changed" if any(one.changes.config_changed for one in update.images) else ""
    lines.append(f"A push uploads {size_text(update.upload_bytes or 0)}{config}")
    return lines


def _package_change(change: PackageChange) -> str:
    """``linux/amd64 libssl3 3.0.20-1 -> 3.0.22-1`` (or added, removed)."""
    from scratchpack.packages.changes import ChangeKind

    if change.kind is ChangeKind.ADDED:
        return f"{change.platform} {change.name} {change.new} (added)"
    if change.kind is ChangeKind.REMOVED:
        return f"{change.platform} {change.name} {change.old} (removed)"
    return f"{change.platform} {change.name} {change.old} -> {change.new}"


def _written_image(result: BuildResult) -> str | None:
    """The image's ID, or for several --platform the index's digest and what it holds."""
    if not result.platforms:
        return result.image
    count = len(result.platforms)
    names = ", ".join(str(image["platform"]) for image in result.platforms)
    return f"{result.index_digest} (an index of {count} images: {names})"


# -- checks before any work -------------------------------------------------------------------


def _check_compression(target: ImageTarget, push: bool) -> None:
    """zstd and none are the built-in writer's: an engine build compresses its own way, and
    Docker 20.10 cannot load zstd layers."""
    if target.compression is not Compression.GZIP and target.output is None and not push:
        raise InputError(
            f"--compression {target.compression.value} is how the built-in writer writes "
            "layers: add -o PATH or --push (the engine compresses its own way, and Docker "
            "20.10 cannot load zstd layers)"
        )


def check_request(request: BuildRequest) -> None:
    """Refuse contradictions and unusable output paths before anything is resolved.

    The one check of a request, from flags or ``scratchpack.yaml`` alike: what
    each group says alone was checked as it was made (``from_options``).
    """
    options, target = request.options, request.target
    if not options.binaries and not options.packages:
        raise InputError("build needs a BINARY, or --package PKG")
    if options.packages and options.root:
        raise InputError("--package makes its own root: drop --root")
    _check_outputs_agree(request)
    if request.tag:
        check_tag(request.tag)
    if target.engine_mode is EngineMode.DOCKER:
        for given, option in (
            (target.output, "-o/--output"),
            (request.push, "--push"),
            (target.layering is not Layering.ONE, f"--layers {target.layering.value}"),
        ):
            if given:
                raise InputError(f"{option} uses the built-in writer: drop --engine docker")
    if request.debug is not None:
        if not request.debug.suffix:
            raise InputError("--debug-suffix must not be empty: the variant needs a tag of its own")
        if request.push and target.output is None:
            raise InputError("--debug with --push: a push-only run keeps nothing locally; add -o")
    _check_compression(target, request.push is not None)
    if request.attest is not None and target.output is None and request.push is None:
        raise InputError(
            "--attest attaches to an OCI layout, an archive or a pushed image: add -o PATH "
            "or --push"
        )
    _check_update_fits(request)
    _check_paths(request)
    request.config.check()
    _check_user_form(request.config.user)
    _check_host_files(request)
    source_date_epoch()  # a bad SOURCE_DATE_EPOCH fails now, not after the build
    if request.push is not None:
        _check_push(request.push)


def _check_outputs_agree(request: BuildRequest) -> None:
    """--no-build, a tag, several --platform: what each output needs of the others."""
    target = request.target
    if target.no_build:
        if target.context_dir is None:
            raise InputError("--no-build writes only the build context: give --context DIR")
        for given, option in (
            (target.output, "-o/--output"),
            (request.push, "--push"),
            (request.verify is not None, "--verify"),
            (request.debug, "--debug"),
        ):
            if given:
                raise InputError(f"--no-build builds nothing: {option} has nothing to work on")
    elif not request.tag:
        raise InputError("missing -t/--tag NAME[:TAG]")
    if len(request.sources.platforms) > 1:
        if not request.options.packages:
            raise InputError(
                "several --platform images need their files for each architecture: add "
                "--package (a BINARY is built for one architecture only)"
            )
        for given, option in (
            (target.engine_mode is EngineMode.DOCKER, "--engine docker"),
            (target.no_build or target.context_dir is not None, "--context/--no-build"),
            (request.debug, "--debug"),
            (request.sbom, "--sbom"),
        ):
            if given:
                raise InputError(f"{option} makes one image; several --platform make an index")


def _check_update_fits(request: BuildRequest) -> None:
    """``--update``: the lock (its existence checked as the flags were read) was made for
    this build's suite, packages, repositories and platforms; the image is written."""
    sources, target = request.sources, request.target
    if not sources.update:
        return
    from scratchpack.packages.apt import PackageError, host_suite
    from scratchpack.packages.lock import read_lock
    from scratchpack.packages.root import host_architecture

    refused = "--update re-resolves an existing lock"
    for given, option in (
        (target.engine_mode is EngineMode.DOCKER, "--engine docker"),
        (target.no_build, "--no-build"),
    ):
        if given:
            raise InputError(f"{refused} and writes the image reproducibly: drop {option}")
    assert sources.lock is not None
    names = [str(platform) for platform in sources.platforms]
    names = names or [str(Platform.from_debian(host_architecture()))]
    try:
        lock = read_lock(sources.lock)
        for name in names:
            lock.check(
                request.options.suite or host_suite(),
                request.options.packages,
                name,
                sources.lock,
                sources.repositories,
            )
    except PackageError as err:
        raise InputError(f"{refused}: {err}") from err
    if sorted(lock.platforms) != sorted(names):
        raise InputError(
            f"{refused}: {sources.lock} pins {', '.join(sorted(lock.platforms))}; "
            f"give the same --platform (this build makes {', '.join(names)})"
        )


def _check_paths(request: BuildRequest) -> None:
    """Every path the build writes is usable and none is another's; the template reads."""
    target, replace = request.target, request.sources.update  # --update rebuilds a layout too
    targets: list[tuple[Path, str]] = []
    if target.context_dir is not None:
        check_new_directory(target.context_dir, "--context")
        targets.append((target.context_dir, "--context"))
    if target.output is not None:
        check_output(target.output, "--output", replace)
        targets.append((target.output, "--output"))
        if request.debug is not None:
            from scratchpack.plan.debug import debug_output

            debug_target = debug_output(target.output, request.debug.suffix)
            check_output(debug_target, "the debug variant's output", replace)
            targets.append((debug_target, "the debug variant's output"))
    if request.sbom is not None:
        check_new_file(request.sbom.path, "--sbom", may_exist=True)
        targets.append((request.sbom.path, "--sbom"))
    check_distinct(targets)
    if target.template is not None:
        try:
            target.template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--template {target.template}: cannot read it ({err})") from err


# USER's parts: a uid or gid, or a name to look up (never "-x", never blank).
_ACCOUNT_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


def _check_user_form(user: str | None) -> None:
    """``--user USER[:GROUP]``: its form; whether the image names it needs the root."""
    if user is None:
        return
    name, colon, group = user.partition(":")
    parts = (name, group) if colon else (name,)
    if not all(_ACCOUNT_PART.fullmatch(part) for part in parts):
        raise InputError(
            f"--user {user}: expected a name or a uid, then optionally :GROUP or :GID "
            "(such as nonroot, 1000:1000 or www-data:staff)"
        )


def _check_host_files(request: BuildRequest) -> None:
    """What reads only the host or the flags: --exclude, --include's form, the busybox of
    --shell and of --debug-shell busybox; so a mistake fails before the packages are
    resolved."""
    from scratchpack.plan.essentials import shell_platform
    from scratchpack.plan.excludes import Excludes
    from scratchpack.plan.image_plan import include_parts

    options = request.options
    Excludes(options.excludes)
    for spec in options.includes:
        include_parts(spec)
    if options.essentials.shell:
        shell_platform(options.essentials.shell)
    debug = request.debug
    if debug is not None and debug.shell is DebugShell.BUSYBOX:
        from scratchpack.plan.busybox import busybox_applets
        from scratchpack.plan.debug import busybox_entries

        busybox_entries(debug.busybox, [])  # it is there
        busybox_applets(debug.busybox)  # and it is a busybox


def _check_push(push: PushRequest) -> None:
    """The reference, and a user with a password to read (or neither)."""
    # registry imports requests (a tenth of a second): only when pushing.
    from scratchpack.image.registry import parse_reference
    from scratchpack.image.registry_auth import check_login_options

    parse_reference(push.reference)
    check_login_options(push.user, push.password_stdin)


def logged_in(
    request: BuildRequest, read_password: Callable[[], str], note: Callable[[str], None]
) -> BuildRequest:
    """The checked request with its push credentials: --registry-user's password (read only
    now, once every check passed) or docker's config for the registry."""
    push = request.push
    if push is None:
        return request
    from scratchpack.image.registry import parse_reference
    from scratchpack.image.registry_auth import login_credentials

    registry, _repository, _tag = parse_reference(push.reference)
    credentials = login_credentials(registry, push.user, read_password, note)
    return dataclasses.replace(request, push=dataclasses.replace(push, credentials=credentials))


def choose_engine(
    mode: EngineMode, output: Path | None, given: CommandEngine | None = None, prune: bool = True
) -> CommandEngine | None:
    """The engine to build in (``given``, else the environment's), or None for the writer.

    With ``prune`` false, what ended runs left in the environment's engine stays:
    the caller prunes it (:func:`run_build` does, beside its plan)."""
    if mode is EngineMode.NONE or output is not None:
        return None
    if given is not None:
        return given
    try:
        return connected_engine(prune)
    except EngineUnreachable:
        if mode is EngineMode.DOCKER:
            raise
        return None


# -- the run ----------------------------------------------------------------------------------


def run_build(request: BuildRequest, engine: CommandEngine | None = None) -> BuildResult:
    """Plan, build or write, verify, push, debug variant, SBOM; then publish every output.

    ``request`` is one :func:`check_request` passed. ``engine`` is the engine
    to build in and verify with; without one, the environment's is connected
    when the request needs it, and what ended runs left in it is removed while
    the plan is made.
    """
    from scratchpack.engine.prune import pruning_aside

    target = request.target
    builder = (
        None
        if target.no_build or request.push
        else choose_engine(target.engine_mode, target.output, engine, prune=False)
    )
    with pruning_aside(builder if builder is not engine else None):
        result = _run_build(request, builder, engine)
    return dataclasses.replace(result, warnings=tuple(collected()))  # the pruning's too


def _run_build(
    request: BuildRequest, builder: CommandEngine | None, engine: CommandEngine | None
) -> BuildResult:
    """:func:`run_build` once the engine to build in (``builder``) is chosen."""
    target, sources = request.target, request.sources
    debug = request.debug
    if debug and debug.shell is DebugShell.BASE and builder is None and not target.no_build:
        raise InputError(
            "a debug variant on a base image needs the Docker engine that holds the base; "
            "--debug-shell busybox needs none"
        )
    progress = terminal_progress if request.show_progress else None
    with publication(replace_layouts=sources.update) as staged:
        before = _read_before(staged, request, builder) if sources.update else None
        if len(sources.platforms) > 1:
            return _index_build(staged, request, progress, engine, before)
        packaged = None
        if request.options.packages:
            packaged = _with_package_root(staged, request, progress)
            request = packaged.request
            _lock_staged(staged, sources, [packaged])
        # Only the built-in writer cuts layers: a layered build is written, then loaded;
        # an update is written too, to compare its layers and be reproducible.
        dockerfile = builder is not None and target.layering is Layering.ONE and before is None
        plan, built = _plan_or_engine_build(
            staged, request, builder if dockerfile else None, progress
        )
        plan, origins = _whole_packages(plan, request)
        if target.context_dir is not None:
            _write_context(staged, plan, target.context_dir, target.template)
        result = _planned_result(request, plan, packaged)  # the steps below add what they made
        written = None  # the built-in writer's image, reused by a busybox debug variant
        if built is not None:
            result = dataclasses.replace(
                result, engine=EngineMode.DOCKER, image=built.image, size=built.size,
                verify=built.verify,
            )  # fmt: skip
        elif target.no_build:
            pass
        else:
            attest = _attestation_maker(request, plan, [packaged] if packaged else [])
            how = _Written(origins, builder, attest)
            result, written = _write_build(staged, plan, request, progress, engine, result, how)
        if debug is not None and not target.no_build:
            debug_result = _debug_variant(staged, plan, request, builder, written)
            result = dataclasses.replace(result, debug=debug_result)
        if request.sbom is not None:
            sbom = _sbom(staged, plan, request, result.image or "")
            result = dataclasses.replace(result, sbom=sbom)
        if before is not None:
            assert packaged is not None and written is not None
            update = _update_result(
                before, [packaged], [written], written.manifest_descriptor.digest
            )
            result = dataclasses.replace(result, update=update)
    return dataclasses.replace(result, warnings=tuple(collected()))


def _plan_or_engine_build(
    staged: Publication,
    request: BuildRequest,
    dockerfile_builder: CommandEngine | None,
    progress: Callable[[str], None] | None,
) -> tuple[ImagePlan, _EngineBuilt | None]:
    """The plan, its package records included; built from a Dockerfile in
    ``dockerfile_builder`` when there is one and a build is asked for (its records
    are made while its files are sent, :func:`_engine_build`)."""
    sources = request.sources
    plan = plan_files(request.options, request.config)
    _check_platform(plan, sources.platforms[0] if sources.platforms else None)
    if dockerfile_builder is not None:
        _warn_about_dropped_capabilities(plan)  # records carry no capabilities
        if not request.target.no_build:
            return _engine_build(staged, dockerfile_builder, plan, request, progress)
    return with_records(plan, request.options.root), None


def _warn_about_dropped_capabilities(plan: ImagePlan) -> None:
    for entry in plan.root.files:
        if entry.xattrs:
            warn(
                f"{entry.path}: the engine's build drops its file capabilities; "
                "--engine none keeps them"
            )


def _planned_result(
    request: BuildRequest, plan: ImagePlan, packaged: _PackagedPlatform | None
) -> BuildResult:
    """What the plan already says of the build, before an image is made."""
    target, lock = request.target, request.sources.lock
    return BuildResult(
        tag=request.tag,
        files=len(plan.root.files),
        content_bytes=plan.root.size,
        context=str(target.context_dir.absolute()) if target.context_dir else None,
        warnings=(),
        loaded_first=plan.loaded_first,
        moved=plan.moves,
        lock=str(lock) if lock else None,
        archives=packaged.archives if packaged is not None else (),
        records=plan.records,
        loadable=target.compression is not Compression.ZSTD,
    )


def _write_context(
    staged: Publication, plan: ImagePlan, context_dir: Path, template: Path | None
) -> None:
    """--context DIR: the build context (the root and its Dockerfile), staged with the rest."""
    from scratchpack.engine.context import write_context

    directory = staged.directory(context_dir)
    with writing(directory, f"the build context {context_dir}", plan.root.size):
        write_context(plan.root.sorted_entries(), plan.config, str(directory), template)


@dataclass(frozen=True)
class _PackagedPlatform:
    """One platform's package root, read into the request, and what its lock entry says."""

    request: BuildRequest
    platform: str  # "linux/arm64"
    suite: str
    locked: PlatformLock
    from_lock: bool  # the packages came from an existing lock (not --update's fresh ones)
    archives: tuple[Archive, ...] = ()  # the suites apt read, with their Release dates


def _with_package_root(
    staged: Publication,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
    platform: Platform | None = None,
) -> _PackagedPlatform:
    """``--package``: resolve (or take from the lock), download and unpack them for one
    platform; the request then reads that root. ``--update`` resolves afresh: the lock
    says only what was used before."""
    from scratchpack.packages.apt import host_suite
    from scratchpack.packages.fetch import resolve_package_root
    from scratchpack.packages.lock import PlatformLock, read_lock
    from scratchpack.packages.root import host_architecture

    options, sources = request.options, request.sources
    suite = options.suite or host_suite()
    platform = platform or (sources.platforms[0] if sources.platforms else None)
    architecture = platform.debian_architecture if platform else host_architecture()
    name = str(platform or Platform.from_debian(architecture))
    pinned = None
    if sources.lock is not None and sources.lock.exists() and not sources.update:
        lock = read_lock(sources.lock)
        lock.check(suite, options.packages, name, sources.lock, sources.repositories)
        pinned = list(lock.platforms[name].packages)
    if sources.update:  # afresh: the mirror's lists now, not the cached ones
        _refresh_lists(suite, architecture, sources, progress)
    resolved = resolve_package_root(
        options.packages,
        staged.scratch() / "root",
        suite,
        architecture,
        pinned,
        say=progress,
        repositories=sources.repositories,
        only_listed=sources.only_listed_suites,
    )
    root = resolved.root
    for message in root.warnings:  # entries the unpacker refused, scripts it did not read
        warn(message)
    options = dataclasses.replace(options, root=str(root.top), package_root=root)
    return _PackagedPlatform(
        dataclasses.replace(request, options=options),
        name,
        suite,
        PlatformLock(architecture, resolved.refs, resolved.dates),
        pinned is not None,
        resolved.archives,
    )


def _refresh_lists(
    suite: str, architecture: str, sources: PackageSources, say: Callable[[str], None] | None
) -> None:
    """Fetch the package lists of the private apt state now (as ``scratchpack lock`` does),
    so the resolution that follows sees what the mirror offers today."""
    from scratchpack.packages.fetch import package_apt

    apt = package_apt(suite, architecture, sources.repositories, sources.only_listed_suites, say)
    with apt.locked():
        apt.update(force=True)


def _new_lock(platforms: list[_PackagedPlatform]) -> Lock:
    """The lock of what these platforms used."""
    from scratchpack.packages.lock import Lock

    first = platforms[0].request
    return Lock(
        platforms[0].suite,
        first.options.packages,
        {one.platform: one.locked for one in platforms},
        first.sources.repositories,
    )


def _stage_lock(staged: Publication, target: Path, lock: Lock) -> None:
    """``lock`` moved to ``target`` with the other outputs (a failed run leaves the old)."""
    path = staged.file(target)
    with writing(path, f"the lock file {target}"):
        path.write_bytes(lock.to_bytes())


def _lock_staged(
    staged: Publication, sources: PackageSources, platforms: list[_PackagedPlatform]
) -> None:
    """--lock FILE: written with the image when absent, or rewritten by --update."""
    if sources.lock is not None and not platforms[0].from_lock:
        _stage_lock(staged, sources.lock, _new_lock(platforms))


@dataclass(frozen=True)
class _Before:
    """What ``--update`` compares with: the lock as it was, and the image at the build's
    destination before the publication replaces it (per platform)."""

    lock: Lock
    where: str | None  # the archive, layout or engine tag read; None: nothing to compare
    images: Mapping[str, Image] = field(default_factory=dict)  # platform -> its image
    why_not: str = ""  # with no ``where``: why
    saved: bool = False  # read from the engine, whose saved layers are uncompressed


def _read_before(
    staged: Publication, request: BuildRequest, builder: CommandEngine | None
) -> _Before:
    """The old lock and the previous image: the ``-o`` archive or layout (or TAG's archive
    here), else the engine's TAG when the image goes there; an unreadable one is said."""
    from scratchpack.image.readers import open_images, open_path
    from scratchpack.packages.lock import read_lock

    sources, tag = request.sources, request.tag
    assert sources.lock is not None and tag is not None
    lock = read_lock(sources.lock)
    in_engine = builder is not None and request.target.output is None
    in_engine = in_engine and len(sources.platforms) <= 1  # an index is written to a file
    if in_engine:
        assert builder is not None
        where = f"the engine's {tag}"
        if not builder.has_image(tag):
            return _Before(lock, None, why_not=f"no image {tag} in the engine")
    else:
        path = _written_to(request)
        if path is None:
            return _Before(lock, None, why_not="a push-only run keeps no image here (add -o)")
        if not os.path.lexists(path):
            return _Before(lock, None, why_not=f"no previous image at {path}")
        where = str(path)
    try:
        if builder is not None and in_engine:
            archive = staged.scratch() / "previous.tar"
            builder.save_image(tag, archive)
            read = (open_path(tag, archive, staged.scratch()),)
        else:
            read = open_images(where, staged.scratch())
    except (InputError, EngineError) as err:
        return _Before(lock, None, why_not=f"cannot read the previous image {where}: {err}")
    images = {str(source.image.platform): source.image for source in read}
    return _Before(lock, where, images, saved=in_engine)


def _update_result(
    before: _Before, platforms: list[_PackagedPlatform], images: list[Image], digest: str
) -> UpdateResult:
    """The packages the fresh resolution moved, and each platform's layers kept and new."""
    from scratchpack.image.changes import image_changes
    from scratchpack.packages.changes import lock_changes

    assert platforms[0].request.sources.lock is not None
    compared = []
    if before.where is not None:
        for one, image in zip(platforms, images, strict=True):
            previous = before.images.get(one.platform)
            if previous is None and len(before.images) == 1 and len(images) == 1:
                (previous,) = before.images.values()  # one image each: whatever it says it is
            if previous is not None and before.saved:
                previous = _by_content(previous, image)
            compared.append(PlatformChanges(one.platform, image_changes(previous, image)))
    return UpdateResult(
        lock=str(platforms[0].request.sources.lock),
        packages=lock_changes(before.lock, _new_lock(platforms)),
        digest=digest,
        compared_with=before.where,
        not_compared=before.why_not,
        images=tuple(compared),
    )


def _by_content(previous: Image, new: Image) -> Image:
    """An engine's image with each layer the new image holds by content (its diff_id) as
    the new image stores it: the engine saves layers uncompressed, a registry holds what
    the writer compressed, the same bytes for the same content."""
    from scratchpack.image.model import Image

    stored = {layer.diff_id: layer for layer in new.layers}
    layers = tuple(stored.get(layer.diff_id, layer) for layer in previous.layers)
    return Image(previous.config_bytes, layers, previous.manifest_media_type, previous.where)


def _check_platform(plan: ImagePlan, platform: Platform | None) -> None:
    """--platform names what the image is: a BINARY of another architecture is refused."""
    if platform is not None and plan.platform.architecture != platform.architecture:
        raise InputError(
            f"the program is built for {plan.platform}, not {platform}: a BINARY "
            "has one architecture; --package takes each platform's own packages"
        )


def _written_to(request: BuildRequest) -> Path | None:
    """The built-in writer's output: -o, else TAG's archive here; none for a push-only run."""
    assert request.tag is not None
    if request.push is not None and request.target.output is None:
        return None
    return request.target.output or default_archive(request.tag)


def _index_build(
    staged: Publication,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
    engine: CommandEngine | None,
    before: _Before | None = None,
) -> BuildResult:
    """Several platforms: one image each from its own packages, an OCI image index over them."""
    from scratchpack.image.model import ImageIndex

    assert request.tag is not None
    target = _written_to(request)
    store = store_for(staged, target, request.target.compression)
    images: list[Image] = []
    plans: list[ImagePlan] = []
    packaged: list[_PackagedPlatform] = []
    for platform in request.sources.platforms:
        one = _with_package_root(staged, request, progress, platform)
        packaged.append(one)
        plan = plan_image(one.request.options, one.request.config)
        _check_platform(plan, platform)
        plan, origins = _whole_packages(plan, one.request)
        images.append(write_plan(store, plan, request.target, request.show_progress, origins))
        plans.append(plan)
    _lock_staged(staged, request.sources, packaged)
    index = ImageIndex(tuple(images))
    attached: tuple[Artifact, ...] = ()
    if request.attest is not None:
        for image, plan, one in zip(images, plans, packaged, strict=True):
            make = _attestation_maker(one.request, plan, [one])
            attached += make(image) if make is not None else ()
    if target is not None:
        to_output(staged, _attested(index, attached), target, request.tag, source_date_epoch())
    host = Platform.host()
    native = next((image for image in images if host and image.platform == host), None)
    verify = None
    if request.verify is not None and native is not None:
        verify = verify_written(native, request.tag, request.verify, engine)
    push = _push(index, request, progress, attached) if request.push is not None else None
    return BuildResult(
        tag=request.tag,
        files=sum(len(plan.root.files) for plan in plans),
        content_bytes=sum(plan.root.size for plan in plans),
        context=None,
        warnings=tuple(collected()),
        loaded_first=tuple(item for plan in plans for item in plan.loaded_first),
        platforms=tuple(
            {
                "platform": str(image.platform),
                "image": image.image_id,
                "manifest_digest": image.manifest_descriptor.digest,
                "size": image.size,
            }
            for image in images
        ),
        index_digest=index.digest,
        lock=str(request.sources.lock) if request.sources.lock else None,
        engine=EngineMode.NONE,
        output=str(target) if target else None,
        size=index.size,
        verify=verify,
        push=push,
        archives=packaged[0].archives,
        update=_update_result(before, packaged, images, index.digest) if before else None,
        attestations=_attached_json(attached),
    )


def _engine_build(
    staged: Publication,
    engine: CommandEngine,
    plan: ImagePlan,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
) -> tuple[ImagePlan, _EngineBuilt]:
    """Build ``plan`` (all but its package records) in the engine from the rendered
    Dockerfile, under a throw-away tag: the plan with its records, and the image.

    The records are made in a thread while the planned files are sent, and follow
    them (:func:`~scratchpack.engine.context.context_then`): the engine receives
    the bulk of the context while the dpkg database is read. When they change a
    file already sent (a stale ``status.d`` file planned by ``--include``), that
    context is dropped, unfinished, and the whole plan is sent again. So is it once
    when the engine's builder lost an image another client removed meanwhile
    (:class:`~scratchpack.errors.BuildRaced`), with a warning.
    """
    from scratchpack.aside import Aside
    from scratchpack.engine.context import context_then, owned_trees, render_dockerfile

    assert request.tag is not None
    first = plan.root.sorted_entries()
    dockerfile = render_dockerfile(plan.config, owned_trees(first), request.target.template)
    recording = Aside("records", with_records, plan, request.options.root)

    def records() -> list[Entry]:  # once the planned files are sent
        recorded = recording.result()
        added = plan.root.added_by(recorded.root)
        if added is None or any(entry.uid or entry.gid for entry in added):
            raise _ResendWhole(recorded)  # the Dockerfile copies owned entries
        return added

    temporary = staged.engine_name(engine, request.tag)
    try:
        with staged.making(temporary):
            context = context_then(first, dockerfile, records)
            image_id = engine.build(context, temporary, progress, shown=request.tag)
        plan = recording.result()
    except _ResendWhole as resend:
        plan = resend.plan
        temporary, image_id = _build_whole(staged, engine, plan, request, progress)
    except BuildRaced as raced:
        warn(f"{raced}; built again (another client removed an image meanwhile)")
        plan = recording.result()
        temporary, image_id = _build_whole(staged, engine, plan, request, progress)
    staged.engine_image(temporary, image_id)
    info = engine.image(image_id)
    verify = None
    if request.verify is not None:
        verify = verify_image(engine, temporary, request.tag, request.verify)
    return plan, _EngineBuilt(info.id, info.size, verify)


@dataclass(frozen=True)
class _EngineBuilt:
    """What an engine build made: the image, its size, its --verify run."""

    image: str
    size: int
    verify: VerifyResult | None


class _ResendWhole(Exception):
    """The package records changed what a streamed context had sent already."""

    def __init__(self, plan: ImagePlan) -> None:
        super().__init__("the records changed a file already sent")
        self.plan = plan


def _build_whole(
    staged: Publication,
    engine: CommandEngine,
    plan: ImagePlan,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
) -> tuple[str, str]:
    """Build the whole ``plan``, its context's length known: its throw-away tag and image ID."""
    from scratchpack.engine.context import context_stream, owned_trees, render_dockerfile

    assert request.tag is not None
    entries = plan.root.sorted_entries()
    dockerfile = render_dockerfile(plan.config, owned_trees(entries), request.target.template)
    temporary = staged.engine_name(engine, request.tag)
    with staged.making(temporary):
        image_id = engine.build(
            context_stream(entries, dockerfile), temporary, progress, shown=request.tag
        )
    return temporary, image_id


def write_plan(
    store: BlobStore,
    plan: ImagePlan,
    target: ImageTarget | None = None,
    show_progress: bool = False,
    origins: Mapping[str, tuple[Origin, ...]] | None = None,
) -> Image:
    """The built-in writer: the plan's layers and config into ``store``, hashed as written.

    ``origins``: with ``--layers packages``, each path's packages (:func:`_whole_packages`).
    A package layer is dated :data:`~scratchpack.plan.layers.PACKAGE_LAYER_MTIME`, not
    ``SOURCE_DATE_EPOCH``: its bytes are its packages' alone, whichever image holds it.
    """
    from scratchpack.image.config import history_entry
    from scratchpack.image.writer import assemble
    from scratchpack.plan.layers import PACKAGE_LAYER_MTIME, LayerKind, package_layers, split_layers

    target = target or ImageTarget()
    epoch = source_date_epoch()
    history = None
    if target.layering is Layering.PACKAGES:
        planned = package_layers(plan.root, origins or {}, target.max_layers)
        cuts = [
            (layer.entries, PACKAGE_LAYER_MTIME if layer.kind is LayerKind.PACKAGES else epoch)
            for layer in planned
        ]
        history = [history_entry(epoch, layer.comment) for layer in planned]
    else:
        cuts = [(tuple(entries), epoch) for entries in split_layers(plan.root, target.split)]
    progress = ByteProgress("writing layers", plan.root.size, enabled=show_progress)
    with writing(store.top, "the image's layers"):
        layers = [store.write_layer(entries, mtime, progress.advance) for entries, mtime in cuts]
    progress.done()
    return assemble(store, layers, plan.config.runtime_json(), plan.platform, epoch, history)


def _whole_packages(
    plan: ImagePlan, request: BuildRequest
) -> tuple[ImagePlan, dict[str, tuple[Origin, ...]]]:
    """With ``--layers packages``: the plan with each package it holds a file of whole (so
    each package's layer is the same in every image), and each path's packages."""
    if request.target.layering is not Layering.PACKAGES:
        return plan, {}
    from scratchpack.plan.layers import whole_packages

    options = request.options
    root, origins = whole_packages(plan.root, options.package_root, options.root)
    if not origins:
        warn("--layers packages: no Debian package of the root holds a file of the image (no "
             "dpkg database?); its files are one layer")  # fmt: skip
    return dataclasses.replace(plan, root=root), origins


def store_for(
    staged: Publication, target: Path | None, compression: Compression = Compression.GZIP
) -> BlobStore:
    """Where blobs go: the staged layout directory itself, or a temporary one."""
    from scratchpack.image.writer import BlobStore

    if target is not None and target.suffix != ".tar":
        return BlobStore(staged.directory(target), compression)
    return BlobStore(staged.scratch(), compression)


@dataclass(frozen=True)
class _Written:
    """How the built-in writer's image is cut and where it goes beside its outputs."""

    origins: Mapping[str, tuple[Origin, ...]] = field(default_factory=dict)
    load_into: CommandEngine | None = None  # a layered build without -o: into this engine
    attest: Callable[[Image], tuple[Artifact, ...]] | None = None  # --attest: what to attach


def _write_build(
    staged: Publication,
    plan: ImagePlan,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
    engine: CommandEngine | None,
    result: BuildResult,
    how: _Written | None = None,
) -> tuple[BuildResult, Image]:
    """The built-in writer's image, written to its output or loaded into the engine,
    verified (in ``engine``), pushed: ``result`` with all of that, and the image itself."""
    assert request.tag is not None
    how = how or _Written()
    loading = how.load_into is not None and request.target.output is None
    target = None if loading else _written_to(request)
    store = store_for(staged, target, request.target.compression)
    image = write_plan(store, plan, request.target, request.show_progress, how.origins)
    attached = how.attest(image) if how.attest is not None else ()
    if target is not None:
        to_output(staged, _attested(image, attached), target, request.tag, source_date_epoch())
    if loading:
        assert how.load_into is not None
        to_engine(staged, how.load_into, image, request.tag)
    verify = None
    if request.verify is not None:
        verify = verify_written(image, request.tag, request.verify, engine or how.load_into)
    made = dataclasses.replace(
        result,
        engine=EngineMode.NONE,
        image=image.image_id,
        size=image.size,
        output=str(target) if target else None,
        manifest_digest=image.manifest_descriptor.digest,
        diff_ids=tuple(layer.diff_id for layer in image.layers),
        loaded=loading,
        verify=verify,
        push=_push(image, request, progress, attached) if request.push is not None else None,
        attestations=_attached_json(attached),
    )
    return made, image


def _push(
    image: Image | ImageIndex,
    request: BuildRequest,
    progress: Callable[[str], None] | None,
    attached: tuple[Artifact, ...] = (),
) -> PushResult:
    """--push: the image or index to the registry, with the request's credentials and retries."""
    from scratchpack.image.registry import push_image

    push = request.push
    assert push is not None
    return push_image(
        image,
        push.reference,
        push.credentials,
        insecure=push.insecure,
        progress=progress,
        retries=push.retries,
        attachments=attached,
    )


def _debug_variant(
    staged: Publication,
    plan: ImagePlan,
    request: BuildRequest,
    engine: CommandEngine | None,
    written: Image | None,
) -> DebugResult:
    """TAG-debug: written by the built-in writer, loaded into the engine or written beside -o."""
    from scratchpack.image.debug_variant import busybox_variant, variant_on_base
    from scratchpack.image.writer import BlobStore
    from scratchpack.plan.debug import debug_output, debug_tag

    settings = request.debug
    assert settings is not None and request.tag is not None
    tag = check_tag(debug_tag(request.tag, settings.suffix))
    # The variant's own blobs; it may reuse the main layers.
    store = BlobStore(staged.scratch(), request.target.compression)
    runtime = plan.config.runtime_json()
    if settings.shell is DebugShell.BUSYBOX:
        application = written if written is not None else write_plan(store, plan)
        image = busybox_variant(store, application, runtime, settings.busybox)
    else:
        assert engine is not None
        image = variant_on_base(
            store, engine, staged.scratch(), plan.root, runtime, plan.platform, settings.base
        )
    base = settings.base if settings.shell is DebugShell.BASE else None
    if engine is not None and request.target.output is None:
        to_engine(staged, engine, image, tag)
        return DebugResult(tag, settings.shell, base, image.image_id, image.size)
    main = request.target.output or default_archive(request.tag)
    target = debug_output(main, settings.suffix)
    attached = _variant_attestations(request, image, written, tag, engine)
    to_output(staged, _attested(image, attached), target, tag, source_date_epoch())
    return DebugResult(tag, settings.shell, base, image.image_id, output=str(target))


def _variant_attestations(
    request: BuildRequest,
    variant: Image,
    written: Image | None,
    tag: str,
    engine: CommandEngine | None,
) -> tuple[Artifact, ...]:
    """--attest: TAG-debug's provenance names the image it was made from (and its base)."""
    settings = request.debug
    if request.attest is None or written is None or settings is None or request.tag is None:
        return ()
    import hashlib

    from scratchpack.image.attest import Dependency, source_dependencies, variant_provenance

    shell: tuple[Dependency, ...] = ()
    if settings.shell is DebugShell.BASE and engine is not None:
        shell = source_dependencies(settings.base, "engine", engine.image(settings.base).id)
    elif settings.shell is DebugShell.BUSYBOX:
        digest = hashlib.sha256(Path(settings.busybox).read_bytes()).hexdigest()
        shell = (Dependency(settings.busybox, digest),)
    parameters = {
        "tag": tag,
        "made_from": request.tag,
        "shell": settings.shell.value,
        "base": settings.base if settings.shell is DebugShell.BASE else None,
        "compression": request.target.compression.value,
    }
    return (variant_provenance(variant, tag, written, request.tag, parameters, shell),)


def _sbom(staged: Publication, plan: ImagePlan, request: BuildRequest, digest: str) -> SbomResult:
    from scratchpack.image.sbom import render, sbom_files
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.plan.dpkg import DpkgIndex

    sbom = request.sbom
    assert sbom is not None
    root = RootFS(request.options.root)
    files = sbom_files(plan.root.entries.values(), DpkgIndex.load_cached(root), root)
    data = render(sbom.format.value, files, request.tag or "image", digest, source_date_epoch())
    staged.file(sbom.path).write_bytes(data)
    packages = {file.package for file in files if file.package is not None}
    return SbomResult(str(sbom.path.absolute()), sbom.format.value, len(files), len(packages))


# -- --attest ----------------------------------------------------------------------------------


def _attested(image: Image | ImageIndex, attached: tuple[Artifact, ...]) -> Any:
    from scratchpack.image.attest import attested  # only when attaching: 5 ms of imports

    return attested(image, attached)


def _attached_json(attached: tuple[Artifact, ...]) -> tuple[dict[str, str], ...]:
    from scratchpack.image.attest import attached_json

    return attached_json(attached)


def _attestation_maker(
    request: BuildRequest, plan: ImagePlan, packaged: list[_PackagedPlatform]
) -> Callable[[Image], tuple[Artifact, ...]] | None:
    """``--attest``: for an image of ``plan``, its SBOM and its provenance as artifacts."""
    from scratchpack.image.attest import attestations

    if request.attest is None:
        return None
    assert request.tag is not None
    sbom_format = request.attest.sbom_format.value
    facts = _build_facts(request, packaged)

    def make(image: Image) -> tuple[Artifact, ...]:
        sbom = _sbom_document(plan, request, sbom_format, image.image_id)
        return attestations(image, request.tag or "image", sbom, sbom_format, facts)

    return make


def _sbom_document(plan: ImagePlan, request: BuildRequest, sbom_format: str, digest: str) -> bytes:
    """The SBOM ``--sbom`` would write for this image (the same bytes)."""
    from scratchpack.image.sbom import render, sbom_files
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.plan.dpkg import DpkgIndex

    root = RootFS(request.options.root)
    files = sbom_files(plan.root.entries.values(), DpkgIndex.load_cached(root), root)
    return render(sbom_format, files, request.tag or "image", digest, source_date_epoch())


def _build_facts(request: BuildRequest, packaged: list[_PackagedPlatform]) -> BuildFacts:
    """The provenance's options and inputs: binaries, packages, the lock, by SHA-256."""
    import hashlib

    from scratchpack.image.attest import BuildFacts, Dependency, pinned_epoch

    options, sources = request.options, request.sources
    dependencies = []
    for binary in options.binaries:
        path = Path(binary)
        if options.root and path.is_absolute():
            path = Path(options.root) / binary.lstrip("/")
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            dependencies.append(Dependency(binary, digest))
    for one in packaged:
        for ref in one.locked.packages:
            uri = f"pkg:deb/debian/{ref.name}@{ref.version}?arch={ref.architecture}"
            dependencies.append(Dependency(ref.name, ref.sha256, uri, ref.version))
    if sources.lock is not None and packaged:
        data = (
            sources.lock.read_bytes() if packaged[0].from_lock else _new_lock(packaged).to_bytes()
        )
        dependencies.append(Dependency(sources.lock.name, hashlib.sha256(data).hexdigest()))
    return BuildFacts(_parameters(request), tuple(dependencies), pinned_epoch())


def _parameters(request: BuildRequest) -> dict[str, Any]:
    """The invocation's options that decide the image (no paths of this machine's outputs)."""
    options, target, sources = request.options, request.target, request.sources
    return {
        "tag": request.tag,
        "binaries": list(options.binaries),
        "packages": list(options.packages),
        "suite": options.suite,
        "repositories": list(sources.repositories),
        "platforms": [str(platform) for platform in sources.platforms],
        "includes": list(options.includes),
        "excludes": list(options.excludes),
        "layers": target.layering.value,
        "compression": target.compression.value,
        "config": request.config.runtime_json(),
    }
