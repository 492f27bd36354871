"""``build``'s options are checked once, whether they come as flags or from scratchpack.yaml.

Each case is written once, YAML-shaped (the file's keys are the long option names, ``binary``
the arguments), and run both ways: as flags and as a ``scratchpack.yaml``. Every invalid
combination ends in its one line and exit status 2 before any work; a valid request is the
same request either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from scratchpack.cli import cli
from scratchpack.commands import build as build_command
from scratchpack.commands.build import (
    BuildRequest,
    Layering,
    SbomFormat,
    SbomRequest,
    verify_from_options,
)
from scratchpack.commands.common import PackageSources
from scratchpack.errors import InputError
from scratchpack.image.media import Platform

TRUE = {"binary": ["/bin/true"], "tag": "x:1"}
TWO_PLATFORMS = {"package": ["hello"], "tag": "x:1", "platform": ["linux/amd64,linux/arm64"]}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("sbom-format", {**TRUE, "sbom-format": "cyclonedx"}, "--sbom-format goes with --sbom PATH"),
    ("nothing", {"tag": "x:1"}, "build needs a BINARY, or --package PKG"),
    (
        "suite",
        {**TRUE, "suite": "bookworm"},
        "--suite chooses the Debian suite of --package: add --package PKG",
    ),
    (
        "repository",
        {**TRUE, "repository": ["deb http://example.org/debian bookworm main"]},
        "--repository is a source of --package: add --package PKG",
    ),
    (
        "lock",
        {**TRUE, "lock": "x.lock"},
        "--lock pins the packages of --package: add --package PKG",
    ),
    (
        "root",
        {"package": ["hello"], "tag": "x:1", "root": "."},
        "--package makes its own root: drop --root",
    ),
    (
        "run-limits",
        {**TRUE, "run-pids": 64},
        "--run-memory and --run-pids bound the run of --verify: add --verify",
    ),
    (
        "run-memory",
        {**TRUE, "verify": "--version", "run-memory": "1M"},
        "--run-memory 1M: at least 16M",
    ),
    ("env", {**TRUE, "env": ["FOO"]}, "--env 'FOO': expected KEY=VALUE"),
    (
        "no-build",
        {"binary": ["/bin/true"], "no-build": True},
        "--no-build writes only the build context: give --context DIR",
    ),
    (
        "no-build-output",
        {"binary": ["/bin/true"], "no-build": True, "context": "ctx", "output": "x.tar"},
        "--no-build builds nothing: -o/--output has nothing to work on",
    ),
    ("tag", {"binary": ["/bin/true"]}, "missing -t/--tag NAME[:TAG]"),
    (
        "platforms-binary",
        {**TRUE, "platform": ["linux/amd64", "linux/arm64"]},
        "several --platform images need their files for each architecture: add --package "
        "(a BINARY is built for one architecture only)",
    ),
    (
        "platforms-docker",
        {**TWO_PLATFORMS, "engine": "docker"},
        "--engine docker makes one image; several --platform make an index",
    ),
    (
        "platforms-sbom",
        {**TWO_PLATFORMS, "sbom": "x.json"},
        "--sbom makes one image; several --platform make an index",
    ),
    (
        "docker-split",
        {**TRUE, "engine": "docker", "layers": "split"},
        "--layers split uses the built-in writer: drop --engine docker",
    ),
    (
        "docker-packages",
        {**TRUE, "engine": "docker", "layers": "packages"},
        "--layers packages uses the built-in writer: drop --engine docker",
    ),
    (
        "zstd-into-the-engine",
        {**TRUE, "compression": "zstd"},
        "--compression zstd is how the built-in writer writes layers: add -o PATH or --push "
        "(the engine compresses its own way, and Docker 20.10 cannot load zstd layers)",
    ),
    (
        "debug-suffix",
        {**TRUE, "debug": True, "debug-suffix": ""},
        "--debug-suffix must not be empty: the variant needs a tag of its own",
    ),
    (
        "debug-push",
        {**TRUE, "debug": True, "push": "localhost:5000/x:1"},
        "--debug with --push: a push-only run keeps nothing locally; add -o",
    ),
    (
        "password-stdin",
        {**TRUE, "push": "localhost:5000/x:1", "registry-password-stdin": True},
        "--registry-password-stdin needs --registry-user",
    ),
    (
        "registry-user",
        {**TRUE, "push": "localhost:5000/x:1", "registry-user": "me"},
        "--registry-user needs --registry-password-stdin (the password)",
    ),
]

VALID: dict[str, Any] = {
    "binary": ["/bin/true", "/bin/false"],
    "tag": "x:1",
    "package": ["hello=2.10-3"],
    "suite": "bookworm",
    "platform": ["linux/amd64,linux/amd64"],
    "lock": "x.lock",
    "entrypoint": "/bin/true --quiet",
    "cmd": "'a b'",
    "env": ["A=1", "B=x=y"],
    "label": ["k=v"],
    "expose": ["80/tcp"],
    "ca-certs": True,
    "hwcaps": "none",
    "engine": "none",
    "output": "x.tar",
    "layers": "split",
    "sbom": "x.json",
    "sbom-format": "cyclonedx",
    "verify": "--version",
    "verify-timeout": 30,
    "run-memory": "64M",
    "push": "localhost:5000/x:1",
    "registry-user": "me",
    "registry-password-stdin": True,
    "insecure": True,
    "retries": 2,
    "debug": True,
    "debug-shell": "busybox",
}


def as_flags(options: dict[str, Any]) -> list[str]:
    """The YAML-shaped ``options`` as the command line spells them."""
    flags: list[str] = []
    for key, value in options.items():
        if key == "binary":
            continue
        if isinstance(value, bool):
            flags += [f"--{key}"] if value else []
        elif isinstance(value, list):
            flags += [item for one in value for item in (f"--{key}", str(one))]
        else:
            flags += [f"--{key}", str(value)]
    return [*flags, *options.get("binary", [])]


def invoke(how: str, options: dict[str, Any], tmp_path: Path, stdin: str = "") -> Any:
    """Run ``build`` with ``options``, as flags or from ./scratchpack.yaml."""
    if how == "yaml":
        (tmp_path / "scratchpack.yaml").write_text(yaml.safe_dump(options))
        args = ["build"]
    else:
        args = ["build", *as_flags(options)]
    return CliRunner().invoke(cli, args, input=stdin, env={"DOCKER_HOST": "unix:///nowhere"})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return tmp_path


@pytest.mark.parametrize("how", ["flags", "yaml"])
@pytest.mark.parametrize(
    ("options", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_an_invalid_combination_is_its_one_line(
    workdir: Path, how: str, options: dict[str, Any], message: str
) -> None:
    result = invoke(how, options, workdir)
    assert (result.exit_code, result.stderr) == (2, f"scratchpack: {message}\n")
    assert list(workdir.iterdir()) == ([workdir / "scratchpack.yaml"] if how == "yaml" else [])


def captured_request(
    how: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, stdin: str
) -> BuildRequest:
    """The request ``build`` hands to ``run_build``, checked and logged in; nothing is built."""
    seen: list[BuildRequest] = []

    def run_build(request: BuildRequest) -> None:
        seen.append(request)
        raise SystemExit(0)

    monkeypatch.setattr(build_command, "run_build", run_build)
    result = invoke(how, VALID, workdir, stdin)
    assert result.exit_code == 0 and len(seen) == 1, result.output
    return seen[0]


def test_a_yaml_request_equals_the_flags(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = captured_request("flags", workdir, monkeypatch, "secret\n")
    from_file = captured_request("yaml", workdir, monkeypatch, "secret\n")
    assert from_file == flags
    assert flags.sources == PackageSources((), (Platform.parse("linux/amd64"),), Path("x.lock"))
    assert flags.target.layering is Layering.SPLIT and flags.target.split
    assert flags.sbom == SbomRequest(Path("x.json"), SbomFormat.CYCLONEDX)
    assert flags.push is not None and flags.push.retries == 2 and flags.push.insecure
    assert flags.push.credentials is not None and flags.push.credentials.password == "secret"
    assert flags.verify is not None and flags.verify.confinement is not None
    assert flags.verify.confinement.memory == 64 << 20
    assert flags.config.env == (("A", "1"), ("B", "x=y")) and flags.config.cmd == ("a b",)


def test_lock_checks_its_package_sources_as_build_does(workdir: Path) -> None:
    args = ["--package", "hello", "--suite", "book worm"]
    lock, build = (CliRunner().invoke(cli, [*command, *args]) for command in (["lock"], ["build"]))
    assert lock.exit_code == build.exit_code == 2 and "--suite" in lock.stderr, lock.output
    assert lock.stderr == build.stderr and len(lock.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("path", "format", "expected"),
    [
        (None, "spdx", None),
        ("s.json", "spdx", SbomRequest(Path("s.json"))),
        ("s.json", "cyclonedx", SbomRequest(Path("s.json"), SbomFormat.CYCLONEDX)),
    ],
)
def test_sbom_from_options(path: str | None, format: str, expected: SbomRequest | None) -> None:
    assert SbomRequest.from_options(path, format) == expected


@pytest.mark.parametrize(
    ("platforms", "expected"),
    [
        ((), ()),
        (("linux/arm64,linux/amd64", "linux/arm64"), ("linux/arm64", "linux/amd64")),
        (("linux/amd64, ,",), ("linux/amd64",)),
    ],
)
def test_platforms_are_each_once_in_the_order_given(
    platforms: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    sources = PackageSources.from_options(("hello",), None, platforms=platforms)
    assert sources.platforms == tuple(Platform.parse(text) for text in expected)


@pytest.mark.parametrize(
    ("args", "memory", "pids", "message"),
    [
        (None, "2G", 1024, None),
        (None, "2048M", 1024, None),
        (None, "1G", 1024, "bound the run of --verify"),
        (("--version",), "15M", 1024, "at least 16M"),
        (("--version",), "lots", 1024, "expected a size"),
    ],
)
def test_run_limits_go_with_verify(
    args: tuple[str, ...] | None, memory: str, pids: int, message: str | None
) -> None:
    if message is None:
        assert verify_from_options(args, 120, memory, pids) is None
    else:
        with pytest.raises(InputError, match=message):
            verify_from_options(args, 120, memory, pids)


@pytest.mark.parametrize("port", ["abc", "0", "65536", "80/icmp", "80-90", "-1", "80/"])
def test_expose_is_refused_before_any_work(port: str) -> None:
    from scratchpack.image.config import ImageConfig

    with pytest.raises(InputError, match=r"--expose .*expected PORT\[/PROTO\]"):
        ImageConfig(entrypoint=None, expose=(port,)).check()


@pytest.mark.parametrize("port", ["80", "53/udp", "8080/tcp", "65535", "132/sctp"])
def test_expose_takes_a_port_and_protocol(port: str) -> None:
    from scratchpack.image.config import ImageConfig

    ImageConfig(entrypoint=None, expose=(port,)).check()
