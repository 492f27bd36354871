"""An image's records are read in one pass over its layers, with the answer of two.

``read_records`` keeps the bytes of the members put at the records' own paths while
it makes the flattened tree; the second pass is taken only when a record is reached
through a link to somewhere not kept, or a bound is passed. Each case compares the
answer with the two-pass reading (the one-pass result refused) and counts the
layers opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image import records
from scratchpack.image.model import Image, Layer
from scratchpack.image.readers import open_image
from scratchpack.image.records import ImageRecords, read_records
from tests.imagekit import Member, d, f, hard, layer, sym, write_docker_archive

DPKG = "var/lib/dpkg"
STATUS_D = f"{DPKG}/status.d"
BOOKWORM = b"ID=debian\nVERSION_CODENAME=bookworm\n"


def _record(name: str, version: str = "1.0", status: bool = False) -> bytes:
    installed = "Status: install ok installed\n" if status else ""
    return f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n{installed}".encode()


def _dirs(*names: str) -> list[Member]:
    return [d(name) for name in names]


BASE = layer(
    *_dirs("etc", "usr", "usr/lib", "var", "var/lib", DPKG, STATUS_D),
    f("usr/lib/os-release", BOOKWORM),
    sym("etc/os-release", "../usr/lib/os-release"),
    f(f"{STATUS_D}/libssl3", _record("libssl3", "3.0.1")),
    f(f"{STATUS_D}/libssl3.md5sums", b"0123 usr/lib/libssl.so.3\n"),
    f(f"{STATUS_D}/base-files", _record("base-files")),
)
ELSEWHERE = layer(  # dpkg's directory moved away and linked back: records reached by a link
    *_dirs("opt", "opt/dpkg", "opt/dpkg/status.d"),
    f("opt/dpkg/status.d/zlib", _record("zlib1g")),
    f("opt/linked-record", _record("linked")),
    f("opt/dpkg/debian_version", b"11.9\n"),
    f(f"{DPKG}/.wh.status.d"),
    sym(f"{DPKG}/status.d", "/opt/dpkg/status.d"),
)


@contextlib.contextmanager
def _counted_opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    opened: list[str] = []
    original = Layer.open_tar

    def open_tar(self: Layer, where: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(where)
        return original(self, where, *args, **kwargs)

    monkeypatch.setattr(Layer, "open_tar", open_tar)
    yield opened
    monkeypatch.setattr(Layer, "open_tar", original)


def _image(tmp_path: Path, layers: list[bytes]) -> Image:
    write_docker_archive(tmp_path / "image.tar", layers)
    return open_image(str(tmp_path / "image.tar"), tmp_path / "work").image


def _two_passes(image: Image, monkeypatch: pytest.MonkeyPatch) -> ImageRecords:
    """The reading as it was: the one pass's bytes refused, the second pass reads them."""
    with monkeypatch.context() as patch:
        patch.setattr(records._OnePass, "records", lambda self, tree, status_d: None)
        return read_records(image, "img")


def _shown(found: ImageRecords) -> tuple[list[str], str | None]:
    return [f"{p.name}={p.version}" for p in found.packages], found.suite


@pytest.mark.parametrize(
    ("upper", "passes", "names", "suite"),
    [
        ([], 1, ["base-files=1.0", "libssl3=3.0.1"], "bookworm"),
        ([layer(f(f"{STATUS_D}/.wh.libssl3"))], 1, ["base-files=1.0"], "bookworm"),
        ([layer(f(f"{STATUS_D}/.wh..wh..opq"), f(f"{STATUS_D}/a", _record("aa")))],
         1, ["aa=1.0"], "bookworm"),
        ([layer(f(f"{STATUS_D}/libssl3", _record("libssl3", "3.0.2")))],
         1, ["base-files=1.0", "libssl3=3.0.2"], "bookworm"),
        ([layer(f(f"{STATUS_D}/.wh.libssl3")),  # whited out, then put back by a later layer
          layer(f(f"{STATUS_D}/libssl3", _record("libssl3", "3.0.3")))],
         1, ["base-files=1.0", "libssl3=3.0.3"], "bookworm"),
        ([layer(f("var/lib/.wh.dpkg"), d(DPKG), f(f"{DPKG}/status", _record("cc", status=True)),
                f("etc/debian_version", b"12.7\n"), f("usr/lib/.wh.os-release"))],
         1, ["cc=1.0"], "bookworm"),
        ([layer(f(f"{STATUS_D}/libssl3", _record("libssl3", "9.9")), f(f"{STATUS_D}/.wh.libssl3"))],
         1, ["base-files=1.0"], "bookworm"),  # put and whited out by the same layer
        ([ELSEWHERE], 2, ["zlib1g=1.0"], "bookworm"),  # status.d through a symlinked directory
        ([layer(sym("etc/debian_version", "/opt/dpkg/debian_version")), ELSEWHERE],
         2, ["zlib1g=1.0"], "bookworm"),
        ([layer(*_dirs("opt"), f("opt/linked-record", _record("linked")),
                sym(f"{STATUS_D}/linked", "/opt/linked-record"))],
         2, ["base-files=1.0", "libssl3=3.0.1"], "bookworm"),  # a record's bytes not kept
        ([layer(hard(f"{STATUS_D}/copy", f"{STATUS_D}/base-files"))],
         2, ["base-files=1.0", "libssl3=3.0.1"], "bookworm"),  # a hard link: read as before
    ],
)  # fmt: skip
def test_one_pass_unless_a_record_is_reached_elsewhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upper: list[bytes],
    passes: int,
    names: list[str],
    suite: str | None,
) -> None:
    image = _image(tmp_path, [BASE, *upper])
    with _counted_opens(monkeypatch) as opened:
        found = read_records(image, "img")
    assert len(opened) == passes * len(image.layers)
    assert _shown(found) == (names, suite)
    assert found == _two_passes(image, monkeypatch)


def test_a_later_layers_status_d_through_a_moved_directory_reads_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written at their own paths, then the directory replaced by a link: the final
    tree's link decides, and the second pass reads what it leads to."""
    image = _image(tmp_path, [BASE, ELSEWHERE, layer(f("opt/dpkg/status.d/x", _record("xx")))])
    with _counted_opens(monkeypatch) as opened:
        found = read_records(image, "img")
    assert len(opened) == 2 * len(image.layers)
    assert _shown(found) == (["xx=1.0", "zlib1g=1.0"], "bookworm")


@pytest.mark.parametrize(
    ("hostile", "says"),
    [
        ([f(f"{STATUS_D}/big", b"#" * 2000)], "larger than 0 MiB"),  # over one file's bound
        ([f(f"srv/{name}/status.d/x", b"#" * 2000) for name in ("a",)], "larger than 0 MiB"),
        ([f("srv/os-release", b"#" * 2000)], "larger than 0 MiB"),  # a record's name elsewhere
        ([f(f"{STATUS_D}/r{n}", b"Package: r\n" + b"#" * 900) for n in range(100)],
         "its record files hold more than"),  # many members, together over the bound
    ],
)  # fmt: skip
def test_a_hostile_layer_meets_the_same_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hostile: list[Member], says: str
) -> None:
    monkeypatch.setattr(records, "MAX_SMALL", 1024)
    monkeypatch.setattr(records, "MAX_KEPT", 32 << 10)
    image = _image(tmp_path, [BASE, layer(*_dirs("srv", "srv/a", "srv/a/status.d"), *hostile)])
    with pytest.raises(InputError, match=says) as once:
        read_records(image, "img")
    with pytest.raises(InputError) as twice:
        _two_passes(image, monkeypatch)
    assert str(once.value) == str(twice.value)


def test_many_record_files_are_kept_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 members under status.d: what the pass holds never passes ``MAX_KEPT``."""
    monkeypatch.setattr(records, "MAX_KEPT", 64 << 10)
    members = [f(f"{STATUS_D}/r{n}", b"") for n in range(5_000)]
    image = _image(tmp_path, [BASE, layer(*members, f(f"{STATUS_D}/s", b"#" * (65 << 10)))])
    held: list[bool] = []  # after each member: nothing kept, or no more than the bound seen
    original = records._OnePass.__call__

    def watched(self: records._OnePass, *args):  # type: ignore[no-untyped-def]
        token = original(self, *args)
        held.append(not self.kept or self.total <= records.MAX_KEPT)
        return token

    monkeypatch.setattr(records._OnePass, "__call__", watched)
    with pytest.raises(InputError, match="its record files hold more than"):
        read_records(image, "img")
    assert len(held) > 5_000 and all(held)
