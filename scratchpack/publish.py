"""One publish stage for every command: stage, then publish everything together, or roll back.

``build``, ``shrink``, ``debug`` and the attach tools image all make their
outputs through a :class:`Publication`:

- files and directories are written beside their targets under hidden names
  and renamed into place only when every step of the command succeeded; a
  directory that replaces an OCI layout (``build --update -o DIR``) is swapped
  for it then (:meth:`Publication.commit`), the old one put back if the swap fails;
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
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
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


class _MoveKind(Enum):
    FILE = "file"  # replaces the target file, if any
    DIRECTORY = "directory"  # takes the place of an absent or empty directory
    REPLACEMENT = "replacement"  # swapped for the OCI layout directory at the target


@dataclass(frozen=True)
class _Move:
    staged: Path
    target: Path
    kind: _MoveKind


@dataclass
class Publication:
    """Outputs staged beside their targets and images under throw-away tags.

    ``replace_layouts``: a directory staged for a target that is an OCI layout
    replaces it (``build --update``); otherwise the target must be absent or empty.
    """

    replace_layouts: bool = False
    _moves: list[_Move] = field(default_factory=list)
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
        for move in self._moves:
            if move.target == target:
                return move.staged
        _prune_beside(target)
        replaces = self.replace_layouts and is_layout(target)
        kind = _MoveKind.REPLACEMENT if replaces else _MoveKind.DIRECTORY
        with deferred_signals():  # made and recorded at once: an interrupt cannot orphan it
            staged = Path(tempfile.mkdtemp(prefix="." + prefix(), dir=target.parent))
            self._moves.append(_Move(staged, target, kind))
        return staged

    def file(self, target: Path) -> Path:
        """A path beside ``target`` (in a hidden directory) that becomes it when published."""
        target = Path(target)
        _prune_beside(target)
        with deferred_signals():
            holder = Path(tempfile.mkdtemp(prefix="." + prefix(), dir=target.parent))
            staged = holder / target.name
            self._moves.append(_Move(staged, target, _MoveKind.FILE))
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
        # The swaps first: the one step here that can fail is then over before any other
        # output (the lock beside the layout, say) has moved.
        self._moves.sort(key=lambda move: move.kind is not _MoveKind.REPLACEMENT)
        while self._moves:
            move = self._moves[0]
            if move.kind is _MoveKind.REPLACEMENT:
                _swap(move.staged, move.target)
            elif move.kind is _MoveKind.DIRECTORY:
                if move.target.is_dir():
                    move.target.rmdir()  # checked empty before the work began
                move.staged.rename(move.target)
            else:
                os.chmod(move.staged, 0o666 & ~umask)
                os.replace(move.staged, move.target)
                move.staged.parent.rmdir()
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
        for move in self._moves:
            staged = move.staged.parent if move.kind is _MoveKind.FILE else move.staged
            shutil.rmtree(staged, ignore_errors=True)
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
            remove_tree(path)
        self._scratch.clear()


def remove_tree(path: Path) -> None:
    """Remove ``path``, whatever modes an unpacked image gave what is in it.

    Without privileges a directory of mode 0555 or 0500 keeps its entries (and
    one of mode 0 its listing): rmtree then leaves them behind. What it left
    gets its owner's rights, links never followed, and goes on a second try.
    """
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    pending = [str(path)]
    while pending:
        directory = pending.pop()
        try:
            descriptor = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone, or not a directory: rmtree unlinks it
        try:
            itself = f"/proc/self/fd/{descriptor}"  # an O_PATH descriptor takes no fchmod
            mode = stat.S_IMODE(os.stat(itself).st_mode)
            if mode & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(itself, mode | stat.S_IRWXU)
            with os.scandir(itself) as entries:
                pending.extend(
                    os.path.join(directory, entry.name)
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False)
                )
        except OSError:
            pass
        finally:
            os.close(descriptor)
    shutil.rmtree(path, ignore_errors=True)


def _swap(staged: Path, target: Path) -> None:
    """``target``, an OCI layout, becomes ``staged``, and the old one is removed.

    The two change places in one step (``renameat2``'s ``RENAME_EXCHANGE``): no
    moment leaves ``target`` absent, even for a run killed by SIGKILL. Where the file
    system cannot exchange, the old one is renamed aside first, under a name that
    says what it is and that no run prunes, and put back if the new one cannot go in.
    """
    if not is_layout(target):  # changed since it was checked: the user's now
        raise InputError(f"{target}: no longer an OCI image layout; it was left as it is")
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # the old layout, under our staged name
        return
    aside = target.parent / f".{target.name}.previous-{os.urandom(4).hex()}"
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the system or file system cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # a C library without it (glibc before 2.28, musl)
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


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
def publication(replace_layouts: bool = False) -> Iterator[Publication]:
    """Stage in the block; publish when it succeeds, roll back when it does not.

    ``replace_layouts``: directories staged for existing OCI layouts replace them.
    """
    staged = Publication(replace_layouts)
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
                remove_tree(path)
                if os.path.lexists(path):
                    continue
            else:
                path.unlink()
            removed.append(f"directory {path}" if not path.suffix else f"file {path}")
    return removed


# -- checks before any work -----------------------------------------------------------------


def check_output(path: Path, option: str, replace_layout: bool = False) -> None:
    """An image output: a ``.tar`` file (replaced if it exists) or a new or empty directory;
    with ``replace_layout`` (``build --update``), an OCI layout directory too."""
    if path.suffix == ".tar":
        check_new_file(path, option, may_exist=True)
    else:
        check_new_directory(path, option, replace_layout)


def check_new_directory(path: Path, option: str, replace_layout: bool = False) -> None:
    """A new or empty directory (or, with ``replace_layout``, an OCI layout): a user's
    directory of anything else is never written into, nor one a symlink names."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{option} {path}: exists and is not a directory")
    replaceable = replace_layout and is_layout(path)
    if path.is_dir() and not replaceable and any(path.iterdir()):
        raise InputError(f"{option} {path}: exists and is not empty; choose a new path")
    _check_parent(path, option)


def is_layout(path: Path) -> bool:
    """``path`` is a directory (not a symlink) the layout reader takes for an OCI image
    layout, with ``oci-layout`` and ``index.json`` at its top as the writer makes them."""
    from scratchpack.image.readers import SourceFormat, open_reader

    if path.is_symlink() or not path.is_dir():
        return False
    try:
        reader, kind = open_reader(str(path), path, path)
    except (InputError, OSError):
        return False
    return kind is SourceFormat.OCI_LAYOUT and reader.has("oci-layout")


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
