"""Debian packages and a signed apt repository made by the tests, hostile ones included.

``build_deb`` writes a ``.deb`` by hand (ar + tar, no ``dpkg-deb -b``), so a
test can put in it what dpkg's builder would refuse: links to host paths,
names with newlines, a control file of two paragraphs, any script.
``signed_repository`` serves such packages as a real apt repository on a
``file:`` URI: ``Packages``, a ``Release`` with SHA-256 sums and an
``InRelease`` clear-signed by a key made for it, whose keyring apt checks
through ``signed-by`` exactly as it checks Debian's. The index paragraph of
each package is the repository's word (``index_fields``), which may differ
from what the package says about itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ARCHITECTURE = "amd64"


@dataclass(frozen=True)
class Link:
    """A symlink entry of a package's data tar."""

    target: str


@dataclass(frozen=True)
class Dir:
    """A directory entry, with its mode and owner."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    uname: str = ""  # the owner's name as the tar header records it (dpkg-deb: "root")
    gname: str = ""


@dataclass(frozen=True)
class File:
    """A regular file entry with its mode and owner."""

    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""


@dataclass(frozen=True)
class Deb:
    """A package as the tests describe it; ``control`` lines beyond the required ones."""

    name: str
    version: str = "1.0"
    architecture: str = ARCHITECTURE
    files: dict[str, bytes | str | Link | Dir | File] = field(default_factory=dict)
    control: dict[str, str] = field(default_factory=dict)  # Depends, Source, ...
    scripts: dict[str, str] = field(default_factory=dict)  # postinst, preinst
    conffiles: tuple[str, ...] = ()
    raw_control: str | None = None  # the whole control file, as written (two paragraphs...)
    index_fields: dict[str, str] | None = None  # the repository's paragraph, if not control's

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"

    def control_text(self) -> str:
        if self.raw_control is not None:
            return self.raw_control
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.architecture,
            "Maintainer": "scratchpack tests <tests@example.invalid>",
            **self.control,
            "Description": self.control.get("Description", f"{self.name}, made by a test"),
        }
        return "".join(f"{key}: {value}\n" for key, value in fields.items())


def _add(tar: tarfile.TarFile, name: str, entry: bytes | str | Link | Dir | File) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if isinstance(entry, Link):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
        tar.addfile(info)
    elif isinstance(entry, Dir):
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
        info.uname, info.gname = entry.uname, entry.gname
        tar.addfile(info)
    else:
        if not isinstance(entry, File):
            entry = File(entry.encode() if isinstance(entry, str) else entry)
        info.size, info.mode, info.uid, info.gid = len(entry.data), entry.mode, entry.uid, entry.gid
        info.uname, info.gname = entry.uname, entry.gname
        tar.addfile(info, io.BytesIO(entry.data))


def _tar_gz(entries: dict[str, bytes | str | Link | Dir | File], parents: bool) -> bytes:
    """A gzip'd tar of ``entries`` (``./``-prefixed names), parent directories first."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        written: set[str] = set()
        for path, entry in entries.items():
            relative = path.strip("/")
            if parents:
                parts = relative.split("/")[:-1]
                for depth in range(len(parts)):
                    parent = "/".join(parts[: depth + 1])
                    if parent not in written and parent not in entries:
                        written.add(parent)
                        _add(tar, f"./{parent}/", Dir())
            written.add(relative)
            _add(tar, f"./{relative}" + ("/" if isinstance(entry, Dir) else ""), entry)
    return gzip.compress(raw.getvalue(), mtime=0)


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n"
        out.write(header.encode())
        out.write(data)
        if len(data) % 2:
            out.write(b"\n")
    return out.getvalue()


def build_deb(deb: Deb, directory: Path, parents: bool = True) -> Path:
    """Write ``deb`` as ``directory/<name>_<version>_<arch>.deb`` and return its path."""
    control: dict[str, bytes | str | Link | Dir | File] = {"control": deb.control_text()}
    if deb.conffiles:
        control["conffiles"] = "".join(f"{path}\n" for path in deb.conffiles)
    for name, text in deb.scripts.items():
        control[name] = File(text.encode(), 0o755)
    data = {"./" if not deb.files else path: entry for path, entry in deb.files.items()}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / deb.filename
    path.write_bytes(
        _ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", _tar_gz(control, parents=False)),
                ("data.tar.gz", _tar_gz(data, parents)),
            ]
        )
    )
    return path


@dataclass(frozen=True)
class Repository:
    """A signed apt repository on disk: what ``--repository`` and ``signed-by`` need."""

    top: Path
    suite: str
    component: str
    keyring: Path  # the public key, binary (gpg --export), for signed-by

    @property
    def uri(self) -> str:
        return f"file:{self.top}"

    @property
    def line(self) -> str:
        """The one-line source: ``deb [signed-by=KEYRING] URI SUITE COMPONENT``."""
        return f"deb [signed-by={self.keyring}] {self.uri} {self.suite} {self.component}"


def _gpg(home: Path, *args: str) -> bytes:
    """Run gpg in ``home``, then stop its agent: none outlives the call (a test's
    temporary file system can then be unmounted).

    gpg-agent's socket lives in the home, and a socket path is at most 107
    bytes: a long home is reached through a short link in the temporary
    directory, whose name is what gpg sees.
    """
    short = Path(tempfile.gettempdir()) / f"gpg-{hashlib.sha256(bytes(home)).hexdigest()[:12]}"
    if not short.is_symlink():
        short.symlink_to(home)
    base = ["--batch", "--homedir", str(short)]
    try:
        done = subprocess.run(
            ["gpg", *base, "--passphrase", "", "--pinentry-mode=loopback", *args],
            check=True,
            capture_output=True,
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", str(short), "--kill", "all"], check=False)
    return done.stdout


def make_key(home: Path) -> Path:
    """A fresh signing key in the GnuPG home ``home``; its public keyring file."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _gpg(home, "--quick-gen-key", "tests <repo@example.invalid>", "ed25519", "sign", "1y")
    keyring = home / "repository.gpg"
    keyring.write_bytes(_gpg(home, "--export"))
    return keyring


def _paragraph(deb: Deb, filename: str, data: bytes) -> str:
    fields = dict(deb.index_fields) if deb.index_fields is not None else _control_fields(deb)
    fields.update(
        {
            "Filename": filename,
            "Size": str(len(data)),
            "SHA256": hashlib.sha256(data).hexdigest(),
        }
    )
    fields.setdefault("Description", f"{deb.name}, made by a test")
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def _control_fields(deb: Deb) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in deb.control_text().split("\n\n")[0].splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def signed_repository(
    top: Path,
    debs: list[Deb],
    suite: str = "tests",
    component: str = "main",
    gnupg_home: Path | None = None,
    origin: str = "scratchpack-tests",
) -> Repository:
    """``debs`` served as a signed apt repository in ``top`` (an empty or new directory)."""
    home = gnupg_home or top.parent / (top.name + ".gnupg")
    keyring = home / "repository.gpg" if (home / "repository.gpg").exists() else make_key(home)
    pool = top / "pool" / component
    paragraphs = []
    for deb in debs:
        path = build_deb(deb, pool)
        relative = path.relative_to(top).as_posix()
        paragraphs.append(_paragraph(deb, relative, path.read_bytes()))
    architectures = sorted({deb.architecture for deb in debs} | {ARCHITECTURE}) or [ARCHITECTURE]
    indices: dict[str, bytes] = {}
    for architecture in architectures:
        text = "\n".join(
            p for deb, p in zip(debs, paragraphs, strict=True) if deb.architecture == architecture
        ).encode()
        base = f"{component}/binary-{architecture}/Packages"
        indices[base] = text
        indices[base + ".gz"] = gzip.compress(text, mtime=0)
    dists = top / "dists" / suite
    for name, data in indices.items():
        (dists / name).parent.mkdir(parents=True, exist_ok=True)
        (dists / name).write_bytes(data)
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    release = (
        f"Origin: {origin}\nLabel: {origin}\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n"
        f"Architectures: {' '.join(architectures)}\nComponents: {component}\nSHA256:\n"
        + "".join(
            f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
            for name, data in sorted(indices.items())
        )
    )
    (dists / "Release").write_text(release)
    (dists / "InRelease").unlink(missing_ok=True)
    _gpg(home, "--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release"))
    return Repository(top, suite, component, keyring)
