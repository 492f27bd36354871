"""What real applications need from build's and shrink's plans (issue 12), without an engine.

Each test plans host programs the way a new user would hand them over (under a
0700 ``mktemp -d``, trees with object files and links that leave them) and checks
the planned entries; the recipes in ``tests/integration/test_recipes.py`` run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig, RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.notes import collecting
from scratchpack.plan.entries import EntryKind
from scratchpack.plan.essentials import Essentials
from scratchpack.plan.excludes import Excludes
from scratchpack.plan.image_plan import (
    BuildOptions,
    LoadedFirst,
    MissingLibraryError,
    loaded_first_json,
    plan_image,
)
from scratchpack.plan.shrink import ShrinkInputs, plan_shrink
from tests.cfixtures import (
    HOST_LIBC,
    compile_exe,
    compile_lib,
    is_host_glibc_x86_64,
    require_gcc,
)
from tests.unit.test_plan import fake_image_root

pytestmark = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="plans the host's glibc x86-64 programs"
)
TRUE = shutil.which("true") or "/usr/bin/true"


def _private_copy(tmp_path: Path) -> Path:
    """``true`` under two 0700 directories, as ``mktemp -d`` and a user's ``~/p`` are."""
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    app = private / "bin" / "app"
    shutil.copy2(os.path.realpath(TRUE), app)
    private.chmod(0o700)
    (private / "bin").chmod(0o700)
    tmp_path.chmod(0o700)
    return app


def _in_image(path: Path, top: Path) -> str:
    """Where a user's file lands (plan.relocate): below /app, as it stood below ``top``."""
    return "/app" + str(path)[len(str(top)) :]


def test_directories_needed_only_as_parents_are_0755_whatever_the_host(tmp_path: Path) -> None:
    app = _private_copy(tmp_path)
    kept_in_place = (f"{app}:{app}",)  # SRC:SRC: the host path, and its parents, in the image
    plan = plan_image(
        BuildOptions((str(app),), includes=kept_in_place), ImageConfig(entrypoint=None)
    )
    # /tmp is an essential of its own (1777); the rest is only on the way to the app.
    parents = [str(parent) for parent in app.parents if str(parent) not in ("/", "/tmp")]
    for parent in parents:
        entry = plan.root.entries[parent]
        assert entry.kind is EntryKind.DIR
        assert (entry.mode, entry.uid, entry.gid) == (0o755, 0, 0), parent
    assert plan.root.entries[str(app)].mode == 0o755


def test_an_included_directory_keeps_its_own_mode(tmp_path: Path) -> None:
    app = _private_copy(tmp_path)
    data = tmp_path / "private" / "data"
    (data / "inner").mkdir(parents=True)
    (data / "inner" / "file").write_text("x")
    data.chmod(0o700)
    (data / "inner").chmod(0o750)
    plan = plan_image(
        BuildOptions((str(app),), includes=(str(data),)), ImageConfig(entrypoint=None)
    )
    entries = plan.root.entries
    private = tmp_path / "private"  # the deepest directory that holds them: /app
    assert entries[_in_image(data, private)].mode == 0o700
    assert entries[_in_image(data / "inner", private)].mode == 0o750
    assert entries[_in_image(private, private)].mode == 0o755


# -- --include of real trees, --exclude -------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matched"),
    [
        ("*.pyc", "/usr/lib/python3.11/os.pyc", True),
        ("*.pyc", "/usr/lib/python3.11/os.py", False),
        ("__pycache__", "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc", True),
        ("test", "/usr/lib/python3.11/test/x.py", True),
        ("test", "/usr/lib/python3.11/testing/x.py", False),
        ("/usr/lib/python3*/test", "/usr/lib/python3.11/test/x.py", True),
        ("/usr/lib/python3*/test", "/usr/lib/python3.11/site/test/x.py", False),
        ("/usr/*/x", "/usr/lib/share/x", False),  # * stays inside one component
        ("/usr/**/x", "/usr/lib/share/x", True),
        ("/usr/**/x", "/usr/x", True),  # ** spans zero components too
        ("/usr/share/**", "/usr/share/doc/a", True),
        ("/opt/app", "/opt/application", False),
        ("/opt/app", "/opt/app", True),
    ],
)
def test_exclude_patterns(pattern: str, path: str, matched: bool) -> None:
    assert (Excludes([pattern]).match(path) is not None) is matched


@pytest.mark.parametrize("pattern", ["", "/", "**", "usr/lib"])
def test_exclude_patterns_that_would_be_mistakes_are_refused(pattern: str) -> None:
    with pytest.raises(InputError):
        Excludes([pattern])


def _tree(tmp_path: Path) -> Path:
    """A library tree as Python's and the JDK's are: data, an object file, a shared
    library, and links out of the tree (to a file, a directory, nowhere, its parent)."""
    tree = tmp_path / "opt" / "lang"
    (tree / "lib" / "config").mkdir(parents=True)
    (tree / "lib" / "mod.py").write_text("x = 1\n")
    (tree / "lib" / "__pycache__").mkdir()
    (tree / "lib" / "__pycache__" / "mod.pyc").write_bytes(b"\0" * 8)
    (tree / "lib" / "test").mkdir()
    (tree / "lib" / "test" / "big.py").write_text("# tests\n")
    shutil.copy2(_object_file(tmp_path), tree / "lib" / "config" / "python.o")
    libz = next(
        p
        for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")
        if os.path.exists(p)
    )
    shutil.copy2(os.path.realpath(libz), tree / "lib" / "libz.so.1")
    etc = tmp_path / "etc" / "lang"
    (etc / "security").mkdir(parents=True)
    (etc / "security" / "policy").write_text("grant {}\n")
    (etc / "net.properties").write_text("a=b\n")
    (tree / "conf").mkdir()
    os.symlink(str(etc / "net.properties"), tree / "conf" / "net.properties")  # absolute
    os.symlink("../../../etc/lang/security", tree / "conf" / "security")  # relative, a directory
    os.symlink(str(tmp_path / "nowhere"), tree / "conf" / "gone")
    os.symlink("..", tree / "conf" / "up")  # inside the tree: nothing to bring
    os.symlink(str(tmp_path), tree / "conf" / "all")  # a directory that holds the tree
    return tree


def _object_file(tmp_path: Path) -> Path:
    compiler = shutil.which("gcc") or pytest.skip("needs gcc for a relocatable object")
    source = tmp_path / "o.c"
    source.write_text("int f(void) { return 1; }\n")
    subprocess.run([compiler, "-c", str(source), "-o", str(tmp_path / "o.o")], check=True)
    return tmp_path / "o.o"


def test_an_included_tree_keeps_object_files_as_data_and_brings_link_targets(
    tmp_path: Path,
) -> None:
    tree = _tree(tmp_path)
    with collecting() as warnings:
        plan = plan_image(
            BuildOptions((TRUE,), includes=(str(tree),)), ImageConfig(entrypoint=None)
        )
    entries = plan.root.entries
    assert entries[_in_image(tree / "lib" / "config" / "python.o", tmp_path)].kind is EntryKind.FILE
    assert any(c.path == str(tree / "lib" / "libz.so.1") for c in plan.closures)
    etc = tmp_path / "etc" / "lang"
    net = entries[_in_image(tree / "conf" / "net.properties", tmp_path)]
    assert net.kind is EntryKind.SYMLINK and net.target == _in_image(
        etc / "net.properties", tmp_path
    )
    assert entries[_in_image(etc / "net.properties", tmp_path)].kind is EntryKind.FILE
    policy = entries[_in_image(etc / "security" / "policy", tmp_path)]
    assert policy.kind is EntryKind.FILE and policy.detail == f"target of {tree}/conf/security"
    assert any("conf/gone" in w and "points to nothing" in w for w in warnings.messages), (
        warnings.messages
    )
    assert any("conf/all" in w and "holds it" in w for w in warnings.messages), warnings.messages
    assert not any("conf/up" in w for w in warnings.messages), warnings.messages
    assert str(tmp_path / "nowhere") not in entries


def test_exclude_leaves_out_names_and_paths_but_never_a_closure(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    libc = os.path.realpath(HOST_LIBC)
    with collecting() as warnings:
        plan = plan_image(
            BuildOptions(
                (TRUE,),
                includes=(str(tree),),
                excludes=("__pycache__", f"{tree}/lib/t*", f"{tree}/conf", libc, "*.nothing"),
            ),
            ImageConfig(entrypoint=None),
        )
    entries = plan.root.entries
    in_image = _in_image(tree, tree.parent)  # nothing out of the tree came: /app/lang
    assert f"{in_image}/lib/mod.py" in entries
    assert not any("__pycache__" in path for path in entries)
    assert not any(path.startswith(f"{in_image}/lib/test") for path in entries)
    assert not any(path.startswith(f"{in_image}/conf") or "/etc/lang" in path for path in entries)
    assert libc in entries  # the program's library stays, with a warning
    assert any(libc in w and "kept" in w for w in warnings.messages), warnings.messages
    assert any("*.nothing" in w and "matched nothing" in w for w in warnings.messages), (
        warnings.messages
    )


# -- sonames a library of the image carries (the JDK's libjvm.so) -----------------------------


def _plugin_host(tmp_path: Path) -> Path:
    """A JDK-shaped tree: ``lib/libplug.so`` needs ``libvm.so``, which only
    ``lib/server/libvm.so`` carries (the launcher dlopens it by path first)."""
    require_gcc()
    home = tmp_path / "jdk"
    compile_lib(home / "lib" / "server", "libvm.so")
    compile_lib(home / "lib", "libplug.so", needed=["libvm.so"])
    compile_exe(home / "bin", "launcher")
    return home


def test_a_soname_carried_by_a_library_of_the_image_is_loaded_first_not_missing(
    tmp_path: Path,
) -> None:
    home = _plugin_host(tmp_path)
    plan = plan_image(
        BuildOptions((str(home / "bin" / "launcher"),), includes=(str(home),)),
        ImageConfig(entrypoint=None),
    )
    plugin_path, vm_path = home / "lib" / "libplug.so", home / "lib/server/libvm.so"
    assert plan.loaded_first == (  # named where the image has them
        LoadedFirst("libvm.so", _in_image(plugin_path, tmp_path), _in_image(vm_path, tmp_path)),
    )
    plugin = next(c for c in plan.closures if c.path == str(home / "lib" / "libplug.so"))
    assert plugin.complete
    assert [(lib.soname, lib.via) for lib in plugin.libraries] == [("libvm.so", "loaded")]
    assert loaded_first_json(plan.loaded_first) == [
        {
            "soname": "libvm.so",
            "path": _in_image(home / "lib" / "server" / "libvm.so", tmp_path),
            "needed_by": [_in_image(home / "lib" / "libplug.so", tmp_path)],
        }
    ]


def test_what_a_program_itself_needs_stays_missing_even_if_the_image_carries_it(
    tmp_path: Path,
) -> None:
    """Nothing can be loaded before a program's own DT_NEEDED: missing is missing."""
    home = _plugin_host(tmp_path)
    program = compile_exe(home / "bin", "direct", needed=["libvm.so"])
    with pytest.raises(MissingLibraryError, match=r"libvm\.so"):
        plan_image(
            BuildOptions((str(program),), includes=(str(home / "lib"),)),
            ImageConfig(entrypoint=None),
        )


def test_a_soname_no_library_of_the_image_carries_is_still_missing(tmp_path: Path) -> None:
    home = _plugin_host(tmp_path)
    (home / "lib" / "server" / "libvm.so").unlink()
    with pytest.raises(MissingLibraryError, match=r"libplug\.so: missing library libvm\.so"):
        plan_image(
            BuildOptions((str(home / "bin" / "launcher"),), includes=(str(home),)),
            ImageConfig(entrypoint=None),
        )


# -- programs that run /bin/sh; accounts named by configuration -------------------------------

POPEN_SOURCE = '#include <stdio.h>\nint main(void) { return pclose(popen("true", "r")); }\n'


def _popen_program(tmp_path: Path) -> Path:
    require_gcc()
    source = tmp_path / "popen.c"
    source.write_text(POPEN_SOURCE)
    program = tmp_path / "popen"
    subprocess.run(["gcc", "-o", str(program), str(source)], check=True)
    return program


def test_a_program_that_runs_a_shell_is_warned_about_and_offered_one(tmp_path: Path) -> None:
    program = _popen_program(tmp_path)
    with collecting() as warnings:
        plan_image(BuildOptions((str(program),)), ImageConfig(entrypoint=None))
    assert any(
        "popen()" in w and "/bin/sh" in w and "--shell busybox" in w for w in warnings.messages
    ), warnings.messages
    with collecting() as warnings:
        plan_image(BuildOptions((TRUE,)), ImageConfig(entrypoint=None))
    assert not any("/bin/sh" in w for w in warnings.messages), warnings.messages


def test_shell_busybox_puts_a_static_busybox_at_bin_sh(tmp_path: Path, static_busybox) -> None:
    program = _popen_program(tmp_path)
    with collecting() as warnings:
        plan = plan_image(
            BuildOptions((str(program),), essentials=Essentials(shell=str(static_busybox))),
            ImageConfig(entrypoint=None),
        )
    shell = plan.root.entries[plan.root.through_links("/bin/sh")]
    assert (shell.kind, shell.source, shell.mode) == (EntryKind.FILE, str(static_busybox), 0o755)
    assert not any("/bin/sh" in w for w in warnings.messages), warnings.messages
    with pytest.raises(InputError, match="not statically linked"):
        plan_image(
            BuildOptions((TRUE,), essentials=Essentials(shell=os.path.realpath(TRUE))),
            ImageConfig(entrypoint=None),
        )


def test_the_shell_busybox_is_declared_with_the_other_packages(
    tmp_path: Path, static_busybox: Path
) -> None:
    """The records are the plan's last stage: a scanner sees busybox-static, whose binary
    the image holds at /bin/sh, as it sees libc6."""
    owner = subprocess.run(["dpkg", "-S", str(static_busybox)], capture_output=True, text=True)
    if owner.returncode != 0:
        pytest.skip(f"{static_busybox} is no package's here")
    package = owner.stdout.split(":")[0]
    plan = plan_image(
        BuildOptions(
            (str(_popen_program(tmp_path)),), essentials=Essentials(shell=str(static_busybox))
        ),
        ImageConfig(entrypoint=None),
    )
    assert package in plan.records.packages and "libc6" in plan.records.packages
    assert f"/var/lib/dpkg/status.d/{package}" in plan.root.entries


def _account(text: bytes | None, name: str) -> str | None:
    lines = (text or b"").decode().splitlines()
    return next((line for line in lines if line.split(":")[0] == name), None)


def test_users_named_by_included_configuration_and_user_get_accounts(tmp_path: Path) -> None:
    """nginx's ``user www-data;`` failed with getpwnam("www-data") in a build."""
    host_line = _account(Path("/etc/passwd").read_bytes(), "www-data")
    if host_line is None:
        pytest.skip("this host has no www-data account (Debian's base-passwd has one)")
    etc = tmp_path / "etc" / "web"
    etc.mkdir(parents=True)
    (etc / "web.conf").write_text("# user daemon;\nuser www-data;\n")
    plan = plan_image(
        BuildOptions((TRUE,), includes=(f"{etc}:/etc/web",)),
        ImageConfig(entrypoint=None, user="www-data"),
    )
    entries = plan.root.entries
    assert _account(entries["/etc/passwd"].data, "www-data") == host_line
    assert _account(entries["/etc/passwd"].data, "daemon") is None  # only in a comment
    assert _account(entries["/etc/passwd"].data, "nonroot") is not None
    gid = host_line.split(":")[3]
    group = (entries["/etc/group"].data or b"").decode().splitlines()
    assert any(line.split(":")[2] == gid for line in group), group


def test_a_user_no_account_names_is_refused_before_anything_is_built() -> None:
    with pytest.raises(InputError, match="no passwd entry 'no-such-user'"):
        plan_image(BuildOptions((TRUE,)), ImageConfig(entrypoint=None, user="no-such-user"))


# -- shrink: the USER's home and state directories ---------------------------------------------


def test_a_static_shrink_keeps_the_users_home_and_state_directories_empty(tmp_path: Path) -> None:
    """``USER postgres``: initdb could not create /var/lib/postgresql/data without its home."""
    root = fake_image_root(tmp_path)
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write("postgres:x:101:104::/var/lib/postgresql:/bin/bash\n")
    for directory in ("var/lib/postgresql/15/main", "var/log/postgresql", "var/lib/other"):
        (root / directory).mkdir(parents=True)
    (root / "var/lib/postgresql/15/main/PG_VERSION").write_text("15\n")
    (root / "var/lib/postgresql").chmod(0o755)
    (root / "var/log/postgresql").chmod(0o1775)
    owners = {
        "/var/lib/postgresql": (101, 104),
        "/var/lib/postgresql/15": (101, 104),
        "/var/log/postgresql": (101, 4),
        "/var/lib/other": (0, 0),
    }
    runtime = RuntimeConfig.from_json({"Entrypoint": ["true"], "User": "postgres"}, "fake")
    plan = plan_shrink(ShrinkInputs(root, runtime, Platform("amd64"), "sha256:" + "0" * 64, owners))
    kept = plan.root.entries
    home = kept["/var/lib/postgresql"]
    assert (home.kind, home.uid, home.gid) == (EntryKind.DIR, 101, 104)
    log = kept["/var/log/postgresql"]
    assert (log.uid, log.mode) == (101, 0o1775)
    assert not any(path.startswith("/var/lib/postgresql/") for path in kept)  # data stays out
    assert "/var/lib/other" not in kept
    assert {"/var/lib/postgresql", "/var/log/postgresql"} <= set(plan.kept.reasons["runtime"])


def test_a_trace_that_kept_some_time_zones_says_the_rest_are_missing(tmp_path: Path) -> None:
    """PostgreSQL's tsearch_data, time zones other than Etc/UTC: missing without a word."""
    root = fake_image_root(tmp_path)
    for name in ("Etc/UTC", "Europe/Paris", "Asia/Tokyo"):
        zone = root / "usr/share/zoneinfo" / name
        zone.parent.mkdir(parents=True, exist_ok=True)
        zone.write_bytes(b"TZif2")
    runtime = RuntimeConfig.from_json({"Entrypoint": ["true"]}, "fake")
    plan = plan_shrink(
        ShrinkInputs(root, runtime, Platform("amd64"), "sha256:" + "0" * 64),
        traced=["/usr/bin/true", "/usr/share/zoneinfo/Etc/UTC"],
        static=False,
        tracing=True,
    )
    assert [item.to_json() for item in plan.partly_kept] == [
        {"kind": "time zones", "path": "/usr/share/zoneinfo", "kept": 1, "total": 3}
    ]


def test_an_include_under_tmp_keeps_tmp_1777_and_run_is_there(tmp_path: Path) -> None:
    """An include under /tmp planned /tmp as its parent: it stays the essential 1777."""
    data = tmp_path / "server.js"
    data.write_text("// app\n")
    plan = plan_image(BuildOptions((TRUE,), includes=(str(data),)), ImageConfig(entrypoint=None))
    assert plan.root.entries["/tmp"].mode == 0o1777
    run = plan.root.entries["/run"]
    assert (run.kind, run.mode) == (EntryKind.DIR, 0o755)  # nginx's /run/nginx.pid


def test_an_included_private_directory_is_the_same_whatever_else_is_under_it(
    tmp_path: Path,
) -> None:
    """A 0700 directory included is 0700 whether or not a BINARY lies inside it, and a
    non-root --user is warned that it cannot enter it."""
    app = _private_copy(tmp_path)
    private = app.parent.parent
    with collecting() as warnings:
        plan = plan_image(
            BuildOptions((str(app),), includes=(str(private),)),
            ImageConfig(entrypoint=None, user="nonroot"),
        )
    assert plan.root.entries[_in_image(private, tmp_path)].mode == 0o700
    assert any(
        f"{private}: mode 0700" in w and "--user nonroot cannot enter it" in w
        for w in warnings.messages
    ), warnings.messages
