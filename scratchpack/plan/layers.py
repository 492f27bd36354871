"""How a planned root is cut into layers: one, or the shared libraries apart."""

from __future__ import annotations

from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan, ancestors


def split_layers(plan: RootPlan, split: bool) -> list[list[Entry]]:
    """One layer, or shared libraries (with the loader) apart from the application.

    The library layer holds the loader, the libraries and the directories and
    symlinks on their paths, so two images with the same libraries share it.
    """
    entries = plan.sorted_entries()
    if not split:
        return [entries]
    wanted = {
        entry.path for entry in entries if entry.reason in (Reason.LIBRARY, Reason.INTERPRETER)
    }
    # The symlinks and directories the library paths go through come along.
    for entry in entries:
        if entry.kind in (EntryKind.DIR, EntryKind.SYMLINK) and any(
            path.startswith(entry.path.rstrip("/") + "/") for path in wanted
        ):
            wanted.add(entry.path)
    libraries = [entry for entry in entries if entry.path in wanted]
    application = [entry for entry in entries if entry.path not in wanted]
    # Each layer names the directories its own entries sit in, as layers should.
    parents = {
        parent
        for entry in application
        for parent in ancestors(entry.path)
        if parent in plan.entries and plan.entries[parent].kind is EntryKind.DIR
    }
    application = sorted(
        [*application, *(plan.entries[p] for p in parents if p in wanted)], key=lambda e: e.path
    )
    return [libraries, application] if libraries and application else [entries]
