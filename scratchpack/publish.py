"""One publish stage for every command: stage, then publish everything together, or roll back.

``build``, ``shrink``, ``debug`` and the attach tools image all make their
outputs through a :class:`Publication`:

- files and directories are written beside their targets under hidden names
  and renamed into place only when every step of the command succeeded;
- images go into the engine under throw-away names (``scratchpack-staging/…``)
  and get their final tags only then, so a failed run never moves a tag the
  user had;
- a failure removes what was staged; a failure *of that removal* (the engine
  went away) never replaces the original error: it is reported as what it
  left behind (:func:`~scratchpack.lifecycle.leftover`), with the command that removes it.

Signals that arrive while outputs are published or rolled back are held until
that is finished (:func:`~scratchpack.lifecycle.deferred_signals`), so neither is
cut in half. What an ended run staged is removed where the next one writes
(:func:`prune_files`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scratchpack.errors import InputError
from scratchpack.lifecycle import (
    HELD_SIGNALS,
    deferred_signals,
    leftover,
    report_removed,
    running_as_command,
)
from scratchpack.owner import gone, owner, owner_of, prefix

if TYPE_CHECKING:
    from scratchpack.engine.client import StagingEngine
    from scratchpack.image.model import Image

STAGING_REPOSITORY = "scratchpack-staging"


# -- staged outputs -------------------------------------------------------------------------


@dataclass
class _StagedImage:
    engine: StagingEngine
    temporary: str  # the throw-away tag it is built or loaded under
    final: str
    image_id: str | None = None  # known once it exists
    in_flight: bool = True  # the engine may still be making it (a build or load was cut off)


@dataclass
class Publication:
    """Outputs staged beside their targets and images under throw-away tags."""

    _moves: list[tuple[Path, Path, bool]] = field(default_factory=list)  # staged, target, dir?
    _scratch: list[Path] = field(default_factory=list)  # temporary, always removed
    _images: list[_StagedImage] = field(default_factory=list)
    _done: list[Callable[[], None]] = field(default_factory=list)  # after publishing

    # -- staging

    def directory(self, target: Path) -> Path:
        """A hidden directory beside ``target`` that becomes it when published.

        Asked again for the same target, it is the same directory: a blob store
        made there first becomes the layout written there later. Paths stay as
        given (relative ones relative to the working directory), so an output
        works from a working directory deeper than PATH_MAX.
        """
        target = Path(target)
        for staged, known, _is_dir in self._moves:
            if known == target:
                return staged
        _prune_beside(target)
        with deferred_signals():  # made and recorded at once: an interrupt cannot orphan it
            staged = Path(tempfile.mkdtemp(prefix="." + prefix(), dir=target.parent))
            self._moves.append((staged, target, True))
        return staged

    def file(self, target: Path) -> Path:
        """A path beside ``target`` (in a hidden directory) that becomes it when published."""
        target = Path(target)
        _prune_beside(target)
        with deferred_signals():
            holder = Path(tempfile.mkdtemp(prefix="." + prefix(), dir=target.parent))
            staged = holder / target.name
            self._moves.append((staged, target, False))
        return staged

    def scratch(self) -> Path:
        """A temporary directory, removed when the command ends."""
        with deferred_signals():
            path = Path(tempfile.mkdtemp(prefix=prefix()))
            self._scratch.append(path)
        return path

    def engine_name(self, engine: StagingEngine, final: str) -> str:
        """A throw-away tag to build or load ``final`` under until everything succeeded.

        It is registered before the engine is asked anything, so an interrupt
        while the engine makes the image still removes it.
        """
        temporary = f"{STAGING_REPOSITORY}/{owner()}-{os.urandom(4).hex()}:{len(self._images)}"
        self._images.append(_StagedImage(engine, temporary, final))
        return temporary

    def engine_image(self, temporary: str, image_id: str) -> None:
        for staged in self._images:
            if staged.temporary == temporary:
                staged.image_id = image_id
                staged.in_flight = False

    @contextlib.contextmanager
    def making(self, temporary: str) -> Iterator[None]:
        """The engine makes the image ``temporary`` names during the block.

        If the block fails, the engine made nothing — unless it was cut off by a
        signal, when the engine may still finish: the rollback then waits for it.
        """
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            for staged in self._images:
                if staged.temporary == temporary:
                    staged.in_flight = False
            raise

    def after_publish(self, action: Callable[[], None]) -> None:
        """Run ``action`` once everything is published (a stale image to drop, say)."""
        self._done.append(action)

    # -- the end

    def commit(self) -> None:
        umask = os.umask(0)
        os.umask(umask)
        while self._moves:
            staged, target, is_dir = self._moves[0]
            if is_dir:
                if target.is_dir():
                    target.rmdir()  # checked empty before the work began
                staged.rename(target)
            else:
                os.chmod(staged, 0o666 & ~umask)
                os.replace(staged, target)
                staged.parent.rmdir()
            self._moves.pop(0)
        while self._images:
            staged_image = self._images[0]
            if staged_image.image_id is not None:
                staged_image.engine.tag(staged_image.image_id, staged_image.final)
                # The throw-away name only: the image keeps its final tag.
                staged_image.engine.untag(staged_image.temporary)
            self._images.pop(0)
        for action in self._done:
            action()

    def rollback(self) -> None:
        for staged, _target, is_dir in self._moves:
            shutil.rmtree(staged if is_dir else staged.parent, ignore_errors=True)
        self._moves.clear()
        for staged_image in self._images:
            name = staged_image.temporary
            with leftover(f"the image {name}", f"docker rmi {name}"):
                staged_image.engine.untag(name)
                if staged_image.in_flight:
                    _untag_when_done(staged_image.engine, name)
        self._images.clear()

    def cleanup(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()


IN_FLIGHT_WAIT = 5.0  # seconds a cut-off load or build may still take to tag its image


def _untag_when_done(engine: StagingEngine, name: str) -> None:
    """A load cut off after its body was sent still ends in the engine: wait for it.

    The engine finishes a ``docker load`` whose bytes it has, whether or not we
    listen, and tags the image then; the name is removed when it appears.
    """
    import time

    deadline = time.monotonic() + IN_FLIGHT_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if engine.has_image(name):
            engine.untag(name)
            return


def _prune_beside(target: Path) -> None:
    """Staged outputs an ended run left where this one writes (one directory listing)."""
    report_removed(prune_files([target.parent]))


def _command_process() -> bool:
    return running_as_command() and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def publication() -> Iterator[Publication]:
    """Stage in the block; publish when it succeeds, roll back when it does not."""
    staged = Publication()
    try:
        yield staged
        if _command_process():
            # From the commit on, the command has succeeded: what is published stays
            # and the status is 0, so a late Ctrl-C is ignored until the process ends.
            for signum in HELD_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    signal.signal(signum, signal.SIG_IGN)
            staged.commit()
        else:
            with deferred_signals():
                staged.commit()
    except BaseException:
        with deferred_signals():
            staged.rollback()
        raise
    finally:
        with deferred_signals():
            staged.cleanup()


# -- sinks: where an image goes -------------------------------------------------------------


def to_engine(staged: Publication, engine: StagingEngine, image: Image, tag: str) -> str:
    """Load ``image`` into the engine under a throw-away name; tagged ``tag`` on publish."""
    temporary = staged.engine_name(engine, tag)
    with staged.making(temporary):
        image_id = engine.load(image, temporary)
    staged.engine_image(temporary, image_id)
    return image_id


def to_layout(staged: Publication, image: Image, target: Path, reference: str | None) -> None:
    """Write ``image`` as an OCI layout directory at ``target`` (staged)."""
    from scratchpack.image.layout import write_layout

    directory = staged.directory(target)
    with writing(directory, f"the image layout {target}"):
        write_layout(image, directory, reference)


def to_archive(
    staged: Publication, image: Image, target: Path, reference: str | None, epoch: int
) -> None:
    """Write ``image`` as an OCI + docker-load archive at ``target`` (staged)."""
    from scratchpack.image.layout import archive_chunks, archive_size

    path = staged.file(target)
    needed = archive_size(image, reference, epoch)
    with writing(path, f"the image archive {target}", needed), open(path, "wb") as stream:
        for chunk in archive_chunks(image, reference, epoch):
            stream.write(chunk)


def to_output(
    staged: Publication, image: Image, target: Path, reference: str | None, epoch: int
) -> None:
    """``PATH.tar`` is an archive, any other path a layout directory."""
    if target.suffix == ".tar":
        to_archive(staged, image, target, reference, epoch)
    else:
        to_layout(staged, image, target, reference)


# -- what ended runs staged -----------------------------------------------------------------


def stale_files(directories: Iterable[Path]) -> list[Path]:
    """Our temporary and staged entries in ``directories`` whose owner has ended."""
    found: list[Path] = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(("scratchpack-", ".scratchpack-")):
                continue
            who = owner_of(name)
            if who is not None and gone(who):
                found.append(Path(directory) / name)
    return found


def prune_files(directories: Iterable[Path]) -> list[str]:
    """Remove what :func:`stale_files` finds; what was removed, for the message."""
    removed = []
    for path in stale_files(directories):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(f"directory {path}" if not path.suffix else f"file {path}")
    return removed


# -- checks before any work -----------------------------------------------------------------


def check_output(path: Path, option: str) -> None:
    """An image output: a ``.tar`` file (replaced if it exists) or a new or empty directory."""
    if path.suffix == ".tar":
        check_new_file(path, option, may_exist=True)
    else:
        check_new_directory(path, option)


def check_new_directory(path: Path, option: str) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{option} {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{option} {path}: exists and is not empty; choose a new path")
    _check_parent(path, option)


def check_new_file(path: Path, option: str, may_exist: bool = False) -> None:
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    if path.exists() and not may_exist:
        raise InputError(f"{option} {path}: exists; choose a new path")
    _check_parent(path, option)


def _check_parent(path: Path, option: str) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in {parent}")


def check_distinct(targets: list[tuple[Path, str]]) -> None:
    """No two outputs may name the same path."""
    seen: dict[tuple[int, int, str], str] = {}
    for path, option in targets:
        # The parent directory's identity and the name: no absolute path is ever
        # built (a working directory deeper than PATH_MAX has none that works).
        parent = os.stat(path.parent)
        key = (parent.st_dev, parent.st_ino, path.name)
        if key in seen:
            raise InputError(f"{option} and {seen[key]} both name {path}")
        seen[key] = option


# -- a full disk -----------------------------------------------------------------------------


class DiskFull(InputError):
    """A write ran out of space: which file system, writing what, how much was needed."""


def _existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (relative paths stay relative)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> str:
    """The mount point of the file system ``path`` is on, for messages."""
    try:
        probe = Path(os.path.abspath(_existing(path)))
        device = probe.stat().st_dev
        while probe != probe.parent and probe.parent.stat().st_dev == device:
            probe = probe.parent
        return str(probe)
    except OSError:  # a path too deep to name absolutely
        return f"the file system of {path}"


def free_bytes(path: Path) -> int:
    space = os.statvfs(_existing(Path(path)))
    return space.f_bavail * space.f_frsize


@contextlib.contextmanager
def writing(path: Path, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn running out of space under ``path`` into one line that says where and how much.

    With ``needed`` known beforehand, a write that cannot fit fails before it
    starts; the publication removes whatever was partly written.
    """
    import errno

    def full(err: OSError | None) -> DiskFull:
        free = free_bytes(path)
        need = f"{needed / 1e6:.1f} MB needed, " if needed is not None else ""
        return DiskFull(
            f"no space left on {mount_point(path)} (the file system of {path}) while writing "
            f"{what}: {need}{free / 1e6:.1f} MB free; nothing was left half-written"
        )

    if needed is not None and needed > free_bytes(path):
        raise full(None)
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise full(err) from None
        raise
