"""``build --update`` in memory: its refusals, its report, and what it compares with.

The packages come from a fake resolution (a ``.deb`` of the test's, unpacked by the
real unpacker) that offers whichever version the test sets; the engine is
``tests/unit/fake_engine.py``. The real apt and a signed repository are in
``tests/integration/test_update.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scratchpack.commands.build import (
    BuildRequest,
    ImageTarget,
    Layering,
    UpdateResult,
    archives_line,
    check_request,
    report_text,
    run_build,
    update_lines,
)
from scratchpack.commands.common import EngineMode, PackageSources
from scratchpack.errors import InputError
from scratchpack.image.changes import ImageChanges, LayerChange
from scratchpack.image.config import ImageConfig
from scratchpack.image.model import BytesBlob, Image
from scratchpack.packages.apt import Archive, PackageRef
from scratchpack.packages.changes import ChangeKind, PackageChange
from scratchpack.packages.fetch import PackageResolution
from scratchpack.packages.lock import Lock, PlatformLock, read_lock
from scratchpack.packages.root import unpack_packages
from scratchpack.plan.image_plan import BuildOptions
from scratchpack.report import json_report
from tests.debkit import ARCHITECTURE, Deb, File, build_deb
from tests.unit.fake_engine import FakeEngine

BUSYBOX = Path("/bin/busybox")
PACKAGE = "update-app"
PLATFORM = "linux/amd64"
ARCHIVES = (
    Archive("http://deb.debian.org/debian", "bookworm", "Sat, 10 Aug 2024 09:13:47 UTC"),
    Archive("http://deb.debian.org/debian", "bookworm-updates", "Fri, 05 Dec 2025 08:00:00 UTC"),
    Archive("http://deb.debian.org/debian-security", "bookworm-security", None),
)


@dataclass
class FakeMirror:
    """What the fake resolution offers: the package at ``version``; the pins it obeyed."""

    version: str = "1.0-1"
    debs: Path = Path()
    refreshed: int = 0  # forced list refreshes (--update asks the mirror afresh)
    obeyed: list[list[str]] = field(default_factory=list)

    def resolve(self, requests: Any, destination: Path, *args: Any, **options: Any) -> Any:
        architecture = args[1] if len(args) > 1 else options.get("architecture", ARCHITECTURE)
        pinned = args[2] if len(args) > 2 else options.get("pinned")
        version = self.version if not pinned else pinned[0].version
        if pinned:
            self.obeyed.append([ref.version for ref in pinned])
        program = bytearray(BUSYBOX.read_bytes())  # static: no loader, no libraries
        if architecture == "arm64":
            program[18:20] = struct.pack("<H", 183)  # EM_AARCH64: never run, only read
        files = {
            "usr/bin/update-app": File(bytes(program), 0o755),
            "usr/share/update-app/version": File(version.encode()),
        }
        deb = Deb(PACKAGE, version, architecture, files=files)
        path = build_deb(deb, self.debs / architecture / version)
        data = path.read_bytes()
        ref = PackageRef(PACKAGE, version, architecture, f"pool/{path.name}", len(data),
                         hashlib.sha256(data).hexdigest())  # fmt: skip
        destination.mkdir(parents=True, exist_ok=True)
        root = unpack_packages([(ref, path)], destination)
        return PackageResolution(root, (ref,), {"bookworm": ARCHIVES[0].date or ""}, ARCHIVES)

    def apt(self, *_args: Any, **_options: Any) -> Any:
        mirror = self

        class _Apt:
            @contextmanager
            def locked(self) -> Iterator[None]:
                yield

            def update(self, force: bool = False) -> None:
                mirror.refreshed += force

        return _Apt()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMirror:
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} is missing: apt-get install busybox-static")
    fake = FakeMirror(debs=tmp_path / "debs")
    monkeypatch.setattr("scratchpack.packages.fetch.resolve_package_root", fake.resolve)
    monkeypatch.setattr("scratchpack.packages.fetch.package_apt", fake.apt)
    monkeypatch.setattr("scratchpack.packages.apt.host_suite", lambda: "bookworm")
    monkeypatch.setattr("scratchpack.packages.root.host_architecture", lambda: ARCHITECTURE)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    return fake


def request(
    lock: Path, output: Path | None, update: bool = False, layering: Layering = Layering.PACKAGES
) -> BuildRequest:
    return BuildRequest(
        options=BuildOptions(binaries=("/usr/bin/update-app",), packages=(PACKAGE,)),
        config=ImageConfig(entrypoint=None),
        tag="update-app:test",
        target=ImageTarget(
            engine_mode=EngineMode.AUTO if output is None else EngineMode.NONE,
            output=output,
            layering=layering,
        ),
        sources=PackageSources(lock=lock, update=update),
    )


class KeepingEngine(FakeEngine):
    """The fake engine keeping what it loads, as a real one does (the writer's blobs are
    in a temporary directory that the command removes)."""

    def load(self, image: Image, tag: str) -> str:
        kept = []
        for layer in image.layers:
            with layer.blob.open() as stream:
                kept.append(dataclasses.replace(layer, blob=BytesBlob(stream.read())))
        return super().load(dataclasses.replace(image, layers=tuple(kept)), tag)


def build(built: BuildRequest, engine: FakeEngine | None = None) -> Any:
    check_request(built)
    return run_build(built, engine)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packages", "lock", "message"),
    [
        ((PACKAGE,), None, "--update re-resolves an existing lock: add --lock FILE"),
        ((), "app.lock", "--update re-resolves an existing lock: add the --package"),
        ((PACKAGE,), "none.lock", "--update re-resolves an existing lock: no file none.lock"),
    ],
)
def test_update_needs_an_existing_lock_and_its_packages(
    packages: tuple[str, ...], lock: str | None, message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.lock").write_text("{}")
    with pytest.raises(InputError, match=message):
        PackageSources.from_options(packages, None, lock=lock, update=True)


def _lock(path: Path, requests: tuple[str, ...], platforms: tuple[str, ...] = (PLATFORM,)) -> Path:
    locked = {name: PlatformLock(ARCHITECTURE, ()) for name in platforms}
    path.write_bytes(Lock("bookworm", requests, locked).to_bytes())
    return path


@pytest.mark.parametrize(
    ("requests", "platforms", "change", "message"),
    [
        (("curl",), (PLATFORM,), {}, r"was made for --suite bookworm and --package curl"),
        ((PACKAGE,), (PLATFORM, "linux/arm64"), {}, r"pins linux/amd64, linux/arm64; give the"),
        ((PACKAGE,), (PLATFORM,), {"engine_mode": EngineMode.DOCKER}, "drop --engine docker"),
    ],
)
def test_update_refuses_a_lock_made_for_another_build(
    mirror: FakeMirror, tmp_path: Path, requests: tuple[str, ...], platforms: tuple[str, ...],
    change: dict[str, Any], message: str,
) -> None:  # fmt: skip
    lock = _lock(tmp_path / "app.lock", requests, platforms)
    wanted = request(lock, None, update=True)
    if change:
        wanted = BuildRequest(wanted.options, wanted.config, wanted.tag,
                              ImageTarget(**change), wanted.sources)  # fmt: skip
    with pytest.raises(InputError, match=f"--update re-resolves an existing lock.*{message}"):
        build(wanted, FakeEngine())
    assert mirror.refreshed == 0  # refused before apt was asked anything
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.lock"]


# -- the run ----------------------------------------------------------------------------------


def test_update_to_an_archive_reports_packages_layers_and_bytes(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    lock, output = tmp_path / "app.lock", tmp_path / "app.tar"
    first = build(request(lock, output))
    assert first.update is None
    assert read_lock(lock).platforms[PLATFORM].packages[0].version == "1.0-1"
    assert build(request(lock, output)).manifest_digest == first.manifest_digest
    assert mirror.obeyed == [["1.0-1"]] and mirror.refreshed == 0  # a lock build obeys its pins

    mirror.version = "1.0-2"
    result = build(request(lock, output, update=True))
    update = result.update
    assert mirror.refreshed == 1
    assert update.packages == (
        PackageChange(PLATFORM, PACKAGE, ChangeKind.UPGRADED, "1.0-1", "1.0-2"),
    )
    assert read_lock(lock).platforms[PLATFORM].packages[0].version == "1.0-2"
    (changes,) = update.images
    assert update.compared_with == str(output) and not update.identical
    new = changes.changes.new_layers
    assert len(new) == 2  # the package's layer and the records layer
    assert len(changes.changes.layers) - len(new) >= 1  # the application layer stays
    assert update.upload_bytes == sum(layer.size for layer in new) + result_config_size(result)
    text = report_text(result)
    assert f"  {PLATFORM} {PACKAGE} 1.0-1 -> 1.0-2\n" in text
    assert f"Layers against {output}: {len(changes.changes.layers) - 2} kept, 2 new (" in text
    assert "A push uploads " in text
    document = json.loads(json_report(result))
    assert document["update"]["packages"][0]["new"] == "1.0-2"
    assert document["archives"][0] == {
        "uri": "http://deb.debian.org/debian", "suite": "bookworm",
        "date": "Sat, 10 Aug 2024 09:13:47 UTC",
    }  # fmt: skip

    again = build(request(lock, output, update=True))
    assert again.update.identical and again.update.packages == ()
    assert again.manifest_digest == result.manifest_digest
    assert f"no package changed: the image is byte-identical (digest {again.manifest_digest})" in (
        report_text(again)
    )


def result_config_size(result: Any) -> int:
    from scratchpack.image.readers import open_image

    image = open_image(result.output, Path(result.output).parent / "read").image
    return image.config_descriptor.size


def test_update_in_the_engine_compares_with_the_engines_image(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    engine = KeepingEngine()
    lock = tmp_path / "app.lock"
    first = build(request(lock, None), engine)
    assert first.loaded and engine.has_image("update-app:test")
    again = build(request(lock, None, update=True), engine)
    assert again.update.compared_with == "the engine's update-app:test"
    assert again.update.identical and again.image == first.image
    assert ("save", "update-app:test") in engine.calls
    mirror.version = "1.0-2"
    moved = build(request(lock, None, update=True), engine).update
    assert [change.new for change in moved.packages] == ["1.0-2"]
    assert len(moved.images[0].changes.new_layers) == 2


def test_update_of_a_one_layer_image_in_the_engine_is_written_not_built(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    """The engine's Dockerfile build is not reproducible byte for byte: --update writes."""
    engine = FakeEngine()
    lock = _lock(tmp_path / "app.lock", (PACKAGE,))
    result = build(request(lock, None, update=True, layering=Layering.ONE), engine)
    assert result.loaded and not any(call[0] == "build" for call in engine.calls)
    assert result.update.compared_with is None
    assert result.update.not_compared == "no image update-app:test in the engine"
    assert "Nothing to compare the image with: no image update-app:test in the engine" in (
        report_text(result)
    )


def test_nothing_to_compare_with_is_said_and_the_lock_still_moves(
    mirror: FakeMirror, tmp_path: Path
) -> None:
    lock, output = _lock(tmp_path / "app.lock", (PACKAGE,)), tmp_path / "app.tar"
    result = build(request(lock, output, update=True))
    assert result.update.packages == (
        PackageChange(PLATFORM, PACKAGE, ChangeKind.ADDED, None, "1.0-1"),
    )
    assert result.update.not_compared == f"no previous image at {output}"
    assert json.loads(json_report(result))["update"]["upload_bytes"] is None
    assert [ref.version for ref in read_lock(lock).platforms[PLATFORM].packages] == ["1.0-1"]


def test_an_unreadable_previous_image_is_said_not_fatal(mirror: FakeMirror, tmp_path: Path) -> None:
    lock, output = _lock(tmp_path / "app.lock", (PACKAGE,)), tmp_path / "app.tar"
    output.write_bytes(b"not an archive")
    result = build(request(lock, output, update=True))
    assert result.update.not_compared.startswith(f"cannot read the previous image {output}: ")
    assert output.read_bytes() != b"not an archive"  # replaced by the new image


def test_update_replaces_a_layout_directory_whole(mirror: FakeMirror, tmp_path: Path) -> None:
    """-o DIR, an OCI layout: --update reads it, then swaps it for the new layout at the
    commit; without --update the directory is the user's and stays refused."""
    from scratchpack.image.readers import open_image

    lock, output = tmp_path / "app.lock", tmp_path / "layout"
    first = build(request(lock, output))
    with pytest.raises(InputError, match="layout: exists and is not empty; choose a new path"):
        build(request(lock, output))
    mirror.version = "1.0-2"
    result = build(request(lock, output, update=True))
    assert result.update.compared_with == str(output) and result.output == str(output)
    (changes,) = result.update.images
    assert len(changes.changes.new_layers) == 2  # the package's layer and the records layer
    written = open_image(str(output), tmp_path / "work")
    assert written.manifest_digest == result.manifest_digest != first.manifest_digest
    for layer in written.image.layers:
        with layer.blob.open() as stream:
            stream.read()  # every layer is there, its digest checked as it is read
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.lock", "debs", "layout"]


@pytest.mark.parametrize("kind", ["not a layout", "a symlink"])
def test_update_refuses_what_is_not_a_layout_before_resolving(
    mirror: FakeMirror, tmp_path: Path, kind: str
) -> None:
    lock, output = _lock(tmp_path / "app.lock", (PACKAGE,)), tmp_path / "out"
    if kind == "a symlink":
        build(request(lock, tmp_path / "layout", update=True))
        output.symlink_to(tmp_path / "layout", target_is_directory=True)
        message = "out: exists and is not a directory"
    else:
        output.mkdir()
        (output / "index.json").write_text("{}")  # no oci-layout
        message = "out: exists and is not empty; choose a new path"
    refreshed, before = mirror.refreshed, sorted(tmp_path.rglob("*"))
    with pytest.raises(InputError, match=message):
        build(request(lock, output, update=True))
    assert mirror.refreshed == refreshed  # refused before apt was asked anything
    assert sorted(tmp_path.rglob("*")) == before


# -- the renderers ----------------------------------------------------------------------------


def test_the_archives_line_names_each_repository_once() -> None:
    assert archives_line(ARCHIVES) == (
        "Archives: deb.debian.org/debian bookworm (2024-08-10), bookworm-updates (2025-12-05), "
        "deb.debian.org/debian-security bookworm-security"
    )
    hostile = (Archive("file:/tmp/x\x1b[2J", "tests", "odd\ndate"),)
    assert "\x1b" not in archives_line(hostile) and "\n" not in archives_line(hostile)


def test_the_update_lines_name_every_kind_of_change_and_each_platform() -> None:
    layer = LayerChange("sha256:" + "a" * 64, 1000, False)
    kept = LayerChange("sha256:" + "b" * 64, 5000, True)
    changes = ImageChanges((kept, layer), (), True, 1500)
    from scratchpack.commands.build import PlatformChanges

    update = UpdateResult(
        lock="app.lock",
        packages=(
            PackageChange(PLATFORM, "libssl3", ChangeKind.UPGRADED, "3.0.20", "3.0.22"),
            PackageChange(PLATFORM, "libnew", ChangeKind.ADDED, None, "1.0"),
            PackageChange("linux/arm64", "libold", ChangeKind.REMOVED, "2.0", None),
        ),
        digest="sha256:" + "c" * 64,
        compared_with="app.tar",
        images=(PlatformChanges(PLATFORM, changes), PlatformChanges("linux/arm64", changes)),
    )
    assert update_lines(update) == [
        "Update of app.lock: 3 packages changed",
        "  linux/amd64 libssl3 3.0.20 -> 3.0.22",
        "  linux/amd64 libnew 1.0 (added)",
        "  linux/arm64 libold 2.0 (removed)",
        f"Layers against app.tar (linux/amd64): 1 kept, 1 new (sha256:{'a' * 12})",
        f"Layers against app.tar (linux/arm64): 1 kept, 1 new (sha256:{'a' * 12})",
        "A push uploads 3.0 kB, config changed",
    ]
    assert update.to_json()["upload_bytes"] == 3000


def test_update_of_an_index_compares_each_platform(
    mirror: FakeMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchpack.image.media import Platform

    platforms = (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    lock, output = tmp_path / "app.lock", tmp_path / "app.tar"
    first = request(lock, output)
    first = dataclasses.replace(
        first,
        options=dataclasses.replace(first.options, binaries=()),
        sources=PackageSources(lock=lock, platforms=platforms),
    )
    made = build(first)
    assert len(made.platforms) == 2
    again = build(
        dataclasses.replace(first, sources=dataclasses.replace(first.sources, update=True))
    )
    assert [one.platform for one in again.update.images] == ["linux/amd64", "linux/arm64/v8"]
    assert again.update.identical and again.update.digest == made.index_digest
    mirror.version = "1.0-2"
    moved = build(
        dataclasses.replace(first, sources=dataclasses.replace(first.sources, update=True))
    )
    assert [(change.platform, change.new) for change in moved.update.packages] == [
        ("linux/amd64", "1.0-2"), ("linux/arm64/v8", "1.0-2")
    ]  # fmt: skip
    assert [len(one.changes.new_layers) for one in moved.update.images] == [2, 2]
    assert "Layers against " in report_text(moved) and "(linux/arm64/v8): " in report_text(moved)
