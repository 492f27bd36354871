"""The user's own files move under /app; system files, explicit DESTs and pinned libraries stay.

The table cases are plans made by hand, in the shape a host build plans them
(directories on the way implied); the last tests plan real copies of the
samples from two directories and compare what comes out, down to the image ID.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scratchpack.image.config import ImageConfig
from scratchpack.image.media import Platform
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.notes import collecting
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.image_plan import BuildOptions, plan_image
from scratchpack.plan.layers import split_layers
from scratchpack.plan.relocate import APP_PREFIX, Kept, Relocation, is_system_path, relocate
from scratchpack.plan.rootplan import RootPlan
from tests.cfixtures import compile_exe, compile_lib, is_host_glibc_x86_64

DIR, LINK, FILE = EntryKind.DIR, EntryKind.SYMLINK, EntryKind.FILE
SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# What every host build of a glibc program holds, all of it at system paths.
SYSTEM = (
    ("/lib64", LINK, Reason.INTERPRETER, "usr/lib64"),
    ("/usr/lib64/ld-linux-x86-64.so.2", FILE, Reason.INTERPRETER, None),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", FILE, Reason.LIBRARY, None),
    ("/tmp", DIR, Reason.ESSENTIAL, None),
    ("/home/nonroot", DIR, Reason.ESSENTIAL, None),
    ("/etc/passwd", FILE, Reason.ESSENTIAL, None),
)


def planned(*entries: tuple[str, EntryKind, Reason, str | None]) -> RootPlan:
    """A build plan of ``entries`` (the system ones first), directories on the way implied."""
    plan = RootPlan(source_parent_modes=False)
    for path, kind, reason, target in (*SYSTEM, *entries):
        mode = {DIR: 0o755, LINK: 0o777, FILE: 0o755}[kind]
        data = b"x" if kind is FILE else None
        plan.add(Entry(path, kind, mode, reason, target=target, data=data))
    return plan


def shape(plan: RootPlan) -> dict[str, str | None]:
    """Path -> link target (None for files and directories): what the image's tree looks like."""
    return {path: entry.target for path, entry in plan.entries.items()}


@dataclass(frozen=True)
class Case:
    name: str
    entries: tuple[tuple[str, EntryKind, Reason, str | None], ...]
    expected: dict[str, str | None]  # in-image path -> link target, all present afterwards
    gone: tuple[str, ...] = ()  # paths no longer in the plan
    kept: Kept = field(default_factory=Kept)
    moves: tuple[tuple[str, str], ...] = ()


CASES = [
    Case(
        "a binary alone lands at /app/NAME; the directories on its way disappear",
        (("/home/u/src/samples/hello-world/hello-world", FILE, Reason.PROGRAM, None),),
        {"/app": None, "/app/hello-world": None, "/home": None, "/home/nonroot": None},
        gone=("/home/u", "/home/u/src"),
        moves=(("/home/u/src/samples/hello-world/hello-world", "/app/hello-world"),),
    ),
    Case(
        "a program and its $ORIGIN/../lib library keep their layout",
        (
            ("/home/u/p/bin/app", FILE, Reason.PROGRAM, None),
            ("/home/u/p/lib/libx.so.1", LINK, Reason.LIBRARY, "libx.so.1.0"),
            ("/home/u/p/lib/libx.so.1.0", FILE, Reason.LIBRARY, None),
        ),
        {"/app/bin/app": None, "/app/lib/libx.so.1": "libx.so.1.0", "/app/lib/libx.so.1.0": None},
        gone=("/home/u", "/home/u/p/lib/libx.so.1.0"),
    ),
    Case(
        "an included venv and script: relative links stay, system links stay, own links follow",
        (
            ("/work/d/venv", DIR, Reason.INCLUDE, None),
            ("/work/d/venv/bin/python", LINK, Reason.INCLUDE, "/usr/bin/python3"),
            ("/work/d/venv/bin/python3", LINK, Reason.INCLUDE, "python"),
            ("/work/d/venv/bin/tool", LINK, Reason.INCLUDE, "/work/d/venv/lib/tool.py"),
            ("/work/d/venv/lib/tool.py", FILE, Reason.INCLUDE, None),
            ("/work/d/app.py", FILE, Reason.INCLUDE, None),
        ),
        {
            "/app/venv/bin/python": "/usr/bin/python3",
            "/app/venv/bin/python3": "python",
            "/app/venv/bin/tool": "/app/venv/lib/tool.py",
            "/app/app.py": None,
        },
        gone=("/work", "/work/d"),
        moves=(("/work/d/app.py", "/app/app.py"), ("/work/d/venv", "/app/venv")),
    ),
    Case(
        "nothing is the user's (curl): nothing moves",
        (("/usr/bin/curl", FILE, Reason.PROGRAM, None),),
        {"/usr/bin/curl": None, "/home/nonroot": None},
        gone=(APP_PREFIX,),
    ),
    Case(
        "an explicit DEST never moves, even outside the system directories",
        (
            ("/home/u/conf/app.conf", FILE, Reason.INCLUDE, None),
            ("/home/u/p/app", FILE, Reason.PROGRAM, None),
        ),
        {"/home/u/conf/app.conf": None, "/app/app": None},
        gone=("/home/u/p",),
        kept=Kept(dests=("/home/u/conf",)),
    ),
    Case(
        "a library found by an absolute RUNPATH keeps its path (and its link chain)",
        (
            ("/opt2/p/app", FILE, Reason.PROGRAM, None),
            ("/home/u/lib/liby.so.1", LINK, Reason.LIBRARY, "liby.so.1.2"),
            ("/home/u/lib/liby.so.1.2", FILE, Reason.LIBRARY, None),
        ),
        {"/app/app": None, "/home/u/lib/liby.so.1": "liby.so.1.2", "/home/u/lib/liby.so.1.2": None},
        kept=Kept(pinned=("/home/u/lib/liby.so.1",)),
    ),
    Case(
        "an interpreter installed in place stays with its tree; the venv's links to it move",
        (
            ("/work/d/venv/bin/python", LINK, Reason.PROGRAM, "python3"),
            ("/work/d/venv/bin/python3", LINK, Reason.PROGRAM, "/root/.pyenv/bin/python3"),
            ("/root/.pyenv/bin/python3", LINK, Reason.PROGRAM, "python3.11"),
            ("/root/.pyenv/bin/python3.11", FILE, Reason.PROGRAM, None),
            ("/root/.pyenv/lib/libpython3.11.so.1.0", FILE, Reason.LIBRARY, None),
            ("/work/d/app.py", FILE, Reason.INCLUDE, None),
        ),
        {
            "/app/venv/bin/python": "python3",
            "/app/venv/bin/python3": "/root/.pyenv/bin/python3",
            "/root/.pyenv/bin/python3": "python3.11",
            "/root/.pyenv/bin/python3.11": None,
            "/app/app.py": None,
        },
        gone=("/work",),
        kept=Kept(
            pinned=("/root/.pyenv/lib/libpython3.11.so.1.0",),
            installed=("/work/d/venv/bin/python",),
        ),
    ),
    Case(
        "what already lies under /app stays; the rest still moves",
        (
            ("/app/server", FILE, Reason.PROGRAM, None),
            ("/home/u/data/x.conf", FILE, Reason.INCLUDE, None),
        ),
        {"/app/server": None, "/app/x.conf": None},
        gone=("/app/app/server", "/home/u"),
        moves=(("/home/u/data/x.conf", "/app/x.conf"),),
    ),
    Case(
        "a system symlink to a moved program points to its new place",
        (
            ("/usr/local/bin/app", LINK, Reason.PROGRAM, "/srv2/build/app"),
            ("/srv2/build/app", FILE, Reason.PROGRAM, None),
        ),
        {"/usr/local/bin/app": "/app/app", "/app/app": None},
        gone=("/srv2",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_relocation_table(case: Case) -> None:
    plan = planned(*case.entries)
    before = shape(plan)
    with collecting():
        result = relocate(plan, ImageConfig(entrypoint=None), case.kept)
    after = shape(result.root)
    for path, target in case.expected.items():
        assert path in after and after[path] == target, path
    for path in case.gone:
        assert path not in after, path
    for path, _kind, _reason, _target in SYSTEM:
        assert after[path] == before[path]  # system files keep their paths
    if case.moves:
        assert result.moves == case.moves


def test_nothing_moved_gives_back_the_same_plan_and_config() -> None:
    plan = planned(("/usr/bin/curl", FILE, Reason.PROGRAM, None))
    config = ImageConfig(entrypoint=("/usr/bin/curl",), workdir="/home/u")
    assert relocate(plan, config, Kept()) == Relocation(plan, config)


def test_config_words_that_are_moved_paths_follow_and_each_rewrite_is_reported() -> None:
    plan = planned(
        ("/home/u/p/bin/app", FILE, Reason.PROGRAM, None),
        ("/home/u/p/lib/libx.so", FILE, Reason.LIBRARY, None),
    )
    config = ImageConfig(
        entrypoint=("/home/u/p/bin/app",),
        cmd=("--conf=/home/u/p/bin/app", "/home/u/p/data/x.conf", "/home/u/px", "/usr/bin"),
        env=(
            ("PATH", "/home/u/p/bin:/usr/bin"),
            ("LD_LIBRARY_PATH", "/home/u/p/lib/"),
            ("OTHER", "/home/u/px /home/nonroot"),
        ),
        workdir="/home/u/p",
    )
    with collecting() as warnings:
        result = relocate(plan, config, Kept())
    assert result.config == ImageConfig(
        entrypoint=("/app/bin/app",),
        cmd=("--conf=/home/u/p/bin/app", "/app/data/x.conf", "/home/u/px", "/usr/bin"),
        env=(
            ("PATH", "/app/bin:/usr/bin"),
            ("LD_LIBRARY_PATH", "/app/lib/"),
            ("OTHER", "/home/u/px /home/nonroot"),
        ),
        workdir="/app",
    )
    rewrites = [message for message in warnings.messages if " is now " in message]
    assert len(rewrites) == 5
    assert "Entrypoint: /home/u/p/bin/app is now /app/bin/app" in rewrites[0]


def test_a_moved_script_whose_interpreter_moved_is_warned_about(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_bytes(b"#!/home/u/p/venv/bin/python -u\nprint(1)\n")
    plan = planned(("/home/u/p/venv/bin/python", FILE, Reason.PROGRAM, None))
    plan.add(Entry("/home/u/p/run.py", FILE, 0o755, Reason.PROGRAM, source=str(script)))
    with collecting() as warnings:
        relocate(plan, ImageConfig(entrypoint=None), Kept())
    (message,) = [m for m in warnings.messages if "#!" in m]
    assert message.startswith("/app/run.py: #! names /home/u/p/venv/bin/python")
    assert "/app/venv/bin/python" in message and "--include /home/u/p/venv/bin/python:" in message


def test_scripts_naming_one_moved_interpreter_share_one_warning(tmp_path: Path) -> None:
    plan = planned(("/home/u/p/venv/bin/python", FILE, Reason.INCLUDE, None))
    for name in ("pip", "pip3", "pip3.11"):
        script = tmp_path / name
        script.write_bytes(b"#!/home/u/p/venv/bin/python\nimport pip\n")
        entry = Entry(f"/home/u/p/venv/bin/{name}", FILE, 0o755, Reason.INCLUDE, source=str(script))
        plan.add(entry)
    with collecting() as warnings:
        relocate(plan, ImageConfig(entrypoint=None), Kept())
    (message,) = [m for m in warnings.messages if "#!" in m]
    assert message.startswith("/app/pip and 2 more: #! names /home/u/p/venv/bin/python,")
    assert "they will not start" in message


needs_host = pytest.mark.skipif(
    not is_host_glibc_x86_64() or shutil.which("make") is None or shutil.which("gcc") is None,
    reason="builds the samples and plans them with the host's glibc x86-64 libraries",
)


def _sample(name: str) -> Path:
    subprocess.run(["make", "-s", "-C", str(SAMPLES / name)], check=True, capture_output=True)
    return SAMPLES / name


def _plan_from(directory: Path, binary: str) -> Relocation:
    """``build BINARY`` of a copy in ``directory``, planned (and so relocated) as build does."""
    options = BuildOptions((str(directory / binary),))
    with collecting() as warnings:
        plan = plan_image(options, ImageConfig(entrypoint=None))
    assert warnings.messages == []  # the default entrypoint follows its program silently
    assert plan.config.entrypoint[0] in [image for _, image in plan.moves]
    return Relocation(plan.root, plan.config, plan.moves)


def _image_id(result: Relocation, tmp_path: Path, name: str) -> str:
    """The built-in writer's image ID for the relocated plan (SOURCE_DATE_EPOCH 0)."""
    store = BlobStore(tmp_path / name)
    layers = [store.write_layer(layer, 0) for layer in split_layers(result.root, True)]
    return assemble(store, layers, result.config.runtime_json(), Platform("amd64"), 0).image_id


def _content(result: Relocation) -> list[tuple[object, ...]]:
    """What the image holds, without the host paths its bytes are copied from."""
    return [
        (e.path, e.kind, e.mode, e.uid, e.gid, e.target, e.data, e.xattrs, e.size)
        for e in result.root.sorted_entries()
    ]


@needs_host
@pytest.mark.parametrize(
    ("sample", "files", "expected"),
    [
        ("hello-world", ("hello-world",), ("/app/hello-world",)),
        ("origin-lib", ("greet", "lib"), ("/app/greet", "/app/lib/libgreet.so.1")),
    ],
)
def test_the_same_binary_from_two_directories_gives_the_same_image(
    tmp_path: Path, sample: str, files: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    source = _sample(sample)
    results = []
    for directory in (tmp_path / "one", tmp_path / "two" / "clone" / "deeper"):
        directory.mkdir(parents=True)
        for name in files:
            if (source / name).is_dir():
                shutil.copytree(source / name, directory / name, symlinks=True)
            else:
                shutil.copy2(source / name, directory / name)
        results.append(_plan_from(directory, files[0]))
    one, two = results
    assert one.config == two.config and one.config.entrypoint == (expected[0],)
    assert _content(one) == _content(two)
    assert all(path in one.root.entries for path in expected)
    assert not any(str(tmp_path) in path for path in one.root.entries)
    assert _image_id(one, tmp_path, "store-one") == _image_id(two, tmp_path, "store-two")


@needs_host
@pytest.mark.parametrize(
    ("runpath", "program_at", "library_at"),
    [  # beside its program, the library moves with it; found by a fixed path, both stay
        ("$ORIGIN/../lib", "/app/bin/app", "/app/lib/libown.so.1"),
        ("{lib}", "{program}", "{lib}/libown.so.1"),
    ],
)
def test_a_library_moves_only_when_the_loader_still_finds_it(
    tmp_path: Path, runpath: str, program_at: str, library_at: str
) -> None:
    lib = tmp_path / "p" / "lib"
    compile_lib(lib, "libown.so.1")
    program = compile_exe(
        tmp_path / "p" / "bin", "app", needed=["libown.so.1"], runpath=runpath.format(lib=lib)
    )
    with collecting() as warnings:
        plan = plan_image(BuildOptions((str(program),)), ImageConfig(entrypoint=None))
    assert plan.config.entrypoint == (program_at.format(program=program),)
    assert library_at.format(lib=lib) in plan.root.entries
    pinned = [m for m in warnings.messages if "keeps its host path" in m]
    assert pinned == ([] if runpath.startswith("$") else [f"{lib}/libown.so.1: " + PINNED])


PINNED = "keeps its host path in the image (found without $ORIGIN or LD_LIBRARY_PATH)"


@pytest.mark.parametrize(
    ("path", "system"),
    [
        ("/usr/bin/curl", True),
        ("/var/lib/app/x", True),
        ("/", True),
        ("/var/tmp/build/hello", False),  # scratch space, as /tmp (CI builds there)
        ("/var/tmpfoo/x", True),
        ("/tmp/build/hello", False),
        ("/home/u/src/hello", False),
        ("/srv/project/samples/hello", False),  # a checkout, as on the fresh machine
        ("/opt/vendor/bin/tool", True),
    ],
)
def test_which_paths_are_the_systems(path: str, system: bool) -> None:
    assert is_system_path(path) is system
