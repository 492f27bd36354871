"""The one in-root walk (scratchpack/inroot.py), over an in-memory tree: table-driven."""

from __future__ import annotations

import pytest

from scratchpack.inroot import Node, NodeKind, WalkError, walk
from tests.cpu_time import thread_cpu_time

DIR, LINK, FILE = NodeKind.DIR, NodeKind.SYMLINK, NodeKind.FILE

TREE = {
    "/usr": Node(DIR),
    "/usr/lib": Node(DIR),
    "/usr/lib/libc.so.6": Node(FILE),
    "/lib": Node(LINK, "usr/lib"),
    "/lib64": Node(LINK, "/usr/lib"),
    "/etc": Node(DIR),
    "/etc/escape": Node(LINK, "../../../../usr/lib"),
    "/etc/host": Node(LINK, "/etc/passwd"),
    "/etc/passwd": Node(FILE),
    "/loop": Node(LINK, "loop"),
    "/file": Node(FILE),
}


@pytest.mark.parametrize(
    ("path", "follow_final", "real"),
    [
        ("/usr/lib/libc.so.6", True, "/usr/lib/libc.so.6"),
        ("/lib/libc.so.6", True, "/usr/lib/libc.so.6"),
        ("/lib64/libc.so.6", True, "/usr/lib/libc.so.6"),
        # ``..`` and absolute targets stop at the top: nothing leads out of the tree.
        ("/etc/escape/libc.so.6", True, "/usr/lib/libc.so.6"),
        ("/../../usr/lib/./libc.so.6", True, "/usr/lib/libc.so.6"),
        ("/etc/host", True, "/etc/passwd"),
        ("/etc/host", False, "/etc/host"),  # the final link is not followed
        ("/lib", False, "/lib"),
        ("/lib/x", False, "/usr/lib/x"),  # ... but its parents are
        ("/", True, "/"),
    ],
)
def test_walk_resolves_inside_the_tree(path: str, follow_final: bool, real: str) -> None:
    walked = walk(path, TREE.get, follow_final=follow_final, missing_literal=not follow_final)
    assert walked is not None and walked[1] == real


def test_steps_record_each_link_and_directory_on_the_way() -> None:
    walked = walk("/lib/libc.so.6", TREE.get)
    assert walked is not None
    assert [(step.path, step.node.kind) for step in walked[0]] == [
        ("/lib", LINK),
        ("/usr", DIR),
        ("/usr/lib", DIR),
        ("/usr/lib/libc.so.6", FILE),
    ]


@pytest.mark.parametrize(
    ("path", "error"),
    [("/loop/x", "too many levels"), ("/file/x", "not a directory"), ("/etc/passwd/x", "not")],
)
def test_loops_and_files_in_the_middle_are_refused(path: str, error: str) -> None:
    with pytest.raises(WalkError, match=error):
        walk(path, TREE.get)


def test_missing_components_end_the_walk_unless_created_or_literal() -> None:
    assert walk("/usr/share/x", TREE.get) is None
    literal = walk("/lib/new/dir/x", TREE.get, follow_final=False, missing_literal=True)
    assert literal is not None and literal[1] == "/usr/lib/new/dir/x"
    made: dict[str, Node] = {}

    def create(path: str) -> Node:
        made[path] = Node(DIR)
        return made[path]

    created = walk("/lib/a/b", lambda p: TREE.get(p) or made.get(p), create=create)
    assert created is not None and created[1] == "/usr/lib/a/b"
    assert list(made) == ["/usr/lib/a", "/usr/lib/a/b"]


def test_links_that_each_add_depth_end_at_the_kernels_path_length() -> None:
    """40 links, each leading 2,000 components deeper, would make a path of 80,000
    components whose every step copied the whole prefix; the kernel stops at 4096
    bytes (ENAMETOOLONG), and so does a walk, at once."""
    deep = "/".join(["d"] * 2000)
    tree: dict[str, Node] = {}

    def lookup(path: str) -> Node | None:
        if path.endswith("/l") or path == "/l":
            return Node(NodeKind.SYMLINK, f"{deep}/l")
        return tree.get(path, Node(NodeKind.DIR))

    with (
        thread_cpu_time() as cpu,  # this thread's work, not the machine's load
        pytest.raises(WalkError, match="longer than 4096 bytes"),
    ):
        walk("/l/x", lookup)
    # Stopped at 4096 bytes: milliseconds; copying a prefix of up to 80,000 components at
    # each step would be seconds.
    assert cpu.seconds < 0.5, f"{cpu.seconds:.2f} s of CPU"


def test_a_path_of_the_kernels_length_is_walked() -> None:
    parts = "/".join(["d"] * 2047)  # 4094 bytes with the leading slash
    steps, real = walk(f"/{parts}", lambda _path: Node(NodeKind.DIR)) or ([], "")
    assert real == f"/{parts}" and len(steps) == 2047
