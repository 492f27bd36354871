"""Names another party chose never become Dockerfile instructions (issue 20).

A package decides the paths of its directories, and a maintainer script the
home of the user it creates: such a directory, owned by that user, is copied
with ``COPY --chown``, so its path reaches the Dockerfile. Every field the
template renders is quoted or refused.
"""

from __future__ import annotations

import json
import re

import pytest

from scratchpack.engine.context import (
    context_chunks,
    context_stream,
    owned_trees,
    render_dockerfile,
)
from scratchpack.errors import InputError
from scratchpack.image.config import ImageConfig
from scratchpack.plan.entries import Entry, EntryKind, Reason

INJECTION = ' .\nLABEL injected=yes\nADD ["http://127.0.0.1:9/x", "/x"]'
# Paths without control characters: quoted, each must reach the image as it is.
AWKWARD = [
    "/srv/a b",
    "/srv/$HOME",
    "/srv/${X:-y}",
    "/srv/q'x",
    '/srv/dq"x',
    "/srv/bs\\x",
    "/srv/br[x]*?",
    "/srv/-x",
    "/srv/--chown=0:0",
    "/srv/h#x",
    "/srv/é",
    "/srv/c,x",
]
INSTRUCTIONS = re.compile(r"^(FROM|COPY|ENV|LABEL|EXPOSE|WORKDIR|USER|ENTRYPOINT|CMD) ")


def _owned_dir(path: str) -> Entry:
    return Entry(path, EntryKind.DIR, 0o755, Reason.PACKAGE, uid=100, gid=101)


def _unescape(word: str) -> str:
    """What the builder's word processing makes of an escaped word."""
    return re.sub(r"\\(.)", r"\1", word)


def _copy_lines(dockerfile: str) -> list[list[str]]:
    return [
        json.loads(line.removeprefix("COPY --chown=100:101 "))
        for line in dockerfile.splitlines()
        if line.startswith("COPY --chown=")
    ]


def test_a_package_path_with_a_newline_is_refused_not_rendered() -> None:
    entries = [_owned_dir("/srv"), _owned_dir("/srv/x" + INJECTION)]
    with pytest.raises(InputError, match="control character"):
        render_dockerfile(ImageConfig(entrypoint=("/bin/app",)), owned_trees(entries))


@pytest.mark.parametrize("path", AWKWARD)
def test_an_awkward_package_path_is_one_literal_copy_destination(path: str) -> None:
    entries = [_owned_dir(path), _owned_dir(path + "/inner")]
    dockerfile = render_dockerfile(ImageConfig(entrypoint=("/bin/app",)), owned_trees(entries))
    for line in dockerfile.splitlines():
        assert not line.strip() or line.startswith("#") or INSTRUCTIONS.match(line), line
    copies = _copy_lines(dockerfile)
    assert [_unescape(dest) for _source, dest in copies] == ["/srv/", path + "/"]
    for source, _dest in copies:
        assert re.fullmatch(r"owned/\d+/", source)  # ours: never globbed or expanded


def test_the_context_holds_owned_entries_under_numbered_directories() -> None:
    entries = [
        Entry("/srv", EntryKind.DIR, 0o755, Reason.PACKAGE),
        _owned_dir("/srv/$HOME"),
        Entry("/srv/$HOME/f", EntryKind.FILE, 0o644, Reason.PACKAGE, data=b"x", uid=100, gid=101),
    ]
    import io
    import tarfile

    context = context_stream(entries, "FROM scratch\n")
    with tarfile.open(fileobj=io.BytesIO(b"".join(context_chunks(context)))) as tar:
        names = sorted(tar.getnames())
    assert names == ["Dockerfile", "owned/0/$HOME", "owned/1/f", "rootfs/srv"]
