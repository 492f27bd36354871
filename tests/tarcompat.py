"""``TarFile.extractall(filter="tar")`` on every Python the suite runs on.

Extraction filters came in 3.11.4 (and security releases of older lines);
Debian 12's own Python is 3.11.2, which has no ``filter`` argument. There each
member is treated here as the "tar" filter treats it, just before it is
extracted (so links extracted earlier count): leading slashes stripped, a
path that resolves outside the destination refused, setuid/setgid/sticky and
group/other write bits cleared.
"""

from __future__ import annotations

import copy
import os
import tarfile


def extract_all(tar: tarfile.TarFile, destination: str | os.PathLike[str]) -> None:
    """Extract every member of ``tar`` below ``destination``, as the "tar" filter allows."""
    if hasattr(tarfile, "tar_filter"):
        tar.extractall(destination, filter="tar")
        return
    top = os.path.realpath(destination)
    for member in tar.getmembers():
        tar.extract(_as_tar_filter_leaves_it(member, top), top)


def _as_tar_filter_leaves_it(member: tarfile.TarInfo, top: str) -> tarfile.TarInfo:
    """``member`` renamed and re-moded as the "tar" filter would; raises where it refuses."""
    changed = copy.copy(member)
    changed.name = member.name.lstrip("/" + os.sep)
    if os.path.isabs(changed.name):
        raise tarfile.ExtractError(f"{member.name}: an absolute path")
    place = os.path.realpath(os.path.join(top, changed.name))
    if os.path.commonpath([place, top]) != top:
        raise tarfile.ExtractError(f"{member.name}: outside {top}")
    changed.mode = member.mode & 0o755
    return changed
