"""``--copy``: the user's own files from this machine, beside a root of packages (issue 22, 1).

The spec's grammar, the entries a copy plans (modes, owners, links), and the closure of a
copied program resolved against a fake package root that has a library this machine lacks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.copies import (
    CopiedRoot,
    Copy,
    Owner,
    add_copies,
    collect,
    copied_files,
    host_side_hint,
    own_copies,
    owner_names,
    parse_copy,
)
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.image_plan import BuildOptions, ImagePlan, plan_image
from scratchpack.plan.rootplan import RootPlan
from tests.cfixtures import compile_exe, compile_lib, is_host_glibc_x86_64


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cfg", Copy("cfg", "/app/cfg")),
        (
            "./conf/haproxy.cfg:/etc/haproxy/haproxy.cfg",
            Copy("./conf/haproxy.cfg", "/etc/haproxy/haproxy.cfg"),
        ),
        ("site/:/var/www//html/", Copy("site/", "/var/www/html/")),
        ("start.sh:/start.sh,mode=0755", Copy("start.sh", "/start.sh", mode=0o755)),
        ("a:/b,owner=www-data", Copy("a", "/b", Owner("www-data"))),
        ("a:/b,owner=33:33,mode=640", Copy("a", "/b", Owner("33", "33"), 0o640)),
        (
            "a:/b,mode=0o600,owner=haproxy:haproxy",
            Copy("a", "/b", Owner("haproxy", "haproxy"), 0o600),
        ),
        ("odd,name:/x,y", Copy("odd,name", "/x,y")),  # a comma of the path stays in it
        ("a:/./b/../c/", None),  # refused: '..'
    ],
)
def test_specs_parse_into_copies(spec: str, expected: Copy | None) -> None:
    if expected is None:
        with pytest.raises(InputError):
            parse_copy(spec)
        return
    assert parse_copy(spec) == expected
    assert parse_copy(spec).spec == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (":/x", "expected SRC[:DEST][,owner=USER[:GROUP]][,mode=OCTAL]"),
        ("a:", "expected SRC[:DEST]"),
        ("a:etc/x", "DEST must be an absolute path in the image, without '..'"),
        ("a:/etc/../x", "without '..'"),
        ("a:/x\ny", "DEST has a control character"),
        ("a:/x,chmod=644", "unknown setting 'chmod'; the settings are owner= and mode="),
        ("a:/x,mode=644,mode=600", "mode= is given twice"),
        ("a:/x,mode=rw", "mode=rw is not an octal mode such as 0644"),
        ("a:/x,mode=0888", "not an octal mode"),
        ("a:/x,owner=", "owner= is not USER[:GROUP]"),
        ("a:/x,owner=bad name", "owner=bad name is not USER[:GROUP]"),
        ("a:/x,owner=99999999999", "is not a valid id"),
        ("/:", "expected SRC[:DEST]"),
        ("/", "name a DEST for it"),
    ],
)
def test_bad_specs_are_one_line_naming_the_spec(spec: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_copy(spec)
    assert str(caught.value).startswith(f"--copy {spec}") or repr(spec) in str(caught.value)
    assert message in str(caught.value)


def test_a_source_not_on_this_machine_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        collect([parse_copy("./x:/etc/x")])
    assert str(caught.value) == (
        f"--copy ./x:/etc/x: ./x is not on this machine (looked for from {tmp_path})"
    )


def _tree(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("hello\n")
    (site / "css/main.css").write_text("body {}\n")
    (site / "home.html").symlink_to("index.html")
    (site / "outside").symlink_to("/etc/hostname")  # stays a link: nothing of it is brought
    os.chmod(site / "index.html", 0o600)
    os.chmod(site / "css", 0o700)
    return site


def test_a_tree_lands_at_dest_with_links_kept_and_root_as_owner(tmp_path: Path) -> None:
    site = _tree(tmp_path)
    plan = RootPlan(source_parent_modes=False)
    add_copies(plan, collect([parse_copy(f"{site}:/var/www/html")]))
    entries = plan.entries
    assert entries["/var/www/html"].kind is EntryKind.DIR
    assert entries["/var/www"].implied and entries["/var/www"].mode == 0o755
    assert entries["/var/www/html/index.html"].mode == 0o600  # the host's, as COPY keeps it
    assert entries["/var/www/html/css"].mode == 0o700
    assert entries["/var/www/html/home.html"].target == "index.html"
    assert entries["/var/www/html/outside"].target == "/etc/hostname"
    assert "/etc/hostname" not in entries
    assert {(e.uid, e.gid) for e in entries.values()} == {(0, 0)}
    assert entries["/var/www/html/css/main.css"].reason is Reason.COPY
    assert entries["/var/www/html/css/main.css"].why == f"copy {site}"


def test_mode_applies_to_every_file_and_directory_as_copy_chmod_does(tmp_path: Path) -> None:
    site = _tree(tmp_path)
    plan = RootPlan(source_parent_modes=False)
    add_copies(plan, collect([parse_copy(f"{site}:/srv/site,mode=0750")]))
    modes = {e.path: e.mode for e in plan.entries.values() if e.kind is not EntryKind.SYMLINK}
    assert modes.pop("/srv") == 0o755  # a parent COPY makes
    assert set(modes.values()) == {0o750}, modes


def test_a_copy_replaces_what_the_root_put_there(tmp_path: Path) -> None:
    """The package's own haproxy.cfg gives way, as a COPY after apt-get install does."""
    config = tmp_path / "haproxy.cfg"
    config.write_text("frontend mine\n")
    plan = RootPlan(source_parent_modes=False)
    plan.add(Entry("/etc/haproxy/haproxy.cfg", EntryKind.FILE, 0o644, Reason.PACKAGE, source="/x"))
    add_copies(plan, collect([parse_copy(f"{config}:/etc/haproxy/")]))
    entry = plan.entries["/etc/haproxy/haproxy.cfg"]
    assert (entry.reason, entry.source) == (Reason.COPY, str(config))


def test_owners_are_named_in_the_images_planned_accounts(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    copies = [
        parse_copy(f"{config}:/etc/haproxy/haproxy.cfg,owner=haproxy,mode=0640"),
        parse_copy(f"{config}:/etc/a,owner=haproxy:adm"),
        parse_copy(f"{config}:/etc/b,owner=1234"),
        parse_copy(f"{config}:/etc/c,owner=1234:5"),
    ]
    assert owner_names(copies) == {"haproxy", "adm"}
    plan = RootPlan(source_parent_modes=False)
    copied = collect(copies)
    add_copies(plan, copied)
    plan.add_generated(
        "/etc/passwd", b"root:x:0:0::/root:/bin/sh\nhaproxy:x:101:104::/:/x\n", Reason.ESSENTIAL
    )
    plan.add_generated("/etc/group", b"root:x:0:\nadm:x:4:\nhaproxy:x:104:\n", Reason.ESSENTIAL)
    own_copies(plan, copied)
    owners = {
        path: (plan.entries[path].uid, plan.entries[path].gid, plan.entries[path].mode)
        for path in ("/etc/haproxy/haproxy.cfg", "/etc/a", "/etc/b", "/etc/c")
    }
    assert owners == {
        "/etc/haproxy/haproxy.cfg": (101, 104, 0o640),
        "/etc/a": (101, 4, config.stat().st_mode & 0o7777),
        "/etc/b": (1234, 1234, config.stat().st_mode & 0o7777),
        "/etc/c": (1234, 5, config.stat().st_mode & 0o7777),
    }
    assert plan.entries["/etc/haproxy"].uid == 0  # a parent stays root's


def test_an_unknown_owner_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c"
    config.write_text("x\n")
    plan = RootPlan(source_parent_modes=False)
    copied = collect([parse_copy(f"{config}:/etc/c,owner=ghost")])
    add_copies(plan, copied)
    plan.add_generated("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n", Reason.ESSENTIAL)
    with pytest.raises(InputError) as caught:
        own_copies(plan, copied)
    assert str(caught.value).startswith(
        f"--copy {config}:/etc/c,owner=ghost: no user 'ghost' in the image's /etc/passwd"
    )


def test_include_paths_missing_in_a_root_but_here_get_a_hint(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    here = tmp_path / "haproxy.cfg"
    here.write_text("x\n")
    root = RootFS(str(tmp_path / "root"))
    assert host_side_hint(str(here), root, packages=True) == (
        "is not in the package root (--include and BINARY name paths inside it); "
        f"a file of this machine goes with --copy {here}:DEST"
    )
    assert host_side_hint(str(tmp_path / "nothing"), root, packages=True) is None
    assert host_side_hint(str(here), RootFS(), packages=False) is None


glibc_x86_64 = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="links against the host's glibc x86-64"
)


def _package_root(top: Path) -> Path:
    """A merged-/usr root with the host's loader and libc, and a library only it has."""
    root = top / "root"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "usr/lib64").mkdir()
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy(os.path.realpath(f"/lib/x86_64-linux-gnu/{name}"), libdir / name)
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    compile_lib(libdir, "libpkgonly.so.1")
    return root


@glibc_x86_64
def test_a_copied_program_gets_its_closure_from_the_package_root(tmp_path: Path) -> None:
    root = _package_root(tmp_path)
    mine = compile_exe(tmp_path / "src", "mine", needed=["libpkgonly.so.1"])
    copied = collect([parse_copy(f"{mine}:/usr/local/bin/mine")])
    assert copied_files(copied) == ["/usr/local/bin/mine"]
    resolver = Resolver(str(root), library_path="")
    resolver.root = CopiedRoot(resolver.root, copied)
    closure = resolver.resolve("/usr/local/bin/mine")
    assert not closure.missing
    libraries = {library.soname: library.path for library in closure.libraries}
    assert libraries["libpkgonly.so.1"].endswith("/x86_64-linux-gnu/libpkgonly.so.1")
    assert resolver.root.host_path("/usr/local/bin/mine") == str(mine)


@glibc_x86_64
def test_a_copied_tree_brings_its_own_libraries_through_origin(tmp_path: Path) -> None:
    """``$ORIGIN`` is the DEST's directory: libraries shipped beside the program are found
    among the copies, and planning them adds nothing from elsewhere."""
    root = _package_root(tmp_path)
    app = tmp_path / "app"
    compile_lib(app / "lib", "libown.so.1.0", soname="libown.so.1")
    (app / "lib/libown.so.1").symlink_to("libown.so.1.0")
    compile_exe(app / "bin", "server", needed=["libown.so.1"], runpath="$ORIGIN/../lib")
    copied = collect([parse_copy(f"{app}:/opt/server")])
    resolver = Resolver(str(root), library_path="")
    view = CopiedRoot(resolver.root, copied)
    resolver.root = view
    closure = resolver.resolve("/opt/server/bin/server")
    assert not closure.missing, closure.missing
    own = next(library for library in closure.libraries if library.soname == "libown.so.1")
    assert own.path == "/opt/server/bin/../lib/libown.so.1"
    plan = RootPlan(source_parent_modes=False)
    assert plan.add_path(view, own.path, Reason.LIBRARY) == "/opt/server/lib/libown.so.1.0"
    add_copies(plan, copied)
    assert plan.entries["/opt/server/lib/libown.so.1"].kind is EntryKind.SYMLINK
    assert plan.entries["/opt/server/lib/libown.so.1.0"].reason is Reason.COPY


def test_a_dest_below_a_link_of_the_root_is_found_through_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    mine = tmp_path / "libmine.so"
    mine.write_bytes(b"\x7fELF")
    view = CopiedRoot(RootFS(str(root)), collect([parse_copy(f"{mine}:/lib/libmine.so")]))
    assert view.host_path("/usr/lib/libmine.so") == str(mine)
    assert view.host_path("/lib/libmine.so") == str(mine)
    assert view.host_path("/usr/lib/other.so") is None


# -- plan_image: a copy among everything a build plans -------------------------------------


def _build(
    binaries: tuple[str, ...], *copies: str, root: Path | None = None, user: str | None = None
) -> ImagePlan:
    options = BuildOptions(
        binaries, root=str(root) if root else None, copies=tuple(parse_copy(c) for c in copies)
    )
    return plan_image(options, ImageConfig(entrypoint=None, user=user))


@glibc_x86_64
def test_a_host_build_copies_with_owner_and_mode(tmp_path: Path) -> None:
    config = tmp_path / "app.conf"
    config.write_text("x = 1\n")
    true = shutil.which("true") or "/usr/bin/true"
    plan = _build((true,), f"{config}:/etc/app.conf,owner=nobody,mode=0600")
    entry = plan.root.entries["/etc/app.conf"]
    assert (entry.reason, entry.uid, entry.gid, entry.mode) == (Reason.COPY, 65534, 65534, 0o600)


@glibc_x86_64
def test_a_root_build_runs_a_copied_program_with_the_roots_libraries(tmp_path: Path) -> None:
    root = _package_root(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/x\n")
    (root / "etc/group").write_text("root:x:0:\nwww-data:x:33:\n")
    mine = compile_exe(tmp_path / "src", "mine", needed=["libpkgonly.so.1"])
    plan = _build(("/app/mine",), f"{mine},owner=www-data", root=root)
    entries = plan.root.entries
    assert plan.config.entrypoint == ("/app/mine",)
    assert (entries["/app/mine"].reason, entries["/app/mine"].uid) == (Reason.COPY, 33)
    pkg = [
        e for e in entries.values() if e.detail == "libpkgonly.so.1" and e.kind is EntryKind.FILE
    ]
    assert pkg and pkg[0].reason is Reason.LIBRARY
    assert b"\nwww-data:x:33:33:" in b"\n" + (entries["/etc/passwd"].data or b"")


@glibc_x86_64
def test_a_copied_passwd_is_the_images_and_owners_are_named_in_it(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\napp:x:4242:4243::/:/bin/sh\n")
    config = tmp_path / "c"
    config.write_text("c\n")
    true = shutil.which("true") or "/usr/bin/true"
    plan = _build((true,), f"{passwd}:/etc/passwd", f"{config}:/etc/c,owner=app")
    assert plan.root.entries["/etc/passwd"].source == str(passwd)
    assert (plan.root.entries["/etc/c"].uid, plan.root.entries["/etc/c"].gid) == (4242, 4243)


@glibc_x86_64
def test_include_and_binary_missing_in_a_root_but_here_point_to_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _package_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    with pytest.raises(InputError) as caught:
        _build(("./tool",), root=root)
    assert str(caught.value) == (
        f"./tool is not in the root {root} (--include and BINARY name paths inside it); "
        "a file of this machine goes with --copy ./tool:DEST"
    )


def test_scratchpack_yaml_takes_copy_as_a_list_of_strings(tmp_path: Path) -> None:
    from scratchpack.cli import build
    from scratchpack.config_file import read_config

    path = tmp_path / "scratchpack.yaml"
    path.write_text(
        "package: [haproxy]\ncopy:\n"
        "  - haproxy.cfg:/etc/haproxy/haproxy.cfg,owner=haproxy,mode=0640\n"
        "  - site:/srv/site\n"
    )
    assert read_config(path, build)["copies"] == (
        "haproxy.cfg:/etc/haproxy/haproxy.cfg,owner=haproxy,mode=0640",
        "site:/srv/site",
    )
