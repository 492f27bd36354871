"""Reading existing images and unpacking them safely (scratchpack/image/readers.py, unpack.py).

Synthetic layers, built entry by entry here, pin down the layer semantics
(whiteouts, opaque directories, hard links) and the safety rules (symlinked
parents, ``..``, absolute names, devices). Real archives come from our writer,
skopeo and the engine (``docker save`` of an image built here FROM scratch,
with RUN steps that make real whiteouts); umoci's unpack is the oracle for the
merged tree. Nothing is pulled.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import unpack
from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.imagekit import (
    HELLO,
    config_bytes,
    d,
    entry,
    f,
    hard,
    layer,
    one_line,
    open_and_unpack,
    pack,
    sha,
    snapshot,
    sym,
    tool,
    unpack_layers,
    write_docker_archive,
    write_oci,
)

# ------------------------------------------------------------- layer semantics


@pytest.fixture(params=[False, True], ids=["created", "lazy"])
def lazy(request: pytest.FixtureRequest) -> bool:
    """Each layer rule holds for a plain unpack and for a lazy one (shrink's), alike."""
    return bool(request.param)


def test_layers_merge_with_whiteouts_and_opaque_directories(tmp_path: Path, lazy: bool) -> None:
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
    root, report = unpack_layers(tmp_path, lower, upper, lazy=lazy)
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


def test_hard_links_point_at_files_already_in_the_root(tmp_path: Path, lazy: bool) -> None:
    lower = layer(d("bin"), f("bin/a", b"payload", mode=0o755), hard("bin/b", "bin/a"))
    upper = layer(hard("bin/c", "/bin/a"), hard("bin/d", "bin/missing"), hard("e", "bin"))
    root, report = unpack_layers(tmp_path, lower, upper, lazy=lazy)
    inodes = {(root / "bin" / name).stat().st_ino for name in "abc"}
    assert len(inodes) == 1 and (root / "bin/c").read_bytes() == b"payload"
    assert report.hardlinks == 2
    assert not (root / "bin/d").exists() and not (root / "e").exists()
    assert any("bin/missing" in warning for warning in report.warnings)
    assert any("directory" in warning for warning in report.warnings)
    assert report.bytes == len(b"payload")  # one inode, counted once


def test_a_refused_link_leaves_the_file_it_would_have_replaced(tmp_path: Path, lazy: bool) -> None:
    lower = layer(f("x", b"x stays"), f("y", b"y stays"), f("s", b"s stays"))
    upper = layer(hard("x", "missing"), sym("y", ""), hard("s", "s"))
    root, report = unpack_layers(tmp_path, lower, upper, lazy=lazy)
    assert [(root / n).read_bytes() for n in "xys"] == [b"x stays", b"y stays", b"s stays"]
    assert len(report.warnings) == 2 and report.files == 3


def test_symlinked_parents_never_lead_out_of_the_root(tmp_path: Path, lazy: bool) -> None:
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
    root, report = unpack_layers(tmp_path, lower, upper, same_layer, lazy=lazy)
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


def test_dot_dot_and_absolute_names_stay_inside(tmp_path: Path, lazy: bool) -> None:
    names = ["../../escape", "a/../../escape2", "./../escape3"]
    root, report = unpack_layers(
        tmp_path,
        layer(*(f(name) for name in names), f("/abs/name", b"abs"), f("b/../kept", b"k")),
        layer(hard("stolen", "../../etc/passwd"), hard("stolen2", "/etc/passwd")),
        lazy=lazy,
    )
    for parent in (tmp_path, tmp_path.parent, root.parent):
        assert not any((parent / n).exists() for n in ("escape", "escape2", "escape3"))
    assert (root / "abs/name").read_bytes() == b"abs"
    assert (root / "kept").read_bytes() == b"k"
    assert not (root / "stolen").exists() and not (root / "stolen2").exists()
    refused = [w for w in report.warnings if "refused" in w or "outside the root" in w]
    assert len(refused) == 4, report.warnings


def test_devices_are_skipped_and_modes_owners_kept(tmp_path: Path, lazy: bool) -> None:
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
        lazy=lazy,
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


def test_replacing_a_directory_with_a_file_and_back(tmp_path: Path, lazy: bool) -> None:
    root, _ = unpack_layers(
        tmp_path,
        layer(d("x"), f("x/inner"), f("y")),
        layer(f("x", b"now a file"), d("y"), f("y/z")),
        layer(sym("lib", "usr/lib"), d("usr/lib", 0o755), f("lib/libfoo.so", b"so")),
        lazy=lazy,
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
            # Lazily: a file created after the directories got their modes (ro is 0555).
            from scratchpack.lazyroot import LazyRoot
            from scratchpack.ld.rootfs import RootFS
            os.mkdir("{work}/lazy")
            lazy = unpack(source.image, Path("{work}/lazy"), lazy=Path("{work}/w/contents"))
            fs = RootFS(LazyRoot("{work}/lazy", lazy.lazy))
            assert fs.read_bytes("/ro/b") == b"b" and fs.listdir("/ro") == ["b"]
            assert not os.path.lexists("{work}/lazy/ro")  # read from the index only
            assert open(fs.host_path("/ro/b"), "rb").read() == b"b"  # made in a 0555 directory
            assert stat.S_IMODE(os.stat("{work}/lazy/ro").st_mode) == 0o555
            assert stat.S_IMODE(os.stat(fs.host_path("/suid")).st_mode) == 0o4755
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
    for output in ("image.tar", "layout"):
        cli.scratchpack(
            "build", HELLO, "-t", "hello:unpack", "--engine", "none", "--layers", "split",
            "-o", top / output, cwd=REPO_ROOT, env=cli.NO_ENGINE, check=True,
        )  # fmt: skip
    return top


def test_our_writer_and_skopeo_copies_unpack_alike(tmp_path: Path, written: Path) -> None:
    source, root, report = open_and_unpack(tmp_path, written / "image.tar")
    assert source.format.value == "oci-archive" and len(source.image.layers) == 2
    assert source.names == ("hello:unpack",)
    assert source.image.config.runtime.entrypoint == ("/app/hello-world",)
    assert (root / "app/hello-world").read_bytes() == HELLO.read_bytes()
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
