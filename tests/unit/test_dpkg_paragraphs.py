"""dpkg's stanzas as the database reader splits them (scratchpack/plan/dpkg.py).

The reader keeps only the fields it uses; which stanzas come out, and what each
field says, must stay what the plain definition gives: a line that str.strip()
empties ends a stanza, the first line of a name claims the field (even without a
colon), continuation lines are text only, a stanza of continuation lines alone is
none.
"""

from __future__ import annotations

import random

import pytest

from scratchpack.plan.dpkg import _FIELD_NAMES, _paragraphs


def _plain(lines: list[str]) -> list[tuple[dict[str, str], str]]:
    found, fields, text = [], {}, []
    for line in [*lines, ""]:
        if not line.strip():
            if fields:
                found.append((fields, "".join(text)))
            fields, text = {}, []
            continue
        text.append(line + "\n")
        if line[0] not in " \t":
            name, _, value = line.partition(":")
            fields.setdefault(name, value.strip())
    return [({k: v for k, v in f.items() if k in _FIELD_NAMES}, t) for f, t in found]


@pytest.mark.parametrize(
    "text",
    [
        "Package: a\nStatus\nStatus: install ok installed\n",  # claimed without a colon
        "Package: a\n\x85\nPackage: b\n",  # NEL: a blank line to strip()
        "Package: a\n\u2028\n\xa0\t\nPackage: b\n",
        "Description: x\n more\n\nPackage: c\n",  # a stanza without a field read
        " continuation only\n\nPackage: d\n",
        "Package:  e  \nVersion:1\nSource: s (1)\n",
        "Package : f\nPackage: g\n",
    ],
)
def test_stanzas_are_the_plain_definitions(text: str) -> None:
    lines = text.split("\n")[:-1]
    assert list(_paragraphs(lines)) == _plain(lines)


def test_random_stanzas_agree_with_the_plain_definition() -> None:
    pieces = [
        *(f"{name}: v" for name in _FIELD_NAMES), *_FIELD_NAMES, "Other: x", "Other",
        " cont", "\tcont", "", " ", "\x85", "\u2028", "\x1c", "Package:", "Status:  a b c ",
    ]  # fmt: skip
    chance = random.Random(26)
    for _ in range(3000):
        lines = [chance.choice(pieces) for _ in range(chance.randint(0, 12))]
        assert list(_paragraphs(lines)) == _plain(lines), lines
