"""The ``scratchpack`` command line: thin wrappers over the pipeline's stages.

Exit statuses (the README's table; the numbers live in scratchpack.errors):
0 success, 1 something is missing, 2 usage errors, unusable inputs and a
full disk, 3 the engine, 4 a failed --verify, 5 a failed push, 6 a failed
trace, 70 a bug of ours, 130 Ctrl-C, 128+N another signal (143 SIGTERM).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scratchpack import __version__
from scratchpack.config_file import config_option
from scratchpack.errors import (
    EXIT_INTERNAL,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    ScratchpackError,
    Terminated,
)
from scratchpack.report import json_report, json_text, size_text

if TYPE_CHECKING:
    from scratchpack.commands.build import BuildResult
    from scratchpack.engine.client import Engine

F = TypeVar("F", bound=Callable[..., Any])


def clear_errors(command: F) -> F:
    """Turn a :class:`ScratchpackError` into one line on stderr and its exit status.

    Warnings are shown as they come; what a failed cleanup left behind is
    added to the error's line, never in its place.
    """

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scratchpack.lifecycle import collecting_leftovers
        from scratchpack.notes import collecting

        with collecting(_warn), collecting_leftovers() as left:
            try:
                if command.__name__ != "prune":  # prune reports it itself
                    _prune_temporary()
                return command(*args, **kwargs)
            except ScratchpackError as err:
                _fail(str(err), left, err.exit_code, err.details)
            except KeyboardInterrupt:
                _fail("interrupted", left, 130)
            except Terminated as err:
                _fail(str(err), left, err.code)
            except OSError as err:
                if os.environ.get("SCRATCHPACK_DEBUG"):
                    raise
                where = f" ({err.filename})" if err.filename else ""
                _fail(f"{err.strerror or err}{where}", left, EXIT_USAGE)
            except Exception as err:
                if os.environ.get("SCRATCHPACK_DEBUG"):
                    raise
                _fail(
                    f"internal error: {type(err).__name__}: {err} "
                    "(SCRATCHPACK_DEBUG=1 shows the traceback; please report it)",
                    left,
                    EXIT_INTERNAL,
                )

    return wrapper  # type: ignore[return-value]


def _prune_temporary() -> None:
    """What ended runs left in TMPDIR (a directory listing), removed before any work."""
    from scratchpack.lifecycle import report_removed
    from scratchpack.publish import prune_files

    report_removed(prune_files([Path(tempfile.gettempdir())]))


def _warn(message: str) -> None:
    click.echo(f"scratchpack: warning: {message}", err=True)


def _fail(message: str, left: list[Any], code: Any, details: tuple[str, ...] = ()) -> None:
    """One line: the error, and what its cleanup could not remove; its details below it."""
    if left:
        message += "; " + "; ".join(str(item) for item in left)
    click.echo(f"scratchpack: {message}", err=True)
    for line in details:
        click.echo(f"  | {line}", err=True)
    sys.exit(code)


def image_output_options(command: F) -> F:
    """--engine and -o/--output: where build and shrink put the image."""
    command = click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=True),
        metavar="PATH",
        help="Write the image with the built-in writer: PATH.tar (OCI + docker load) or a "
        "directory (OCI layout).",
    )(command)
    return click.option(
        "--engine",
        "engine_mode",
        type=click.Choice(["auto", "docker", "none"]),
        default="auto",
        show_default=True,
        help="docker: build in the engine; none: write an image with the built-in writer; "
        "auto: the engine if one answers (and no --output), else the writer.",
    )(command)


def exclude_option(command: F) -> F:
    """--exclude GLOB: what an included tree, a package or a trace should not bring."""
    return click.option(
        "--exclude",
        "excludes",
        multiple=True,
        metavar="GLOB",
        help="Leave out matching paths (repeatable): a name ('*.pyc', '__pycache__') "
        "anywhere, or an in-image path ('/usr/lib/python3*/test').",
    )(command)


def max_unpacked_option(command: F) -> F:
    """--max-unpacked-size: a bound on what someone else's image may unpack to."""
    return click.option(
        "--max-unpacked-size",
        "max_unpacked",
        metavar="SIZE",
        help="Refuse an image that unpacks to more (e.g. 20G, 500M; default: the free space "
        "of TMPDIR).",
    )(command)


def run_limit_options(command: F) -> F:
    """--run-memory, --run-pids: the bounds of a container that runs the image's program."""
    command = click.option(
        "--run-pids",
        type=click.IntRange(min=16, max=1 << 22),
        default=1024,
        show_default=True,
        metavar="N",
        help="Processes and threads the image's program may have at once when it runs.",
    )(command)
    return click.option(
        "--run-memory",
        default="2G",
        show_default=True,
        metavar="SIZE",
        help="Memory (swap included) the image's program may use when it runs (at least 16M).",
    )(command)


def _no_run_limits(memory: str, pids: int) -> None:
    """Without a run (``--verify``), the bounds of one are a mistake worth saying."""
    from scratchpack.engine.client import DEFAULT_RUN_MEMORY, DEFAULT_RUN_PIDS

    if pids != DEFAULT_RUN_PIDS or _size_bytes(memory, "--run-memory") != DEFAULT_RUN_MEMORY:
        raise InputError("--run-memory and --run-pids bound the run of --verify: add --verify")


def _confinement(memory: str, pids: int) -> Any:
    from scratchpack.engine.client import Confinement

    size = _size_bytes(memory, "--run-memory")
    assert size is not None
    if size < 16 << 20:
        raise InputError(f"--run-memory {memory}: at least 16M")
    return Confinement(memory=size, pids=pids)


def _size_bytes(text: str | None, option: str = "--max-unpacked-size") -> int | None:
    """``20G``, ``500M``, ``1.5T`` or plain bytes (powers of 1024)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if match is None:
        raise InputError(f"{option} {text!r}: expected a size such as 20G or 500M")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def debug_variant_options(command: F) -> F:
    """--debug-shell, --debug-base, --busybox: how a debug variant gets its shell."""
    for option in reversed(
        [
            click.option(
                "--debug-shell",
                type=click.Choice(["base", "busybox"]),
                default="base",
                show_default=True,
                help="base: laid over --debug-base; busybox: a static busybox at /busybox.",
            ),
            click.option(
                "--debug-base",
                default="alpine:3.20",
                show_default=True,
                metavar="IMAGE",
                help="The local image the debug variant builds on (never pulled).",
            ),
            click.option(
                "--busybox",
                "busybox_path",
                default="/bin/busybox",
                show_default=True,
                metavar="PATH",
                help="The static busybox for --debug-shell busybox and build --shell busybox "
                "(Debian's busybox-static).",
            ),
        ]
    ):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scratchpack")
def cli() -> None:
    """Turn a Linux binary into the smallest container image that still runs it.

    \b
    Exit status: 0 success, 1 something missing, 2 usage or input error
    (or no space left), 3 Docker engine, 4 --verify failed, 5 push failed,
    6 trace failed, 70 a bug, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
    """


@cli.command()
@click.argument("binaries", nargs=-1, required=True, metavar="BINARY...")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Resolve inside this root filesystem (an unpacked image, a sysroot); "
    "BINARY paths are then paths inside it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per BINARY.")
@click.option(
    "--library-path",
    metavar="PATHS",
    help="Use PATHS as LD_LIBRARY_PATH (default: the environment's; '' for none).",
)
@click.option(
    "--hwcaps",
    default="auto",
    show_default=True,
    metavar="auto|none|LEVELS",
    help="glibc-hwcaps levels to search: the running CPU's (auto), none, or a comma list "
    "such as x86-64-v3,x86-64-v2.",
)
@clear_errors
def deps(
    binaries: tuple[str, ...],
    root: str | None,
    as_json: bool,
    library_path: str | None,
    hwcaps: str,
) -> None:
    """Show the shared libraries the runtime loader would map for each BINARY.

    Nothing is executed: the closure is resolved statically with the loader's
    own rules, so foreign-architecture binaries and other roots work too.
    """
    from scratchpack.ld.loaders import HwcapsChoice
    from scratchpack.ld.report import render_tree
    from scratchpack.ld.resolve import Resolver

    resolver = Resolver(root=root, library_path=library_path, hwcaps=HwcapsChoice.parse(hwcaps))
    closures = resolver.resolve_all(binaries)
    if as_json:
        click.echo(_json([closure.to_json() for closure in closures]))
    else:
        click.echo("\n".join(render_tree(closure) for closure in closures), nl=False)
    warned: set[str] = set()
    for closure in closures:
        for item in closure.preload_missing:
            if item.soname not in warned:
                warned.add(item.soname)
                why = f" ({item.reason})" if item.reason else ""
                click.echo(
                    f"scratchpack: warning: {item.soname} from /etc/ld.so.preload cannot be "
                    f"preloaded{why}: ignored, as ld.so does",
                    err=True,
                )
        for item in closure.missing:
            if item.reason:
                click.echo(f"scratchpack: {closure.path}: {item.soname}: {item.reason}", err=True)
    sys.exit(EXIT_OK if all(closure.complete for closure in closures) else EXIT_MISSING)


def _pairs(values: tuple[str, ...], option: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise InputError(f"{option} {value!r}: expected KEY=VALUE")
        pairs.append((key, rest))
    return tuple(pairs)


def _args(text: str, option: str) -> tuple[str, ...]:
    """Shell-quoted arguments, as a Dockerfile's exec form stores them."""
    try:
        return tuple(shlex.split(text))
    except ValueError as err:
        raise InputError(f"{option} {text!r}: {err}") from err


@cli.command()
@click.argument("binaries", nargs=-1, metavar="[BINARY]...")
@click.option(
    "-t", "--tag", help="Name the image [REGISTRY/]NAME[:TAG] (needed unless --no-build)."
)
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="PKG[=VERSION]",
    help="Build from this Debian package and its dependencies, fetched, never installed "
    "(repeatable; BINARY paths are then inside them).",
)
@click.option(
    "--suite", metavar="CODENAME", help="The Debian suite of --package (default: this machine's)."
)
@click.option(
    "--repository",
    "repositories",
    multiple=True,
    metavar="'deb [signed-by=KEYRING] URI SUITE COMPONENT…'",
    help="Also take --package from this apt repository, checked against its key "
    "(repeatable; recorded in --lock).",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="OS/ARCH[,...]",
    help="Build for these platforms (with --package: an image each, and an index over them).",
)
@click.option(
    "--lock",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Pin --package: write FILE when absent, build exactly its packages when present.",
)
@click.option("--entrypoint", metavar="ARGS", help="ENTRYPOINT (default: the first BINARY).")
@click.option("--cmd", metavar="ARGS", help="CMD: default arguments, shell-quoted.")
@click.option("--env", "env", multiple=True, metavar="K=V", help="ENV (repeatable).")
@click.option("--workdir", metavar="DIR", help="WORKDIR.")
@click.option("--user", metavar="USER", help="USER (root, nobody, nonroot or uid[:gid]).")
@click.option("--expose", multiple=True, metavar="PORT[/PROTO]", help="EXPOSE (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="LABEL (repeatable).")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="SRC[:DEST]",
    help="Add a file or directory (ELF files in it get their libraries too).",
)
@exclude_option
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Take everything from this root filesystem; BINARY and --include paths are inside it.",
)
@click.option("--allow-missing", is_flag=True, help="Build even if a library is not found.")
@click.option("--ca-certs", is_flag=True, help="Add the CA bundle and set SSL_CERT_FILE (216 KiB).")
@click.option("--tzdata", is_flag=True, help="Add /usr/share/zoneinfo (3.9 MiB).")
@click.option("--locale", metavar="NAME", help="Add a compiled locale, e.g. C.UTF-8, and LANG.")
@click.option("--gconv", is_flag=True, help="Add glibc's gconv modules for iconv (8.2 MiB).")
@click.option("--nss", is_flag=True, help="Add the root's nsswitch.conf and its NSS modules.")
@click.option("--no-libgcc", is_flag=True, help="Never add libgcc_s for pthread_cancel/backtrace.")
@click.option(
    "--shell",
    type=click.Choice(["busybox"]),
    help="Add a shell at /bin/sh for system()/popen(): the static busybox of --busybox.",
)
@click.option(
    "--hwcaps",
    default="none",
    show_default=True,
    metavar="none|auto|LEVELS",
    help="glibc-hwcaps levels to package; none runs on every CPU of the architecture.",
)
@click.option(
    "--context",
    "context_dir",
    type=click.Path(),
    metavar="DIR",
    help="Keep the build context in DIR (a new or empty directory).",
)
@click.option("--no-build", is_flag=True, help="Only write the build context (needs --context).")
@click.option(
    "--template", type=click.Path(exists=True, dir_okay=False), help="Your own Dockerfile template."
)
@click.option(
    "--verify", metavar="ARGS", help="Run the new image with ARGS, no network; fail if it fails."
)
@click.option(
    "--verify-timeout",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long --verify waits for the image to finish.",
)
@image_output_options
@click.option(
    "--layers",
    type=click.Choice(["one", "split"]),
    default="one",
    show_default=True,
    help="split: shared libraries in their own layer, shared between images.",
)
@click.option(
    "--push",
    metavar="REGISTRY/REPO:TAG",
    help="Upload the image straight to a registry (built-in writer, digest kept).",
)
@click.option("--registry-user", metavar="USER", help="Registry user for --push.")
@click.option(
    "--registry-password-stdin", is_flag=True, help="Read the --registry-user password from stdin."
)
@click.option("--insecure", is_flag=True, help="Allow a plain-HTTP registry for --push.")
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    metavar="N",
    help="Retry a push step N times after 429, 5xx, a reset or a timeout (with backoff).",
)
@click.option(
    "--sbom",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Write an SBOM of every file in the image, with its Debian package.",
)
@click.option(
    "--sbom-format",
    type=click.Choice(["spdx", "cyclonedx"]),
    default="spdx",
    show_default=True,
    help="SPDX 2.3 or CycloneDX 1.5 JSON.",
)
@click.option("--debug", is_flag=True, help="Also make TAG-debug: the same image with a shell.")
@click.option("--debug-suffix", default="-debug", show_default=True, help="Tag suffix of it.")
@debug_variant_options
@run_limit_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@clear_errors
def build(
    binaries: tuple[str, ...],
    tag: str | None,
    packages: tuple[str, ...],
    suite: str | None,
    repositories: tuple[str, ...],
    platforms: tuple[str, ...],
    lock: str | None,
    entrypoint: str | None,
    cmd: str | None,
    env: tuple[str, ...],
    workdir: str | None,
    user: str | None,
    expose: tuple[str, ...],
    labels: tuple[str, ...],
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    root: str | None,
    allow_missing: bool,
    ca_certs: bool,
    tzdata: bool,
    locale: str | None,
    gconv: bool,
    nss: bool,
    no_libgcc: bool,
    shell: str | None,
    hwcaps: str,
    context_dir: str | None,
    no_build: bool,
    template: str | None,
    verify: str | None,
    verify_timeout: float,
    run_memory: str,
    run_pids: int,
    engine_mode: str,
    output: str | None,
    layers: str,
    push: str | None,
    registry_user: str | None,
    registry_password_stdin: bool,
    insecure: bool,
    retries: int,
    sbom: str | None,
    sbom_format: str,
    debug: bool,
    debug_suffix: str,
    debug_shell: str,
    debug_base: str,
    busybox_path: str,
    as_json: bool,
) -> None:
    """Build a FROM-scratch image that runs BINARY (and the other BINARYs).

    Every library the loader maps, the loader itself and the runtime files a
    scratch image lacks go into a minimal root; the image is built in the
    Docker engine (DOCKER_HOST is respected). With --package, the files come
    from Debian packages fetched for the purpose, and BINARY is optional.
    """
    from scratchpack.commands.build import BuildRequest, DebugRequest, check_request, run_build
    from scratchpack.commands.common import DebugShell, EngineMode, VerifyRequest
    from scratchpack.image.config import ImageConfig
    from scratchpack.ld.loaders import HwcapsChoice
    from scratchpack.plan.essentials import Essentials
    from scratchpack.plan.image_plan import BuildOptions

    if sbom_format != "spdx" and not sbom:
        raise InputError("--sbom-format goes with --sbom PATH")
    if not binaries and not packages:
        raise InputError("build needs a BINARY, or --package PKG")
    if suite and not packages:
        raise InputError("--suite chooses the Debian suite of --package: add --package PKG")
    if packages and root:
        raise InputError("--package makes its own root: drop --root")
    repositories = _package_sources(packages, suite, repositories)
    if verify is None:
        _no_run_limits(run_memory, run_pids)
    request = BuildRequest(
        options=BuildOptions(
            binaries=binaries,
            packages=packages,
            suite=suite,
            root=root,
            includes=includes,
            excludes=excludes,
            essentials=Essentials(
                ca_certs=ca_certs,
                tzdata=tzdata,
                locale=locale,
                gconv=gconv,
                nss=nss,
                libgcc=not no_libgcc,
                shell=busybox_path if shell else None,
            ),
            allow_missing=allow_missing,
            hwcaps=HwcapsChoice.parse(hwcaps),
        ),
        config=ImageConfig(
            entrypoint=_args(entrypoint, "--entrypoint") if entrypoint else None,
            cmd=_args(cmd, "--cmd") if cmd is not None else None,
            env=_pairs(env, "--env"),
            workdir=workdir,
            user=user,
            expose=expose,
            labels=_pairs(labels, "--label"),
        ),
        tag=tag,
        engine_mode=EngineMode(engine_mode),
        output=Path(output) if output else None,
        split_layers=layers == "split",
        context_dir=Path(context_dir) if context_dir else None,
        no_build=no_build,
        template=Path(template) if template else None,
        verify=VerifyRequest(
            _args(verify, "--verify"), verify_timeout, _confinement(run_memory, run_pids)
        )
        if verify is not None
        else None,
        push=push,
        insecure=insecure,
        push_retries=retries,
        sbom=Path(sbom) if sbom else None,
        sbom_format=sbom_format,
        debug=DebugRequest(debug_suffix, DebugShell(debug_shell), debug_base, busybox_path)
        if debug
        else None,
        show_progress=not as_json,
        platforms=_platforms(platforms),
        lock=Path(lock) if lock else None,
        repositories=repositories,
    )
    check_request(request)
    if push:
        credentials = _push_credentials(push, registry_user, registry_password_stdin)
        request = dataclasses.replace(request, credentials=credentials)
    _report(run_build(request), as_json)


config_option(build)


def _package_sources(
    packages: tuple[str, ...], suite: str | None, repositories: tuple[str, ...]
) -> tuple[str, ...]:
    """Check --package, --suite and --repository (from flags or a YAML file) before apt runs;
    the repositories as a lock records them."""
    from scratchpack.packages.apt import Word, check_request, check_word, parse_repository

    if repositories and not packages:
        raise InputError("--repository is a source of --package: add --package PKG")
    for package in packages:
        check_request(package, "--package")
    if suite is not None:
        check_word(Word.SUITE, suite, "--suite")
    return tuple(parse_repository(line).one_line() for line in repositories)


def terminal_progress_or_none(as_json: bool) -> Callable[[str], None] | None:
    from scratchpack.progress import terminal_progress

    return None if as_json else terminal_progress


def _platforms(values: tuple[str, ...]) -> tuple[Any, ...]:
    """``--platform linux/amd64,linux/arm64`` (or repeated): each once, in the order given."""
    from scratchpack.image.media import Platform

    found: list[Any] = []
    for value in values:
        for text in value.split(","):
            if text.strip():
                platform = Platform.parse(text)
                if platform not in found:
                    found.append(platform)
    return tuple(found)


def _push_credentials(reference: str, user: str | None, password_stdin: bool) -> Any:
    """Check the reference before any work; credentials from the options or docker's config."""
    # registry imports requests (a tenth of a second): only when pushing.
    from scratchpack.image.registry import (
        Credentials,
        credentials_from_docker_config,
        parse_reference,
    )

    registry, _repository, _tag = parse_reference(reference)
    if password_stdin and not user:
        raise InputError("--registry-password-stdin needs --registry-user")
    if user:
        if not password_stdin:
            raise InputError("--registry-user needs --registry-password-stdin (the password)")
        password = sys.stdin.readline().rstrip("\r\n")
        return Credentials(user, password)

    def note(message: str) -> None:
        click.echo(f"scratchpack: note: {message}", err=True)

    return credentials_from_docker_config(registry, note=note)


def _report(result: BuildResult, as_json: bool) -> None:
    """``build``'s report: the JSON renderer or the text renderer, both reading ``result``."""
    from scratchpack.commands.build import report_text

    if as_json:
        click.echo(json_report(result))
    else:
        click.echo(report_text(result), nl=False)


@cli.command()
@click.argument("image", metavar="IMAGE")
@click.option("-t", "--tag", required=True, help="Name of the new image [REGISTRY/]NAME[:TAG].")
@click.option(
    "--trace",
    is_flag=True,
    help="Run the image under a file-access tracer and keep what its program touched.",
)
@click.option(
    "--probe-cmd", metavar="ARGS", help="Your own probe instead of a connection to each port."
)
@click.option("--trace-args", metavar="ARGS", help="Arguments to trace with, instead of Cmd.")
@click.option(
    "--trace-timeout",
    type=click.FloatRange(min=1, max=86400),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="Give up on a trace that takes longer.",
)
@click.option(
    "--trace-network",
    type=click.Choice(["bridge", "host", "none"]),
    default="bridge",
    show_default=True,
    help="The traced container's network: host lets the probes reach a 127.0.0.1 listener.",
)
@click.option(
    "--allow-probe-failure",
    is_flag=True,
    help="Keep what the trace saw even if a probe of the original image failed.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Run the original twice and the result once, traced, and fail if they differ.",
)
@click.option("--fix", is_flag=True, help="With --verify: add what the result lacked, rebuild.")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="SRC[:DEST]",
    help="Also keep this path of the image (repeatable).",
)
@exclude_option
@click.option("--allow-missing", is_flag=True, help="Build even if a library is not found.")
@image_output_options
@max_unpacked_option
@run_limit_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@clear_errors
def shrink(
    image: str,
    tag: str,
    trace: bool,
    probe_cmd: str | None,
    trace_args: str | None,
    trace_timeout: float,
    trace_network: str,
    allow_probe_failure: bool,
    verify: bool,
    fix: bool,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    allow_missing: bool,
    engine_mode: str,
    output: str | None,
    max_unpacked: str | None,
    run_memory: str,
    run_pids: int,
    as_json: bool,
) -> None:
    """Keep only what IMAGE's program needs, with IMAGE's configuration.

    IMAGE is an image in the local engine or an archive file (docker save,
    OCI layout or archive). It is only read: the new image is TAG.
    """
    from scratchpack.commands.common import EngineMode
    from scratchpack.commands.shrink import ShrinkRequest, render_report, run_shrink
    from scratchpack.trace.run import TraceNetwork

    result = run_shrink(
        ShrinkRequest(
            image=image,
            tag=tag,
            includes=includes,
            excludes=excludes,
            trace=trace,
            probe_cmd=_args(probe_cmd, "--probe-cmd") if probe_cmd else None,
            trace_args=_args(trace_args, "--trace-args") if trace_args is not None else None,
            trace_timeout=trace_timeout,
            trace_network=TraceNetwork(trace_network),
            allow_probe_failure=allow_probe_failure,
            verify=verify,
            fix=fix,
            engine_mode=EngineMode(engine_mode),
            output=Path(output) if output else None,
            allow_missing=allow_missing,
            show_progress=not as_json,
            max_unpacked=_size_bytes(max_unpacked),
            confinement=_confinement(run_memory, run_pids),
        )
    )
    if as_json:
        click.echo(json_report(result))
    else:
        click.echo(render_report(result), nl=False)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, metavar="[IMAGE] [-- COMMAND...]")
@click.option("-t", "--tag", help="Tag of the debug variant (default: IMAGE's tag + -debug).")
@debug_variant_options
@click.option(
    "--attach",
    "container",
    metavar="CONTAINER",
    help="Open a shell beside this running container instead (pid, network, ipc shared).",
)
@click.option(
    "--image",
    "tools_image",
    metavar="IMAGE",
    help="With --attach: the tools image (default: one made from the host's static busybox).",
)
@click.option(
    "--allow-host-access",
    is_flag=True,
    help="With --attach: attach even to a container that shares the host's pid, network or "
    "IPC namespace or is privileged; the shell can then read and write the host's files.",
)
@max_unpacked_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@clear_errors
def debug(
    args: tuple[str, ...],
    tag: str | None,
    debug_shell: str,
    debug_base: str,
    busybox_path: str,
    container: str | None,
    tools_image: str | None,
    allow_host_access: bool,
    max_unpacked: str | None,
    as_json: bool,
) -> None:
    """A shell for IMAGE (a debug variant), or beside a running CONTAINER (--attach).

    \b
      scratchpack debug myapp:1.0                  # builds myapp:1.0-debug
      scratchpack debug --attach web               # a shell next to container web
      scratchpack debug --attach web -- ps         # one command instead
    """
    from scratchpack.commands.common import DebugShell, connected_engine
    from scratchpack.commands.debug import DebugImageRequest, run_attach, run_debug
    from scratchpack.image.reference import check_tag
    from scratchpack.plan.debug import debug_tag

    if container is not None:
        ignored = [
            option
            for option, given in (
                ("-t", tag),
                ("--debug-shell", debug_shell != "base"),
                ("--debug-base", debug_base != "alpine:3.20"),
                ("--busybox", busybox_path != "/bin/busybox"),
            )
            if given
        ]
        if ignored:
            raise InputError(
                f"--attach opens a shell in a sidecar: {', '.join(ignored)} do not apply"
            )
        if not container.strip():
            raise InputError("--attach needs the name or ID of a running container")
        outcome = run_attach(
            connected_engine(),
            container,
            tools_image,
            list(args) or None,
            allow_host_access=allow_host_access,
        )
        if outcome.output is not None:
            click.echo(outcome.output, nl=False)
        sys.exit(outcome.exit_code)
    if allow_host_access:
        raise InputError("--allow-host-access goes with --attach CONTAINER")
    if len(args) != 1:
        raise InputError("debug takes one IMAGE (or --attach CONTAINER)")
    image = args[0]
    if tag is None and re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", image):
        raise InputError(f"{image} is an image ID: name the debug variant with -t NAME[:TAG]")
    final_tag = check_tag(tag or debug_tag(image, "-debug"))
    result = run_debug(
        connected_engine(),
        DebugImageRequest(
            image=image,
            tag=final_tag,
            shell=DebugShell(debug_shell),
            base=debug_base,
            busybox=busybox_path,
            show_progress=not as_json,
            max_unpacked=_size_bytes(max_unpacked),
        ),
    )
    if as_json:
        click.echo(_json({"source": image, **result.to_json()}))
    else:
        click.echo(f"Built {result.tag} {result.image} ({_size(int(result.size or 0))})")
        click.echo(f"Open a shell with: docker run --rm -it --entrypoint sh {result.tag}")


@cli.command()
@click.option(
    "--package",
    "packages",
    multiple=True,
    required=False,
    metavar="PKG[=VERSION]",
    help="The packages to pin (repeatable), as build --package takes them.",
)
@click.option("--suite", metavar="CODENAME", help="The Debian suite (default: this machine's).")
@click.option(
    "--repository",
    "repositories",
    multiple=True,
    metavar="'deb [signed-by=KEYRING] URI SUITE COMPONENT…'",
    help="Also resolve from this apt repository, checked against its key (repeatable).",
)
@click.option(
    "--platform", "platforms", multiple=True, metavar="OS/ARCH[,...]", help="Pin these platforms."
)
@click.option(
    "--lock",
    type=click.Path(dir_okay=False),
    default="scratchpack.lock",
    show_default=True,
    metavar="FILE",
    help="The lock file to write.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was pinned as JSON.")
@clear_errors
def lock(
    packages: tuple[str, ...],
    suite: str | None,
    repositories: tuple[str, ...],
    platforms: tuple[str, ...],
    lock: str,
    as_json: bool,
) -> None:
    """Resolve --package afresh and (re)write the lock file that build --lock obeys.

    Takes the same scratchpack.yaml (-f) as build: its package, suite,
    platform and lock.
    """
    from scratchpack.image.media import Platform
    from scratchpack.packages.fetch import resolve_lock
    from scratchpack.packages.root import host_architecture
    from scratchpack.publish import publication, writing

    if not packages:
        raise InputError("lock needs --package PKG (or package: in scratchpack.yaml)")
    repositories = _package_sources(packages, suite, repositories)
    chosen = _platforms(platforms) or (Platform.from_debian(host_architecture()),)
    say = terminal_progress_or_none(as_json)
    resolved = resolve_lock(
        packages,
        [(str(p), p.debian_architecture) for p in chosen],
        suite,
        say=say,
        repositories=repositories,
    )
    with publication() as staged:
        path = staged.file(Path(lock))
        with writing(path, f"the lock file {lock}"):
            path.write_bytes(resolved.to_bytes())
    summary = {name: len(locked.packages) for name, locked in sorted(resolved.platforms.items())}
    if as_json:
        click.echo(_json({"lock": lock, "suite": resolved.suite, "packages": summary}))
    else:
        for name, count in summary.items():
            click.echo(f"{name}: {count} packages")
        click.echo(f"Wrote {lock}")


config_option(lock, keys_of=build)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@clear_errors
def prune(as_json: bool) -> None:
    """Remove what killed runs of scratchpack left behind (and nothing else).

    Temporary directories in TMPDIR and staged outputs in this directory whose
    run has ended, and, when an engine answers, the containers and throw-away
    tags those runs made. What belongs to a run still going is kept.
    """
    from scratchpack.commands.prune import run_prune
    from scratchpack.engine.client import Engine
    from scratchpack.errors import EngineUnreachable

    engine: Engine | None
    try:
        engine = Engine.connect()
    except EngineUnreachable:
        engine = None
    removed = list(run_prune(engine, [Path(".")]).removed)
    if as_json:
        click.echo(_json({"removed": removed}))
    elif removed:
        click.echo("\n".join(f"removed {item}" for item in removed))
    else:
        click.echo("nothing to remove")


_json = json_text  # the other commands' reports
_size = size_text


def run() -> None:
    """Run the command line; every end is a documented exit status, never click's ``Aborted!``.

    click's standalone mode would turn Ctrl-C into ``Aborted!`` and exit 1, the
    status that means "something is missing": here an interrupt is 130 and a
    usage error 2, and click prints only its own usage messages.
    """
    try:
        cli.main(prog_name="scratchpack", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("scratchpack: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE if err.exit_code != 0 else 0)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except ScratchpackError as err:  # while the options are read (-f FILE)
        click.echo(f"scratchpack: {err}", err=True)
        sys.exit(err.exit_code)
