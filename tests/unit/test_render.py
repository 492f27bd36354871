"""``build``'s two renderers read a hand-made result; both print what the dict-based report did.

The expected outputs were captured from the report of before the typed
results (``cli._report`` over ``BuildResult.to_json()``) with these results.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scratchpack.cli import _report
from scratchpack.commands.build import BuildResult, SbomResult
from scratchpack.commands.common import DebugResult, DebugShell, EngineMode, VerifyResult
from scratchpack.image.registry import PushResult
from scratchpack.plan.image_plan import LoadedFirst

LOADED = (
    LoadedFirst("libjvm.so", "/opt/jdk/lib/libawt.so", "/opt/jdk/lib/server/libjvm.so"),
    LoadedFirst("libjvm.so", "/opt/jdk/lib/libnet.so", "/opt/jdk/lib/server/libjvm.so"),
    LoadedFirst("libz.so.1", "/opt/app/libzip.so", "/opt/app/libz.so.1"),
)
JVM_JSON = {
    "soname": "libjvm.so",
    "path": "/opt/jdk/lib/server/libjvm.so",
    "needed_by": ["/opt/jdk/lib/libawt.so", "/opt/jdk/lib/libnet.so"],
}
LIBZ_JSON = {
    "soname": "libz.so.1",
    "path": "/opt/app/libz.so.1",
    "needed_by": ["/opt/app/libzip.so"],
}
JVM_LINE = (
    "Loaded first: libjvm.so => /opt/jdk/lib/server/libjvm.so "
    "(named by 2 libraries the program opens after it)\n"
)
LIBZ_LINE = (
    "Loaded first: libz.so.1 => /opt/app/libz.so.1 "
    "(named by 1 library the program opens after it)\n"
)
WRITTEN: dict[str, Any] = dict(
    engine=EngineMode.NONE, image="sha256:ddd", manifest_digest="sha256:eee"
)
WRITTEN_JSON = {"tag": "app:1", "files": 3, "content_bytes": 90000, "context": None, "warnings": []}
INDEX_IMAGES = (
    {
        "platform": "linux/amd64",
        "image": "sha256:222",
        "manifest_digest": "sha256:333",
        "size": 1000,
    },
    {
        "platform": "linux/arm64",
        "image": "sha256:444",
        "manifest_digest": "sha256:555",
        "size": 1100,
    },
)

# name: (the result, its text report, its --json document in the order printed)
CASES: dict[str, tuple[BuildResult, str, dict[str, Any]]] = {
    "a user's binary moved to /app": (
        BuildResult("app:1", 3, 900, "/work/ctx", (), moved=(("/home/u/src/hello", "/app/hello"),)),
        "Wrote the build context to /work/ctx (3 files, 0.9 kB)\n"
        "Moved /home/u/src/hello -> /app/hello\n",
        {
            "tag": "app:1",
            "files": 3,
            "content_bytes": 900,
            "context": "/work/ctx",
            "warnings": [],
            "loaded_first": [],
            "moved": [{"from": "/home/u/src/hello", "to": "/app/hello"}],
        },
    ),
    "context only": (
        BuildResult("app:1", 12, 34_567, "/work/ctx", ("a warning",)),
        "Wrote the build context to /work/ctx (12 files, 34.6 kB)\n",
        {
            "tag": "app:1",
            "files": 12,
            "content_bytes": 34567,
            "context": "/work/ctx",
            "warnings": ["a warning"],
            "loaded_first": [],
            "moved": [],
        },
    ),
    "engine, everything": (
        BuildResult(
            "app:1",
            40,
            2_000_000,
            None,
            (),
            LOADED,
            engine=EngineMode.DOCKER,
            image="sha256:aaa",
            size=5_432_100,
            verify=VerifyResult(("/app", "--version"), 0, "app 1.0\n"),
            push=PushResult("registry.example/app:1", "sha256:bbb", 3, 1),
            debug=DebugResult(
                "app:1-debug", DebugShell.BASE, "alpine:3.20", "sha256:ccc", 9_000_000
            ),
            sbom=SbomResult("/work/app.spdx.json", "spdx", 40, 2),
        ),
        "Built app:1 sha256:aaa (5.43 MB, 40 files)\n"
        + JVM_LINE
        + LIBZ_LINE
        + "Pushed registry.example/app:1 sha256:bbb\n"
        "Debug variant app:1-debug sha256:ccc\n"
        "SBOM (spdx) in /work/app.spdx.json\n",
        {
            "tag": "app:1",
            "files": 40,
            "content_bytes": 2000000,
            "context": None,
            "warnings": [],
            "loaded_first": [JVM_JSON, LIBZ_JSON],
            "moved": [],
            "engine": "docker",
            "image": "sha256:aaa",
            "size": 5432100,
            "verify": {"args": ["/app", "--version"], "exit_code": 0, "output": "app 1.0\n"},
            "push": {"reference": "registry.example/app:1", "digest": "sha256:bbb"},
            "debug": {
                "tag": "app:1-debug",
                "shell": "base",
                "base": "alpine:3.20",
                "image": "sha256:ccc",
                "size": 9000000,
            },
            "sbom": {"path": "/work/app.spdx.json", "format": "spdx", "files": 40, "packages": 2},
        },
    ),
    "writer to a tar": (
        BuildResult(
            "app:1",
            3,
            90_000,
            None,
            (),
            **WRITTEN,
            size=99_999,
            output="app_1.tar",
            diff_ids=("sha256:fff",),
            debug=DebugResult(
                "app:1-debug", DebugShell.BUSYBOX, None, "sha256:111", output="app_1-debug.tar"
            ),
        ),
        "Wrote app:1 sha256:ddd to app_1.tar (100.0 kB, 3 files)\n"
        "Load it with: docker load -i app_1.tar\n"
        "Debug variant app:1-debug sha256:111 to app_1-debug.tar\n",
        {
            **WRITTEN_JSON,
            "loaded_first": [],
            "moved": [],
            "engine": "none",
            "image": "sha256:ddd",
            "size": 99999,
            "output": "app_1.tar",
            "manifest_digest": "sha256:eee",
            "diff_ids": ["sha256:fff"],
            "debug": {
                "tag": "app:1-debug",
                "shell": "busybox",
                "base": None,
                "image": "sha256:111",
                "output": "app_1-debug.tar",
            },
        },
    ),
    "writer, push only": (
        BuildResult(
            "app:1",
            3,
            90_000,
            None,
            (),
            lock="/work/scratchpack.lock",
            **WRITTEN,
            size=100_000,
            push=PushResult("localhost:5000/app:1", "sha256:999", 2, 0),
        ),
        "Wrote app:1 sha256:ddd (0.10 MB, 3 files)\nPushed localhost:5000/app:1 sha256:999\n",
        {
            **WRITTEN_JSON,
            "loaded_first": [],
            "moved": [],
            "lock": "/work/scratchpack.lock",
            "engine": "none",
            "image": "sha256:ddd",
            "size": 100000,
            "output": None,
            "manifest_digest": "sha256:eee",
            "diff_ids": [],
            "push": {"reference": "localhost:5000/app:1", "digest": "sha256:999"},
        },
    ),
    "writer to a layout": (
        BuildResult("app:1", 3, 90_000, None, (), **WRITTEN, size=1_500, output="layout"),
        "Wrote app:1 sha256:ddd to layout (1.5 kB, 3 files)\n",
        {
            **WRITTEN_JSON,
            "loaded_first": [],
            "moved": [],
            "engine": "none",
            "image": "sha256:ddd",
            "size": 1500,
            "output": "layout",
            "manifest_digest": "sha256:eee",
            "diff_ids": [],
        },
    ),
    "an index": (  # no single image: the index digest and its platforms (issue 22)
        BuildResult(
            "app:1",
            8,
            200_000,
            None,
            ("w1", "w2"),
            LOADED[2:],
            platforms=INDEX_IMAGES,
            index_digest="sha256:666",
            lock="l.lock",
            engine=EngineMode.NONE,
            output="app.tar",
            size=2_600,
        ),
        "Wrote app:1 sha256:666 (an index of 2 images: linux/amd64, linux/arm64) to app.tar "
        "(2.6 kB, 8 files)\n"
        "Load it with: docker load -i app.tar\n" + LIBZ_LINE,
        {
            "tag": "app:1",
            "files": 8,
            "content_bytes": 200000,
            "context": None,
            "warnings": ["w1", "w2"],
            "loaded_first": [LIBZ_JSON],
            "moved": [],
            "platforms": list(INDEX_IMAGES),
            "index_digest": "sha256:666",
            "lock": "l.lock",
            "engine": "none",
            "image": None,
            "size": 2600,
            "output": "app.tar",
            "manifest_digest": None,
            "diff_ids": [],
        },
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_text_renderer_prints_what_the_report_printed(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result, text, _document = CASES[name]
    _report(result, as_json=False)
    assert capsys.readouterr().out == text


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_json_renderer_prints_what_the_report_printed(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result, _text, document = CASES[name]
    _report(result, as_json=True)  # captured, not a terminal: compact, keys in this order
    assert capsys.readouterr().out == json.dumps(document) + "\n"
