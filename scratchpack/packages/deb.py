"""One ``.deb``: its control data, and its files as a tar stream — read, never installed.

``dpkg-deb`` (part of dpkg, on every Debian machine) takes the archive apart;
nothing of the package runs: maintainer scripts are read as text, for the
system users they would create. The file tar goes through the same safe
unpacker as image layers (:func:`scratchpack.image.unpack.unpack_tars`).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchpack.packages.apt import PackageError

MAX_CONTROL_MEMBER = 4 << 20  # bytes of one control file (control, conffiles, a script)
_SCRIPTS = ("preinst", "postinst")


@dataclass(frozen=True)
class DebControl:
    """What the control tar says: the fields, the conffiles, the scripts that would run."""

    name: str
    paragraph: str  # the control file as shipped (for dpkg's status)
    fields: dict[str, str]
    conffiles: tuple[str, ...] = ()
    scripts: dict[str, str] = field(default_factory=dict)  # preinst/postinst text


def read_control(deb: Path) -> DebControl:
    """The control members of ``deb`` (``dpkg-deb --ctrl-tarfile``), bounded in size."""
    members: dict[str, str] = {}
    with _dpkg_deb("--ctrl-tarfile", deb) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isreg() or "/" in name or member.size > MAX_CONTROL_MEMBER:
                continue
            stream = tar.extractfile(member)
            if stream is not None:
                members[name] = stream.read().decode("utf-8", "replace")
    paragraph = members.get("control", "").strip() + "\n"
    fields = _fields(paragraph)
    if "Package" not in fields:
        raise PackageError(f"{deb.name}: no control file with a Package field")
    conffiles = tuple(
        line.split()[0]  # "/etc/x" or "/etc/x remove-on-upgrade"
        for line in members.get("conffiles", "").splitlines()
        if line.strip().startswith("/")
    )
    scripts = {name: members[name] for name in _SCRIPTS if name in members}
    return DebControl(fields["Package"], paragraph, fields, conffiles, scripts)


@contextlib.contextmanager
def data_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """The package's files as a tar stream (``dpkg-deb --fsys-tarfile``)."""
    with _dpkg_deb("--fsys-tarfile", deb) as tar:
        yield tar


@contextlib.contextmanager
def _dpkg_deb(option: str, deb: Path) -> Iterator[tarfile.TarFile]:
    try:
        process = subprocess.Popen(
            ["dpkg-deb", option, str(deb)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as err:
        raise PackageError("--package needs dpkg-deb (Debian's dpkg) on this machine") from err
    assert process.stdout is not None and process.stderr is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            yield tar
        process.stdout.read()  # what the tar reader left (padding), so dpkg-deb can finish
    except tarfile.TarError as err:
        raise PackageError(f"{deb.name}: not a Debian package ({err})") from err
    finally:
        process.stdout.close()
        errors = process.stderr.read().decode("utf-8", "replace").strip()
        process.stderr.close()
        code = process.wait()
    if code != 0:
        raise PackageError(f"{deb.name}: dpkg-deb {option} failed: {errors or f'exit {code}'}")


def _fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in paragraph.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def source_name(fields: dict[str, str]) -> str | None:
    """The Source field without its version (``glibc`` of ``glibc (2.36-9)``), if any."""
    source = fields.get("Source", "").strip()
    return re.sub(r"\s*\(.*\)$", "", source) or None
