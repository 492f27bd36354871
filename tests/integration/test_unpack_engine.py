"""Reading images from the engine (docker save) and unpacking them like umoci does."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from scratchpack.errors import EngineError
from scratchpack.image.readers import open_image
from scratchpack.image.unpack import UnpackReport
from tests.imagekit import (
    engine_of,
    one_line,
    open_and_unpack,
    snapshot,
    tool,
)

# ------------------------------------------------------------------------ engine

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY tree/ /
RUN ["/bin/busybox", "rm", "/gone.txt"]
RUN ["/bin/busybox", "sh", "-c", "rm -r /d && mkdir /d && echo new > /d/new && \
ln /d/new /d/newlink && ln -s /d/new /link && chmod 4755 /bin/suid"]
ENV GREETING=hi
LABEL org.example=yes
EXPOSE 8080
WORKDIR /d
USER 65532
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/busybox"]
CMD ["true"]
"""


def build_context(busybox: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = {
            "Dockerfile": (DOCKERFILE.encode(), 0o644),
            "tree/gone.txt": (b"gone", 0o644),
            "tree/d/old": (b"old", 0o644),
            "tree/d/sub/older": (b"older", 0o644),
            "tree/bin/suid": (b"#!/bin/busybox sh\n", 0o755),
        }
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        tar.add(busybox, arcname="busybox")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine_image(docker_client: Any, static_busybox: Path) -> Iterator[str]:
    """An image built FROM scratch in the engine (RUN steps make real whiteouts)."""
    tag = f"scratchpack-test/unpack:{uuid.uuid4().hex[:12]}"
    try:
        stream = docker_client.api.build(
            fileobj=io.BytesIO(build_context(static_busybox)),
            custom_context=True,
            tag=tag,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            assert "error" not in chunk, chunk
        yield tag
    finally:
        with contextlib.suppress(docker.errors.DockerException):  # never built, or gone
            docker_client.images.remove(tag, force=True)


def check_engine_root(root: Path, report: UnpackReport) -> None:
    assert not (root / "gone.txt").exists()
    assert sorted(os.listdir(root / "d")) == ["new", "newlink"]
    assert (root / "d/new").stat().st_ino == (root / "d/newlink").stat().st_ino
    assert os.readlink(root / "link") == "/d/new"
    assert stat.S_IMODE((root / "bin/suid").stat().st_mode) == 0o4755
    assert report.whiteouts_applied >= 2 and report.warnings == []


@pytest.mark.engine
def test_docker_save_archive_and_engine_name(
    tmp_path: Path, docker_client: Any, engine_image: str
) -> None:
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as out:
        for chunk in docker_client.api.get_image(engine_image):
            out.write(chunk)
    image_id = docker_client.images.get(engine_image).id

    saved, saved_root, saved_report = open_and_unpack(tmp_path, archive)
    assert saved.format.value == "docker-archive" and saved.digest == image_id
    check_engine_root(saved_root, saved_report)
    runtime = saved.image.config.runtime
    assert runtime.entrypoint == ("/bin/busybox",) and runtime.cmd == ("true",)
    assert "GREETING=hi" in runtime.env and runtime.exposed_ports == ("8080/tcp",)
    assert runtime.working_dir == "/d" and runtime.user == "65532"
    assert runtime.stop_signal == "SIGINT" and runtime.labels == (("org.example", "yes"),)

    named, named_root, named_report = open_and_unpack(tmp_path, engine_image, docker_client)
    assert named.format.value == "engine" and named.digest == image_id
    assert named.names == (engine_image,)
    check_engine_root(named_root, named_report)
    assert snapshot(named_root) == snapshot(saved_root)

    # umoci, on skopeo's OCI copy of the saved archive, is the oracle for the merged tree.
    skopeo, umoci = tool("skopeo"), tool("umoci")
    subprocess.run(
        [skopeo, "copy", "-q", f"docker-archive:{archive}", f"oci:{tmp_path}/oci:x"],
        check=True,
        capture_output=True,
    )
    copy, copy_root, _ = open_and_unpack(tmp_path, tmp_path / "oci")
    assert copy.format.value == "oci-layout" and snapshot(copy_root) == snapshot(saved_root)
    bundle = tmp_path / "bundle"
    subprocess.run(
        [umoci, "unpack", "--image", f"{tmp_path}/oci:x", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert snapshot(bundle / "rootfs") == snapshot(saved_root)


@pytest.mark.engine
def test_missing_engine_image_fails_in_one_line(tmp_path: Path, docker_client: Any) -> None:
    name = f"scratchpack-test/absent:{uuid.uuid4().hex[:12]}"
    with pytest.raises(EngineError) as err:
        open_image(name, tmp_path, engine_of(docker_client))
    assert one_line(err) == f"no image {name} in the local engine"
    assert err.value.exit_code == 3
    assert not list(tmp_path.iterdir())
