"""``--exclude GLOB``: paths an image leaves out of what is included, packaged or traced.

Two kinds of pattern, as in ``.gitignore``: one without ``/`` matches the name of
any path component (``__pycache__``, ``*.pyc``, ``*.a``); one with ``/`` matches
the in-image path from ``/`` component by component, where ``*`` stays inside a
component and ``**`` spans any number of them (``/usr/lib/python3.*/test``,
``/usr/share/**/*.html``). A matched directory takes everything below it along.

A program's closure (the program, its loader, its libraries) is never left out:
the image would not start. :class:`Excludes` remembers which patterns matched so
a pattern that matched nothing can be reported (a typo, a path that moved).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from scratchpack.errors import InputError


class Excludes:
    """The ``--exclude`` patterns of one run, and which of them have matched."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        for pattern in self.patterns:
            if not pattern or pattern in ("/", "**", "/**"):
                raise InputError(f"--exclude {pattern!r}: would leave out everything")
            if "/" in pattern and not pattern.startswith("/"):
                raise InputError(
                    f"--exclude {pattern}: a pattern with '/' is an in-image path from / "
                    "(start it with /); one without '/' matches names anywhere"
                )
        self._split = [
            (pattern, tuple(part for part in pattern.split("/") if part))
            for pattern in self.patterns
        ]
        self.used: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, path: str) -> str | None:
        """The first pattern that leaves ``path`` (an in-image path) out, or None."""
        components = tuple(part for part in path.split("/") if part)
        for pattern, parts in self._split:
            if "/" in pattern:
                hit = _prefix_matches(parts, components)
            else:
                hit = any(fnmatchcase(component, pattern) for component in components)
            if hit:
                self.used.add(pattern)
                return pattern
        return None

    def unused(self) -> list[str]:
        return [pattern for pattern in self.patterns if pattern not in self.used]


def _prefix_matches(parts: tuple[str, ...], components: tuple[str, ...]) -> bool:
    """Whether ``parts`` matches ``components`` or one of its leading parts (a parent)."""
    if not parts:
        return True  # the whole pattern matched a parent: everything below goes too
    head, rest = parts[0], parts[1:]
    if head == "**":
        return any(_prefix_matches(rest, components[skip:]) for skip in range(len(components) + 1))
    if not components or not fnmatchcase(components[0], head):
        return False
    return _prefix_matches(rest, components[1:])
