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
from scratchpack.packages.control import Md5sums, parse_md5sums

MAX_CONTROL_MEMBER = 4 << 20  # bytes of one control file (control, conffiles, a script)
# md5sums lists every file: texlive's largest packages list ~100,000 (~10 MiB).
MAX_MD5SUMS_MEMBER = 32 << 20
_SCRIPTS = ("preinst", "postinst")
_READ = ("control", "conffiles", "md5sums", *_SCRIPTS)  # the members read; not the others


@dataclass(frozen=True)
class DebControl:
    """What the control tar says: the fields, the conffiles, the scripts that would run."""

    name: str
    paragraph: str  # the control file's first paragraph, as shipped: the package's own word
    fields: dict[str, str]
    conffiles: tuple[str, ...] = ()
    scripts: dict[str, str] = field(default_factory=dict)  # preinst/postinst text
    oversized: tuple[str, ...] = ()  # members over MAX_CONTROL_MEMBER, not read
    md5sums: Md5sums = field(default_factory=Md5sums)  # the files' digests, as dpkg keeps them


def read_control(deb: Path) -> DebControl:
    """The control members of ``deb`` (``dpkg-deb --ctrl-tarfile``), bounded in size.

    Only ``control``, ``conffiles``, ``md5sums`` and the scripts are read, each up
    to MAX_CONTROL_MEMBER bytes (md5sums: MAX_MD5SUMS_MEMBER): a larger one is
    skipped (named in ``oversized``, so its accounts are not guessed silently).
    Only the control file's first paragraph counts, as for dpkg: a second one is
    not the package.
    """
    members: dict[str, str] = {}
    oversized: list[str] = []
    with _dpkg_deb("--ctrl-tarfile", deb) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isreg() or name not in _READ:
                continue
            if member.size > (MAX_MD5SUMS_MEMBER if name == "md5sums" else MAX_CONTROL_MEMBER):
                oversized.append(name)
                continue
            stream = tar.extractfile(member)
            if stream is not None:
                members[name] = stream.read().decode("utf-8", "replace")
    if "control" in oversized:
        raise PackageError(
            f"{deb.name}: its control file is larger than {MAX_CONTROL_MEMBER} bytes"
        )
    paragraph = first_paragraph(members.get("control", ""))
    fields = paragraph_fields(paragraph)
    if "Package" not in fields:
        raise PackageError(f"{deb.name}: no control file with a Package field")
    conffiles = tuple(
        line.split()[0]  # "/etc/x" or "/etc/x remove-on-upgrade"
        for line in members.get("conffiles", "").splitlines()
        if line.strip().startswith("/")
    )
    scripts = {name: members[name] for name in _SCRIPTS if name in members}
    md5sums = parse_md5sums(members.get("md5sums", ""))
    return DebControl(
        fields["Package"], paragraph, fields, conffiles, scripts, tuple(oversized), md5sums
    )


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


def first_paragraph(text: str) -> str:
    """The first deb822 paragraph of ``text`` (blank lines end it), newline-terminated."""
    lines: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            if lines:
                break
        elif not line.startswith("#"):
            lines.append(line.rstrip("\r"))
    return "".join(f"{line}\n" for line in lines)


def paragraph_fields(paragraph: str) -> dict[str, str]:
    """Fields of the first paragraph, in order; continuation lines kept after a newline."""
    fields: dict[str, str] = {}
    key = None
    for line in first_paragraph(paragraph).split("\n"):
        if line[:1] in (" ", "\t"):
            if key:
                fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
        else:
            key = None  # not a field: its continuation lines are not either
    return fields


def source_name(fields: dict[str, str]) -> str | None:
    """The Source field without its version (``glibc`` of ``glibc (2.36-9)``), if any."""
    source = fields.get("Source", "").strip()
    return re.sub(r"\s*\(.*\)$", "", source) or None
