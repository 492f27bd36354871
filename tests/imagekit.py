"""In-memory images for tests: layer tars built entry by entry, layouts and archives.

Chisel-style: tests describe an image as tar members (``d``, ``f``, ``sym``,
``hard``), and these helpers write it as an OCI layout, an OCI archive or a
``docker save`` archive, so every reader and the unpacker are tested on
exactly the bytes a test chose.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import ScratchpackError
from scratchpack.image.media import Platform
from scratchpack.image.readers import SourceImage, open_image
from scratchpack.image.unpack import UnpackReport, unpack
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.entries import Entry, EntryKind, Reason
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"


Member = tuple[tarfile.TarInfo, bytes | None]


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    mode: int = 0o644,
    target: str = "",
    uid: int = 0,
    gid: int = 0,
    pax: dict[str, str] | None = None,
) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.linkname = target
    if pax:
        info.pax_headers = pax
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def d(name: str, mode: int = 0o755) -> Member:
    return entry(name, tarfile.DIRTYPE, mode=mode)


def f(name: str, data: bytes = b"x", mode: int = 0o644, **kw: Any) -> Member:
    return entry(name, data=data, mode=mode, **kw)


def sym(name: str, target: str) -> Member:
    return entry(name, tarfile.SYMTYPE, mode=0o777, target=target)


def hard(name: str, target: str) -> Member:
    return entry(name, tarfile.LNKTYPE, target=target)


def layer(*members: Member) -> bytes:
    """An uncompressed layer tar, entries in the order given (no sorting: order matters)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = {
    "Entrypoint": ["/bin/app"],
    "Env": ["PATH=/bin", "A=1"],
    "WorkingDir": "/work",
    "User": "65532",
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
    "Labels": {"l": "v"},
}


def config_bytes(layers: list[bytes], runtime: dict | None = None) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": CONFIG if runtime is None else runtime,
            "rootfs": {"type": "layers", "diff_ids": [sha(data) for data in layers]},
        }
    ).encode()


def write_oci(
    path: Path,
    layers: list[bytes],
    compress: bool = True,
    media_type: str | None = None,
    blobs: list[bytes] | None = None,
) -> Path:
    """An OCI layout directory (with docker's manifest.json too, like our writer)."""
    stored = blobs or [gzip.compress(data, mtime=0) if compress else data for data in layers]
    kind = media_type or "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    (path / "blobs/sha256").mkdir(parents=True)

    def blob(data: bytes) -> dict[str, Any]:
        (path / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    config = config_bytes(layers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": kind, **blob(data)} for data in stored],
    }
    manifest_descriptor = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                **manifest_descriptor,
                "annotations": {"org.opencontainers.image.ref.name": "t"},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return path


def write_docker_archive(
    path: Path, layers: list[bytes], images: int = 1, runtime: dict | None = None
) -> Path:
    """A ``docker save`` archive of Docker 20.10's shape: <id>.json, <n>/layer.tar;
    ``runtime``: the config's runtime part (an Entrypoint, say)."""
    config = config_bytes(layers, runtime)
    members = {f"{sha(config)[7:]}.json": config}
    for number, data in enumerate(layers):
        members[f"{number}/layer.tar"] = data
    manifest = [
        {
            "Config": f"{sha(config)[7:]}.json",
            "RepoTags": [f"t:{image}"],
            "Layers": [f"{n}/layer.tar" for n in range(len(layers))],
        }
        for image in range(images)
    ]
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def pack(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


def open_and_unpack(
    tmp_path: Path, reference: str | Path, client: Any = None
) -> tuple[SourceImage, Path, UnpackReport]:
    work = Path(tempfile.mkdtemp(dir=tmp_path, prefix="work-"))
    root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="root-"))
    source = open_image(str(reference), work, engine_of(client))
    return source, root, unpack(source.image, root)


def engine_of(client: Any) -> Any:
    from scratchpack.engine.client import Engine

    return None if client is None else Engine.from_client(client)


def unpack_layers(tmp_path: Path, *layers: bytes, lazy: bool = False) -> tuple[Path, UnpackReport]:
    """The layers applied into a new root; ``lazy``: a lazy unpack, every file then created.

    A lazy unpack is also checked against a plain one of the same layers: the
    same tree once its files are created, the same report.
    """
    image = write_oci(Path(tempfile.mkdtemp(dir=tmp_path, prefix="oci-")), list(layers))
    source, root, report = open_and_unpack(tmp_path, image)
    if not lazy:
        return root, report
    lazy_root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="lazy-"))
    contents = Path(tempfile.mkdtemp(dir=tmp_path, prefix="contents-")) / "contents"
    lazy_report = unpack(source.image, lazy_root, lazy=contents)
    assert lazy_report.lazy is not None
    lazy_report.lazy.materialize_under("/")
    assert len(lazy_report.lazy) == 0
    assert snapshot(lazy_root) == snapshot(root)
    links = {p.relative_to(root): p.lstat().st_nlink for p in root.rglob("*") if p.is_file()}
    assert {p.relative_to(lazy_root): p.lstat().st_nlink for p in lazy_root.rglob("*")
            if p.is_file()} == links  # fmt: skip
    lazy_report.lazy.close()
    lazy_report.lazy = None
    assert lazy_report == report
    return lazy_root, report


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: type, permission bits, content or target."""
    tree: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            info = path.lstat()
            key = "/" + str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                tree[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                tree[key] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                tree[key] = ("file", stat.S_IMODE(info.st_mode), digest)
    return tree


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("SCRATCHPACK_REQUIRE_ENGINE") == "1":
            pytest.fail(f"{name} is not installed (tests/run.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def one_line(err: pytest.ExceptionInfo[ScratchpackError]) -> str:
    text = str(err.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


# -- images in the engine, made by the built-in writer -------------------------------


def load_source(
    docker_client: Any,
    tmp_path: Path,
    tag: str,
    runtime: dict[str, Any],
    entries: list[Entry],
) -> str:
    """An image of ``entries`` with exactly the config object ``runtime``, loaded as ``tag``."""
    store = BlobStore(tmp_path / f"source-{uuid.uuid4().hex[:6]}")
    layer = store.write_layer(entries, 0)
    image = assemble(store, [layer], runtime, Platform("amd64"), 0)
    from scratchpack.engine.client import Engine

    Engine.from_client(docker_client).load(image, tag)
    return image.image_id


def busybox_entries(busybox: Path) -> list[Entry]:
    return [
        Entry("/bin", EntryKind.DIR, 0o755, Reason.PROGRAM),
        Entry("/bin/busybox", EntryKind.FILE, 0o755, Reason.PROGRAM, source=str(busybox)),
        Entry("/bin/sh", EntryKind.SYMLINK, 0o777, Reason.PROGRAM, target="busybox"),
        Entry("/tmp", EntryKind.DIR, 0o1777, Reason.RUNTIME),
    ]
