"""``debug``: a debug variant of any image, and a shell beside a running container.

A variant is always written by the built-in writer and loaded into the engine,
never built ``FROM`` the image: a build from someone else's image would run its
``ONBUILD`` triggers and render its configuration into a Dockerfile. The
source's layers are reused byte for byte, its configuration copied exactly
(with ``/busybox`` added to PATH for the busybox shell); only the shell's
layer is new.

``--package PKG`` brings tools from Debian packages, resolved as ``build --package``
does: beside a container (``--attach``) from a tools image cached in the engine under
``scratchpack-tools/pkgs:``, or laid on IMAGE without shadowing any of its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.commands.common import DebugResult, DebugShell
from scratchpack.errors import InputError, printable
from scratchpack.image.config import source_date_epoch
from scratchpack.image.debug_variant import busybox_variant, variant_on_base
from scratchpack.image.media import Platform
from scratchpack.image.readers import open_image
from scratchpack.image.reference import check_tag
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.ld.elf import ET_DYN, ET_EXEC, ElfError, read_elf
from scratchpack.plan.busybox import busybox_applets
from scratchpack.plan.debug import BUSYBOX_DIR, busybox_entries, debug_tag
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.programs import DEFAULT_PATH
from scratchpack.plan.rootplan import RootPlan
from scratchpack.publish import publication, to_engine, writing
from scratchpack.report import size_text

if TYPE_CHECKING:
    from scratchpack.engine.attach import AttachResult
    from scratchpack.engine.client import CommandEngine, Engine
    from scratchpack.image.model import Image
    from scratchpack.packages.root import PackageRoot
    from scratchpack.plan.image_plan import ImagePlan
    from scratchpack.publish import Publication

TOOLS_IMAGE = "scratchpack/debug-tools:busybox"
# What makes a tools image current: the busybox it holds and this layout's version.
BUSYBOX_LABEL = "org.scratchpack.busybox-sha256"
LAYOUT_LABEL = "org.scratchpack.debug-tools-layout"
LAYOUT_VERSION = "2"
# What a debug variant is made with unless --debug-base / --busybox say otherwise.
DEFAULT_BASE = "alpine:3.20"
DEFAULT_BUSYBOX = "/bin/busybox"


@dataclass(frozen=True)
class DebugImageRequest:
    image: str
    tag: str
    shell: DebugShell = DebugShell.BASE
    base: str = DEFAULT_BASE
    busybox: str = DEFAULT_BUSYBOX
    show_progress: bool = False
    max_unpacked: int | None = None  # bytes the image may unpack to (default: free space)
    tools: ToolsRequest | None = None  # --package: tools laid on the image itself


@dataclass(frozen=True)
class DebugImageResult:
    """``debug IMAGE``: the variant made, and the image it was made from.

    ``build --debug`` makes a :class:`DebugResult` too, without a source: the
    source is what only this command reports.
    """

    source: str
    variant: DebugResult

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, **self.variant.to_json()}


def report_text(result: DebugImageResult) -> str:
    """The human report of ``debug IMAGE``: the variant, and how to open its shell."""
    variant = result.variant
    return (
        f"Built {variant.tag} {variant.image} ({size_text(variant.size or 0)})\n"
        f"Open a shell with: docker run --rm -it --entrypoint sh {variant.tag}\n"
    )


def attach_text(result: AttachResult) -> str:
    """What ``debug --attach -- COMMAND`` prints: the command's own output, as it wrote it.

    An interactive shell wrote to the terminal itself, and leaves nothing to print.
    """
    return result.output or ""


def check_attach(container: str, tag: str | None, shell: str, base: str, busybox: str) -> None:
    """``--attach`` opens a shell in a sidecar: a variant's options given with it are refused."""
    ignored = [
        option
        for option, given in (
            ("-t", tag),
            ("--debug-shell", shell != DebugShell.BASE.value),
            ("--debug-base", base != DEFAULT_BASE),
            ("--busybox", busybox != DEFAULT_BUSYBOX),
        )
        if given
    ]
    if ignored:
        raise InputError(f"--attach opens a shell in a sidecar: {', '.join(ignored)} do not apply")
    if not container.strip():
        raise InputError("--attach needs the name or ID of a running container")


def variant_names(
    args: tuple[str, ...],
    tag: str | None,
    allow_host_access: bool,
    tools: ToolsRequest | None = None,
    shell: str = DebugShell.BASE.value,
    base: str = DEFAULT_BASE,
) -> tuple[str, str]:
    """``debug IMAGE [-t TAG]``: the one IMAGE and its variant's tag (IMAGE's tag + ``-debug``)."""
    if allow_host_access:
        raise InputError("--allow-host-access goes with --attach CONTAINER")
    if tools is not None and (shell != DebugShell.BASE.value or base != DEFAULT_BASE):
        raise InputError(
            "--package lays the tools on IMAGE itself, with busybox's shell: "
            "--debug-shell and --debug-base do not apply"
        )
    if len(args) != 1:
        raise InputError("debug takes one IMAGE (or --attach CONTAINER)")
    image = args[0]
    if tag is None and re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", image):
        raise InputError(f"{image} is an image ID: name the debug variant with -t NAME[:TAG]")
    return image, check_tag(tag or debug_tag(image, "-debug"))


def run_debug(engine: CommandEngine, request: DebugImageRequest) -> DebugResult:
    """The debug variant of any image in the engine, from that image's own files and config."""
    from scratchpack.image.unpack import unpack
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.progress import ByteProgress

    if not os.path.lexists(os.path.expanduser(request.image)):
        engine.image(request.image)  # an unknown image fails first, and clearly
    if request.tools is not None:
        return _tools_variant(engine, request, request.tools)
    if request.shell is DebugShell.BASE:
        engine.image(request.base)  # a missing base fails before anything is read
    with publication() as staged:
        work = staged.scratch()
        with writing(work, f"{request.image} as read from the engine"):
            source = open_image(request.image, work / "source", engine)
        store = BlobStore(work / "out")
        runtime = source.image.config.runtime.copy_json()
        if request.shell is DebugShell.BUSYBOX:
            image = busybox_variant(store, source.image, runtime, request.busybox)
        else:
            root_dir = work / "root"
            root_dir.mkdir()
            progress = ByteProgress("unpacking", source.layers_size, request.show_progress)
            with writing(root_dir, f"the unpacked {request.image}"):
                report = unpack(
                    source.image, root_dir, request.image, progress.advance, request.max_unpacked
                )
            progress.done()
            tree = RootPlan()
            root = RootFS(root_dir)
            for name in sorted(os.listdir(root_dir)):
                tree.add_tree(root, f"/{name}", Reason.IMAGE)
            tree.apply_owners(report.owners)
            tree.apply_xattrs(report.xattrs)
            image = variant_on_base(
                store, engine, work / "base", tree, runtime, source.image.platform, request.base
            )
        to_engine(staged, engine, image, request.tag)
    base = request.base if request.shell is DebugShell.BASE else None
    return DebugResult(request.tag, request.shell, base, image.image_id, image.size)


def _tools_variant(
    engine: CommandEngine, request: DebugImageRequest, tools: ToolsRequest
) -> DebugResult:
    """``debug IMAGE --package PKG``: IMAGE's layers as they are, then the packages' tools
    for IMAGE's architecture, none of their files shadowing one of IMAGE's."""
    from scratchpack.image.debug_variant import tools_variant
    from scratchpack.notes import warn
    from scratchpack.packages.fetch import resolve_package_root
    from scratchpack.progress import terminal_progress

    say = terminal_progress if tools.show_progress else None
    with publication() as staged:
        work = staged.scratch()
        with writing(work, f"{request.image} as read from the engine"):
            source = open_image(request.image, work / "source", engine)
        architecture = source.image.platform.debian_architecture
        resolved = resolve_package_root(
            tools.packages, work / "root", tools.suite, architecture, say=say
        )
        plan, _programs = _tools_plan(resolved.root, tools)
        runtime = source.image.config.runtime.copy_json()
        busybox = tools.busybox if _static_machine(tools.busybox) is not None else None
        store = BlobStore(work / "out")
        image, left_out = tools_variant(
            store, source.image, runtime, plan.root, request.image, busybox
        )
        if left_out:
            warn(
                f"{len(left_out)} files of the tools are {request.image}'s own already and "
                f"stay its own ({printable(', '.join(left_out[:4]))}"
                f"{', …' if len(left_out) > 4 else ''})"
            )
        to_engine(staged, engine, image, request.tag)
    shell = DebugShell.BUSYBOX if busybox is not None else DebugShell.BASE
    return DebugResult(request.tag, shell, None, image.image_id, image.size)


def ensure_tools_image(engine: Engine, busybox_path: str = DEFAULT_BUSYBOX) -> str:
    """The ID of :data:`TOOLS_IMAGE`, made once from a static busybox and reused.

    ``FROM scratch`` in effect: busybox at ``/busybox/busybox``, a symlink per
    applet beside it, ``/busybox`` first in ``PATH`` and an empty ``/tmp``. It
    is made again when its label does not name this busybox's sha256 (another
    busybox, or an older layout); the stale image is dropped once nothing
    names it.
    """
    from scratchpack.errors import NoSuchImage

    binary = Path(busybox_path)
    try:
        content = binary.read_bytes()
    except OSError as err:
        raise InputError(
            f"cannot read {busybox_path} ({err.strerror or err}): "
            "apt-get install busybox-static, or give --image"
        ) from err
    machine = _static_machine(busybox_path)
    if machine is None:
        raise InputError(
            f"{busybox_path} is not a static ELF executable: "
            "apt-get install busybox-static, or give --image"
        )
    digest = hashlib.sha256(content).hexdigest()
    try:
        previous = engine.image(TOOLS_IMAGE)
    except NoSuchImage:
        previous = None
    if previous is not None:
        labels = previous.config.get("Labels") or {}
        if labels.get(BUSYBOX_LABEL) == digest and labels.get(LAYOUT_LABEL) == LAYOUT_VERSION:
            return previous.id
    platform = Platform.from_elf(*machine)
    engine_arch = engine.architecture()
    if engine_arch and engine_arch != platform.architecture:
        raise InputError(
            f"{busybox_path} is {platform.architecture} but the engine runs {engine_arch}: "
            "give --image with an image of the engine's architecture"
        )
    epoch = source_date_epoch()
    runtime = {
        "Env": [f"PATH={BUSYBOX_DIR}:{DEFAULT_PATH}"],
        "Labels": {BUSYBOX_LABEL: digest, LAYOUT_LABEL: LAYOUT_VERSION},
        "Cmd": ["sh"],
    }
    entries = [
        Entry("/tmp", EntryKind.DIR, 0o1777, Reason.DEBUG, "tools"),
        *busybox_entries(busybox_path, busybox_applets(busybox_path)),
    ]
    with publication() as staged:
        store = BlobStore(staged.scratch())
        layer = store.write_layer(entries, epoch)
        image = assemble(store, [layer], runtime, platform, epoch)
        to_engine(staged, engine, image, TOOLS_IMAGE)
        if previous is not None and previous.id != image.image_id:
            stale = previous.id
            staged.after_publish(lambda: engine.remove_unnamed(stale))
    return image.image_id


def _static_machine(path: str) -> tuple[int, int] | None:
    """(``e_machine``, bits) of a static executable (no ``PT_INTERP``), else ``None``."""
    try:
        elf = read_elf(path)
    except (ElfError, OSError):
        return None
    if elf.elf_type not in (ET_EXEC, ET_DYN) or elf.interpreter is not None:
        return None
    return elf.machine, elf.bits


def run_attach(
    engine: Engine,
    container: str,
    tools_image: str | None = None,
    command: list[str] | None = None,
    interactive: bool | None = None,
    allow_host_access: bool = False,
    tools: ToolsRequest | None = None,
    as_target_user: bool = False,
) -> AttachResult:
    """A shell (or ``command``) in a sidecar beside ``container``, with tools from an image.

    The tools are :data:`TOOLS_IMAGE` (made once from the host's static busybox)
    unless ``tools_image`` names a local image or ``tools`` names Debian packages
    (:func:`ensure_package_tools`: then the sidecar gets the capabilities those
    tools need, and no others). A container that shares a host namespace or is
    privileged is refused unless ``allow_host_access``.
    """
    from scratchpack.engine.attach import SidecarAccess, attach
    from scratchpack.errors import EngineError, NoSuchImage

    if not container.strip():
        raise InputError("--attach needs the name or ID of a running container")
    access = SidecarAccess(as_target_user=as_target_user)
    if tools is not None:
        if tools_image is not None:
            raise InputError("--image and --package both choose the tools: give one")
        made = ensure_package_tools(engine, tools)
        image_id, shown = made.image, made.tag
        access = SidecarAccess(made.capabilities, as_target_user)
    elif tools_image is None:
        image_id, shown = ensure_tools_image(engine), TOOLS_IMAGE
    else:
        try:
            image_id, shown = engine.image(tools_image).id, tools_image
        except NoSuchImage as err:
            raise EngineError(
                f"no image {tools_image} in the local engine; "
                "build one or omit --image for scratchpack's busybox tools"
            ) from err
    return attach(
        engine, container, image_id, shown, command, interactive, allow_host_access, access
    )


# -- tools from Debian packages (--package) -------------------------------------------------

TOOLS_REPOSITORY = "scratchpack-tools/pkgs"  # not a throw-away repository: prune keeps it
TOOLS_REQUEST_LABEL = "org.scratchpack.tools-request"
TOOLS_PACKAGES_LABEL = "org.scratchpack.tools-packages"  # name=version:arch, space-separated
TOOLS_PROGRAMS_LABEL = "org.scratchpack.tools-programs"  # the programs on PATH, by name
TOOLS_MAX_AGE = 24 * 3600  # seconds a request's tools image is used before apt is asked again


@dataclass(frozen=True)
class PackageTools:
    """A tools image made from Debian packages, and what it holds."""

    image: str  # its ID
    tag: str  # scratchpack-tools/pkgs:<hash of the resolved packages>
    programs: tuple[str, ...]  # names of the programs the packages put on PATH
    packages: tuple[str, ...]  # name=version:arch of every package used
    cached: bool  # found in the engine: nothing resolved, nothing built

    @property
    def capabilities(self) -> frozenset[str]:
        from scratchpack.plan.debug import tool_capabilities

        return tool_capabilities(self.programs)


@dataclass(frozen=True)
class ToolsRequest:
    """``--package`` (and ``--suite``) of ``debug``: which tools, from which suite."""

    packages: tuple[str, ...]
    suite: str | None = None
    busybox: str = DEFAULT_BUSYBOX  # the shell beside the tools, when the host has one
    show_progress: bool = False


def tools_request(
    packages: tuple[str, ...], suite: str | None, show_progress: bool = False
) -> ToolsRequest | None:
    """``--package`` and ``--suite``, checked before anything runs; None without packages."""
    from scratchpack.packages.apt import Word, check_request, check_word

    if not packages:
        if suite is not None:
            raise InputError("--suite chooses the Debian suite of --package: add --package PKG")
        return None
    for package in packages:
        check_request(package, "--package")
    if suite is not None:
        check_word(Word.SUITE, suite, "--suite")
    return ToolsRequest(tuple(dict.fromkeys(packages)), suite, show_progress=show_progress)


def request_key(request: ToolsRequest, architecture: str, busybox_digest: str) -> str:
    """What names a request's image before apt runs: packages, suite, architecture, shell."""
    from scratchpack import __version__
    from scratchpack.packages.apt import host_suite

    words = [
        *sorted(set(request.packages)),
        f"suite={request.suite or host_suite()}",
        f"arch={architecture}",
        f"busybox={busybox_digest}",
        f"scratchpack={__version__}",
    ]
    return hashlib.sha256("\n".join(words).encode()).hexdigest()


def packages_key(packages: tuple[str, ...]) -> str:
    """The cache tag's hash: every package used (name=version:arch) and scratchpack's version."""
    from scratchpack import __version__

    text = "\n".join([*sorted(packages), f"scratchpack={__version__}"])
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_package_tools(engine: Engine, request: ToolsRequest) -> PackageTools:
    """The tools image of ``request``: found by its request label, else resolved and built.

    Resolving takes apt's private state (never the host's), as ``build --package`` does;
    the image is tagged by the packages resolved, so two requests that resolve alike share
    one. A request's image is used as it is for :data:`TOOLS_MAX_AGE` after apt was last
    asked (its packages are in its labels); then the request is resolved again, so the
    tools, which parse hostile input with capabilities, follow security updates. Without
    apt (offline), the cached image serves, with a warning.
    """
    from scratchpack.packages.apt import PackageError, check_request

    for package in request.packages:
        check_request(package, "--package")
    architecture = Platform.parse(f"linux/{engine.architecture() or 'amd64'}").debian_architecture
    busybox = _busybox_digest(request.busybox)
    key = request_key(request, architecture, busybox)
    alias = f"{TOOLS_REPOSITORY}:request-{key[:20]}"
    found = _labelled_tools(engine, alias, key)
    if found is not None and _checked_lately(key, found.image):
        if request.show_progress:
            from scratchpack.progress import terminal_progress

            terminal_progress(f"tools {found.tag}: in the engine already ({found.image[:19]})")
        return found
    try:
        made = _make_package_tools(engine, request, architecture, key, alias)
    except PackageError as err:
        if found is None:
            raise
        from scratchpack.notes import warn

        warn(
            f"the tools could not be checked for updates ({err}): using {found.tag} "
            f"({found.image[:19]}) as it was"
        )
        return found
    _mark_checked(key, made.image)
    return made


def _check_stamp(key: str) -> Path:
    from scratchpack.packages.apt import cache_dir

    return cache_dir() / "tools" / f"request-{key[:20]}"


def _checked_lately(key: str, image_id: str) -> bool:
    """Whether apt was asked for ``key`` within the day and answered ``image_id``."""
    import time

    stamp = _check_stamp(key)
    try:
        age = time.time() - stamp.stat().st_mtime
        with open(stamp, "rb") as handle:
            recorded = handle.read(200).decode("ascii", "replace").strip()
    except OSError:
        return False
    return 0 <= age < TOOLS_MAX_AGE and recorded == image_id


def _mark_checked(key: str, image_id: str) -> None:
    """Remember that ``key`` resolved to ``image_id`` now (a cache not writable: ask each time).

    Written beside the stamp under a name of its own, created afresh and never through a
    link, then renamed over it: a half-written or planted stamp is never read as one.
    """
    import secrets

    stamp = _check_stamp(key)
    partial = stamp.with_name(f".{stamp.name}.{secrets.token_hex(8)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(partial, flags, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(image_id.encode("ascii", "replace") + b"\n")
        os.replace(partial, stamp)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()


def _labelled_tools(engine: Engine, alias: str, key: str) -> PackageTools | None:
    """The image ``alias`` names, if its label says it holds tools (made for ``key``)."""
    from scratchpack.errors import NoSuchImage

    try:
        info = engine.image(alias)
    except NoSuchImage:
        return None
    labels = info.config.get("Labels") or {}
    if TOOLS_PACKAGES_LABEL not in labels:
        return None
    return PackageTools(
        info.id,
        alias,
        tuple(str(labels.get(TOOLS_PROGRAMS_LABEL) or "").split()),
        tuple(str(labels.get(TOOLS_PACKAGES_LABEL) or "").split()),
        cached=True,
    )


def _busybox_digest(busybox: str) -> str:
    """The sha256 of the host's static busybox (the tools' shell), or ``none``."""
    if _static_machine(busybox) is None:
        return "none"
    try:
        return hashlib.sha256(Path(busybox).read_bytes()).hexdigest()
    except OSError:
        return "none"


def _make_package_tools(
    engine: Engine, request: ToolsRequest, architecture: str, key: str, alias: str
) -> PackageTools:
    """Resolve, unpack and plan the packages; write their image, load it, tag it twice."""
    from scratchpack.errors import NoSuchImage
    from scratchpack.packages.fetch import resolve_package_root
    from scratchpack.progress import terminal_progress

    say = terminal_progress if request.show_progress else None
    with publication() as staged:
        resolved = resolve_package_root(
            request.packages, staged.scratch() / "root", request.suite, architecture, say=say
        )
        used = tuple(f"{ref.name}={ref.version}:{ref.architecture}" for ref in resolved.refs)
        tag = f"{TOOLS_REPOSITORY}:{packages_key(used)[:20]}"
        try:
            existing = engine.image(tag)
        except NoSuchImage:
            existing = None
        if existing is not None:  # the same packages for another request, or an old one
            labels = existing.config.get("Labels") or {}
            programs = tuple(str(labels.get(TOOLS_PROGRAMS_LABEL) or "").split())
            engine.tag(existing.id, alias)
            return PackageTools(existing.id, tag, programs, used, cached=False)
        labels = {TOOLS_REQUEST_LABEL: key, TOOLS_PACKAGES_LABEL: " ".join(used)}
        image, programs = _tools_image(staged, resolved.root, request, labels)
        image_id = to_engine(staged, engine, image, tag)
        staged.after_publish(lambda: engine.tag(image_id, alias))
    return PackageTools(image.image_id, tag, programs, used, cached=False)


def _tools_plan(root: PackageRoot, request: ToolsRequest) -> tuple[ImagePlan, tuple[str, ...]]:
    """The packages' files as ``build --package`` plans them, every program on PATH kept
    (with a busybox at /bin/sh for their scripts, when the host has a static one); and the
    names of those programs."""
    from scratchpack.image.config import ImageConfig
    from scratchpack.ld.rootfs import RootFS
    from scratchpack.plan.essentials import Essentials
    from scratchpack.plan.from_packages import distinct_programs, programs_on_path, select
    from scratchpack.plan.image_plan import BuildOptions, plan_image

    names = tuple(package.partition("=")[0] for package in request.packages)
    selection = select(root, names)
    programs = distinct_programs(root, programs_on_path(selection, names), names)
    if not programs:
        raise InputError(f"--package {', '.join(names)}: put no program on PATH")
    # The programs' closures are planned from the ELF ones; scripts come as the package's
    # files (gcore's "#!/usr/bin/env sh" would need coreutils only to be planned).
    fs = RootFS(str(root.top))
    elf = [path for path in programs if fs.read_bytes(path, limit=4) == b"\x7fELF"]
    options = BuildOptions(
        binaries=tuple(elf or programs),
        root=str(root.top),
        allow_missing=True,  # a plugin without its library (iproute2's q_atm.so): a warning
        essentials=Essentials(shell=_shell(request)),
        packages=request.packages,
        suite=request.suite,
        package_root=root,
    )
    plan = plan_image(options, ImageConfig(entrypoint=None))
    return plan, tuple(sorted({posixpath.basename(path) for path in programs}))


def _shell(request: ToolsRequest) -> str | None:
    """The host's static busybox, the tools' shell; None (with a note) without one."""
    from scratchpack.notes import warn

    if _static_machine(request.busybox) is not None:
        return request.busybox
    warn(f"no static busybox at {request.busybox}: the tools have no shell; give -- COMMAND")
    return None


def _tools_image(
    staged: Publication, root: PackageRoot, request: ToolsRequest, labels: dict[str, str]
) -> tuple[Image, tuple[str, ...]]:
    """The tools' image: their plan, then busybox at /busybox (last in PATH) for a shell."""
    plan, programs = _tools_plan(root, request)
    epoch = source_date_epoch()
    store = BlobStore(staged.scratch())
    layers = [store.write_layer(plan.root.sorted_entries(), epoch)]
    path = DEFAULT_PATH
    if _static_machine(request.busybox) is not None:  # _tools_plan said so if not
        applets = busybox_applets(request.busybox)
        layers.append(store.write_layer(busybox_entries(request.busybox, applets), epoch))
        path = f"{DEFAULT_PATH}:{BUSYBOX_DIR}"
    runtime = {
        "Env": [f"PATH={path}"],
        "Cmd": ["sh"],
        "Labels": {**labels, TOOLS_PROGRAMS_LABEL: " ".join(programs)},
    }
    return assemble(store, layers, runtime, plan.platform, epoch), programs
