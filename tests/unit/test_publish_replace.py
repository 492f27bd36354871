"""A staged layout that replaces an existing one (``build --update -o DIR``): all or nothing.

The new layout and the old change places in one step (renameat2's exchange), and the old
one is removed — at the commit only. A failure or an interrupt before it leaves DIR as it
was, byte for byte; where no exchange is possible, the old one goes aside and a failed
rename puts it back. Nothing but an OCI layout is ever replaced, and never through a
symbolic link.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from scratchpack import publish
from scratchpack.errors import InputError
from scratchpack.publish import check_output, publication


def make_layout(directory: Path, content: bytes) -> Path:
    """A directory shaped as the writer makes a layout: oci-layout, index.json, a blob."""
    (directory / "blobs/sha256").mkdir(parents=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_bytes(b'{"manifests":[]}' + content)
    (directory / "blobs/sha256/0123").write_bytes(content)
    return directory


def snapshot(top: Path) -> dict[str, tuple[int, bytes]]:
    """Each entry under ``top``: its mode and, for a file, its bytes."""
    found = {}
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = Path(directory) / name
            data = path.read_bytes() if path.is_file() else b""
            found[str(path.relative_to(top))] = (path.lstat().st_mode, data)
    return found


def test_the_swap_replaces_a_layout(tmp_path: Path) -> None:
    target = make_layout(tmp_path / "layout", b"old")
    (target / "blobs/sha256/stale").write_bytes(b"a blob only the old image had")
    check_output(target, "--output", replace_layout=True)
    with publication(replace_layouts=True) as staged:
        make_layout(staged.directory(target), b"new")
        assert (target / "index.json").read_bytes().endswith(b"old")  # nothing moved yet
    assert snapshot(target) == snapshot(make_layout(tmp_path / "expected", b"new"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["expected", "layout"]


@pytest.mark.usefixtures("sigint_raises")
@pytest.mark.parametrize("interrupt", [False, True])
def test_a_failure_before_the_commit_leaves_the_old_layout_byte_for_byte(
    tmp_path: Path, interrupt: bool
) -> None:
    target = make_layout(tmp_path / "layout", b"old")
    before = snapshot(target)
    failure = KeyboardInterrupt if interrupt else InputError
    with pytest.raises(failure), publication(replace_layouts=True) as staged:
        make_layout(staged.directory(target), b"new")
        if interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        raise InputError("a later step failed")
    assert snapshot(target) == before
    assert [path.name for path in tmp_path.iterdir()] == ["layout"]


def test_the_layouts_change_places_in_one_step(tmp_path: Path) -> None:
    """renameat2's exchange: at no moment is there no layout at the target (a SIGKILL
    between two renames would leave none, and the old one under a pruned name)."""
    first, second = tmp_path / "first", tmp_path / "second"
    make_layout(first, b"one")
    make_layout(second, b"two")
    one, two = snapshot(first), snapshot(second)
    assert publish._exchange(first, second)  # this machine's file systems can
    assert (snapshot(first), snapshot(second)) == (two, one)


def test_a_failed_exchange_leaves_the_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make_layout(tmp_path / "layout", b"old")
    before = snapshot(target)

    def failing(_first: Path, _second: Path) -> bool:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(publish, "_exchange", failing)
    failed = pytest.raises(OSError, match="Input/output error")
    with failed, publication(replace_layouts=True) as staged:
        make_layout(staged.directory(target), b"new")
    assert snapshot(target) == before
    assert [path.name for path in tmp_path.iterdir()] == ["layout"]


@pytest.mark.parametrize("failing", ["aside", "into place"])
def test_where_no_exchange_is_a_failed_rename_during_the_swap_restores_the_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = make_layout(tmp_path / "layout", b"old")
    before = snapshot(target)
    monkeypatch.setattr(publish, "_exchange", lambda _first, _second: False)
    rename = os.rename
    renames: list[tuple[str, str]] = []

    def flaky(source: str | Path, destination: str | Path) -> None:
        renames.append((str(source), str(destination)))
        if len(renames) == (1 if failing == "aside" else 2):  # the swap's first or second
            raise OSError(5, "Input/output error")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", flaky)
    lock = tmp_path / "app.lock"
    lock.write_bytes(b"the old lock")
    failed = pytest.raises(OSError, match="Input/output error")
    with failed, publication(replace_layouts=True) as staged:
        staged.file(lock).write_bytes(b"the new lock")
        make_layout(staged.directory(target), b"new")
    assert snapshot(target) == before
    assert lock.read_bytes() == b"the old lock"  # the swap is made first: nothing else moved
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.lock", "layout"]
    assert len(renames) == (1 if failing == "aside" else 3)  # aside, into place, back


def test_a_directory_that_is_not_a_layout_is_still_refused(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "index.json").write_text("{}")  # no oci-layout: the user's own files
    for replace_layout in (False, True):
        with pytest.raises(InputError, match="exists and is not empty; choose a new path"):
            check_output(target, "--output", replace_layout=replace_layout)
    layout = make_layout(tmp_path / "layout", b"old")
    with pytest.raises(InputError, match="exists and is not empty; choose a new path"):
        check_output(layout, "--output")  # a layout too, unless asked to replace it
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "--output", replace_layout=True)
    check_output(tmp_path / "new", "--output", replace_layout=True)


def test_a_layout_with_a_symlinked_marker_is_not_a_layout(tmp_path: Path) -> None:
    target = make_layout(tmp_path / "layout", b"old")
    (target / "oci-layout").unlink()
    (target / "oci-layout").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="exists and is not empty"):
        check_output(target, "--output", replace_layout=True)


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout", b"old")
    link = tmp_path / "link"
    link.symlink_to(layout, target_is_directory=True)
    with pytest.raises(InputError, match="link: exists and is not a directory"):
        check_output(link, "--output", replace_layout=True)
    before = snapshot(layout)
    with pytest.raises(OSError), publication(replace_layouts=True) as staged:  # unchecked
        make_layout(staged.directory(link), b"new")
    assert snapshot(layout) == before and link.is_symlink()  # never replaced through it
    assert sorted(path.name for path in tmp_path.iterdir()) == ["layout", "link"]
