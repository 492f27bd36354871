"""Reading existing images and unpacking them safely (scratchpack/image/readers.py, unpack.py).

Synthetic layers, built entry by entry here, pin down the layer semantics
(whiteouts, opaque directories, hard links) and the safety rules (symlinked
parents, ``..``, absolute names, devices). Real archives come from our writer,
skopeo and the engine (``docker save`` of an image built here FROM scratch,
with RUN steps that make real whiteouts); umoci's unpack is the oracle for the
merged tree. Nothing is pulled.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from scratchpack.errors import EngineError, InputError, ScratchpackError
from scratchpack.image.readers import SourceImage, open_image
from scratchpack.image.unpack import UnpackReport, unpack
from tests.cfixtures import REPO_ROOT

HELLO = REPO_ROOT / "samples/hello-world/hello-world"

# ----------------------------------------------------------------- layer helpers

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


def write_docker_archive(path: Path, layers: list[bytes], images: int = 1) -> Path:
    """A ``docker save`` archive of Docker 20.10's shape: <id>.json, <n>/layer.tar."""
    config = config_bytes(layers)
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


def unpack_layers(tmp_path: Path, *layers: bytes) -> tuple[Path, UnpackReport]:
    image = write_oci(Path(tempfile.mkdtemp(dir=tmp_path, prefix="oci-")), list(layers))
    _, root, report = open_and_unpack(tmp_path, image)
    return root, report


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


# ------------------------------------------------------------- layer semantics


def test_layers_merge_with_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    lower = layer(
        d("etc"),
        f("etc/a", b"a"),
        f("etc/b", b"b"),
        d("d"),
        f("d/x"),
        d("d/sub"),
        f("d/sub/y"),
        d("early"),
        f("early/old"),
        d("gone"),
        f("gone/deep"),
        f("keep", b"v1"),
        d("real"),
        f("real/f"),
        sym("alias", "real"),
    )
    upper = layer(
        f(".wh.alias"),  # deletes the link, not what it points to
        f("etc/.wh.a"),
        f("d/.wh..wh..opq"),
        f("d/new", b"n"),
        f("early/new"),  # before the opaque marker: this layer's own entry stays
        f("early/.wh..wh..opq"),
        f(".wh.gone"),
        f("keep", b"v2"),
        f("etc/.wh..wh.plnk"),  # aufs bookkeeping: ignored
    )
    root, report = unpack_layers(tmp_path, lower, upper)
    assert sorted(os.listdir(root / "etc")) == ["b"]
    assert sorted(os.listdir(root / "d")) == ["new"]
    assert sorted(os.listdir(root / "early")) == ["new"]
    assert not (root / "gone").exists()
    assert (root / "keep").read_bytes() == b"v2"
    assert not (root / "alias").is_symlink() and (root / "real/f").is_file()
    assert report.whiteouts_applied == 5
    # The tables forget what was removed.
    assert "/d/x" not in report.owners and "/gone/deep" not in report.modes
    assert report.files == 5 and report.dirs == 4 and report.warnings == []


def test_hard_links_point_at_files_already_in_the_root(tmp_path: Path) -> None:
    lower = layer(d("bin"), f("bin/a", b"payload", mode=0o755), hard("bin/b", "bin/a"))
    upper = layer(hard("bin/c", "/bin/a"), hard("bin/d", "bin/missing"), hard("e", "bin"))
    root, report = unpack_layers(tmp_path, lower, upper)
    inodes = {(root / "bin" / name).stat().st_ino for name in "abc"}
    assert len(inodes) == 1 and (root / "bin/c").read_bytes() == b"payload"
    assert report.hardlinks == 2
    assert not (root / "bin/d").exists() and not (root / "e").exists()
    assert any("bin/missing" in warning for warning in report.warnings)
    assert any("directory" in warning for warning in report.warnings)
    assert report.bytes == len(b"payload")  # one inode, counted once


def test_symlinked_parents_never_lead_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original")
    (outside / "keepme").write_text("keep")
    inside = str(outside).lstrip("/")  # where absolute targets land inside the root
    lower = layer(
        sym("evil", str(outside)),
        sym("climb", "../../../../../../../../" + inside),
        sym("victim", str(outside / "victim.txt")),
        sym("same/..", "/"),  # normalised to the root itself: ignored
    )
    upper = layer(
        f("evil/pwned", b"p"),
        f("climb/pwned2", b"p"),
        f("victim", b"replaced"),
        f("evil/.wh.keepme"),
        hard("h", "evil/keepme"),
        sym("loop", "loop"),
        f("loop/x"),
        sym("empty", ""),
    )
    same_layer = layer(sym("evil2", "/"), f("evil2/etc/passwd-owned", b"p"))
    root, report = unpack_layers(tmp_path, lower, upper, same_layer)
    assert sorted(os.listdir(outside)) == ["keepme", "victim.txt"]
    assert (outside / "victim.txt").read_text() == "original"
    assert (outside / "keepme").stat().st_nlink == 1
    assert not Path("/etc/passwd-owned").exists()
    # The writes went where a chrooted process would have put them.
    assert (root / inside / "pwned").read_bytes() == b"p"
    assert (root / inside / "pwned2").read_bytes() == b"p"
    assert (root / "etc/passwd-owned").is_file()
    assert (root / "victim").is_file() and not (root / "victim").is_symlink()
    assert os.readlink(root / "evil") == str(outside)  # stored as written, never followed
    assert not (root / "h").exists()
    assert any("too many levels of symbolic links" in w for w in report.warnings)
    assert any("a symbolic link to nothing" in w for w in report.warnings)


def test_dot_dot_and_absolute_names_stay_inside(tmp_path: Path) -> None:
    names = ["../../escape", "a/../../escape2", "./../escape3"]
    root, report = unpack_layers(
        tmp_path,
        layer(*(f(name) for name in names), f("/abs/name", b"abs"), f("b/../kept", b"k")),
        layer(hard("stolen", "../../etc/passwd"), hard("stolen2", "/etc/passwd")),
    )
    for parent in (tmp_path, tmp_path.parent, root.parent):
        assert not any((parent / n).exists() for n in ("escape", "escape2", "escape3"))
    assert (root / "abs/name").read_bytes() == b"abs"
    assert (root / "kept").read_bytes() == b"k"
    assert not (root / "stolen").exists() and not (root / "stolen2").exists()
    refused = [w for w in report.warnings if "refused" in w or "outside the root" in w]
    assert len(refused) == 4, report.warnings


def test_devices_are_skipped_and_modes_owners_kept(tmp_path: Path) -> None:
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00"
    root, report = unpack_layers(
        tmp_path,
        layer(
            d("dev"),
            entry("dev/null", tarfile.CHRTYPE),
            entry("dev/sda", tarfile.BLKTYPE),
            entry("fifo", tarfile.FIFOTYPE),
            f("suid", mode=0o4755),
            f("sgid", mode=0o2711, uid=1000, gid=50),
            d("shared", 0o2775),
            d("ro", 0o555),
            f("ping", pax={"SCHILY.xattr.security.capability": capability}),
        ),
        layer(f("ro/later", b"l")),  # a read-only directory still takes later files
    )
    assert report.skipped_devices == 3
    assert sorted(os.listdir(root / "dev")) == [] and not (root / "fifo").exists()
    assert stat.S_IMODE((root / "suid").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "sgid").stat().st_mode) == 0o2711
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o2775
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555
    assert (root / "ro/later").read_bytes() == b"l"
    assert report.owners["/sgid"] == (1000, 50) and report.owners["/suid"] == (0, 0)
    assert report.modes["/suid"] == 0o4755 and report.modes["/ro"] == 0o555
    assert report.owners["/ro/later"] == (0, 0)
    assert report.xattrs == {"/ping": {"security.capability": capability.encode("latin-1")}}


def test_replacing_a_directory_with_a_file_and_back(tmp_path: Path) -> None:
    root, _ = unpack_layers(
        tmp_path,
        layer(d("x"), f("x/inner"), f("y")),
        layer(f("x", b"now a file"), d("y"), f("y/z")),
        layer(sym("lib", "usr/lib"), d("usr/lib", 0o755), f("lib/libfoo.so", b"so")),
    )
    assert (root / "x").read_bytes() == b"now a file"
    assert (root / "y/z").is_file()
    assert (root / "usr/lib/libfoo.so").read_bytes() == b"so" and (root / "lib").is_symlink()


def test_unprivileged_unpack(tmp_path: Path) -> None:
    """Without root: no chown needed, read-only directories and 0000 files still work."""
    layers = [
        layer(d("ro", 0o555), f("ro/a", mode=0o000), f("suid", mode=0o4755, uid=0)),
        layer(f("ro/b", b"b"), f("ro/.wh.a")),
    ]
    work = Path(tempfile.mkdtemp(prefix="scratchpack-unpack-"))
    try:
        os.chmod(work, 0o777)
        write_oci(work / "image", layers)
        script = textwrap.dedent(
            f"""
            import os, stat
            from pathlib import Path
            from scratchpack.image.readers import open_image
            from scratchpack.image.unpack import unpack
            os.mkdir("{work}/w"); os.mkdir("{work}/root")
            source = open_image("{work}/image", Path("{work}/w"))
            report = unpack(source.image, Path("{work}/root"))
            assert os.listdir("{work}/root/ro") == ["b"], os.listdir("{work}/root/ro")
            assert stat.S_IMODE(os.stat("{work}/root/suid").st_mode) == 0o4755
            assert report.owners["/suid"] == (0, 0)
            print(os.geteuid())
            """
        )
        command = [sys.executable, "-c", script]
        setpriv = shutil.which("setpriv")
        if os.geteuid() == 0:
            if setpriv is None:
                pytest.skip("setpriv is not installed")
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
            probe = [*command[:-1], "import scratchpack.image.unpack"]
            if subprocess.run(probe, cwd=REPO_ROOT, capture_output=True, check=False).returncode:
                pytest.skip("user nobody cannot run this Python and scratchpack")
        proc = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO_ROOT, check=False, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() != "0"
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(work)], check=False)
        shutil.rmtree(work)


def test_progress_adds_up_to_the_stored_size(tmp_path: Path) -> None:
    image = write_oci(tmp_path / "oci", [layer(f("a", os.urandom(3 << 20))), layer(f("b"))])
    source = open_image(str(image), tmp_path)
    (tmp_path / "root").mkdir()
    steps: list[int] = []
    unpack(source.image, tmp_path / "root", progress=steps.append)
    assert sum(steps) == source.layers_size > 3 << 20 and len(steps) > 2


# ----------------------------------------------------------------------- formats

LAYERS = [
    layer(d("bin"), f("bin/app", b"app", mode=0o755), sym("sbin", "bin"), f("gone")),
    layer(f(".wh.gone"), hard("bin/app2", "bin/app"), f("sbin/tool", b"t")),
]


def test_every_archive_format_gives_the_same_root(tmp_path: Path) -> None:
    layout = write_oci(tmp_path / "layout", LAYERS)
    plain = write_oci(tmp_path / "plain", LAYERS, compress=False)
    references = {
        "oci-layout": layout,
        "oci-archive": pack(layout, tmp_path / "oci.tar"),
        "docker-archive": write_docker_archive(tmp_path / "docker.tar", LAYERS),
        "plain-oci-archive": pack(plain, tmp_path / "plain.tar"),
    }
    gzipped = tmp_path / "docker.tar.gz"
    gzipped.write_bytes(gzip.compress(references["docker-archive"].read_bytes()))
    references["gzipped-docker-archive"] = gzipped
    trees = {}
    for label, reference in references.items():
        source, root, report = open_and_unpack(tmp_path, reference)
        assert source.format.value == label.removeprefix("plain-").removeprefix("gzipped-")
        assert source.digest == sha(config_bytes(LAYERS))
        assert len(source.image.layers) == 2 and report.whiteouts_applied == 1
        trees[label] = snapshot(root)
    assert all(tree == trees["oci-layout"] for tree in trees.values())
    assert set(trees["oci-layout"]) == {"/bin", "/bin/app", "/bin/app2", "/bin/tool", "/sbin"}


def test_config_is_read_field_by_field(tmp_path: Path) -> None:
    source = open_image(str(write_oci(tmp_path / "oci", LAYERS)), tmp_path)
    config = source.image.config
    runtime = config.runtime
    assert runtime.entrypoint == ("/bin/app",) and runtime.cmd is None
    assert runtime.env == ("PATH=/bin", "A=1") and runtime.working_dir == "/work"
    assert runtime.user == "65532" and runtime.exposed_ports == ("53/udp", "8080/tcp")
    assert runtime.volumes == () and runtime.labels == (("l", "v"),)
    assert runtime.stop_signal is None and runtime.healthcheck is None
    assert (config.platform.architecture, config.platform.os) == ("amd64", "linux")
    assert source.names == ("t",)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scratchpack build --layers split`` of the hello sample: image.tar and a layout."""
    top = tmp_path_factory.mktemp("written")
    subprocess.run(["make", "-s", "-C", str(REPO_ROOT / "samples/hello-world")], check=True)
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    for output in ("image.tar", "layout"):
        command = [sys.executable, "-m", "scratchpack", "build", str(HELLO), "-t", "hello:unpack"]
        subprocess.run(
            [*command, "--engine", "none", "--layers", "split", "-o", str(top / output)],
            check=True,
            capture_output=True,
            env=env,
            cwd=REPO_ROOT,
        )
    return top


def test_our_writer_and_skopeo_copies_unpack_alike(tmp_path: Path, written: Path) -> None:
    source, root, report = open_and_unpack(tmp_path, written / "image.tar")
    assert source.format.value == "oci-archive" and len(source.image.layers) == 2
    assert source.names == ("hello:unpack",)
    assert source.image.config.runtime.entrypoint == (str(HELLO),)
    assert (root / str(HELLO).lstrip("/")).read_bytes() == HELLO.read_bytes()
    assert (root / "lib64").is_symlink() and (root / "tmp").stat().st_mode & 0o1777 == 0o1777
    assert report.warnings == [] and report.owners["/home/nonroot"] == (65532, 65532)
    reference_tree = snapshot(root)
    layout_source, layout_root, _ = open_and_unpack(tmp_path, written / "layout")
    assert layout_source.format.value == "oci-layout" and layout_source.digest == source.digest
    assert snapshot(layout_root) == reference_tree

    skopeo = tool("skopeo")
    copies = {
        "oci-layout": (f"oci:{tmp_path}/skopeo-oci:copy", tmp_path / "skopeo-oci"),
        "docker-archive": (f"docker-archive:{tmp_path}/skopeo.tar:copy:1", tmp_path / "skopeo.tar"),
    }
    for kind, (destination, path) in copies.items():
        subprocess.run(
            [skopeo, "copy", "-q", f"oci-archive:{written}/image.tar", destination],
            check=True,
            capture_output=True,
        )
        copy, copy_root, _ = open_and_unpack(tmp_path, path)
        assert copy.format.value == kind
        assert snapshot(copy_root) == reference_tree


# ------------------------------------------------------------------------ errors


def test_unreadable_sources_fail_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "random.bin"
    junk.write_bytes(os.urandom(4096))
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "missing.tar"): "no such file",
        "./nope": "no such file",
        "some/image:tag": "no such file",  # no engine given
        str(junk): "not an image archive",
        str(tmp_path / "empty"): "neither index.json",
        str(write_docker_archive(tmp_path / "two.tar", LAYERS, images=2)): "holds 2 images",
    }
    for reference, message in cases.items():
        with pytest.raises(InputError) as err:
            open_image(reference, tmp_path)
        assert message in one_line(err) and err.value.exit_code == 2


def test_bad_layers_fail_in_one_line(tmp_path: Path) -> None:
    zstd = write_oci(
        tmp_path / "zstd",
        LAYERS,
        media_type="application/vnd.oci.image.layer.v1.tar+zstd",
        blobs=[b"\x28\xb5\x2f\xfd" + os.urandom(64) for _ in LAYERS],
    )
    corrupt = write_oci(tmp_path / "corrupt", LAYERS, blobs=[LAYERS[0], LAYERS[0]])
    not_tar = write_oci(tmp_path / "not-tar", [b"x" * 1024], compress=False)
    big = [layer(f("big", os.urandom(1 << 16)))]
    truncated = write_oci(tmp_path / "cut", big, blobs=[gzip.compress(big[0])[:-2000]])
    cases = {
        zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
        corrupt: "does not match its diff_id",
        not_tar: "not a readable tar",
        truncated: "not a readable tar",
    }
    for image, message in cases.items():
        source = open_image(str(image), tmp_path)
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        with pytest.raises(InputError) as err:
            unpack(source.image, root)
        assert message in one_line(err)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/file").touch()
    with pytest.raises(InputError) as err:
        unpack(open_image(str(zstd), tmp_path).image, tmp_path / "full")
    assert "not an empty directory" in one_line(err)


def test_tampered_manifest_digests_are_refused(tmp_path: Path) -> None:
    image = write_oci(tmp_path / "oci", LAYERS)
    index = json.loads((image / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd"
    (image / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError) as err:
        open_image(str(image), tmp_path)
    assert "invalid digest" in one_line(err)
    # An unpacked docker save directory whose manifest points outside it.
    saved = tmp_path / "saved"
    saved.mkdir()
    with tarfile.open(write_docker_archive(tmp_path / "d.tar", LAYERS)) as tar:
        tar.extractall(saved)
    manifest = json.loads((saved / "manifest.json").read_text())
    assert open_image(str(saved), tmp_path).format.value == "docker-archive"
    manifest[0]["Layers"][0] = "../d.tar"
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as err:
        open_image(str(saved), tmp_path)
    assert "outside the image" in one_line(err)


# ------------------------------------------------------------------------ engine

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY tree/ /
RUN ["/bin/busybox", "rm", "/gone.txt"]
RUN ["/bin/busybox", "sh", "-c", "rm -r /d && mkdir /d && echo new > /d/new && \
ln /d/new /d/newlink && ln -s /d/new /link && chmod 4755 /bin/suid"]
ENV GREETING=hi
LABEL org.example=yes
EXPOSE 8080
WORKDIR /d
USER 65532
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/busybox"]
CMD ["true"]
"""


def build_context(busybox: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = {
            "Dockerfile": (DOCKERFILE.encode(), 0o644),
            "tree/gone.txt": (b"gone", 0o644),
            "tree/d/old": (b"old", 0o644),
            "tree/d/sub/older": (b"older", 0o644),
            "tree/bin/suid": (b"#!/bin/busybox sh\n", 0o755),
        }
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        tar.add(busybox, arcname="busybox")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine_image(docker_client: Any, static_busybox: Path) -> Iterator[str]:
    """An image built FROM scratch in the engine (RUN steps make real whiteouts)."""
    tag = f"scratchpack-test/unpack:{uuid.uuid4().hex[:12]}"
    try:
        stream = docker_client.api.build(
            fileobj=io.BytesIO(build_context(static_busybox)),
            custom_context=True,
            tag=tag,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            assert "error" not in chunk, chunk
        yield tag
    finally:
        with contextlib.suppress(docker.errors.DockerException):  # never built, or gone
            docker_client.images.remove(tag, force=True)


def check_engine_root(root: Path, report: UnpackReport) -> None:
    assert not (root / "gone.txt").exists()
    assert sorted(os.listdir(root / "d")) == ["new", "newlink"]
    assert (root / "d/new").stat().st_ino == (root / "d/newlink").stat().st_ino
    assert os.readlink(root / "link") == "/d/new"
    assert stat.S_IMODE((root / "bin/suid").stat().st_mode) == 0o4755
    assert report.whiteouts_applied >= 2 and report.warnings == []


@pytest.mark.engine
def test_docker_save_archive_and_engine_name(
    tmp_path: Path, docker_client: Any, engine_image: str
) -> None:
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as out:
        for chunk in docker_client.api.get_image(engine_image):
            out.write(chunk)
    image_id = docker_client.images.get(engine_image).id

    saved, saved_root, saved_report = open_and_unpack(tmp_path, archive)
    assert saved.format.value == "docker-archive" and saved.digest == image_id
    check_engine_root(saved_root, saved_report)
    runtime = saved.image.config.runtime
    assert runtime.entrypoint == ("/bin/busybox",) and runtime.cmd == ("true",)
    assert "GREETING=hi" in runtime.env and runtime.exposed_ports == ("8080/tcp",)
    assert runtime.working_dir == "/d" and runtime.user == "65532"
    assert runtime.stop_signal == "SIGINT" and runtime.labels == (("org.example", "yes"),)

    named, named_root, named_report = open_and_unpack(tmp_path, engine_image, docker_client)
    assert named.format.value == "engine" and named.digest == image_id
    assert named.names == (engine_image,)
    check_engine_root(named_root, named_report)
    assert snapshot(named_root) == snapshot(saved_root)

    # umoci, on skopeo's OCI copy of the saved archive, is the oracle for the merged tree.
    skopeo, umoci = tool("skopeo"), tool("umoci")
    subprocess.run(
        [skopeo, "copy", "-q", f"docker-archive:{archive}", f"oci:{tmp_path}/oci:x"],
        check=True,
        capture_output=True,
    )
    copy, copy_root, _ = open_and_unpack(tmp_path, tmp_path / "oci")
    assert copy.format.value == "oci-layout" and snapshot(copy_root) == snapshot(saved_root)
    bundle = tmp_path / "bundle"
    subprocess.run(
        [umoci, "unpack", "--image", f"{tmp_path}/oci:x", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert snapshot(bundle / "rootfs") == snapshot(saved_root)


@pytest.mark.engine
def test_missing_engine_image_fails_in_one_line(tmp_path: Path, docker_client: Any) -> None:
    name = f"scratchpack-test/absent:{uuid.uuid4().hex[:12]}"
    with pytest.raises(EngineError) as err:
        open_image(name, tmp_path, engine_of(docker_client))
    assert one_line(err) == f"no image {name} in the local engine"
    assert err.value.exit_code == 3
    assert not list(tmp_path.iterdir())
