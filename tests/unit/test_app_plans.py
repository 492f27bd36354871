"""What real applications need from build's and shrink's plans (issue 12), without an engine.

Each test plans host programs the way a new user would hand them over (under a
0700 ``mktemp -d``, trees with object files and links that leave them) and checks
the planned entries; the recipes in ``tests/integration/test_recipes.py`` run them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scratchpack.image.config import ImageConfig
from scratchpack.plan.entries import EntryKind
from scratchpack.plan.image_plan import BuildOptions, plan_image
from tests.cfixtures import is_host_glibc_x86_64

pytestmark = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="plans the host's glibc x86-64 programs"
)
TRUE = shutil.which("true") or "/usr/bin/true"


def _private_copy(tmp_path: Path) -> Path:
    """``true`` under two 0700 directories, as ``mktemp -d`` and a user's ``~/p`` are."""
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    app = private / "bin" / "app"
    shutil.copy2(os.path.realpath(TRUE), app)
    private.chmod(0o700)
    (private / "bin").chmod(0o700)
    tmp_path.chmod(0o700)
    return app


def test_directories_needed_only_as_parents_are_0755_whatever_the_host(tmp_path: Path) -> None:
    app = _private_copy(tmp_path)
    plan = plan_image(BuildOptions((str(app),)), ImageConfig(entrypoint=None))
    # /tmp is an essential of its own (1777); the rest is only on the way to the app.
    parents = [str(parent) for parent in app.parents if str(parent) not in ("/", "/tmp")]
    for parent in parents:
        entry = plan.root.entries[parent]
        assert entry.kind is EntryKind.DIR
        assert (entry.mode, entry.uid, entry.gid) == (0o755, 0, 0), parent
    assert plan.root.entries[str(app)].mode == 0o755


def test_an_included_directory_keeps_its_own_mode(tmp_path: Path) -> None:
    app = _private_copy(tmp_path)
    data = tmp_path / "private" / "data"
    (data / "inner").mkdir(parents=True)
    (data / "inner" / "file").write_text("x")
    data.chmod(0o700)
    (data / "inner").chmod(0o750)
    plan = plan_image(
        BuildOptions((str(app),), includes=(str(data),)), ImageConfig(entrypoint=None)
    )
    entries = plan.root.entries
    assert entries[str(data)].mode == 0o700
    assert entries[str(data / "inner")].mode == 0o750
    assert entries[str(tmp_path / "private")].mode == 0o755
