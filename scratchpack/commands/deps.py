"""``deps``: the shared libraries the runtime loader would map for each binary.

Nothing is executed: :mod:`scratchpack.ld` resolves each closure statically with
the loader's own rules. The report is the closures' trees (or their JSON); what
the loader would only warn about goes to standard error, once per library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scratchpack.errors import EXIT_MISSING, EXIT_OK
from scratchpack.ld.loaders import HwcapsChoice
from scratchpack.ld.report import render_tree
from scratchpack.ld.resolve import Closure, Resolver


@dataclass(frozen=True)
class DepsRequest:
    binaries: tuple[str, ...]
    root: str | None = None  # resolve inside this root; BINARY paths are then inside it
    library_path: str | None = None  # LD_LIBRARY_PATH (None: the environment's)
    hwcaps: str = "auto"  # auto, none, or a comma list of glibc-hwcaps levels


@dataclass(frozen=True)
class DepsResult:
    """One closure per binary, in the order given."""

    closures: tuple[Closure, ...]

    @property
    def exit_code(self) -> int:
        """1 (something is missing) unless every closure is complete."""
        return EXIT_OK if all(closure.complete for closure in self.closures) else EXIT_MISSING

    def to_json(self) -> list[dict[str, Any]]:
        return [closure.to_json() for closure in self.closures]


def run_deps(request: DepsRequest) -> DepsResult:
    """Each binary's closure, resolved as its loader would."""
    resolver = Resolver(
        root=request.root,
        library_path=request.library_path,
        hwcaps=HwcapsChoice.parse(request.hwcaps),
    )
    return DepsResult(tuple(resolver.resolve_all(request.binaries)))


def report_text(result: DepsResult) -> str:
    """The human report of ``deps``: each closure's tree, a blank line between them."""
    return "\n".join(render_tree(closure) for closure in result.closures)


def warning_lines(result: DepsResult) -> list[str]:
    """What standard error says beside either report, in the closures' order.

    A preload ld.so would skip is a warning, once per library; a library found
    but refused (another architecture, not a library) says why.
    """
    lines: list[str] = []
    warned: set[str] = set()
    for closure in result.closures:
        for item in closure.preload_missing:
            if item.soname not in warned:
                warned.add(item.soname)
                why = f" ({item.reason})" if item.reason else ""
                lines.append(
                    f"scratchpack: warning: {item.soname} from /etc/ld.so.preload cannot be "
                    f"preloaded{why}: ignored, as ld.so does"
                )
        lines.extend(
            f"scratchpack: {closure.path}: {item.soname}: {item.reason}"
            for item in closure.missing
            if item.reason
        )
    return lines
