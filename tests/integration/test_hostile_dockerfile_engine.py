"""A real engine builds owned directories with awkward, package-chosen names where they
belong, and nothing else (issue 20)."""

from __future__ import annotations

import io
import tarfile

import pytest

from scratchpack.engine.client import Engine
from scratchpack.engine.context import context_stream, owned_trees, render_dockerfile
from scratchpack.image.config import ImageConfig
from scratchpack.plan.entries import Entry, EntryKind, Reason
from tests.unit.test_hostile_dockerfile import AWKWARD

pytestmark = pytest.mark.engine


def test_awkward_owned_paths_land_exactly_with_their_owner(docker_client) -> None:
    entries = [Entry("/srv", EntryKind.DIR, 0o755, Reason.PACKAGE)]
    for path in AWKWARD:
        entries.append(Entry(path, EntryKind.DIR, 0o750, Reason.PACKAGE, uid=100, gid=101))
        entries.append(
            Entry(path + "/f", EntryKind.FILE, 0o640, Reason.PACKAGE, data=b"x", uid=100, gid=101)
        )
    config = ImageConfig(entrypoint=("/nothing",), labels=(("a", "b"),))
    dockerfile = render_dockerfile(config, owned_trees(entries))
    context = context_stream(entries, dockerfile)
    tag = "scratchpack-test/hostile-dockerfile:1"
    api = docker_client.api
    Engine.from_client(docker_client).build(context, tag)  # the build path build itself takes
    try:
        assert docker_client.images.get(tag).labels == {"a": "b"}
        container = api.create_container(tag)
        try:
            with tarfile.open(fileobj=io.BytesIO(b"".join(api.export(container)))) as tar:
                found = {
                    "/" + member.name: (member.uid, member.gid, member.mode & 0o7777)
                    for member in tar
                    if member.name.startswith("srv/")
                }
        finally:
            api.remove_container(container)
    finally:
        docker_client.images.remove(tag, force=True)
    expected = {}
    for path in AWKWARD:
        expected[path] = (100, 101, 0o750)
        expected[path + "/f"] = (100, 101, 0o640)
    assert found == expected
