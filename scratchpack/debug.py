"""Debug variants: the same files, configuration and entrypoint, plus a shell.

Two ways. On a base image (alpine by default): the application's root is laid
over the base's, and where the two disagree the application's files win but
the base's directories are never replaced by the application's symlinks —
Debian's ``/lib -> usr/lib`` would otherwise delete alpine's ``/lib`` with
musl's loader in it, and the shell with it. Or with no base at all: a static
busybox at ``/busybox``, as distroless's ``:debug`` images have it.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scratchpack.assemble import Entry, RootPlan
from scratchpack.build import DEFAULT_PATH, ImagePlan, context_archive
from scratchpack.busybox import busybox_applets
from scratchpack.config import config_from_summary
from scratchpack.errors import InputError
from scratchpack.oci import machine_for, platform_for
from scratchpack.progress import terminal_progress
from scratchpack.reference import Reference

if TYPE_CHECKING:
    from scratchpack.engine import Engine

BUSYBOX_DIR = "/busybox"
_BASE = "base"  # reason of entries that describe the base image, never written


@dataclass(frozen=True)
class BaseTree:
    """What a base image holds: each path's kind and, for symlinks, its target."""

    entries: dict[str, tuple[str, str | None]]  # path -> ("dir" | "symlink" | "file", target)
    architecture: str


def read_base_tree(export: tarfile.TarFile, architecture: str) -> BaseTree:
    """The base's paths from a ``docker export`` (or any flattened) tar stream."""
    entries: dict[str, tuple[str, str | None]] = {}
    for member in export:
        path = posixpath.normpath("/" + member.name)
        if path == "/":
            continue
        if member.issym():
            entries[path] = ("symlink", member.linkname)
        elif member.isdir():
            entries[path] = ("dir", None)
        else:
            entries[path] = ("file", None)
    return BaseTree(entries, architecture)


def merge_onto_base(plan: RootPlan, base: BaseTree) -> RootPlan:
    """The entries to lay over ``base`` so that both the application and the base work.

    - Our symlink where the base has a directory: the directory stays, and each
      entry of the link's target is linked inside it instead (``/lib`` stays
      alpine's, ``/lib/x86_64-linux-gnu -> ../usr/lib/x86_64-linux-gnu`` joins it).
    - Our directory where the base has one: the base's stays as it is.
    - Our entries under a base symlink land where it points.
    - Any other clash: the application's entry wins.
    """
    merged = RootPlan()
    for path, (kind, target) in base.entries.items():
        if kind in ("dir", "symlink"):
            merged.entries[path] = Entry(path, kind, 0o755, _BASE, target=target)
    deferred: list[Entry] = []
    for entry in plan.sorted_entries():
        path = merged.through_links(entry.path)
        existing = merged.entries.get(path)
        if existing is not None and existing.reason == _BASE:
            if existing.kind == "dir" and entry.kind == "symlink":
                deferred.append(entry)
                continue
            if entry.kind == "dir":
                continue  # the base's directory, or its symlink, stays; our entries follow it
            if existing.kind == "dir":
                raise InputError(
                    f"{entry.path}: a file in the application, a directory in the base"
                )
            del merged.entries[path]  # the application's file or link replaces the base's link
        merged.add(entry, replace=True)
    for link in deferred:
        target_dir = posixpath.normpath(
            posixpath.join(posixpath.dirname(link.path), link.target or "")
        )
        _link_children(merged, plan, link.path, target_dir)
    kept = RootPlan()
    for entry in merged.sorted_entries():
        if entry.reason != _BASE and not entry.reason.startswith("parent:" + _BASE):
            kept.entries[entry.path] = entry
    kept.warnings = list(plan.warnings)
    return kept


def _link_children(merged: RootPlan, plan: RootPlan, base_dir: str, our_dir: str) -> None:
    """Link each entry directly under ``our_dir`` into the base's directory ``base_dir``."""
    prefix = our_dir.rstrip("/") + "/"
    for path in sorted(plan.entries):
        if not path.startswith(prefix) or "/" in path[len(prefix) :]:
            continue
        name = path[len(prefix) :]
        inside_base = f"{base_dir.rstrip('/')}/{name}"
        existing = merged.entries.get(inside_base)
        ours = plan.entries[path]
        if existing is not None and existing.reason == _BASE and existing.kind == "dir":
            if ours.kind == "dir":
                _link_children(merged, plan, inside_base, path)
            continue
        relative = posixpath.relpath(path, base_dir)
        merged.entries.pop(inside_base, None)
        merged.add(Entry(inside_base, "symlink", 0o777, f"debug:{ours.reason}", target=relative))


def busybox_plan(plan: RootPlan, busybox: str, applets: list[str]) -> RootPlan:
    """``plan`` plus a static busybox at /busybox/busybox and a link per applet."""
    if not os.path.isfile(busybox):
        raise InputError(f"--debug-shell busybox: no {busybox} (Debian package busybox-static)")
    result = RootPlan(dict(plan.entries), list(plan.warnings))
    result.add(Entry(BUSYBOX_DIR, "dir", 0o755, "debug:busybox"), replace=True)
    result.add(Entry(f"{BUSYBOX_DIR}/busybox", "file", 0o755, "debug:busybox", source=busybox))
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            result.add(
                Entry(
                    f"{BUSYBOX_DIR}/{applet}", "symlink", 0o777, "debug:busybox", target="busybox"
                )
            )
    return result


def with_path(env: list[tuple[str, str]], directory: str) -> list[tuple[str, str]]:
    """The environment with ``directory`` appended to PATH (Docker's default PATH if none)."""
    result = dict(env)
    path = result.get("PATH", DEFAULT_PATH)
    if directory not in path.split(":"):
        result["PATH"] = f"{path}:{directory}" if path else directory
    return list(result.items())


def debug_tag(tag: str, suffix: str) -> str:
    """``app:1.0`` with suffix ``-debug`` gives ``app:1.0-debug`` (``app:latest-debug``)."""
    return str(Reference.parse(tag).with_suffix(suffix))


def debug_variant(
    plan: ImagePlan, shell: str, busybox: str = "/bin/busybox", base: BaseTree | None = None
) -> ImagePlan:
    """The debug variant's plan: busybox at /busybox (on PATH), or laid over a base."""
    if shell == "busybox":
        root = busybox_plan(plan.root, busybox, busybox_applets(busybox))
        config = dataclasses.replace(plan.config, env=with_path(plan.config.env, BUSYBOX_DIR))
        return dataclasses.replace(plan, root=root, config=config)
    assert base is not None
    architecture = platform_for(plan.machine, plan.bits)[0]
    if base.architecture and base.architecture != architecture:
        raise InputError(
            f"the debug base is {base.architecture} but the application is {architecture}"
        )
    return dataclasses.replace(plan, root=merge_onto_base(plan.root, base))


def debug_plan(
    plan: ImagePlan, shell: str, base_image: str, busybox: str, engine: Engine | None
) -> ImagePlan:
    """The debug variant of ``plan``; a base image's tree comes from the engine that holds it."""
    if shell == "busybox":
        return debug_variant(plan, "busybox", busybox=busybox)
    if engine is None:
        raise InputError(
            "a debug variant on a base image needs the Docker engine that holds the base; "
            "--debug-shell busybox needs none"
        )
    architecture = engine.image(base_image).architecture
    with engine.exported_filesystem(base_image) as tar:
        return debug_variant(plan, "base", base=read_base_tree(tar, architecture))


def debug_output(output: Path, suffix: str) -> Path:
    """Where the writer puts the debug variant: ``app.tar`` -> ``app-debug.tar``."""
    if output.suffix == ".tar":
        return output.with_name(output.stem + suffix + ".tar")
    return output.with_name(output.name + suffix)


def debug_existing(
    engine: Engine,
    image: str,
    tag: str,
    shell: str,
    base_image: str,
    busybox: str,
    show_progress: bool = False,
) -> dict[str, object]:
    """The debug variant of any local image, from that image's own files and config.

    With busybox the image itself is the base (``FROM IMAGE``) and only
    /busybox is added; on a base image, IMAGE's files are laid over the base.
    """
    import tempfile

    from scratchpack.ld.rootfs import RootFS
    from scratchpack.unpack import image_config_summary, summarize_config, unpack_into

    info = engine.image(image)
    machine, bits = machine_for(info.architecture or "amd64")
    with tempfile.TemporaryDirectory(prefix="scratchpack-debug-") as work:
        workdir = Path(work)
        if shell == "busybox":
            # FROM IMAGE keeps its files: only its configuration is needed.
            attrs = engine.client.images.get(image).attrs
            config = config_from_summary(summarize_config({"config": attrs.get("Config") or {}}))
            plan = ImagePlan(RootPlan(), config, [], [], machine, bits)
            variant = debug_variant(plan, "busybox", busybox=busybox)
            base = image
        else:
            engine.image(base_image)  # a missing base fails before the image is unpacked
            source, root_dir, report = unpack_into(image, engine.client, workdir, show_progress)
            config = config_from_summary(image_config_summary(source))
            root = RootFS(root_dir)
            tree = RootPlan()
            for name in sorted(os.listdir(root_dir)):
                tree.add_tree(root, f"/{name}", "image")
            tree.apply_owners(report.owners)
            plan = ImagePlan(tree, config, [], [], machine, bits)
            architecture = engine.image(base_image).architecture
            with engine.exported_filesystem(base_image) as tar:
                variant = debug_variant(plan, "base", base=read_base_tree(tar, architecture))
            base = base_image
        with context_archive(variant, None, base) as context:
            image_id = engine.build(context, tag, terminal_progress if show_progress else None)
    built = engine.image(image_id)
    return {"source": image, "tag": tag, "image": built.id, "size": built.size, "shell": shell}
