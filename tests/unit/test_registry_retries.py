"""A registry that is busy, overloaded or drops connections: the push retries, then says why.

Fake registries on 127.0.0.1 answer the push flow and fail on purpose: 429
with ``Retry-After``, 502/503/504 and 500 on a blob upload, a connection cut
in the middle of an upload. The push must get through, restarting the upload
that broke; a registry that keeps failing ends in one line naming the
registry, the repository and the step.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from scratchpack.image import registry_transport
from scratchpack.image.registry import PushError, push_image
from tests.fake_registry import (
    Recorder,
    Servers,
    image_fixture,  # noqa: F401 (a fixture)
    registry_flow,
    servers_fixture,  # noqa: F401 (a fixture)
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_transport, "_BACKOFF", 0.05)


def flaky(failures: dict[tuple[str, str], list[Any]]) -> Any:
    """A registry whose (method, path prefix) steps fail as listed, then work."""

    def answer(request: Recorder) -> None:
        for (method, prefix), plan in failures.items():
            if request.command == method and request.path.startswith(prefix) and plan:
                how = plan.pop(0)
                if how == "reset":
                    request.connection.shutdown(2)  # cut mid-exchange: no status line at all
                    request.close_connection = True
                    return
                status, headers = how
                request.reply(status, headers)
                return
        registry_flow(request)

    return answer


def test_busy_and_broken_answers_are_retried(servers: Servers, image: Any) -> None:
    failures: dict[tuple[str, str], list[Any]] = {
        ("GET", "/v2/"): [(503, {})],
        ("POST", "/v2/"): [(429, {"Retry-After": "1"}), (502, {})],
        ("PUT", "/upload"): [(500, {}), "reset", (504, {})],
        ("PUT", "/v2/"): [(503, {"Retry-After": "0"})],
    }
    address, _handler = servers.serve("127.0.0.1", flaky(failures))
    lines: list[str] = []
    started = time.monotonic()
    result = push_image(image, f"{address}/team/app:1", progress=lines.append)
    assert result.blobs_uploaded == 2
    assert time.monotonic() - started >= 1.0  # the Retry-After was honoured
    assert all(not plan for plan in failures.values())
    retries = [line for line in lines if line.startswith("retrying")]
    assert len(retries) == 7 and any("429" in line for line in retries)
    assert not any("Traceback" in line or "Error(" in line for line in lines)


def test_a_registry_that_keeps_failing_is_named_with_its_step(
    servers: Servers,
    image: Any,
) -> None:
    failures: dict[tuple[str, str], list[Any]] = {("PUT", "/upload"): [(503, {})] * 10}
    address, _handler = servers.serve("127.0.0.1", flaky(failures))
    with pytest.raises(PushError) as error:
        push_image(image, f"{address}/team/app:1", retries=2)
    message = str(error.value)
    assert message.startswith(f"{address}/team/app: uploading blob sha256:")
    assert "tried 3 times" in message and "503" in message and "\n" not in message
    assert error.value.exit_code == 5
