"""A traced image that fights back: it cannot reach the host, nor stall or flood the tracer.

The traced program (a static busybox shell, FROM scratch) tries to plant a
setuid copy of itself and a device node where the trace log goes and into the
tracer's mount, replaces its own trace log with a FIFO or a link to
``/dev/zero``, and leaves volumes behind. The host must see none of it, the
tool must not hang, and the container and its volumes must go.
"""

from __future__ import annotations

import contextlib
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from scratchpack.engine.client import Engine
from scratchpack.image.config import RuntimeConfig
from scratchpack.trace import run as trace_run
from scratchpack.trace.run import trace_image
from scratchpack.trace.tracer import LOG_DIR, TRACER_MOUNT, TraceError, TracerTree
from tests import ownership
from tests.imagekit import busybox_entries, load_source

pytestmark = pytest.mark.engine

PLANT = f"""
cp /bin/busybox {LOG_DIR}/suid; chmod 4755 {LOG_DIR}/suid
mknod {LOG_DIR}/null c 1 3; chmod 666 {LOG_DIR}/null
cp /bin/busybox {TRACER_MOUNT}/suid 2>/dev/null
mknod {TRACER_MOUNT}/null c 1 3 2>/dev/null
echo planted
"""


@pytest.fixture
def image(docker_client: Any, static_busybox: Path, tmp_path: Path) -> Iterator[str]:
    tag = f"scratchpack-test/hostile-trace:{uuid.uuid4().hex[:10]}"
    runtime = {
        "Entrypoint": ["/bin/busybox", "sh", "-c"],
        "Env": ["PATH=/bin"],
        "Volumes": {"/data": {}},
    }
    load_source(docker_client, tmp_path, tag, runtime, busybox_entries(static_busybox))
    yield tag
    with contextlib.suppress(docker.errors.DockerException):
        docker_client.images.remove(tag, force=True)


def config(script: str) -> RuntimeConfig:
    return RuntimeConfig.from_json(
        {"Entrypoint": ["/bin/busybox", "sh", "-c", script], "Env": ["PATH=/bin"],
         "Volumes": {"/data": {}}},
        "test",
    )  # fmt: skip


def leftovers(docker_client: Any) -> list[Any]:
    """This test's traced containers (others' run beside it: tests/ownership.py)."""
    return ownership.containers(docker_client, "scratchpack.trace")


def set_id_or_device_files(top: Path) -> list[Path]:
    found = []
    for path in top.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or mode & (stat.S_ISUID | stat.S_ISGID):
            found.append(path)
    return found


def test_a_traced_image_cannot_plant_files_on_the_host(
    docker_client: Any,
    image: str,
    tracer: TracerTree,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    unused_before = ownership.unused_volumes(docker_client)
    engine = Engine.from_client(docker_client)
    result = trace_image(engine, image, config(PLANT), tracer, timeout=60)
    assert result.exit_code == 0
    assert set_id_or_device_files(tmp_path) == [] and set_id_or_device_files(tracer.root) == []
    assert not (tracer.root / "suid").exists() and not (tracer.root / "null").exists()
    assert leftovers(docker_client) == []
    assert ownership.volumes_left(docker_client, unused_before) == set()  # /data went too
    assert unused_before <= {v["Name"] for v in docker_client.api.volumes()["Volumes"] or ()}


@pytest.mark.parametrize(
    "replacement",
    [f"rm {LOG_DIR}/trace.log; mkfifo {LOG_DIR}/trace.log",
     f"rm {LOG_DIR}/trace.log; ln -s /dev/zero {LOG_DIR}/trace.log"],
    ids=["fifo", "dev-zero"],
)  # fmt: skip
def test_a_log_replaced_by_a_fifo_or_a_link_is_refused_without_a_hang(
    docker_client: Any, image: str, tracer: TracerTree, replacement: str
) -> None:
    engine = Engine.from_client(docker_client)
    with pytest.raises(TraceError, match="not a regular file"):
        trace_image(engine, image, config(replacement), tracer, timeout=60)
    assert leftovers(docker_client) == []


def test_a_flooded_log_is_refused(
    docker_client: Any, image: str, tracer: TracerTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_run, "MAX_LOG", 1 << 20)
    flood = f"head -c 3000000 /dev/zero | tr '\\0' x >> {LOG_DIR}/trace.log"
    engine = Engine.from_client(docker_client)
    with pytest.raises(TraceError, match="more than"):
        trace_image(engine, image, config(flood), tracer, timeout=60)
    assert leftovers(docker_client) == []
