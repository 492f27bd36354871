"""The image model: every writer's output read back by every reader, and hostile documents.

Images are written by the built-in writer (BlobStore + assemble) and read
back as an OCI layout, an OCI archive and a docker-load archive; each must
give the same image (config digest, layer digests) and the same unpacked
tree, owners and extended attributes included. No engine is involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.config import ConfigFile, RuntimeConfig
from scratchpack.image.layout import archive_chunks, docker_archive_chunks, write_layout
from scratchpack.image.media import EM_AARCH64, EM_X86_64, MediaType, Platform
from scratchpack.image.readers import SourceFormat, open_image
from scratchpack.image.tree import flattened_tree
from scratchpack.image.unpack import unpack
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.inroot import NodeKind
from scratchpack.plan.entries import Entry, EntryKind, Reason
from tests.imagekit import d, f, layer, sha, snapshot, sym, write_oci

CAPABILITY = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12  # cap_net_raw+ep


def entries(tmp_path: Path) -> list[Entry]:
    program = tmp_path / "program"
    program.write_bytes(b"\x7fELF" + os.urandom(4096))
    return [
        Entry("/usr", EntryKind.DIR, 0o755, Reason.PROGRAM),
        Entry("/usr/bin", EntryKind.DIR, 0o755, Reason.PROGRAM),
        Entry(
            "/usr/bin/ping",
            EntryKind.FILE,
            0o4755,
            Reason.PROGRAM,
            source=str(program),
            xattrs=(("security.capability", CAPABILITY),),
        ),
        Entry("/bin", EntryKind.SYMLINK, 0o777, Reason.PROGRAM, target="usr/bin"),
        Entry("/srv", EntryKind.DIR, 0o750, Reason.INCLUDE, uid=999, gid=999),
        Entry("/srv/data", EntryKind.FILE, 0o640, Reason.INCLUDE, data=b"d\n", uid=999, gid=998),
    ]


def written(tmp_path: Path, epoch: int = 0) -> tuple[BlobStore, object]:
    store = BlobStore(tmp_path / "store")
    layer_ = store.write_layer(entries(tmp_path), epoch)
    runtime = {"Entrypoint": ["/usr/bin/ping"], "Env": ["A=1"], "User": "999"}
    return store, assemble(store, [layer_], runtime, Platform("amd64"), epoch)


def test_every_writer_reads_back_as_the_same_image(tmp_path: Path) -> None:
    _store, image = written(tmp_path)
    layout = tmp_path / "layout"
    layout.mkdir()
    write_layout(image, layout, "app:1")
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"".join(archive_chunks(image, "app:1", 0)))
    loadable = tmp_path / "load.tar"
    loadable.write_bytes(b"".join(docker_archive_chunks(image, "app:staging")))
    trees = []
    for path, kind, names in (
        (layout, SourceFormat.OCI_LAYOUT, ("app:1",)),
        (archive, SourceFormat.OCI_ARCHIVE, ("app:1",)),
        (loadable, SourceFormat.DOCKER_ARCHIVE, ("app:staging",)),
    ):
        source = open_image(str(path), tmp_path / f"work-{kind.value}")
        assert (source.format, source.names) == (kind, names)
        assert source.digest == image.image_id  # type: ignore[attr-defined]
        assert [x.digest for x in source.image.layers] == [
            x.digest
            for x in image.layers  # type: ignore[attr-defined]
        ]
        root = tmp_path / f"root-{kind.value}"
        root.mkdir()
        report = unpack(source.image, root)
        assert report.owners["/srv"] == (999, 999) and report.owners["/srv/data"] == (999, 998)
        assert report.xattrs["/usr/bin/ping"] == {"security.capability": CAPABILITY}
        assert report.modes["/usr/bin/ping"] == 0o4755 and report.warnings == []
        trees.append(snapshot(root))
    assert trees[0] == trees[1] == trees[2]
    # The layout's manifest blob is the manifest the image derives, byte for byte.
    manifest = image.manifest_descriptor.digest  # type: ignore[attr-defined]
    stored = (layout / "blobs/sha256" / manifest[7:]).read_bytes()
    assert sha(stored) == manifest and stored == image.manifest_bytes  # type: ignore[attr-defined]


def test_the_writer_is_deterministic_and_epoch_dated(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "s")
    fixed = [Entry("/a", EntryKind.FILE, 0o644, Reason.INCLUDE, data=b"a")]
    one = store.write_layer(fixed, 0)
    two = store.write_layer(fixed, 0)
    later = store.write_layer(fixed, 86400)
    assert (one.digest, one.diff_id) == (two.digest, two.diff_id)
    assert later.diff_id != one.diff_id
    with tarfile.open(store.path(later.digest)) as tar:
        member = tar.getmember("a")
    assert (member.mtime, member.uid, member.uname) == (86400, 0, "")


def test_config_documents_are_checked_field_by_field() -> None:
    good = RuntimeConfig.from_json({"Entrypoint": ["/a"], "Labels": {"k": "v"}}, "img")
    assert good.entrypoint == ("/a",) and good.copy_json() == {
        "Entrypoint": ["/a"],
        "Labels": {"k": "v"},
    }
    for runtime, field in (
        ({"Entrypoint": 7}, "Entrypoint"),
        ({"Entrypoint": "/bin/sh"}, "Entrypoint"),
        ({"Cmd": [1, 2]}, "Cmd"),
        ({"Labels": ["a", "b"]}, "Labels"),
        ({"Labels": {"a": 1}}, "label"),
        ({"WorkingDir": 5}, "WorkingDir"),
        ({"Env": "A=1"}, "Env"),
        ({"Healthcheck": {"Test": "true"}}, "Healthcheck"),
    ):
        with pytest.raises(InputError, match=field) as error:
            RuntimeConfig.from_json(runtime, "img")
        assert "\n" not in str(error.value)
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InputError, match="nested too deeply"):
        ConfigFile.parse(deep, "img")


def test_hostile_indexes_and_blobs_are_refused(tmp_path: Path) -> None:
    layers = [layer(d("etc"), f("etc/a", b"a"))]
    # index.json nested beyond recursion.
    nested = write_oci(tmp_path / "nested", layers)
    (nested / "index.json").write_bytes(b'{"manifests":' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    with pytest.raises(InputError, match="nested too deeply"):
        open_image(str(nested), tmp_path)
    # An index that names one nested index 4,000 times: each is read once, the count bounded.
    looping = write_oci(tmp_path / "looping", layers)
    inner = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_INDEX.value,
        "manifests": [],
    }
    inner_bytes = json.dumps(inner).encode()
    digest = sha(inner_bytes)
    (looping / "blobs/sha256" / digest[7:]).write_bytes(inner_bytes)
    fan = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": MediaType.OCI_INDEX.value, "digest": digest, "size": len(inner_bytes)}
        ]
        * 4000,
    }
    (looping / "index.json").write_text(json.dumps(fan))
    with pytest.raises(InputError):
        open_image(str(looping), tmp_path)
    # A layer blob that is a symlink out of the layout directory.
    outside = tmp_path / "outside.tar"
    outside.write_bytes(layers[0])
    linked = write_oci(tmp_path / "linked", layers, compress=False)
    blob = linked / "blobs/sha256" / sha(layers[0])[7:]
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        open_image(str(linked), tmp_path)


def test_sha512_digests_are_checked_too(tmp_path: Path) -> None:
    data = layer(f("a", b"good"))
    wrong = layer(f("a", b"evil"))
    image = write_oci(tmp_path / "oci", [data], compress=False)
    manifest_name = json.loads((image / "index.json").read_text())["manifests"][0]["digest"]
    manifest_path = image / "blobs/sha256" / manifest_name[7:]
    manifest = json.loads(manifest_path.read_text())
    hexdigest = hashlib.sha512(data).hexdigest()
    (image / "blobs/sha512").mkdir()
    (image / "blobs/sha512" / hexdigest).write_bytes(wrong)  # the wrong bytes under its name
    manifest["layers"][0].update(digest=f"sha512:{hexdigest}", size=len(wrong))
    manifest_bytes = json.dumps(manifest).encode()
    (image / "blobs/sha256" / sha(manifest_bytes)[7:]).write_bytes(manifest_bytes)
    index = json.loads((image / "index.json").read_text())
    index["manifests"][0].update(digest=sha(manifest_bytes), size=len(manifest_bytes))
    (image / "index.json").write_text(json.dumps(index))
    source = open_image(str(image), tmp_path)
    (tmp_path / "root").mkdir()
    with pytest.raises(InputError, match="does not match its digest sha512:"):
        unpack(source.image, tmp_path / "root")


def test_platforms_are_declared_once() -> None:
    assert Platform.from_elf(EM_X86_64, 64) == Platform("amd64")
    assert Platform.from_elf(EM_AARCH64, 64) == Platform("arm64", variant="v8")
    assert Platform.parse("linux/arm64") == Platform("arm64", variant="v8")
    assert Platform.parse("linux/arm/v6") == Platform("arm", variant="v6")
    assert Platform.parse("amd64") == Platform("amd64")
    assert Platform("arm64", variant="v8").elf_machine() == (EM_AARCH64, 64)
    assert str(Platform("arm", variant="v7")) == "linux/arm/v7"
    with pytest.raises(InputError, match="unknown architecture"):
        Platform.parse("linux/vax")


def test_a_flattened_tree_from_layer_headers(tmp_path: Path) -> None:
    layers = [
        layer(d("lib"), f("lib/ld-musl.so.1"), d("bin"), f("bin/sh"), f("gone"), d("opq")),
        layer(f(".wh.gone"), f("opq/.wh..wh..opq"), f("opq/new"), sym("usr", "/lib")),
        layer(f("usr/added")),  # lands in /lib, through the symlink
    ]
    source = open_image(str(write_oci(tmp_path / "oci", layers)), tmp_path)
    tree = flattened_tree(source.image, "base")
    assert tree["/usr"].kind is NodeKind.SYMLINK and tree["/usr"].target == "/lib"
    assert "/gone" not in tree and "/opq/new" in tree and "/lib/added" in tree
    assert tree["/bin"].kind is NodeKind.DIR and tree["/bin/sh"].kind is NodeKind.FILE


def test_someone_elses_blob_is_checked_when_it_is_copied_or_streamed(tmp_path: Path) -> None:
    data = layer(f("a", b"good"))
    image_dir = write_oci(tmp_path / "oci", [data], compress=False)
    (image_dir / "blobs/sha256" / sha(data)[7:]).write_bytes(layer(f("a", b"evil")))
    source = open_image(str(image_dir), tmp_path)
    assert not source.image.layers[0].hashed
    (tmp_path / "copy").mkdir()
    with pytest.raises(InputError, match="does not match its digest"):
        write_layout(source.image, tmp_path / "copy", "x:1")
    with pytest.raises(InputError, match="does not match its digest"):
        b"".join(docker_archive_chunks(source.image, "x:1"))
    _store, ours = written(tmp_path / "ours")
    assert all(x.hashed for x in ours.layers)  # type: ignore[attr-defined]
