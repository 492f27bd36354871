"""A root unpacked lazily (scratchpack/lazyroot.py): what RootFS sees, and what it creates.

``shrink`` unpacks with lazy regular files: they are created only when a
RootFS of the root looks them up. These tests pin down that listing, walking
and globbing see them without creating them, that a lookup creates exactly the
file asked for (with its mode, inside the root), and that a shrink plan of a
lazy root equals the plan of the same root fully unpacked.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest

from scratchpack.image.config import RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import UnpackReport, unpack
from scratchpack.lazyroot import LazyRoot
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.shrink import ShrinkInputs, plan_shrink
from tests.imagekit import d, f, layer, sym, write_oci
from tests.unit.test_plan import fake_image_root


def _lazy(tmp_path: Path, *layers: bytes) -> tuple[Path, UnpackReport, RootFS]:
    image = write_oci(Path(tempfile.mkdtemp(dir=tmp_path, prefix="oci-")), list(layers))
    source = open_image(str(image), Path(tempfile.mkdtemp(dir=tmp_path, prefix="work-")))
    lazy_root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="lazy-"))
    report = unpack(source.image, lazy_root, lazy=tmp_path / "contents")
    assert report.lazy is not None
    return lazy_root, report, RootFS(LazyRoot(lazy_root, report.lazy))


def _created(root: Path) -> set[str]:
    """The regular files that exist on disk under ``root``."""
    return {
        "/" + str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture
def lazily(tmp_path: Path) -> tuple[Path, UnpackReport, RootFS]:
    return _lazy(
        tmp_path,
        layer(
            d("etc"),
            d("etc/ld.so.conf.d"),
            f("etc/ld.so.conf.d/a.conf", b"/opt/lib\n"),
            f("etc/ld.so.conf.d/.hidden.conf", b"x"),
            f("etc/ld.so.conf.d/b.txt", b"b"),
            d("usr"),
            d("usr/lib"),
            f("usr/lib/libx.so.1", b"\x7fELF...", mode=0o755),
            sym("lib", "usr/lib"),
            d("zone"),
            d("zone/Europe"),
            f("zone/UTC", b"TZif"),
            f("zone/Europe/Paris", b"TZif"),
            f("suid", b"s", mode=0o4755),
        ),
    )


def test_listing_walking_and_globbing_see_lazy_files_without_creating_them(
    lazily: tuple[Path, UnpackReport, RootFS],
) -> None:
    top, report, root = lazily
    assert _created(top) == set()
    assert report.files == 7 and report.bytes == len(b"/opt/lib\nxb\x7fELF...TZifTZifs")
    assert root.listdir("/etc/ld.so.conf.d") == [".hidden.conf", "a.conf", "b.txt"]
    assert root.glob("/etc/ld.so.conf.d/*.conf") == ["/etc/ld.so.conf.d/a.conf"]  # no dot file
    assert root.glob("/etc/ld.so.conf.d/.*.conf") == ["/etc/ld.so.conf.d/.hidden.conf"]
    assert root.glob("/lib/libx.so.1") == ["/lib/libx.so.1"]
    walked = [(os.path.relpath(cur, top), dirs, files) for cur, dirs, files in root.walk("/zone")]
    assert walked == [("zone", ["Europe"], ["UTC"]), ("zone/Europe", [], ["Paris"])]
    assert root.listdir("/zone/UTC") is None  # not a directory, told by the index
    assert _created(top) == set() and list(top.iterdir()) == []  # not even a directory made


def test_a_lookup_creates_the_one_file_with_its_mode_through_links(
    lazily: tuple[Path, UnpackReport, RootFS],
) -> None:
    top, report, root = lazily
    assert root.read_text("/etc/ld.so.conf.d/a.conf") == "/opt/lib\n"
    steps = root.trace("/lib/libx.so.1")  # through the /lib -> usr/lib link
    assert steps is not None and [s.kind for s in steps] == ["symlink", "dir", "dir", "file"]
    assert root.host_path("/suid") == str(top / "suid")
    # Read from the content file: only what a host path was handed out for is made.
    assert _created(top) == {"/usr/lib/libx.so.1", "/suid"}
    assert stat.S_IMODE((top / "suid").stat().st_mode) == 0o4755
    assert stat.S_IMODE((top / "usr/lib/libx.so.1").stat().st_mode) == 0o755
    assert root.host_path("/etc/nothing") is None
    assert report.lazy is not None and "/zone/UTC" in report.lazy
    root.materialize_tree("/zone")
    assert {"/zone/UTC", "/zone/Europe/Paris"} <= _created(top)
    assert (top / "zone/Europe/Paris").read_bytes() == b"TZif"


def test_a_lazy_root_behind_a_plain_path_is_only_what_exists(
    lazily: tuple[Path, UnpackReport, RootFS],
) -> None:
    """Only a RootFS of the LazyRoot creates files: the plain path sees what is on disk."""
    top, _report, _root = lazily
    plain = RootFS(top)
    assert plain.host_path("/etc/ld.so.conf.d/a.conf") is None
    assert plain.listdir("/etc/ld.so.conf.d") is None  # not even the directory is made
    assert _created(top) == set()


def _as_layer(root: Path) -> bytes:
    """The tree under ``root`` as one layer tar (links as links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


def test_a_shrink_plan_of_a_lazy_root_is_the_plan_of_the_whole_root(tmp_path: Path) -> None:
    built = fake_image_root(tmp_path / "built")
    top, report, _root = _lazy(tmp_path, _as_layer(built))
    assert report.lazy is not None
    runtime = RuntimeConfig.from_json(
        {"Entrypoint": ["true"], "Env": ["PATH=/usr/bin:/bin"], "User": "www-data"}, "fake"
    )
    digest = "sha256:" + "0" * 64
    whole = plan_shrink(ShrinkInputs(built, runtime, Platform("amd64"), digest))
    lazy = plan_shrink(ShrinkInputs(LazyRoot(top, report.lazy), runtime, Platform("amd64"), digest))

    def described(plan: object) -> dict[str, tuple[object, ...]]:
        entries = plan.root.entries  # type: ignore[attr-defined]
        return {
            path: (
                entry.kind,
                entry.mode,
                entry.target,
                entry.data,
                Path(entry.source).read_bytes() if entry.source else None,
            )
            for path, entry in entries.items()
        }

    assert described(lazy) == described(whole)
    assert lazy.kept.reasons == whole.kept.reasons and lazy.kept.packages == ["coreutils"]
    # What the plan never looked at was never created: the package's docs, for one.
    assert "/usr/share/doc/coreutils/copyright" not in _created(top)
    assert "/usr/share/doc/coreutils/copyright" in report.lazy


# -- attacks -----------------------------------------------------------------------------


def test_a_directory_a_later_layer_turns_into_a_link_takes_its_lazy_files_along(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top, report, root = _lazy(
        tmp_path,
        layer(d("a"), f("a/x", b"lower"), d("b"), f("b/y", b"lower")),
        layer(sym("a", str(outside)), f(".wh.b"), sym("b", "/a")),
    )
    assert report.lazy is not None and len(report.lazy) == 0
    assert root.read_bytes("/a/x") is None and root.read_bytes("/b/y") is None
    assert list(outside.iterdir()) == [] and _created(top) == set()


def test_a_lazy_file_is_never_created_through_a_link(tmp_path: Path) -> None:
    """Had a parent become a link behind the index's back, the file is refused, not placed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    top, report, _root = _lazy(tmp_path, layer(d("d"), f("d/f", b"payload")))
    assert report.lazy is not None
    assert not (top / "d").exists()  # nothing is made before it is asked for
    (top / "d").symlink_to(outside)
    with pytest.raises(OSError):
        report.lazy.materialize("/d/f")
    assert list(outside.iterdir()) == []


def test_a_file_that_cannot_be_made_whole_is_not_left_half_written(
    lazily: tuple[Path, UnpackReport, RootFS],
) -> None:
    top, report, root = lazily
    assert report.lazy is not None
    os.truncate(report.lazy.store, 3)  # the content file cut short under it
    with pytest.raises(OSError, match="cut short"):
        root.read_bytes("/etc/ld.so.conf.d/a.conf")
    assert _created(top) == set() and "/etc/ld.so.conf.d/a.conf" in report.lazy
