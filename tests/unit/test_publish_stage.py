"""The publish stage: outputs appear together or not at all; rollbacks never hide the error.

Files and directories are real; the engine side is a recorder of tag calls
(publishing logic only: the engine tests in tests/integration use a real one).
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from scratchpack.errors import EngineLost, InputError
from scratchpack.lifecycle import collecting_leftovers, deferred_signals, leftovers
from scratchpack.owner import owner
from scratchpack.publish import publication


class Recorder:
    """What a Publication asks of an engine, and a failure on demand."""

    def __init__(self, fail_untag: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail_untag = fail_untag

    def tag(self, image_id: str, reference: str) -> None:
        self.calls.append(("tag", image_id, reference))

    def untag(self, reference: str) -> None:
        if self.fail_untag:
            raise EngineLost("lost the Docker engine while removing it")
        self.calls.append(("untag", reference))


def test_outputs_appear_together_when_every_step_succeeded(tmp_path: Path) -> None:
    engine = Recorder()
    with publication() as staged:
        staged.file(tmp_path / "image.tar").write_bytes(b"tar")
        directory = staged.directory(tmp_path / "layout")
        (directory / "index.json").write_text("{}")
        assert staged.directory(tmp_path / "layout") == directory  # one stage per target
        scratch = staged.scratch()
        name = staged.engine_name(engine, "app:1")  # type: ignore[arg-type]
        staged.engine_image(name, "sha256:abc")
        assert not (tmp_path / "image.tar").exists() and engine.calls == []
    assert (tmp_path / "image.tar").read_bytes() == b"tar"
    assert (tmp_path / "layout/index.json").read_text() == "{}"
    assert not scratch.exists()
    assert engine.calls == [("tag", "sha256:abc", "app:1"), ("untag", name)]
    assert name.startswith(f"scratchpack-staging/{owner()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar", "layout"]


def test_a_failure_leaves_nothing_and_keeps_the_users_files(tmp_path: Path) -> None:
    (tmp_path / "image.tar").write_bytes(b"the user's old image")
    engine = Recorder()
    with pytest.raises(InputError, match="a later step"), publication() as staged:
        staged.file(tmp_path / "image.tar").write_bytes(b"new")
        (staged.directory(tmp_path / "layout") / "x").write_text("x")
        name = staged.engine_name(engine, "app:1")  # type: ignore[arg-type]
        staged.engine_image(name, "sha256:abc")
        raise InputError("a later step failed")
    assert (tmp_path / "image.tar").read_bytes() == b"the user's old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar"]
    assert engine.calls == [("untag", name)]  # the final tag never moved


def test_a_failed_rollback_is_reported_as_what_it_left(tmp_path: Path) -> None:
    engine = Recorder(fail_untag=True)
    with (
        collecting_leftovers() as left,
        pytest.raises(InputError, match="the original"),
        publication() as staged,
    ):
        name = staged.engine_name(engine, "app:1")  # type: ignore[arg-type]
        raise InputError("the original error")
    assert [str(item) for item in left] == [
        f"left the image {name}; remove it with: docker rmi {name}"
    ]
    assert leftovers() == []  # outside the collector: nothing claimed


@pytest.mark.usefixtures("sigint_raises")
def test_signals_wait_until_the_block_is_done() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the rest of the cleanup")
    assert done == ["the rest of the cleanup"]
    with pytest.raises(SystemExit) as ended, deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert ended.value.code == 128 + signal.SIGTERM


def test_prune_removes_only_what_ended_runs_left(tmp_path: Path) -> None:
    from scratchpack.owner import owner_of
    from scratchpack.publish import prune_files

    namespace = owner().split("-")[0]
    child = os.fork()
    if child == 0:  # a run that ends at once: its PID is then free
        os._exit(0)
    os.waitpid(child, 0)
    ended = f"{namespace}-{child}"
    leftovers = [tmp_path / f"scratchpack-{ended}-abc", tmp_path / f".scratchpack-{ended}-x"]
    for path in leftovers:
        path.mkdir()
    alive = tmp_path / f"scratchpack-{owner()}-mine"  # this run's own
    elsewhere = tmp_path / f"scratchpack-1-{child}-other"  # another PID namespace
    unrelated = tmp_path / "scratchpack-notes"
    for path in (alive, elsewhere, unrelated):
        path.mkdir()
    removed = prune_files([tmp_path])
    assert sorted(removed) == sorted(f"directory {path}" for path in leftovers)
    assert alive.exists() and elsewhere.exists() and unrelated.exists()
    assert owner_of(f"scratchpack-staging/{ended}-ab12:0") == ended


def test_removing_a_scratch_tree_never_touches_what_its_links_lead_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unpacked image's tree may hold read-only directories (given their owner's rights
    to be emptied) and links to anywhere: the user's directory a link names keeps its
    mode and its files."""
    from scratchpack import publish
    from scratchpack.publish import remove_tree

    rmtree = publish.shutil.rmtree
    calls: list[object] = []

    def unprivileged_first(path: object, **options: object) -> None:
        calls.append(path)  # the first try fails as it does without root: nothing goes
        if len(calls) > 1:
            rmtree(path, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(publish.shutil, "rmtree", unprivileged_first)

    users = tmp_path / "users"
    (users / "keep").mkdir(parents=True)
    (users / "keep/file").write_text("mine")
    users.chmod(0o500)
    scratch = tmp_path / "scratch"
    (scratch / "ro/deeper").mkdir(parents=True)
    (scratch / "ro/deeper/file").write_text("x")
    (scratch / "ro/link").symlink_to(users)
    (scratch / "ro/deeper").chmod(0o500)
    (scratch / "ro").chmod(0o500)
    try:
        remove_tree(scratch)
        assert not scratch.exists() and len(calls) == 2  # the rights were given, then it went
        assert stat.S_IMODE(users.stat().st_mode) == 0o500
        assert (users / "keep/file").read_text() == "mine"
    finally:
        users.chmod(0o700)
