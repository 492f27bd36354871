"""Debug variants, planned: the same files, configuration and entrypoint, plus a shell.

Two ways. On a base image (alpine by default): the application's root is laid
over the base's, and where the two disagree the application's files win but
the base's directories are never replaced by the application's symlinks —
Debian's ``/lib -> usr/lib`` would otherwise delete alpine's ``/lib`` with
musl's loader in it, and the shell with it. Or with no base at all: a static
busybox at ``/busybox``, as distroless's ``:debug`` images have it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path

from scratchpack.errors import InputError
from scratchpack.image.reference import Reference
from scratchpack.inroot import Node, NodeKind
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.programs import DEFAULT_PATH
from scratchpack.plan.rootplan import RootPlan

BUSYBOX_DIR = "/busybox"


def merge_onto_base(plan: RootPlan, base: Mapping[str, Node]) -> RootPlan:
    """The entries to lay over ``base`` so that both the application and the base work.

    - Our symlink where the base has a directory: the directory stays, and each
      entry of the link's target is linked inside it instead (``/lib`` stays
      alpine's, ``/lib/x86_64-linux-gnu -> ../usr/lib/x86_64-linux-gnu`` joins it).
    - Our directory where the base has one: the base's stays as it is.
    - Our entries under a base symlink land where it points.
    - Any other clash: the application's entry wins.
    """
    merged = _described(base)
    deferred: list[Entry] = []
    for entry in plan.sorted_entries():
        path = merged.through_links(entry.path)
        existing = merged.entries.get(path)
        if existing is not None and existing.reason is Reason.BASE:
            if existing.kind is EntryKind.DIR and entry.kind is EntryKind.SYMLINK:
                deferred.append(entry)
                continue
            if entry.kind is EntryKind.DIR:
                continue  # the base's directory, or its symlink, stays; our entries follow it
            if existing.kind is EntryKind.DIR:
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
    return RootPlan(
        {path: entry for path, entry in merged.entries.items() if entry.reason is not Reason.BASE}
    )


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
        if (
            existing is not None
            and existing.reason is Reason.BASE
            and existing.kind is EntryKind.DIR
        ):
            if ours.kind is EntryKind.DIR:
                _link_children(merged, plan, inside_base, path)
            continue
        relative = posixpath.relpath(path, base_dir)
        merged.entries.pop(inside_base, None)
        merged.add(
            Entry(inside_base, EntryKind.SYMLINK, 0o777, Reason.DEBUG, ours.path, target=relative)
        )


def busybox_entries(busybox: str, applets: list[str]) -> list[Entry]:
    """A static busybox at /busybox/busybox and a link per applet: a layer of its own."""
    if not os.path.isfile(busybox):
        raise InputError(f"--debug-shell busybox: no {busybox} (Debian package busybox-static)")
    entries = [
        Entry(BUSYBOX_DIR, EntryKind.DIR, 0o755, Reason.DEBUG, "busybox"),
        Entry(
            f"{BUSYBOX_DIR}/busybox",
            EntryKind.FILE,
            0o755,
            Reason.DEBUG,
            "busybox",
            source=busybox,
        ),
    ]
    entries += [
        Entry(f"{BUSYBOX_DIR}/{applet}", EntryKind.SYMLINK, 0o777, Reason.DEBUG, target="busybox")
        for applet in applets
        if applet != "busybox" and "/" not in applet
    ]
    return entries


def with_path(env: list[str] | tuple[str, ...], directory: str) -> list[str]:
    """``KEY=VALUE`` settings with ``directory`` appended to PATH (Docker's default if none)."""
    result: list[str] = []
    found = False
    for item in env:
        key, _, value = item.partition("=")
        if key == "PATH":
            found = True
            if directory not in value.split(":"):
                item = f"PATH={value}:{directory}" if value else f"PATH={directory}"
        result.append(item)
    if not found:
        result.append(f"PATH={DEFAULT_PATH}:{directory}")
    return result


def debug_tag(tag: str, suffix: str) -> str:
    """``app:1.0`` with suffix ``-debug`` gives ``app:1.0-debug`` (``app:latest-debug``)."""
    return str(Reference.parse(tag).with_suffix(suffix))


def debug_output(output: Path, suffix: str) -> Path:
    """Where the writer puts the debug variant: ``app.tar`` -> ``app-debug.tar``."""
    if output.suffix == ".tar":
        return output.with_name(output.stem + suffix + ".tar")
    return output.with_name(output.name + suffix)


# -- the capabilities of debugging tools -------------------------------------------------------

_PTRACE = frozenset({"SYS_PTRACE"})
_RAW_NET = frozenset({"NET_RAW", "NET_ADMIN"})  # raw sockets; NET_ADMIN for promiscuous mode

# What a tool needs beyond the engine's default set, by program name. A sidecar with
# ``--package`` tools gets the union for the programs its packages put on PATH, and nothing
# else: strace, ltrace and gdb attach to processes (ptrace), tcpdump and its kin capture on
# raw sockets and switch interfaces to promiscuous mode.
TOOL_CAPABILITIES: Mapping[str, frozenset[str]] = {
    "strace": _PTRACE,
    "ltrace": _PTRACE,
    "gdb": _PTRACE,
    "gdbserver": _PTRACE,
    "gcore": _PTRACE,
    "tcpdump": _RAW_NET,
    "tshark": _RAW_NET,
    "dumpcap": _RAW_NET,
    "ping": frozenset({"NET_RAW"}),
    "arping": frozenset({"NET_RAW"}),
}


def tool_capabilities(programs: Iterable[str]) -> frozenset[str]:
    """The capabilities the programs (paths or names) need, from :data:`TOOL_CAPABILITIES`."""
    needed: set[str] = set()
    for path in programs:
        needed |= TOOL_CAPABILITIES.get(posixpath.basename(path), frozenset())
    return frozenset(needed)


def tools_onto_image(
    tools: RootPlan, image: Mapping[str, Node]
) -> tuple[RootPlan, tuple[str, ...]]:
    """The tools' entries to lay over ``image`` without shadowing any of the image's files.

    Where the image has a file or a link (its ``/bin/sh``, its ``libc.so.6``), the
    image's stays and the tools' entry is left out: the image runs as it did, and the
    tools use what the image has there. The rest merges as :func:`merge_onto_base`
    lays an application over a base. Returns the merged entries and the paths left out.
    """
    links = _described(image)
    kept = RootPlan()
    left_out: list[str] = []
    for entry in tools.sorted_entries():
        node = image.get(links.through_links(entry.path))
        if node is not None and node.kind is not NodeKind.DIR and entry.kind is not EntryKind.DIR:
            left_out.append(entry.path)
            continue
        kept.add(entry, replace=True)
    return merge_onto_base(kept, image), tuple(left_out)


def _described(tree: Mapping[str, Node]) -> RootPlan:
    """A flattened tree's directories and links as planned entries (``Reason.BASE``:
    described, never written), for what is laid over it to resolve through."""
    plan = RootPlan()
    for path, node in tree.items():
        if node.kind is NodeKind.DIR:
            plan.entries[path] = Entry(path, EntryKind.DIR, 0o755, Reason.BASE)
        elif node.kind is NodeKind.SYMLINK:
            plan.entries[path] = Entry(
                path, EntryKind.SYMLINK, 0o777, Reason.BASE, target=node.target
            )
    return plan
