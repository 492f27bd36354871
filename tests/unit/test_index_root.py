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
import time
import tracemalloc
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import QuickTarInfo, UnpackReport, unpack, unpack_tars
from scratchpack.ld.rootfs import RootFS
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
    started = time.perf_counter()
    report = unpack_tars(
        [("lower", _tar(lower)), ("upper", _tar(upper))],
        tmp_path / "root",
        lazy=tmp_path / "contents",
    )
    assert time.perf_counter() - started < 20  # quadratic would be minutes
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
