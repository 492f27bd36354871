"""Smoke tests of the Debian images of tests/debian_images.py, run with their own config."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.debian_images import (  # noqa: F401
    debian_curl_image,
    debian_nginx_image,
    debian_python_image,
    debian_root_tar,
)


@pytest.fixture
def containers(docker_client) -> Iterator[list]:
    """Containers a test creates, force-removed afterwards."""
    created: list = []
    yield created
    for container in created:
        container.remove(force=True)


def run_to_end(docker_client, containers: list, image: str, timeout: int = 60) -> str:
    container = docker_client.containers.create(image)
    containers.append(container)
    container.start()
    status = container.wait(timeout=timeout)
    logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
    assert status["StatusCode"] == 0, logs
    return logs


def test_root_tar_is_cached(debian_root_tar):  # noqa: F811
    assert debian_root_tar.is_file()
    assert debian_root_tar.stat().st_size > 50_000_000


@pytest.mark.engine
def test_images_have_the_config(
    docker_client,
    debian_nginx_image,  # noqa: F811
    debian_curl_image,  # noqa: F811
):
    nginx = docker_client.images.get(debian_nginx_image).attrs["Config"]
    assert nginx["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert "80/tcp" in nginx["ExposedPorts"]
    assert any(env.startswith("PATH=/usr/local/sbin:") for env in nginx["Env"])
    curl = docker_client.images.get(debian_curl_image).attrs["Config"]
    assert curl["Entrypoint"] == ["curl"]
    assert curl["Cmd"] == ["--version"]


@pytest.mark.engine
def test_nginx_serves_its_default_page(
    docker_client,
    containers,
    debian_nginx_image,  # noqa: F811
):
    container = docker_client.containers.create(
        debian_nginx_image, ports={"80/tcp": ("127.0.0.1", None)}
    )
    containers.append(container)
    container.start()
    container.reload()
    port = int(container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
    deadline = time.monotonic() + 30
    while True:
        try:
            response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            break
        except requests.ConnectionError:
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                logs = container.logs().decode(errors="replace")
                pytest.fail(f"nginx does not answer (status {container.status}):\n{logs}")
            time.sleep(0.2)
    assert response.status_code == 200
    assert "Welcome to nginx" in response.text


@pytest.mark.engine
def test_curl_prints_its_version(
    docker_client,
    containers,
    debian_curl_image,  # noqa: F811
):
    logs = run_to_end(docker_client, containers, debian_curl_image)
    assert logs.startswith("curl 7.88"), logs


@pytest.mark.engine
def test_python_prints_sqlite_and_ssl(
    docker_client,
    containers,
    debian_python_image,  # noqa: F811
):
    logs = run_to_end(docker_client, containers, debian_python_image)
    versions = json.loads(logs)
    assert versions["sqlite"].startswith("3.")
    assert versions["ssl"].startswith("OpenSSL 3.")
