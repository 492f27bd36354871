"""Maintainer scripts read as shell words, never run.

What a package's ``preinst``/``postinst`` would do to accounts and owners is
read from its text: each line naming a tool of interest is split into simple
commands at ``;``, ``&&``, ``||``, ``|``, ``&`` and parentheses, with its
redirections (``>/dev/null``, ``2>&1``) and their targets left out, so a
redirection is never an operand. Variables assigned a plain string, or
one built of plain strings and variables already known
(``access_log="$logdir/access.log"``), are substituted in script order, the
last assignment before the use winning; dpkg's ``$DPKG_ROOT`` is empty as for
an install into ``/``. A name assigned anything else (``$(…)``), inside a
loop, by ``for`` or by ``read`` is unknown from there on: any variable not
known stays as written and is not understood by the callers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from scratchpack.packages.apt import PackageError

MAX_SCRIPT_COMMANDS = 1000  # commands of interest one script may hold (real ones: a few)
_ASSIGNMENT = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_]\w*)=(.*)")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./-]*")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")
# Names a line sets in a way not read here: ``for NAME in``, ``read [-r] NAME...``.
_LOOP_NAME = re.compile(r"(?:^|[;&|(\s])for[ \t]+([A-Za-z_]\w*)")
_READ_NAMES = re.compile(r"(?:^|[;&|(\s])read((?:[ \t]+-?[A-Za-z_]\w*)+)")
_LOOP_START = re.compile(r"(?:^|[;&|\s])do(?=$|[;\s])")
_LOOP_END = re.compile(r"(?:^|[;&|\s])done(?=$|[;)<>|&\s])")
_OPERATOR_CHARS = "();<>|&"
# Words that start a command without being it: the command is the next word.
_LEADING = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "exec", "{"})


@dataclass(frozen=True)
class Command:
    """One simple command of a script: the line it starts on and its words."""

    line: int
    words: tuple[str, ...]
    text: str  # the logical line it is part of, for messages

    @property
    def tool(self) -> str:
        return self.words[0].rsplit("/", 1)[-1]


def commands(script: str, tools: re.Pattern[str], package: str, what: str) -> Iterator[Command]:
    """The simple commands of ``script`` on lines that ``tools`` matches, in order.

    Linear in the script's size; more than MAX_SCRIPT_COMMANDS of them is a
    PackageError naming ``package`` and ``what`` they are.
    """
    values = {"DPKG_ROOT": ""}  # dpkg's: empty but for an install into another root
    loops = 0  # how deep in do ... done the line is
    count = 0
    for number, line in _logical_lines(script):
        if tools.search(line):
            for command in _commands_of(number, _substituted(line, values)):
                count += 1
                if count > MAX_SCRIPT_COMMANDS:
                    raise PackageError(
                        f"package {package}: a maintainer script with more than "
                        f"{MAX_SCRIPT_COMMANDS} {what}; refused"
                    )
                yield command
        loops = max(0, loops + len(_LOOP_START.findall(line)) - len(_LOOP_END.findall(line)))
        _assign(line, values, in_loop=loops > 0 or bool(_LOOP_START.search(line)))


def _substituted(text: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(
        lambda match: values.get(match.group(1) or match.group(2), match.group(0)), text
    )


def _assign(line: str, values: dict[str, str], in_loop: bool) -> None:
    """What ``line`` assigns, into ``values``: a plain value known, anything else unknown."""
    for name in _LOOP_NAME.findall(line):
        values.pop(name, None)
    for names in _READ_NAMES.findall(line):
        for name in names.split():
            values.pop(name, None)
    match = _ASSIGNMENT.fullmatch(line)
    if match is None:
        return
    name, raw = match.groups()
    value = _plain(raw.strip().removesuffix(";").rstrip(), values)
    if value is None or in_loop:
        values.pop(name, None)
    else:
        values[name] = value


def _plain(raw: str, values: dict[str, str]) -> str | None:
    """``raw`` (one shell word, maybe quoted) as a plain string, or None if it is not one."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        quote, raw = raw[0], raw[1:-1]
        if quote == "'":
            return raw if _PLAIN_VALUE.fullmatch(raw) else None
    value = _substituted(raw, values)
    return value if _PLAIN_VALUE.fullmatch(value) else None


def _commands_of(number: int, line: str) -> Iterator[Command]:
    for words in _simple_commands(line):
        while words and (words[0] in _LEADING or _is_assignment(words[0])):
            words.pop(0)
        if words:
            yield Command(number, tuple(words), line.strip())


def _is_assignment(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and re.fullmatch(r"[A-Za-z_]\w*", name) is not None


def _logical_lines(script: str) -> Iterator[tuple[int, str]]:
    """Lines with their ``\\``-newline continuations joined, each with its first line's number."""
    start, parts = 0, []
    for number, line in enumerate(script.split("\n"), 1):
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


def _simple_commands(line: str) -> Iterator[list[str]]:
    """The words of each simple command of ``line``, redirections left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=_OPERATOR_CHARS)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: nothing of this line is understood
        return
    words: list[str] = []
    target_follows = False
    for token in tokens:
        if target_follows:
            target_follows = False
            continue
        if not token or any(char not in _OPERATOR_CHARS for char in token):
            words.append(token)
        elif "<" in token or ">" in token:
            if words and words[-1].isdigit():  # "2>/dev/null": the 2 is a descriptor
                words.pop()
            target_follows = True
        else:
            yield words
            words = []
    yield words
