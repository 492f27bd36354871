"""``--layers packages``: a layer per source package, cut from a plan and each path's packages.

:func:`package_layers` is pure: the tables below give it planned roots and origins
made by hand. :func:`complete_packages` and :func:`plan_origins` read a small root
made here, with the packages' lists given as data.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scratchpack.commands.build import (
    BuildRequest,
    ImageTarget,
    Layering,
    report_text,
    run_build,
)
from scratchpack.image.config import ImageConfig
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.image_plan import BuildOptions
from scratchpack.plan.layers import (
    MAX_LAYERS,
    LayerKind,
    Origin,
    PlannedLayer,
    RootPackages,
    complete_packages,
    package_layers,
    plan_origins,
)
from scratchpack.plan.rootplan import RootPlan
from tests.unit.fake_engine import FakeEngine, recorded

LIBC = Origin("libc6", "glibc")
SSL = Origin("libssl3", "openssl")
CRYPTO_TOOL = Origin("openssl", "openssl")
ZLIB = Origin("zlib1g", "zlib")
CURL = Origin("curl", "curl")
BASE = Origin("base-files", "base-files", base=True)
TRUE = shutil.which("true") or "/usr/bin/true"


@dataclass
class Planned:
    """A plan made entry by entry, and which package each path is of."""

    plan: RootPlan = field(default_factory=RootPlan)
    origins: dict[str, tuple[Origin, ...]] = field(default_factory=dict)

    def file(
        self,
        path: str,
        size: int = 1,
        origin: Origin | None = None,
        reason: Reason = Reason.LIBRARY,
    ) -> Planned:
        self.plan.add(Entry(path, EntryKind.FILE, 0o644, reason, data=b"x" * size))
        if origin is not None:
            self.origins[path] = (origin,)
        return self

    def directory(self, path: str, *origins: Origin, mode: int = 0o755) -> Planned:
        self.plan.add(Entry(path, EntryKind.DIR, mode, Reason.PACKAGE))
        if origins:
            self.origins[path] = origins
        return self

    def layers(self, max_layers: int = 20) -> list[PlannedLayer]:
        return package_layers(self.plan, self.origins, max_layers)


def curl_like() -> Planned:
    """A curl image: glibc (with the loader), openssl's two packages, zlib, curl, records,
    and the user's files."""
    return (
        Planned()
        .file("/usr/bin/curl", 300, CURL, Reason.PROGRAM)
        .file("/usr/lib/libz.so.1", 100, ZLIB)
        .file("/usr/lib/libssl.so.3", 700, SSL)
        .file("/usr/bin/openssl", 900, CRYPTO_TOOL, Reason.PACKAGE)
        .file("/usr/lib/libc.so.6", 2000, LIBC)
        .file("/lib64/ld-linux-x86-64.so.2", 200, LIBC, Reason.INTERPRETER)
        .file("/usr/lib/os-release", 10, BASE, Reason.RECORD)
        .file("/var/lib/dpkg/status.d/curl", 10, None, Reason.RECORD)
        .file("/etc/passwd", 10, None, Reason.ESSENTIAL)
        .file("/app/config.toml", 10, None, Reason.COPY)
    )


def names(layers: list[PlannedLayer]) -> list[str]:
    return [layer.comment for layer in layers]


def files(layer: PlannedLayer) -> list[str]:
    return [entry.path for entry in layer.entries if entry.kind is not EntryKind.DIR]


@pytest.mark.parametrize(
    ("max_layers", "expected"),
    [
        # Room for all: the C library (it holds the loader) first, then by source name.
        (
            20,
            ["packages: glibc", "packages: curl", "packages: openssl", "packages: zlib",
             "package records", "application"],
        ),
        # One short: the largest keep their layers, the smallest share one after them.
        (
            5,
            ["packages: glibc", "packages: openssl", "packages: curl, zlib",
             "package records", "application"],
        ),
        (4, ["packages: glibc", "packages: curl, openssl, zlib", "package records", "application"]),
        # No room for a records layer of its own: the records join the user's.
        (2, ["packages: glibc, curl, openssl, zlib", "application"]),
    ],
)  # fmt: skip
def test_order_and_budget(max_layers: int, expected: list[str]) -> None:
    layers = curl_like().layers(max_layers)
    assert names(layers) == expected
    assert len(layers) <= max_layers


def test_binary_packages_of_one_source_share_a_layer_and_records_come_last_but_one() -> None:
    layers = curl_like().layers()
    openssl = next(layer for layer in layers if layer.sources == ("openssl",))
    assert files(openssl) == ["/usr/bin/openssl", "/usr/lib/libssl.so.3"]
    assert [layer.kind for layer in layers[-2:]] == [LayerKind.RECORDS, LayerKind.OWN]
    assert files(layers[-2]) == ["/usr/lib/os-release", "/var/lib/dpkg/status.d/curl"]
    assert files(layers[-1]) == ["/app/config.toml", "/etc/passwd"]


def test_essential_and_required_packages_come_after_the_c_library_before_the_rest() -> None:
    planned = curl_like().file("/etc/issue", 5, BASE, Reason.PACKAGE)
    assert names(planned.layers())[:3] == [
        "packages: glibc",
        "packages: base-files",
        "packages: curl",
    ]


@pytest.mark.parametrize(
    ("paths", "carried"),
    [
        (["/usr/lib/x86_64-linux-gnu/libz.so.1"], ["/usr", "/usr/lib",
                                                   "/usr/lib/x86_64-linux-gnu"]),
        (["/etc/ssl/openssl.cnf", "/usr/lib/libssl.so.3"], ["/etc", "/etc/ssl", "/usr",
                                                           "/usr/lib"]),
    ],
)  # fmt: skip
def test_each_layer_carries_the_directories_its_entries_sit_in(
    paths: list[str], carried: list[str]
) -> None:
    planned = Planned().file("/app/tool", 1, None, Reason.PROGRAM)
    for path in paths:
        planned.file(path, 10, ZLIB)
    planned.directory("/usr/lib", ZLIB, mode=0o750)  # a directory the package lists, its mode
    layers = planned.layers()
    package = layers[0]
    directories = [entry.path for entry in package.entries if entry.kind is EntryKind.DIR]
    assert directories == sorted({*carried, "/usr/lib"})
    assert next(e for e in package.entries if e.path == "/usr/lib").mode == 0o750
    # The user's layer does not carry the package's directories it does not need.
    assert [entry.path for entry in layers[-1].entries] == ["/app", "/app/tool"]


def test_a_directory_goes_with_every_package_that_lists_it() -> None:
    planned = (
        Planned()
        .file("/usr/lib/a.so", 10, ZLIB)
        .file("/usr/lib/b.so", 10, SSL)
        .directory("/usr/share/empty", ZLIB, SSL)
    )
    for layer in planned.layers():
        assert "/usr/share/empty" in [entry.path for entry in layer.entries]


def test_every_path_is_in_a_layer_and_a_file_in_one_only() -> None:
    planned = curl_like().directory("/tmp", mode=0o1777).directory("/var/empty")
    layers = planned.layers(4)
    seen = [entry.path for layer in layers for entry in layer.entries]
    assert set(seen) == set(planned.plan.entries)
    non_dirs = [
        entry.path for layer in layers for entry in layer.entries if entry.kind is not EntryKind.DIR
    ]
    assert len(non_dirs) == len(set(non_dirs))


@pytest.mark.parametrize(("groups", "max_layers"), [(200, 500), (200, 127), (130, 20), (3, 2)])
def test_the_budget_is_never_above_127(groups: int, max_layers: int) -> None:
    planned = Planned().file("/app/tool", 1, None, Reason.PROGRAM)
    for number in range(groups):
        planned.file(f"/usr/lib/lib{number}.so", number + 1, Origin(f"lib{number}", f"src{number}"))
    planned.file("/var/lib/dpkg/status.d/x", 1, None, Reason.RECORD)
    layers = planned.layers(max_layers)
    assert len(layers) == min(max_layers, MAX_LAYERS, groups + 2)
    assert layers[-1].kind is LayerKind.OWN


def test_merging_keeps_the_largest_apart_the_same_way_every_time() -> None:
    planned = Planned()
    for number, size in enumerate([50, 10, 40, 10, 30]):
        planned.file(f"/usr/lib/lib{number}.so", size, Origin(f"lib{number}", f"src{number}"))
    first = [layer.sources for layer in planned.layers(3)]
    assert first == [("src0",), ("src2",), ("src1", "src3", "src4")]
    assert [layer.sources for layer in planned.layers(3)] == first


def test_fewer_than_two_layers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        curl_like().layers(1)


# -- the whole of each package, and which package a path is of --------------------------------


def make_root(top: Path) -> RootFS:
    """A root with package ``tool``'s files (a program, a library, docs, a link) and more."""
    for path, data in {
        "usr/bin/tool": b"tool",
        "usr/lib/libtool.so.1.0": b"lib",
        "usr/share/doc/tool/README": b"docs",
        "usr/share/man/man1/tool.1.gz": b"man",
        "usr/share/tool/data.txt": b"data",
        "etc/tool.conf": b"conf",
        "usr/bin/other": b"other",
    }.items():
        (top / path).parent.mkdir(parents=True, exist_ok=True)
        (top / path).write_bytes(data)
    os.symlink("libtool.so.1.0", top / "usr/lib/libtool.so.1")
    os.symlink("usr/lib", top / "lib")
    return RootFS(str(top))


TOOL = (
    "/.", "/usr", "/usr/bin", "/usr/bin/tool", "/usr/lib", "/usr/lib/libtool.so.1.0",
    "/usr/lib/libtool.so.1", "/usr/share", "/usr/share/doc", "/usr/share/doc/tool",
    "/usr/share/doc/tool/README", "/usr/share/man/man1/tool.1.gz", "/usr/share/tool",
    "/usr/share/tool/data.txt", "/etc", "/etc/tool.conf", "/lib",
)  # fmt: skip


def packages_of(root: RootFS) -> RootPackages:
    origins = {"tool": Origin("tool", "tool"), "other": Origin("other", "other")}
    return RootPackages(root, origins, {"tool": TOOL, "other": ("/usr/bin/other",)})


def test_a_package_the_image_holds_a_file_of_is_completed_without_its_docs(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    plan = RootPlan()
    plan.add_path(root, "/usr/lib/libtool.so.1", Reason.LIBRARY)
    completed = complete_packages(plan, packages_of(root))
    assert {"/usr/bin/tool", "/usr/share/tool/data.txt", "/etc/tool.conf"} <= set(completed.entries)
    assert not any(
        path.startswith(("/usr/share/doc", "/usr/share/man")) for path in completed.entries
    )
    assert "/usr/bin/other" not in completed.entries  # nothing of it was held
    assert "/usr/bin/tool" not in plan.entries  # the plan given is left as it was


def test_origins_are_the_packages_own_bytes_and_links_only(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    plan = RootPlan()
    plan.add_path(root, "/usr/lib/libtool.so.1", Reason.LIBRARY)
    plan.add_path(root, "/usr/bin/tool", Reason.PROGRAM)
    plan.add_path(root, "/lib", Reason.LIBRARY)  # a link to a directory: nobody's
    plan.add_generated("/etc/tool.conf", b"mine", Reason.COPY)  # the user's bytes there
    origins = plan_origins(plan, packages_of(root))
    assert origins["/usr/lib/libtool.so.1"] == origins["/usr/bin/tool"] == (Origin("tool", "tool"),)
    assert "/etc/tool.conf" not in origins and "/lib" not in origins
    assert origins["/usr/lib"] == (Origin("tool", "tool"),)


# -- the command: a layered build goes through the built-in writer, into the engine -----------


@pytest.mark.parametrize("layering", [Layering.SPLIT, Layering.PACKAGES])
def test_a_layered_build_without_output_is_written_then_loaded_into_the_engine(
    layering: Layering, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = FakeEngine()
    request = BuildRequest(
        options=BuildOptions(binaries=(TRUE,)),
        config=ImageConfig(entrypoint=None),
        tag="layers:test",
        target=ImageTarget(layering=layering, max_layers=5),
    )
    result = run_build(request, engine)
    assert result.loaded and result.output is None and result.image is not None
    assert engine.names["layers:test"] == result.image  # loaded, never built from a Dockerfile
    assert [call[0] for call in recorded(engine, "load", "build")] == ["load"]
    assert 2 <= len(result.diff_ids) <= 5
    assert list(tmp_path.iterdir()) == []  # nothing written beside
    assert f"Loaded layers:test into the engine ({len(result.diff_ids)} layers)" in report_text(
        result
    )
