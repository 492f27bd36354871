"""Human-readable renderings of resolution results."""

from __future__ import annotations

from scratchpack.ld.resolve import Closure


def render_tree(closure: Closure) -> str:
    """An indented tree: each library under the object whose request loaded it."""
    lines = [closure.path]
    if closure.static:
        lines.append("    (statically linked: needs no libraries)")
        return "\n".join(lines) + "\n"
    if closure.interpreter:
        lines.append(f"    interpreter => {closure.interpreter}")
    children: dict[str, list[str]] = {}
    for library in closure.libraries:
        children.setdefault(library.needed_by, []).append(
            f"{library.soname} => {library.path}\0{library.path}"
        )
    for item in closure.missing:
        if item.soname == closure.interpreter:
            lines.append("    interpreter not found")
            continue
        note = f" ({item.reason})" if item.reason else ""
        children.setdefault(item.needed_by, []).append(f"{item.soname} => not found{note}\0")

    def walk(parent: str, depth: int, seen: set[str]) -> None:
        for entry in children.get(parent, []):
            text, _, path = entry.partition("\0")
            lines.append("    " * depth + text)
            if path and path not in seen:
                walk(path, depth + 1, seen | {path})

    walk(closure.path, 1, {closure.path})
    return "\n".join(lines) + "\n"
