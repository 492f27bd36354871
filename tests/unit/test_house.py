"""The house's shape, read from the code: no import circle, commands are peers, floors hold.

Every import of the package's own modules counts — at the top, inside a
function, or under ``if TYPE_CHECKING:`` — since a type-only import still ties
two files together for a reader. The floors, from the ground up::

    ground → ld → packages → plan → image → engine → trace → publish → commands → cli

A module imports only from its own floor or below; a command module imports
no other command module (only :mod:`scratchpack.commands.common`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "scratchpack"

FLOORS = ("ground", "ld", "packages", "plan", "image", "engine", "trace", "publish", "commands")
FLOORS += ("cli",)

# Modules outside the floors' packages: the ground imports nothing above it (the
# package's face, errors, notes, ownership, progress, the run's lifecycle, the
# in-root path rules); the command line's own files sit on the top floor.
TOP_LEVEL_FLOOR = {
    "scratchpack.publish": "publish",
    "scratchpack.cli": "cli",
    "scratchpack.entry": "cli",
    "scratchpack.__main__": "cli",
    "scratchpack.config_file": "cli",  # scratchpack.yaml: the command line's options in a file
}

SHARED_COMMAND_MODULES = {"scratchpack.commands", "scratchpack.commands.common"}

# Lower floors reaching up, each with its reason. The image floor's plain data
# (a platform, a reference, a configuration, JSON documents) and its safe
# unpacker are older than the floors' rule; none of them imports back down.
ALLOWED_UPWARD = {
    ("scratchpack.packages.lock", "scratchpack.image.documents"): "bounded JSON parsing",
    ("scratchpack.packages.root", "scratchpack.image.unpack"): "the one safe unpacker of tars",
    ("scratchpack.packages.root", "scratchpack.image.media"): "Platform, plain data",
    ("scratchpack.plan.debug", "scratchpack.image.reference"): "a tag's parts, plain data",
    ("scratchpack.plan.image_plan", "scratchpack.image.config"): "ImageConfig, plain data",
    ("scratchpack.plan.image_plan", "scratchpack.image.media"): "Platform, plain data",
    ("scratchpack.plan.shrink", "scratchpack.image.config"): "RuntimeConfig, plain data",
    ("scratchpack.plan.shrink", "scratchpack.image.media"): "Platform, plain data",
    ("scratchpack.plan.essentials", "scratchpack.image.media"): "Platform, plain data",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _known(name: str) -> str | None:
    """``name`` or its nearest enclosing module of the package (``a.b.Class`` is ``a.b``)."""
    while name and name not in _modules():
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every module of the package that ``module`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _known(name)
            if target is not None and target != module:
                yield target


@cache
def _graph() -> dict[str, frozenset[str]]:
    return {module: frozenset(_imported(module, path)) for module, path in _modules().items()}


def _floor(module: str) -> int:
    parts = module.split(".")
    if module in TOP_LEVEL_FLOOR:
        return FLOORS.index(TOP_LEVEL_FLOOR[module])
    if len(parts) > 1 and parts[1] in FLOORS:
        return FLOORS.index(parts[1])
    return FLOORS.index("ground")


def _circles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "scratchpack.lifecycle" in graph["scratchpack.publish"]
    assert "scratchpack.engine.client" in graph["scratchpack.publish"]  # type-only counts
    assert "scratchpack.cli" in graph["scratchpack.entry"]  # an import inside a function counts


def test_no_import_circle() -> None:
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_one() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _circles(graph) == [["a", "b", "c"]]


def test_no_command_imports_another() -> None:
    crossing = [
        (module, target)
        for module, targets in _graph().items()
        if module.startswith("scratchpack.commands.")
        for target in targets
        if target.startswith("scratchpack.commands.") and target not in SHARED_COMMAND_MODULES
    ]
    assert crossing == []


def test_no_floor_imports_a_higher_one() -> None:
    upward = sorted(
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if _floor(target) > _floor(module) and (module, target) not in ALLOWED_UPWARD
    )
    assert upward == []


def test_the_ground_floor_is_the_ground() -> None:
    ground = [module for module in _graph() if _floor(module) == 0]
    assert {"scratchpack.errors", "scratchpack.lifecycle", "scratchpack.owner"} <= set(ground)
    assert all(_floor(target) == 0 for module in ground for target in _graph()[module])


MAX_FUNCTION_LINES = 80  # a function a reader takes in at once


def _function_lengths() -> list[tuple[int, str]]:
    """(lines, ``module:function``) of every function of the package, longest first."""
    lengths = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # From ``def`` on: a click command's decorators declare options, not logic.
                lengths.append((node.end_lineno - node.lineno + 1, f"{module}:{node.name}"))
    return sorted(lengths, reverse=True)


def test_no_function_is_longer_than_a_screen() -> None:
    assert [item for item in _function_lengths() if item[0] > MAX_FUNCTION_LINES] == []


def _summary(largest: int = 10) -> str:
    """The house at a glance, for a reader or a note: ``python -m tests.unit.test_house``."""
    graph = _graph()
    edges = sum(len(targets) for targets in graph.values())
    per_floor = {floor: 0 for floor in FLOORS}
    for module in graph:
        per_floor[FLOORS[_floor(module)]] += 1
    lines = [
        f"{len(graph)} modules, {edges} imports of the package's own modules (type-only included)",
        f"import circles: {len(_circles(graph))}",
        "floors: " + ", ".join(f"{floor} {count}" for floor, count in per_floor.items()),
        f"upward imports allowed: {len(ALLOWED_UPWARD)} (plain data of the image floor)",
        f"largest functions (limit {MAX_FUNCTION_LINES} lines):",
    ]
    lines += [f"  {count:4d}  {name}" for count, name in _function_lengths()[:largest]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(_summary())
