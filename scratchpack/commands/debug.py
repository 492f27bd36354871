"""``debug``: a debug variant of any image, and a shell beside a running container.

A variant is always written by the built-in writer and loaded into the engine,
never built ``FROM`` the image: a build from someone else's image would run its
``ONBUILD`` triggers and render its configuration into a Dockerfile. The
source's layers are reused byte for byte, its configuration copied exactly
(with ``/busybox`` added to PATH for the busybox shell); only the shell's
layer is new.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchpack.commands.common import DebugResult, DebugShell
from scratchpack.errors import InputError
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
    args: tuple[str, ...], tag: str | None, allow_host_access: bool
) -> tuple[str, str]:
    """``debug IMAGE [-t TAG]``: the one IMAGE and its variant's tag (IMAGE's tag + ``-debug``)."""
    if allow_host_access:
        raise InputError("--allow-host-access goes with --attach CONTAINER")
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
) -> AttachResult:
    """A shell (or ``command``) in a sidecar beside ``container``, with tools from an image.

    The tools are :data:`TOOLS_IMAGE` (made once from the host's static busybox)
    unless ``tools_image`` names a local image. A container that shares a host
    namespace or is privileged is refused unless ``allow_host_access``.
    """
    from scratchpack.engine.attach import attach
    from scratchpack.errors import EngineError, NoSuchImage

    if not container.strip():
        raise InputError("--attach needs the name or ID of a running container")
    if tools_image is None:
        tools, shown = ensure_tools_image(engine), TOOLS_IMAGE
    else:
        try:
            tools, shown = engine.image(tools_image).id, tools_image
        except NoSuchImage as err:
            raise EngineError(
                f"no image {tools_image} in the local engine; "
                "build one or omit --image for scratchpack's busybox tools"
            ) from err
    return attach(engine, container, tools, shown, command, interactive, allow_host_access)
