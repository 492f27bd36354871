"""A link a package lists is planned as dpkg unpacks it, whether its target exists or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.entries import EntryKind, Reason
from scratchpack.plan.rootplan import RootPlan


def _root(tmp_path: Path) -> RootFS:
    (tmp_path / "usr/share/nginx").mkdir(parents=True)
    (tmp_path / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("../../lib/nginx/modules", tmp_path / "usr/share/nginx/modules")
    os.symlink("/etc/shadow", tmp_path / "usr/share/nginx/host-link")
    os.symlink("loop", tmp_path / "usr/share/nginx/loop")
    return RootFS(str(tmp_path))


@pytest.mark.parametrize(
    ("listed", "kept", "target"),
    [
        ("/usr/share/nginx/modules", "/usr/share/nginx/modules", "../../lib/nginx/modules"),
        ("/usr/share/nginx/host-link", "/usr/share/nginx/host-link", "/etc/shadow"),
        ("/usr/share/nginx/loop", "/usr/share/nginx/loop", "loop"),
    ],
)
def test_a_link_to_nothing_in_the_root_is_kept_as_a_link(
    tmp_path: Path, listed: str, kept: str, target: str
) -> None:
    plan = RootPlan()
    assert plan.add_listed(_root(tmp_path), listed, Reason.PACKAGE) == kept
    entry = plan.entries[kept]
    assert entry.kind is EntryKind.SYMLINK and entry.target == target
    assert plan.entries["/usr/share/nginx"].kind is EntryKind.DIR
    assert "/etc/shadow" not in plan.entries  # the host's file is never read


def test_a_missing_path_that_is_no_link_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        RootPlan().add_listed(_root(tmp_path), "/usr/share/nginx/absent", Reason.PACKAGE)
