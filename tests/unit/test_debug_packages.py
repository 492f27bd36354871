"""``debug --package``: the capability table, the sidecar's user and capabilities, the options."""

from __future__ import annotations

import pytest

from scratchpack.commands.debug import TOOLS_REPOSITORY, packages_key, tools_request
from scratchpack.engine.attach import SidecarAccess, runs_as_root, sidecar_plan
from scratchpack.errors import InputError, ScratchpackError
from scratchpack.owner import owner_of
from scratchpack.plan.debug import TOOL_CAPABILITIES, tool_capabilities


def test_ptrace_tools_get_sys_ptrace_only() -> None:
    for tool in ("strace", "ltrace", "gdb", "gdbserver"):
        assert tool_capabilities([f"/usr/bin/{tool}"]) == {"SYS_PTRACE"}


def test_capture_tools_get_raw_sockets_and_net_admin() -> None:
    assert tool_capabilities(["/usr/bin/tcpdump"]) == {"NET_RAW", "NET_ADMIN"}
    assert tool_capabilities(["ping"]) == {"NET_RAW"}


def test_other_programs_need_nothing_and_needs_add_up() -> None:
    assert tool_capabilities(["/usr/bin/curl", "/bin/ps", "strace-log-merge"]) == frozenset()
    assert tool_capabilities(["/usr/bin/strace", "/usr/bin/tcpdump"]) == {
        "SYS_PTRACE",
        "NET_RAW",
        "NET_ADMIN",
    }


def test_the_table_never_grants_host_wide_capabilities() -> None:
    granted = set().union(*TOOL_CAPABILITIES.values())
    assert not granted & {"SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "ALL", "DAC_READ_SEARCH"}


def test_busybox_tools_keep_sys_ptrace() -> None:
    plan = sidecar_plan(SidecarAccess(), "", "web")
    assert plan.capabilities == ("SYS_PTRACE",)
    assert plan.user is None


def test_package_tools_next_to_a_root_target_get_only_their_own() -> None:
    assert sidecar_plan(SidecarAccess(frozenset()), "", "web").capabilities == ()
    plan = sidecar_plan(SidecarAccess(frozenset({"NET_RAW", "NET_ADMIN"})), "0", "web")
    assert plan.capabilities == ("NET_ADMIN", "NET_RAW")


def test_a_root_sidecar_beside_another_user_gets_ptrace_for_proc_1_root() -> None:
    plan = sidecar_plan(SidecarAccess(frozenset({"NET_RAW"})), "1000", "web")
    assert plan.capabilities == ("NET_RAW", "SYS_PTRACE")
    assert plan.user is None


def test_as_target_user_takes_its_numeric_user_and_no_extra_ptrace() -> None:
    plan = sidecar_plan(SidecarAccess(frozenset(), as_target_user=True), "1000:1000", "web")
    assert plan.user == "1000:1000"
    assert plan.capabilities == ()


def test_as_target_user_of_a_root_target_stays_root() -> None:
    assert sidecar_plan(SidecarAccess(frozenset(), as_target_user=True), "root", "w").user is None


@pytest.mark.parametrize("user", ["nobody", "app:app", "1000:staff", "$(id)"])
def test_as_target_user_refuses_names(user: str) -> None:
    with pytest.raises(InputError, match="numeric UID"):
        sidecar_plan(SidecarAccess(frozenset(), as_target_user=True), user, "web")


def test_runs_as_root() -> None:
    assert all(runs_as_root(user) for user in ("", "0", "root", "0:0", "root:root"))
    assert not any(runs_as_root(user) for user in ("1000", "nobody", "00"))


def test_tools_request_checks_its_words() -> None:
    assert tools_request((), None) is None
    request = tools_request(("strace", "tcpdump", "strace"), "bookworm")
    assert request is not None
    assert request.packages == ("strace", "tcpdump")
    with pytest.raises(InputError, match="--suite"):
        tools_request((), "bookworm")
    for bad in ("-oAPT::x=1", "strace;id", ""):
        with pytest.raises(ScratchpackError):
            tools_request((bad,), None)
    with pytest.raises(ScratchpackError):
        tools_request(("strace",), "bookworm/../x")


def test_tools_tag_is_not_a_leftover_prune_removes() -> None:
    tag = f"{TOOLS_REPOSITORY}:{packages_key(('strace=6.1-0.1:amd64',))[:20]}"
    assert owner_of(tag) is None


def test_packages_key_follows_every_package() -> None:
    one = packages_key(("strace=6.1-0.1:amd64", "libc6=2.36-9:amd64"))
    assert one == packages_key(("libc6=2.36-9:amd64", "strace=6.1-0.1:amd64"))
    assert one != packages_key(("strace=6.1-0.1:amd64", "libc6=2.36-9+deb12u1:amd64"))


def test_tools_never_shadow_the_images_files() -> None:
    from scratchpack.inroot import Node, NodeKind
    from scratchpack.plan.debug import tools_onto_image
    from scratchpack.plan.entries import Entry, EntryKind, Reason
    from scratchpack.plan.rootplan import RootPlan

    image = {
        "/bin": Node(NodeKind.SYMLINK, "usr/bin"),
        "/usr": Node(NodeKind.DIR),
        "/usr/bin": Node(NodeKind.DIR),
        "/usr/bin/sh": Node(NodeKind.FILE),
        "/etc": Node(NodeKind.DIR),
        "/etc/passwd": Node(NodeKind.FILE),
    }
    tools = RootPlan()
    for path in ("/usr", "/usr/bin", "/etc"):
        tools.add(Entry(path, EntryKind.DIR, 0o755, Reason.PACKAGE))
    for path in ("/usr/bin/gdb", "/usr/bin/sh", "/etc/passwd"):
        tools.add(Entry(path, EntryKind.FILE, 0o755, Reason.PACKAGE, source="/dev/null"))
    tools.add(Entry("/bin", EntryKind.SYMLINK, 0o777, Reason.PACKAGE, target="usr/bin"))
    merged, left_out = tools_onto_image(tools, image)
    assert set(left_out) == {"/usr/bin/sh", "/etc/passwd", "/bin"}
    files = {entry.path for entry in merged.entries.values() if entry.kind is EntryKind.FILE}
    assert files == {"/usr/bin/gdb"}
