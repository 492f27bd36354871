"""Prove the engine harness: build a FROM-scratch image and run it, without pulling."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from pathlib import Path

import docker
import pytest

DOCKERFILE = b"FROM scratch\nCOPY busybox /busybox\n"


def _context_tar(busybox: Path) -> io.BytesIO:
    """An in-memory build context: the Dockerfile and the static busybox."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(DOCKERFILE)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(DOCKERFILE))
        info = tarfile.TarInfo("busybox")
        info.size = busybox.stat().st_size
        info.mode = 0o755
        with busybox.open("rb") as f:
            tar.addfile(info, f)
    buf.seek(0)
    return buf


@pytest.mark.engine
def test_scratch_image_with_static_busybox_runs(docker_client, static_busybox: Path) -> None:
    api = docker_client.api
    tag = f"scratchpack-harness-test:{uuid.uuid4().hex[:12]}"
    image_id = None
    container = None
    try:
        log = []
        for chunk in api.build(
            fileobj=_context_tar(static_busybox),
            custom_context=True,
            tag=tag,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "error" in chunk:
                pytest.fail(f"image build failed: {chunk['error']}\n{''.join(log)}")
            log.append(chunk.get("stream", ""))
            image_id = chunk.get("aux", {}).get("ID", image_id)
        assert image_id, f"the build reported no image ID:\n{''.join(log)}"

        container = docker_client.containers.create(
            image_id, command=["/busybox", "echo", "hello"], network_disabled=True
        )
        container.start()
        status = container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=True)
        assert status["StatusCode"] == 0, output
        assert output == b"hello\n"
    finally:
        if container is not None:
            container.remove(force=True)
        # By ID when the build reported one, else by tag in case the build got that far.
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image_id or tag, force=True)
