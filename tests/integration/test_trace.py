"""Real images traced (``scratchpack.trace.run``); the log parser is in tests/unit.

The engine tests trace FROM-scratch images in the local engine
(built here with ``pull=False`` or by ``scratchpack build --engine docker``):
a dynamic glibc program run to completion, a musl one, a static busybox httpd
probed over 127.0.0.1, a program that never ends, Ctrl-C. Every image and
container made here is removed; the tracer's containers carry the label
``scratchpack.trace`` so the tests can check none is left.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import EXIT_TRACE
from scratchpack.image.config import RuntimeConfig
from scratchpack.trace.run import (
    Ending,
    ProbeKind,
    trace_image,
)
from scratchpack.trace.tracer import (
    LOG_DIR,
    TRACER_MOUNT,
    TraceError,
    TracerTree,
    TraceTimeout,
)
from tests import cli, ownership
from tests.conftest import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_INTERP = "/lib64/ld-linux-x86-64.so.2"
MUSL_LOADER = "/lib/x86_64-linux-musl/libc.so"


def runtime(config: dict[str, Any]) -> RuntimeConfig:
    return RuntimeConfig.from_json(config, "test")


# -- engine tests -------------------------------------------------------------------

PROGRAM = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int main(void) {
    struct stat st;
    FILE *config = fopen("/data/config.txt", "r");
    if (config == NULL) { perror("/data/config.txt"); return 1; }
    fclose(config);
    if (stat("/data/missing", &st) == 0) return 2;
    FILE *relative = fopen("rel.txt", "r");  /* WORKDIR /data */
    if (relative == NULL) { perror("rel.txt"); return 3; }
    fclose(relative);
    if (getenv("LD_LIBRARY_PATH") != NULL) return 4;  /* the tracer's path must not leak */
    void *libm = dlopen("libm.so.6", RTLD_NOW);
    if (libm == NULL) { fprintf(stderr, "%s\n", dlerror()); return 5; }
    double (*cosine)(double) = (double (*)(double))dlsym(libm, "cos");
    printf("cos(0) = %.1f\n", cosine(0.0));
    return 0;
}
"""

SLEEPER = "/bin/busybox"


def _tar(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def _build(client: Any, files: dict[str, tuple[bytes, int]], tag: str) -> None:
    for chunk in client.api.build(
        fileobj=_tar(files), custom_context=True, tag=tag, pull=False, rm=True, decode=True
    ):
        assert "error" not in chunk, chunk


def _tag(name: str) -> str:
    return f"scratchpack-test/trace-{name}:{uuid.uuid4().hex[:8]}"


def _config(client: Any, tag: str, **changes: Any) -> RuntimeConfig:
    return runtime({**client.images.get(tag).attrs["Config"], **changes})


def _leftovers(client: Any) -> list[Any]:
    """This test's traced containers (others' run beside it: tests/ownership.py)."""
    return ownership.containers(client, "scratchpack.trace")


@pytest.fixture
def images(docker_client: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)


@pytest.fixture
def engine(docker_client: Any) -> Any:
    from scratchpack.engine.client import Engine

    return Engine.from_client(docker_client)


def _busybox_site(
    client: Any,
    busybox: Path,
    images: list[str],
    name: str,
    config: str,
    pages: dict[str, bytes],
    programs: tuple[Path, ...] = (),
) -> str:
    """A FROM-scratch image of static busybox (and ``programs``, in /bin) and /www ``pages``,
    with Dockerfile ``config``."""
    tag = _tag(name)
    files = {
        "Dockerfile": (f"FROM scratch\nCOPY . /\nEXPOSE 8080\n{config}".encode(), 0o644),
        "bin/busybox": (busybox.read_bytes(), 0o755),
    }
    files.update({f"bin/{program.name}": (program.read_bytes(), 0o755) for program in programs})
    files.update({f"www/{page}": (body, 0o644) for page, body in pages.items()})
    _build(client, files, tag)
    images.append(tag)
    return tag


@pytest.fixture
def busybox_image(docker_client: Any, static_busybox: Path, images: list[str]) -> str:
    """A static busybox httpd serving /www on 8080, FROM scratch."""
    entrypoint = '["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]'
    pages = {"index.html": b"<h1>traced</h1>\n", "other.html": b"<p>other</p>\n"}
    config = f"USER 65534\nENTRYPOINT {entrypoint}\n"
    return _busybox_site(docker_client, static_busybox, images, "httpd", config, pages)


@pytest.mark.engine
def test_trace_a_dynamic_program_built_by_scratchpack(
    docker_client: Any,
    engine: Any,
    tracer: TracerTree,
    images: list[str],
    request: pytest.FixtureRequest,
) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    # The image keeps the host's directory modes: pytest's 0700 directories would
    # keep the nonroot user away from the program.
    tmp_path = Path(tempfile.mkdtemp(prefix="scratchpack-trace-test-"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    tmp_path.chmod(0o755)
    (tmp_path / "prog.c").write_text(PROGRAM)
    program = tmp_path / "prog"
    subprocess.run(["gcc", "-O1", "-o", str(program), str(tmp_path / "prog.c")], check=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.txt").write_text("key=value\n")
    (data / "rel.txt").write_text("relative\n")
    libm = next(
        path
        for path in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6")
        if os.path.exists(path)
    )
    tag = _tag("dynamic")
    images.append(tag)
    built = cli.scratchpack(
        "build", program, "-t", tag, "--include", f"{data}:/data", "--include", libm,
        "--workdir", "/data", "--user", "nonroot", "--engine", "docker",
        cwd=REPO_ROOT, unset=cli.LOADER_ENV, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    config = _config(docker_client, tag)
    messages: list[str] = []

    result = trace_image(engine, tag, config, tracer, timeout=60, progress=messages.append)

    assert result.exit_code == 0
    assert result.probes == ()
    assert result.log_lines > 5
    paths = result.paths
    assert "/app/prog" in paths  # the entrypoint, under /app (a user's BINARY)
    assert HOST_INTERP in paths  # the loader: the kernel opens it, read back from PT_INTERP
    assert {"/data/config.txt", "/data/rel.txt"} <= paths
    assert "/data/missing" not in paths  # its stat failed
    assert any(p.endswith("/libc.so.6") for p in paths)
    assert libm in paths  # dlopened: no static resolution sees it
    assert not any(p.startswith(("/proc", "/dev", "/sys", TRACER_MOUNT, LOG_DIR)) for p in paths)
    assert any(message.startswith("tracing ") for message in messages)
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_trace_a_server_probed_over_loopback(
    docker_client: Any, engine: Any, tracer: TracerTree, busybox_image: str
) -> None:
    config = _config(docker_client, busybox_image)
    started = time.monotonic()
    result = trace_image(engine, busybox_image, config, tracer, timeout=60)
    assert time.monotonic() - started < 40
    assert len(result.probes) == 1, result.probes
    probe = result.probes[0]
    assert probe.kind is ProbeKind.HTTP and probe.passed, probe
    assert probe.line.startswith("8080/tcp GET / -> HTTP/1.") and " 200 " in probe.line, probe
    assert "/www/index.html" in result.paths  # only the probe made httpd read it
    assert "/www/other.html" not in result.paths
    assert "/bin/busybox" in result.paths
    assert result.exit_code is None  # stopped by the trace
    # httpd, PID 1 of its container, has no SIGTERM handler: the kernel drops the
    # signal, so it is killed at once rather than after docker stop's 10 s.
    assert (result.ending, result.stop_signal) == (Ending.KILLED, "SIGTERM")
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_a_server_that_handles_its_stop_signal_is_stopped_and_its_shutdown_traced(
    docker_client: Any, engine: Any, tracer: TracerTree, static_busybox: Path, images: list[str]
) -> None:
    """A PID 1 with a handler gets the signal and its grace: what it does then is kept."""
    script = (
        "trap 'cat /www/bye.html; exit 0' QUIT; "
        "/bin/busybox httpd -f -p 8080 -h /www & while :; do wait; done"
    )
    config = f'STOPSIGNAL SIGQUIT\nENTRYPOINT ["/bin/busybox", "sh", "-c", "{script}"]\n'
    pages = {"index.html": b"<h1>up</h1>\n", "bye.html": b"bye\n"}
    tag = _busybox_site(docker_client, static_busybox, images, "trap", config, pages)
    result = trace_image(engine, tag, _config(docker_client, tag), tracer)
    assert [probe.passed for probe in result.probes] == [True], result.probes
    assert (result.ending, result.stop_signal) == (Ending.STOPPED, "SIGQUIT")
    assert "/www/bye.html" in result.paths  # read by the shutdown the signal started
    assert "bye" in result.output
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_an_init_that_blocks_signals_to_forward_them_gets_the_grace(
    docker_client: Any, engine: Any, tracer: TracerTree, static_busybox: Path, images: list[str]
) -> None:
    """tini installs no handler: it blocks every signal and waits for one, then passes it on."""
    tini = Path("/usr/bin/docker-init")  # Debian's docker.io: a static tini
    if not tini.is_file():
        unavailable("no /usr/bin/docker-init (docker.io's static tini)")
    script = (
        "trap 'cat /www/bye.html; exit 0' TERM; "
        "/bin/busybox httpd -f -p 8080 -h /www & while :; do wait; done"
    )
    config = (
        f'ENTRYPOINT ["/bin/{tini.resolve().name}", "--", "/bin/busybox", "sh", "-c", "{script}"]\n'
    )
    pages = {"index.html": b"<h1>up</h1>\n", "bye.html": b"bye\n"}
    tag = _busybox_site(
        docker_client, static_busybox, images, "tini", config, pages, (tini.resolve(),)
    )
    result = trace_image(engine, tag, _config(docker_client, tag), tracer)
    assert [probe.passed for probe in result.probes] == [True], result.probes
    assert result.ending is Ending.STOPPED, result
    assert "/www/bye.html" in result.paths  # tini passed SIGTERM on; the shell's trap ran


@pytest.mark.engine
def test_trace_with_the_users_probe_command(
    docker_client: Any, engine: Any, tracer: TracerTree, busybox_image: str
) -> None:
    config = _config(docker_client, busybox_image)
    fetch = "import urllib.request; urllib.request.urlopen('http://{host}:{port:8080}/other.html')"
    result = trace_image(
        engine, busybox_image, config, tracer, probe_cmd=[sys.executable, "-c", fetch]
    )
    assert len(result.probes) == 1, result.probes
    probe = result.probes[0]
    assert probe.kind is ProbeKind.COMMAND and probe.passed and probe.summary == "-> exit 0", probe
    assert "127.0.0.1:" in probe.target
    assert "/www/other.html" in result.paths
    assert "/www/index.html" not in result.paths  # no default probe with a probe command
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_trace_args_replace_cmd_and_a_musl_image_needs_no_glibc(
    docker_client: Any, engine: Any, tracer: TracerTree, images: list[str], tmp_path: Path
) -> None:
    musl_gcc = shutil.which("musl-gcc")
    if musl_gcc is None or not os.path.exists(MUSL_LOADER):
        pytest.skip("needs Debian's musl and musl-tools")
    source = tmp_path / "cat.c"
    source.write_text(
        "#include <stdio.h>\n"
        "int main(int argc, char **argv) {\n"
        '  for (int i = 1; i < argc; i++) { if (!fopen(argv[i], "r")) return 1; }\n'
        "  return 0;\n}\n"
    )
    subprocess.run([musl_gcc, "-o", str(tmp_path / "cat"), str(source)], check=True)
    tag = _tag("musl")
    _build(
        docker_client,
        {
            "Dockerfile": (b'FROM scratch\nCOPY . /\nENTRYPOINT ["/cat"]\nCMD ["/etc/a"]\n', 0o644),
            "cat": ((tmp_path / "cat").read_bytes(), 0o755),
            "lib/ld-musl-x86_64.so.1": (Path(MUSL_LOADER).read_bytes(), 0o755),
            "etc/a": (b"a\n", 0o644),
            "etc/b": (b"b\n", 0o644),
        },
        tag,
    )
    images.append(tag)
    result = trace_image(engine, tag, _config(docker_client, tag), tracer, trace_args=["/etc/b"])
    assert result.exit_code == 0
    assert {"/cat", "/lib/ld-musl-x86_64.so.1", "/etc/b"} <= result.paths
    assert "/etc/a" not in result.paths


@pytest.mark.engine
def test_a_scripts_interpreter_is_read_back_from_its_first_line(
    docker_client: Any, engine: Any, tracer: TracerTree, static_busybox: Path, images: list[str]
) -> None:
    tag = _tag("script")
    _build(
        docker_client,
        {
            "Dockerfile": (b'FROM scratch\nCOPY . /\nENTRYPOINT ["/app/start"]\n', 0o644),
            "app/start": (b"#!/bin/busybox sh\nexit 7\n", 0o755),
            "bin/busybox": (static_busybox.read_bytes(), 0o755),
        },
        tag,
    )
    images.append(tag)
    result = trace_image(engine, tag, _config(docker_client, tag), tracer)
    assert result.exit_code == 7  # the program's own status (it runs as PID 1)
    assert {"/app/start", "/bin/busybox"} <= result.paths  # the kernel ran /bin/busybox


@pytest.mark.engine
def test_a_program_that_never_ends_times_out(
    docker_client: Any, engine: Any, tracer: TracerTree, static_busybox: Path, images: list[str]
) -> None:
    tag = _tag("sleeper")
    _build(
        docker_client,
        {
            "Dockerfile": (
                b'FROM scratch\nCOPY . /\nENTRYPOINT ["/bin/busybox", "sleep", "1000"]\n',
                0o644,
            ),
            "bin/busybox": (static_busybox.read_bytes(), 0o755),
        },
        tag,
    )
    images.append(tag)
    started = time.monotonic()
    with pytest.raises(TraceTimeout) as caught:
        trace_image(engine, tag, _config(docker_client, tag), tracer, timeout=3)
    assert time.monotonic() - started < 30
    assert "within 3 s" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == EXIT_TRACE
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_a_program_strace_cannot_find_is_a_clear_error(
    docker_client: Any, engine: Any, tracer: TracerTree, busybox_image: str
) -> None:
    config = _config(
        docker_client, busybox_image, ExposedPorts=None, Entrypoint=["/no/such/program"]
    )
    with pytest.raises(TraceError, match="could not start /no/such/program") as caught:
        trace_image(engine, busybox_image, config, tracer, timeout=30)
    assert "/no/such/program" in str(caught.value)
    assert _leftovers(docker_client) == []


@pytest.mark.engine
def test_ctrl_c_removes_the_container_and_the_log_directory(
    docker_client: Any,
    engine: Any,
    tracer: TracerTree,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupt(message: str) -> None:
        if message.startswith("waiting for"):
            assert _leftovers(docker_client), "the container runs at this point"
            raise KeyboardInterrupt

    config = _config(docker_client, busybox_image)
    with pytest.raises(KeyboardInterrupt):
        trace_image(engine, busybox_image, config, tracer, progress=interrupt)
    assert _leftovers(docker_client) == []
    assert list(tmp_path.iterdir()) == []
