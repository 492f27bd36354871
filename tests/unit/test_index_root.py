"""Shrink's root as an index of the layers' entries (scratchpack/lazyroot.py, image/unpack.py).

``unpack(..., lazy=...)`` makes nothing on disk but the content file: what a
RootFS of the root answers (lookups, listings, walks, reads) comes from the
index, and only a host path handed out makes that path, with its parents. The
attacks the unpacker refuses are refused in both modes (the layer rules of
tests/unit/test_unpack.py run in both too); what an index keeps per entry is
bounded, and a hostile layer's removals stay linear.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import InputError
from scratchpack.image import unpack as unpack_module
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import QuickTarInfo, UnpackReport, unpack, unpack_tars
from scratchpack.inroot import walk
from scratchpack.ld.rootfs import RootFS
from tests.cpu_time import thread_cpu_time
from tests.imagekit import d, entry, f, hard, layer, sym, unpack_layers, write_oci
from tests.unit.test_lazy_root import _lazy


@pytest.fixture(params=[False, True], ids=["created", "index"])
def lazy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _index(tmp_path: Path, *layers: bytes) -> tuple[Path, UnpackReport, RootFS]:
    return _lazy(tmp_path, *layers)


def _on_disk(top: Path) -> set[str]:
    return {"/" + str(path.relative_to(top)) for path in top.rglob("*")}


def test_nothing_is_made_until_a_host_path_is_handed_out(tmp_path: Path) -> None:
    top, report, root = _index(
        tmp_path,
        layer(d("etc", 0o750), d("etc/deep", 0o700), f("etc/deep/conf", b"c", mode=0o640)),
        layer(d("many"), *(f(f"many/p{n}/m/index.js", b"%d" % n) for n in range(50))),
    )
    assert _on_disk(top) == set()
    assert report.dirs == 103 and report.files == 51  # the parents a layer implies count
    assert root.is_dir("/many/p7/m") and root.exists("/many/p7/m/index.js")
    assert root.read_bytes("/many/p7/m/index.js") == b"7" and root.is_elf("/etc/deep/conf") is False
    assert root.listdir("/many/p7") == ["m"] and len(root.glob("/many/*")) == 50
    assert len([files for _cur, _dirs, files in root.walk("/many") if files]) == 50
    assert report.owners["/many/p7/m"] == (0, 0) and report.modes["/etc/deep"] == 0o700
    assert _on_disk(top) == set()  # all of that from the index
    host = root.host_path("/etc/deep/conf")
    assert host == str(top / "etc/deep/conf") and Path(host).read_bytes() == b"c"
    assert _on_disk(top) == {"/etc", "/etc/deep", "/etc/deep/conf"}
    assert [
        stat.S_IMODE((top / p).stat().st_mode) for p in ("etc", "etc/deep", "etc/deep/conf")
    ] == [
        0o750,
        0o700,
        0o640,
    ]


def test_hard_links_are_made_as_links_and_read_alike(tmp_path: Path) -> None:
    _top, report, root = _index(
        tmp_path, layer(d("a"), f("a/x", b"shared", mode=0o4755), hard("b", "a/x"))
    )
    assert report.hardlinks == 1 and report.files == 2 and report.bytes == len(b"shared")
    assert root.read_bytes("/b") == b"shared"
    first, second = Path(root.host_path("/b") or ""), Path(root.host_path("/a/x") or "")
    assert first.stat().st_ino == second.stat().st_ino and first.stat().st_nlink == 2
    assert stat.S_IMODE(second.stat().st_mode) == 0o4755


def test_links_are_followed_in_the_index_and_made_as_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top, _report, root = _index(
        tmp_path,
        layer(d("usr"), d("usr/lib"), f("usr/lib/libx.so.1", b"x"), sym("lib", "/usr/lib")),
        layer(sym("out", str(outside)), f("out/pwned", b"p"), hard("h", "out/pwned")),
    )
    assert root.realpath("/lib/libx.so.1") == "/usr/lib/libx.so.1"
    steps = root.trace("/lib/libx.so.1")
    assert steps is not None and [s.kind for s in steps] == ["symlink", "dir", "dir", "file"]
    assert os.readlink(top / "lib") == "/usr/lib" and (top / "usr/lib/libx.so.1").is_file()
    # An absolute link target is the root's own: the file went inside, never outside.
    assert root.read_bytes(f"{outside}/pwned") == b"p" and root.read_bytes("/h") == b"p"
    root.materialize_tree("/")
    assert list(outside.iterdir()) == []
    assert (top / str(outside).lstrip("/") / "pwned").read_bytes() == b"p"


def test_a_name_with_a_nul_byte_is_skipped_in_both_modes(tmp_path: Path, lazy: bool) -> None:
    nul = entry("x", pax={"path": "bad\0name"}, data=b"n")
    target = entry("link", tarfile.SYMTYPE, mode=0o777, target="a", pax={"linkpath": "a\0b"})
    _root, report = unpack_layers(tmp_path, layer(nul, target, f("good", b"g")), lazy=lazy)
    assert report.files == 1 and report.symlinks == 0
    assert sum("embedded null byte" in warning for warning in report.warnings) == 2


def test_a_layer_that_expands_without_bound_is_refused_in_both_modes(
    tmp_path: Path, lazy: bool
) -> None:
    big = layer(f("zeros", b"\0" * (8 << 20)))
    image = write_oci(tmp_path / "bomb", [big], blobs=[gzip.compress(big, 9)])
    source = open_image(str(image), tmp_path / "w")
    (tmp_path / "root").mkdir()
    contents = tmp_path / "contents" if lazy else None
    with pytest.raises(InputError, match="unpacks to more than the --max-unpacked-size"):
        unpack(source.image, tmp_path / "root", max_bytes=2 << 20, lazy=contents)
    assert contents is None or contents.stat().st_size == 0  # refused before its bytes
    assert _on_disk(tmp_path / "root") == set()


def test_whiteouts_of_dot_dot_and_of_the_root_are_refused_in_both_modes(
    tmp_path: Path, lazy: bool
) -> None:
    root, report = unpack_layers(
        tmp_path,
        layer(d("a"), f("a/keep", b"k"), f("top", b"t")),
        layer(f("a/.wh.."), f("a/.wh..."), f(".wh."), f("a/sub/../.wh..")),
        lazy=lazy,
    )
    assert (root / "a/keep").read_bytes() == b"k" and (root / "top").read_bytes() == b"t"
    assert sum("a whiteout without a name" in w for w in report.warnings) >= 3


def test_an_index_root_never_makes_a_path_through_a_link_put_there_later(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top, report, root = _index(tmp_path, layer(d("d"), d("d/e"), f("d/e/f", b"payload")))
    assert report.lazy is not None
    (top / "d").symlink_to(outside)  # behind the index's back
    with pytest.raises(OSError):
        root.host_path("/d/e/f")
    with pytest.raises(OSError):
        report.lazy.materialize_under("/d")
    assert list(outside.iterdir()) == []


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> contextlib.AbstractContextManager:
    return _tar_of(layer(*members))


def _tar_of(data: bytes) -> contextlib.AbstractContextManager:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r|")  # closed by unpack_tars


def test_removing_a_large_directory_entry_by_entry_stays_linear(tmp_path: Path) -> None:
    """A layer of 10,000 whiteouts over a directory of 10,000 files, an opaque marker
    over what is left, 10,000 new files and as many markers again: no removal
    searches a list, no marker walks the directory twice."""
    count = 10_000
    lower = [d("big"), *(f(f"big/f{n}", b"") for n in range(count))]
    upper = [f(f"big/.wh.f{n}", b"") for n in range(count)] + [f("big/.wh..wh..opq", b"")]
    upper += [f(f"big/new{n}", b"") for n in range(count)]
    upper += [f("big/.wh..wh..opq", b"")] * count  # each would walk the directory again
    (tmp_path / "root").mkdir()
    with thread_cpu_time() as cpu:  # this thread's work, not the machine's load
        report = unpack_tars(
            [("lower", _tar(lower)), ("upper", _tar(upper))],
            tmp_path / "root",
            lazy=tmp_path / "contents",
        )
    assert cpu.seconds < 20, f"{cpu.seconds:.1f} s of CPU"  # quadratic would be minutes
    assert report.files == count and report.whiteouts_applied == 2 * count + 1
    assert report.lazy is not None and len(report.lazy.names("/big")) == count


def test_an_index_keeps_a_few_hundred_bytes_per_entry(tmp_path: Path) -> None:
    """node_modules' shape: a directory per file. The bound is what the benchmark's
    per-entry figure rests on (tracemalloc: what Python allocates, the tar read too)."""
    count = 10_000
    members = []
    for number in range(count):
        members.append(d(f"app/p{number // 100}/m{number % 100}"))
        members.append(f(f"app/p{number // 100}/m{number % 100}/index.js", b"%d;\n" % number))
    data = layer(*members)
    (tmp_path / "root").mkdir()
    tracemalloc.start()
    try:
        report = unpack_tars([("layer", _tar_of(data))], tmp_path / "root", lazy=tmp_path / "c")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.lazy is not None
    entries = len(report.lazy.entries)
    assert entries > 2 * count
    assert peak / entries < 600, f"{peak / entries:.0f} bytes per entry"


def _headers_of(data: bytes, tarinfo: type[tarfile.TarInfo]) -> list[tuple[object, ...]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", tarinfo=tarinfo) as tar:
        return [
            (
                *(m.name, m.mode, m.uid, m.gid, m.size, m.mtime, m.type, m.linkname, m.uname),
                *(m.gname, m.devmajor, m.devminor, m.offset_data, sorted(m.pax_headers.items())),
                tar.extractfile(m).read() if m.isreg() else None,  # type: ignore[union-attr]
            )
            for m in tar
        ]


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_quick_headers_read_as_tarfile_reads_them(form: int) -> None:
    """Every header form a layer may use: long names (ustar prefix, GNU L/K, pax),
    base-256 numbers, devices, a V7 directory; any header the quick reading finds
    unusual is tarfile's own, so the two readings agree member by member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as tar:
        for number, name in enumerate(["a", "d/" * 60 + "long", "pre/" * 30 + "x" * 90]):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = 3, 0o4755, 1_700_000_000 + number
            with contextlib.suppress(ValueError):  # ustar cannot hold every name
                tar.addfile(info, io.BytesIO(b"abc"))
        big = tarfile.TarInfo("big-owner")
        big.uid = big.gid = 8**8 + 5  # base-256 in GNU form, a pax record in pax form
        with contextlib.suppress(ValueError):
            tar.addfile(big, io.BytesIO(b""))
        for info in (entry("link", tarfile.SYMTYPE, target="t" * 120)[0], d("dir/")[0]):
            with contextlib.suppress(ValueError):
                tar.addfile(info)
        device = tarfile.TarInfo("dev")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(device)
    data = bytearray(buffer.getvalue())
    data[156] = 0  # the first member as the V7 format stores a file: AREGTYPE
    data[148:156] = b"%06o\0 " % (256 + sum(data[:148]) + sum(data[156:512]))
    assert _headers_of(bytes(data), QuickTarInfo) == _headers_of(bytes(data), tarfile.TarInfo)


def test_quick_headers_refuse_what_tarfile_refuses() -> None:
    data = bytearray(layer(f("a", b"abc"), f("b", b"def"), f("c", b"ghi")))
    data[512 * 2 + 100] = ord("9")  # the second member's mode: not octal, checksum off
    read = _headers_of(bytes(data), QuickTarInfo)
    assert read == _headers_of(bytes(data), tarfile.TarInfo) and [m[0] for m in read] == ["a"]
    data[100] = ord("9")  # the first: the archive is no tar
    for tarinfo in (QuickTarInfo, tarfile.TarInfo):
        with pytest.raises(tarfile.ReadError):
            _headers_of(bytes(data), tarinfo)


def test_an_ordinary_header_is_read_without_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    header = layer(f("usr/lib/x", b"abc", mode=0o4755, uid=7, gid=8))[:512]

    def refuse(*_args: object) -> tarfile.TarInfo:
        raise AssertionError("decoded by tarfile")

    expected = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    monkeypatch.setattr(tarfile.TarInfo, "frombuf", classmethod(refuse))
    quick = QuickTarInfo.frombuf(header, "utf-8", "surrogateescape")
    assert quick.get_info() == expected.get_info() and quick.chksum == expected.chksum


def _timed_unpack(tmp_path: Path, lazy: bool, *layers: bytes) -> tuple[UnpackReport, float]:
    """The report and the seconds of CPU (user and system) this thread spent unpacking:
    the work of the code, which the machine's load does not change as it does wall time."""
    top = tmp_path / "timed"
    top.mkdir()
    try:
        with thread_cpu_time() as cpu:
            report = unpack_tars(
                [(f"layer {n}", _tar_of(data)) for n, data in enumerate(layers, 1)],
                top,
                lazy=tmp_path / "timed-contents" if lazy else None,
            )
        return report, cpu.seconds
    finally:
        _remove_deep(top)


def test_a_name_past_the_path_bounds_is_refused_at_once_in_both_modes(
    tmp_path: Path, lazy: bool
) -> None:
    """A member 40,000 bytes deep cost seconds (each step of the walk joins the
    whole path again); one component of 300 bytes failed only when made."""
    report, took = _timed_unpack(
        tmp_path,
        lazy,
        layer(
            f("a/" * 20_000 + "f", b"deep"),
            f("x" * 300, b"long"),
            f("d/" + "y" * 300 + "/z", b"long parent"),
            sym("link", "/" + "t/" * 2100),
            sym("short", "z" * 256),
            f("kept", b"k"),
        ),
    )
    assert took < 1, f"{took:.1f} s of CPU"
    assert report.files == 1 and report.symlinks == 0
    assert [w.count("4096 bytes") for w in report.warnings] == [1, 0, 0, 1, 0]
    assert [w.count("255 bytes") for w in report.warnings] == [0, 1, 1, 0, 1]
    assert all(len(w) < 400 for w in report.warnings)  # the name shortened in the message


def test_many_members_under_a_deep_link_resolve_it_once_in_both_modes(
    tmp_path: Path, lazy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member walked the link again, and each step of the walk joined the whole
    path so far: 20 members under a link 10,000 deep took 17 s."""
    deep = "a/" * 500
    members = [f(deep + "f", b"deep"), sym("l", "/" + deep)]
    members += [f(f"l/x{n}", b"%d" % n) for n in range(1000)]
    walks: list[str] = []

    def counted(path: str, *args: Any, **kwargs: Any) -> object:
        walks.append(path)
        return walk(path, *args, **kwargs)

    monkeypatch.setattr(unpack_module, "walk", counted)
    report, took = _timed_unpack(tmp_path, lazy, layer(*members))
    assert len(walks) <= 3, walks[:5]  # the deep directory, the link: once each
    # On disk every member's open still walks the 500 levels in the kernel.
    assert took < (1 if lazy else 3), f"{took:.1f} s of CPU"
    assert report.files == 1001 and report.symlinks == 1 and report.warnings == []


def _remove_deep(top: Path) -> None:
    """Remove a tree hundreds of directories deep (rmtree, pytest's too, recurses per level):
    every level's entries move up to ``top``, a level at a time."""
    moved = 0
    while directories := [p for p in top.iterdir() if p.is_dir() and not p.is_symlink()]:
        for directory in directories:
            for child in list(directory.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    moved += 1
                    child.rename(top / f"up{moved}")
                else:
                    child.unlink()
            directory.rmdir()
    for rest in top.iterdir():
        rest.unlink()
    top.rmdir()


def test_a_cached_parent_is_forgotten_when_its_way_changes(tmp_path: Path, lazy: bool) -> None:
    """Each change of a link or directory on the way is seen by the next member."""
    root, report = unpack_layers(
        tmp_path,
        layer(d("a"), d("b"), sym("l", "a"), f("l/one", b"1")),
        layer(sym("l", "b"), f("l/two", b"2"), f(".wh.b"), f("l/three", b"3")),
        layer(f("l", b"file"), f("l/four", b"4"), d("l"), f("l/five", b"5")),
        lazy=lazy,
    )
    assert (root / "a/one").read_bytes() == b"1" and (root / "b/two").exists() is False
    assert (root / "b/three").read_bytes() == b"3" and (root / "l/five").read_bytes() == b"5"
    assert sum("not a directory" in w for w in report.warnings) == 1


def test_a_negative_size_is_a_tar_error_of_a_streamed_export(tmp_path: Path) -> None:
    """A base-256 negative size makes tarfile seek backwards: the layer is no
    readable tar, not a stream that "only reads forward" (a usage error)."""
    from tests.unit.test_saved_stream import apply, v1_stream

    data = bytearray(layer(f("a", b"abc"), f("b", b"def"), f("c", b"ghi")))
    header = 1024
    data[header + 124 : header + 136] = b"\xff" + (256**11 - 4096).to_bytes(11, "big")  # -4096
    data[header + 148 : header + 156] = b"        "
    data[header + 148 : header + 156] = b"%06o\0 " % sum(data[header : header + 512])
    tampered = [bytes(data)]
    with pytest.raises(InputError) as err:
        apply(tmp_path, v1_stream(tampered, ["a" * 64]), tampered)
    assert "layer 1/1 is not a readable tar" in str(err.value)


def test_placing_a_name_again_and_again_keeps_its_directory_short(tmp_path: Path) -> None:
    count = 100_000
    again = [f("usr/x", b"") for _ in range(count)]
    (tmp_path / "root").mkdir()
    report = unpack_tars(
        [("layer", _tar_of(layer(d("usr"), *again, sym("usr/y", "x"))))],
        tmp_path / "root",
        lazy=tmp_path / "contents",
    )
    assert report.lazy is not None
    assert report.lazy.names("/usr") == ["x", "y"]
    assert len(report.lazy._children["/usr"]) <= 4


def test_members_after_a_place_tarfile_takes_for_the_end_are_refused(tmp_path: Path) -> None:
    """tarfile ends a stream at a lone zero block (and, in a patched Python, at a header
    of negative offset) as if the layer ended there; an engine may read on. The members
    after it would be in the container and not in the plan: the layer is refused."""
    from tests.unit.test_saved_stream import apply, v1_stream

    data = bytearray(layer(f("a", b"abc"), f("b", b"def"), f("c", b"ghi")))
    data[1024:1536] = bytes(512)  # b's header: a lone zero block, c's members after it
    tampered = [bytes(data)]
    with pytest.raises(InputError) as err:
        apply(tmp_path, v1_stream(tampered, ["a" * 64]), tampered)
    assert "layer 1/1 is not a readable tar" in str(err.value)


@pytest.mark.parametrize("compress", [True, False])
def test_a_file_images_layer_that_goes_on_past_its_seeming_end_is_refused(
    tmp_path: Path, compress: bool
) -> None:
    """The same rule for a layout's or an archive's layers (Layer.open_tar: shrink, debug,
    outdated and records read them): members after a lone zero block are not lost."""
    from scratchpack.image.readers import open_image
    from tests.imagekit import write_oci

    data = bytearray(layer(f("a", b"abc"), f("b", b"def"), f("c", b"ghi")))
    data[1024:1536] = bytes(512)
    image = open_image(str(write_oci(tmp_path / "oci", [bytes(data)], compress)), tmp_path).image
    with (
        pytest.raises(InputError, match="is not a readable tar"),
        image.layers[0].open_tar("layer 1/1") as tar,
    ):
        list(tar)
    whole = open_image(
        str(write_oci(tmp_path / "whole", [layer(f("a", b"abc"))], compress)), tmp_path
    ).image
    with whole.layers[0].open_tar("layer 1/1") as tar:
        assert [member.name for member in tar] == ["a"]
