"""What this test's own runs left in the engine and the temporary directory, and nothing else.

The suite runs in several processes at once (pytest-xdist, tests/run.sh) on one Docker
engine, so a test that checks "no container, no throw-away tag is left" must not count
the objects of a test running beside it. Every object a scratchpack run makes names its
owner, ``<pid namespace>-<pid>`` (scratchpack/owner.py): containers in their
``org.scratchpack.owner`` label, throw-away tags and temporary files in their names.
A test's own runs are its worker process (the calls it makes in-process) and the commands
it started through tests/cli.py since it began (:func:`begin_test`, called by an autouse
fixture of tests/conftest.py). Only the commands of the current test count: PIDs come
back, and an old one may by now belong to another test's run.

Listing goes through the low-level API and ignores what disappears meanwhile: another
test's container or image can be removed between the list and its inspection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from scratchpack.owner import OWNER_LABEL, TAG_REPOSITORIES, owner, owner_of
from tests import cli

_first_of_test = 0


def begin_test() -> None:
    """From now on, the commands started count as the current test's."""
    global _first_of_test
    _first_of_test = len(cli.STARTED)


def owners() -> set[str]:
    """The owners of this test's runs: this process and the commands the test started."""
    namespace = os.stat("/proc/self/ns/pid").st_ino
    return {owner(), *(f"{namespace}-{pid}" for pid in cli.STARTED[_first_of_test:])}


def containers(client: Any, label: str = OWNER_LABEL) -> list[Any]:
    """This test's runs' containers, in any state, labelled ``label`` (``NAME[=VALUE]``)."""
    mine = owners()
    found = client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    return [container for container in found if container.labels.get(OWNER_LABEL) in mine]


def throwaway_tags(client: Any, repositories: Iterable[str] = TAG_REPOSITORIES) -> list[str]:
    """This test's runs' throw-away tags (``scratchpack-staging/OWNER-...`` and the like)."""
    mine, prefixes = owners(), tuple(f"{repository}/" for repository in repositories)
    tags = (tag for image in client.api.images() for tag in image.get("RepoTags") or ())
    return [tag for tag in tags if tag.startswith(prefixes) and owner_of(tag) in mine]


def temporary(names: Iterable[str]) -> list[str]:
    """The ``names`` (of files) that carry the owner of one of this test's runs."""
    mine = owners()
    return [name for name in names if owner_of(name) in mine]


def unused_volumes(client: Any) -> set[str]:
    """The engine's volumes no container uses (``dangling``)."""
    return {v["Name"] for v in client.api.volumes(filters={"dangling": True})["Volumes"] or ()}


def volumes_left(client: Any, unused_before: set[str]) -> set[str]:
    """Volumes the test's containers left: unused now, and not unused before the test.

    A volume another test's container uses is not unused, and no test removes a volume
    nothing uses; the one moment another test's volume looks unused, while the engine
    removes it with its container, is waited out.
    """
    left = unused_volumes(client) - unused_before
    if left:
        time.sleep(1)
        left &= unused_volumes(client)
    return left
