"""The ``scratchpack`` command line: thin wrappers over the pipeline's stages.

Exit statuses (the README's table; the numbers live in scratchpack.errors):
0 success, 1 something is missing, 2 usage errors, unusable inputs and a
full disk, 3 the engine, 4 a failed --verify, 5 a failed push, 6 a failed
trace, 7 outdated found an update, 70 a bug of ours, 130 Ctrl-C, 128+N another signal (143 SIGTERM).
"""

from __future__ import annotations

import dataclasses
import os
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
    EXIT_USAGE,
    InputError,
    ScratchpackError,
    Terminated,
)
from scratchpack.image.media import Compression
from scratchpack.report import Reportable, json_report

if TYPE_CHECKING:
    from scratchpack.commands.build import BuildResult, DebugRequest, ImageTarget, PushRequest
    from scratchpack.image.config import ImageConfig
    from scratchpack.plan.image_plan import BuildOptions

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=Reportable)


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


def _print_report(result: R, as_json: bool, text: Callable[[R], str]) -> None:
    """A command's report: its ``--json`` document, or what its text renderer makes of it."""
    if as_json:
        click.echo(json_report(result))
    else:
        click.echo(text(result), nl=False)


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
    """--engine, -o/--output and --compression: where build and shrink put the image."""
    command = click.option(
        "--compression",
        type=click.Choice(["gzip", "zstd", "none"]),
        default="gzip",
        show_default=True,
        help="How the built-in writer compresses layers (zstd: smaller, faster to read; "
        "Docker 20.10 cannot load it: use with -o).",
    )(command)
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


def _confinement(memory: str, pids: int) -> Any:
    from scratchpack.commands.common import run_confinement

    return run_confinement(memory, pids)


def _size_bytes(text: str | None, option: str = "--max-unpacked-size") -> int | None:
    from scratchpack.commands.common import parse_size

    return parse_size(text, option)


def only_listed_suites_option(command: F) -> F:
    """``--only-listed-suites`` (build, lock, outdated): no -updates/-security added."""
    return click.option(
        "--only-listed-suites",
        is_flag=True,
        help="Resolve from exactly the suites this machine's apt sources list (default: also "
        "SUITE-updates and SUITE-security of Debian's archive where the host lacks them).",
    )(command)


def sbom_format_option(when: str) -> Callable[[F], F]:
    """--sbom-format, for build's --sbom/--attest and shrink's --attest."""
    return click.option(
        "--sbom-format",
        type=click.Choice(["spdx", "cyclonedx"]),
        default="spdx",
        show_default=True,
        help=f"{when}SPDX 2.3 or CycloneDX 1.5 JSON.",
    )


def registry_options(which: str = "") -> Callable[[F], F]:
    """--registry-user, --registry-password-stdin, --insecure, --retries: how a push logs
    in and how hard it tries (``which``: what they are for, in the help)."""
    suffix = f" {which}" if which else ""

    def apply(command: F) -> F:
        for option in reversed(
            [
                click.option("--registry-user", metavar="USER", help=f"Registry user{suffix}."),
                click.option(
                    "--registry-password-stdin",
                    is_flag=True,
                    help="Read the --registry-user password from stdin.",
                ),
                click.option(
                    "--insecure",
                    is_flag=True,
                    help=f"Allow a plain-HTTP or self-signed registry{suffix}.",
                ),
                click.option(
                    "--retries",
                    type=click.IntRange(0, 20),
                    default=5,
                    show_default=True,
                    metavar="N",
                    help="Retry a push step N times after 429, 5xx, a reset or a timeout "
                    "(with backoff).",
                ),
            ]
        ):
            command = option(command)
        return command

    return apply


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
    from scratchpack.commands.deps import DepsRequest, report_text, run_deps, warning_lines

    result = run_deps(DepsRequest(binaries, root, library_path, hwcaps))
    _print_report(result, as_json, report_text)
    for line in warning_lines(result):
        click.echo(line, err=True)
    sys.exit(result.exit_code)


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
@click.option(
    "--update",
    is_flag=True,
    help="Resolve the --lock FILE's packages afresh, rebuild, and rewrite FILE with the image; "
    "report the packages, layers and bytes that changed.",
)
@only_listed_suites_option
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
@click.option(
    "--copy",
    "copies",
    multiple=True,
    metavar="SRC[:DEST][,owner=USER[:GROUP]][,mode=OCTAL]",
    help="Add a file or directory of this machine, whatever the root (default DEST /app/NAME; "
    "ELF files in it get the root's libraries).",
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
    type=click.Choice(["one", "split", "packages"]),
    default="one",
    show_default=True,
    help="split: shared libraries in their own layer, shared between images; packages: a "
    "layer per Debian source package, so an update changes only its layers.",
)
@click.option(
    "--max-layers",
    type=click.IntRange(2, 127),
    default=20,
    show_default=True,
    help="With --layers packages: the most layers; the smallest packages share one.",
)
@click.option(
    "--push",
    metavar="REGISTRY/REPO:TAG",
    help="Upload the image straight to a registry (built-in writer, digest kept).",
)
@registry_options("for --push")
@click.option(
    "--sbom",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Write an SBOM of every file in the image, with its Debian package.",
)
@sbom_format_option("")
@click.option(
    "--attest",
    is_flag=True,
    help="Attach an SBOM (--sbom-format) and SLSA provenance to the image (-o or --push).",
)
@click.option("--debug", is_flag=True, help="Also make TAG-debug: the same image with a shell.")
@click.option("--debug-suffix", default="-debug", show_default=True, help="Tag suffix of it.")
@debug_variant_options
@run_limit_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@clear_errors
def build(binaries: tuple[str, ...], as_json: bool, **given: Any) -> None:
    """Build a FROM-scratch image that runs BINARY (and the other BINARYs).

    Every library the loader maps, the loader itself and the runtime files a
    scratch image lacks go into a minimal root; the image is built in the
    Docker engine (DOCKER_HOST is respected). With --package, the files come
    from Debian packages fetched for the purpose, and BINARY is optional.
    """
    from scratchpack.commands.build import (
        AttestRequest,
        BuildRequest,
        SbomFormat,
        SbomRequest,
        check_request,
        logged_in,
        run_build,
        verify_from_options,
    )
    from scratchpack.commands.common import PackageSources

    sbom = SbomRequest.from_options(given["sbom"], given["sbom_format"], given["attest"])
    sources = PackageSources.from_options(
        given["packages"],
        given["suite"],
        given["repositories"],
        given["platforms"],
        given["lock"],
        given["only_listed_suites"],
        given["update"],
    )
    verify = verify_from_options(
        _args(given["verify"], "--verify") if given["verify"] is not None else None,
        given["verify_timeout"],
        given["run_memory"],
        given["run_pids"],
    )
    request = BuildRequest(
        options=_build_options(binaries, given),
        config=_image_config(given),
        tag=given["tag"],
        target=_image_target(given),
        sources=sources,
        verify=verify,
        push=_push_request(given),
        sbom=sbom,
        attest=AttestRequest(SbomFormat(given["sbom_format"])) if given["attest"] else None,
        debug=_debug_request(given),
        show_progress=not as_json,
    )
    check_request(request)
    request = logged_in(request, _read_password, _note)
    _report(run_build(request), as_json)


config_option(build)


def _build_options(binaries: tuple[str, ...], given: dict[str, Any]) -> BuildOptions:
    """What goes into the root: the BINARYs, packages, includes and runtime files."""
    from scratchpack.ld.loaders import HwcapsChoice
    from scratchpack.plan.copies import check_sources, parse_copies
    from scratchpack.plan.essentials import Essentials
    from scratchpack.plan.image_plan import BuildOptions

    copies = parse_copies(given["copies"])
    check_sources(copies)  # this machine's files: refused before any package is resolved
    return BuildOptions(
        binaries=binaries,
        packages=given["packages"],
        suite=given["suite"],
        root=given["root"],
        includes=given["includes"],
        copies=copies,
        excludes=given["excludes"],
        essentials=Essentials(
            ca_certs=given["ca_certs"],
            tzdata=given["tzdata"],
            locale=given["locale"],
            gconv=given["gconv"],
            nss=given["nss"],
            libgcc=not given["no_libgcc"],
            shell=given["busybox_path"] if given["shell"] else None,
        ),
        allow_missing=given["allow_missing"],
        hwcaps=HwcapsChoice.parse(given["hwcaps"]),
    )


def _image_config(given: dict[str, Any]) -> ImageConfig:
    """The image's ENTRYPOINT, CMD, ENV, WORKDIR, USER, EXPOSE and LABELs."""
    from scratchpack.image.config import ImageConfig

    entrypoint, cmd = given["entrypoint"], given["cmd"]
    return ImageConfig(
        entrypoint=_args(entrypoint, "--entrypoint") if entrypoint else None,
        cmd=_args(cmd, "--cmd") if cmd is not None else None,
        env=_pairs(given["env"], "--env"),
        workdir=given["workdir"],
        user=given["user"],
        expose=given["expose"],
        labels=_pairs(given["labels"], "--label"),
    )


def _image_target(given: dict[str, Any]) -> ImageTarget:
    """--engine, -o, --layers, --context, --no-build, --template: where the image goes."""
    from scratchpack.commands.build import ImageTarget, Layering
    from scratchpack.commands.common import EngineMode

    output, context_dir, template = given["output"], given["context_dir"], given["template"]
    return ImageTarget(
        engine_mode=EngineMode(given["engine_mode"]),
        output=Path(output) if output else None,
        layering=Layering(given["layers"]),
        max_layers=given["max_layers"],
        compression=Compression(given["compression"]),
        context_dir=Path(context_dir) if context_dir else None,
        no_build=given["no_build"],
        template=Path(template) if template else None,
    )


def _push_request(given: dict[str, Any]) -> PushRequest | None:
    from scratchpack.commands.build import PushRequest

    if not given["push"]:
        return None
    return PushRequest(
        reference=given["push"],
        insecure=given["insecure"],
        retries=given["retries"],
        user=given["registry_user"],
        password_stdin=given["registry_password_stdin"],
    )


def _debug_request(given: dict[str, Any]) -> DebugRequest | None:
    from scratchpack.commands.build import DebugRequest
    from scratchpack.commands.common import DebugShell

    if not given["debug"]:
        return None
    shell = DebugShell(given["debug_shell"])
    return DebugRequest(given["debug_suffix"], shell, given["debug_base"], given["busybox_path"])


def terminal_progress_or_none(as_json: bool) -> Callable[[str], None] | None:
    from scratchpack.progress import terminal_progress

    return None if as_json else terminal_progress


def _read_password() -> str:
    """--registry-password-stdin: one line of stdin."""
    return sys.stdin.readline().rstrip("\r\n")


def _note(message: str) -> None:
    click.echo(f"scratchpack: note: {message}", err=True)


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
@click.option(
    "--attest",
    is_flag=True,
    help="Attach an SBOM (--sbom-format) and SLSA provenance naming IMAGE to the result (-o).",
)
@sbom_format_option("With --attest: ")
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
    compression: str,
    attest: bool,
    sbom_format: str,
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
    from scratchpack.commands.shrink import SbomKind, ShrinkRequest, report_text, run_shrink
    from scratchpack.trace.run import TraceNetwork

    if sbom_format != SbomKind.SPDX.value and not attest:
        raise InputError("--sbom-format goes with --attest")
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
            compression=Compression(compression),
            attest=SbomKind(sbom_format) if attest else None,
            allow_missing=allow_missing,
            show_progress=not as_json,
            max_unpacked=_size_bytes(max_unpacked),
            confinement=_confinement(run_memory, run_pids),
        )
    )
    _print_report(result, as_json, report_text)


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
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="PKG[=VERSION]",
    help="Tools from this Debian package (repeatable), resolved as build --package does and "
    "cached in the engine; with --attach the sidecar gets the capabilities they need.",
)
@click.option("--suite", metavar="CODENAME", help="The Debian suite of --package.")
@click.option(
    "--as-target-user",
    is_flag=True,
    help="With --attach: run the sidecar as the container's user (a numeric UID[:GID]).",
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
    packages: tuple[str, ...],
    suite: str | None,
    as_target_user: bool,
    max_unpacked: str | None,
    as_json: bool,
) -> None:
    """A shell for IMAGE (a debug variant), or beside a running CONTAINER (--attach).

    \b
      scratchpack debug myapp:1.0                  # builds myapp:1.0-debug
      scratchpack debug --attach web               # a shell next to container web
      scratchpack debug --attach web -- ps         # one command instead
      scratchpack debug --attach web --package strace -- strace -p 1
    """
    from scratchpack.commands.common import DebugShell, connected_engine
    from scratchpack.commands.debug import (
        DebugImageRequest,
        DebugImageResult,
        attach_text,
        check_attach,
        report_text,
        run_attach,
        run_debug,
        tools_request,
        variant_names,
    )

    tools = tools_request(packages, suite, not as_json)
    if container is not None:
        check_attach(container, tag, debug_shell, debug_base, busybox_path)
        outcome = run_attach(
            connected_engine(),
            container,
            tools_image,
            list(args) or None,
            allow_host_access=allow_host_access,
            tools=tools,
            as_target_user=as_target_user,
        )
        click.echo(attach_text(outcome), nl=False)
        sys.exit(outcome.exit_code)
    if as_target_user:
        raise InputError("--as-target-user goes with --attach CONTAINER")
    image, variant_tag = variant_names(args, tag, allow_host_access, tools, debug_shell, debug_base)
    engine = connected_engine()
    request = DebugImageRequest(
        image=image,
        tag=variant_tag,
        shell=DebugShell(debug_shell),
        base=debug_base,
        busybox=busybox_path,
        show_progress=not as_json,
        max_unpacked=_size_bytes(max_unpacked),
        tools=tools,
    )
    _print_report(DebugImageResult(image, run_debug(engine, request)), as_json, report_text)


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
@only_listed_suites_option
@click.option("--json", "as_json", is_flag=True, help="Print what was pinned as JSON.")
@clear_errors
def lock(
    packages: tuple[str, ...],
    suite: str | None,
    repositories: tuple[str, ...],
    platforms: tuple[str, ...],
    lock: str,
    only_listed_suites: bool,
    as_json: bool,
) -> None:
    """Resolve --package afresh and (re)write the lock file that build --lock obeys.

    Takes the same scratchpack.yaml (-f) as build: its package, suite,
    platform and lock.
    """
    from scratchpack.commands.common import PackageSources
    from scratchpack.commands.lock import LockRequest, report_text, run_lock

    if not packages:
        raise InputError("lock needs --package PKG (or package: in scratchpack.yaml)")
    sources = PackageSources.from_options(
        packages, suite, repositories, platforms, only_listed_suites=only_listed_suites
    )
    request = LockRequest(
        packages, suite, sources.repositories, sources.platforms, lock, only_listed_suites
    )
    result = run_lock(request, say=terminal_progress_or_none(as_json))
    _print_report(result, as_json, report_text)


config_option(lock, keys_of=build)


@cli.command()
@click.argument("image", required=False, metavar="[IMAGE]")
@click.option(
    "--lock",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Compare the packages a lock file pins instead of an IMAGE's.",
)
@click.option("--suite", metavar="CODENAME", help="The Debian suite (default: the image's own).")
@click.option(
    "--repository",
    "repositories",
    multiple=True,
    metavar="'deb [signed-by=KEYRING] URI SUITE COMPONENT…'",
    help="Also take candidates from this apt repository, checked against its key (repeatable).",
)
@only_listed_suites_option
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@clear_errors
def outdated(
    image: str | None,
    lock: str | None,
    suite: str | None,
    repositories: tuple[str, ...],
    only_listed_suites: bool,
    as_json: bool,
) -> None:
    """Name the packages of IMAGE (or --lock FILE) that have updates, and the CVEs they fix.

    IMAGE is an engine image, a docker or OCI archive or an OCI layout; its
    package records (status.d, or dpkg's status) are compared with the
    candidates of its suite, SUITE-updates and SUITE-security. Exits 0 when
    every package is current, 7 when an update exists (a CI gate).
    """
    from scratchpack.commands.common import connected_engine
    from scratchpack.commands.outdated import (
        OutdatedRequest,
        needs_engine,
        report_text,
        run_outdated,
    )
    from scratchpack.errors import EXIT_OUTDATED
    from scratchpack.packages.apt import parse_repository

    if (image is None) == (lock is None):
        raise InputError("outdated takes an IMAGE or --lock FILE (one of them)")
    request = OutdatedRequest(
        image,
        Path(lock) if lock else None,
        suite,
        tuple(parse_repository(line).one_line() for line in repositories),
        only_listed_suites,
    )
    engine = connected_engine() if needs_engine(request) else None
    result = run_outdated(request, engine, say=terminal_progress_or_none(as_json))
    _print_report(result, as_json, report_text)
    if result.outdated:
        sys.exit(EXIT_OUTDATED)


@cli.command()
@click.argument("image", metavar="IMAGE")
@click.option("--insecure", is_flag=True, help="Allow a plain-HTTP or self-signed registry.")
@click.option("--json", "as_json", is_flag=True, help="Print what is attached as JSON.")
@clear_errors
def attestations(image: str, insecure: bool, as_json: bool) -> None:
    """List the SBOMs and provenance attached to IMAGE and check they are about it.

    IMAGE is an OCI layout or archive (build or shrink --attest -o) or REGISTRY/REPO:TAG
    (build --attest --push; the referrers API, else the sha256-HEX tag). Exits 0
    when every attached artifact names the image, 8 when one does not.
    """
    from scratchpack.commands.attestations import problem_line, report_text, run_attestations
    from scratchpack.errors import EXIT_ATTESTATION

    result = run_attestations(image, insecure)
    _print_report(result, as_json, report_text)
    line = problem_line(result)
    if line is not None:
        click.echo(f"scratchpack: {line}", err=True)
        sys.exit(EXIT_ATTESTATION)


@cli.command()
@click.argument("source", metavar="SOURCE")
@click.argument("reference", metavar="REGISTRY/REPO:TAG")
@registry_options()
@click.option("--json", "as_json", is_flag=True, help="Print what was pushed as JSON.")
@clear_errors
def push(source: str, reference: str, as_json: bool, **given: Any) -> None:
    """Push the image in SOURCE, with its SBOM and provenance, to a registry.

    SOURCE is an OCI layout or archive (build or shrink -o, with --attest) or a docker
    save archive. The image (an index: every platform) goes up under the digest SOURCE
    names; its attestations through the referrers API, else the sha256-HEX tag.
    Credentials: --registry-user with the password on stdin, else docker login's.
    """
    from scratchpack.commands.push import (
        PushRequest,
        check_request,
        registry_of,
        report_text,
        run_push,
    )
    from scratchpack.image.registry_auth import login_credentials

    request = PushRequest(
        source,
        reference,
        insecure=given["insecure"],
        retries=given["retries"],
        user=given["registry_user"],
        password_stdin=given["registry_password_stdin"],
    )
    check_request(request)
    credentials = login_credentials(registry_of(request), request.user, _read_password, _note)
    request = dataclasses.replace(request, credentials=credentials)
    result = run_push(request, terminal_progress_or_none(as_json))
    _print_report(result, as_json, report_text)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@clear_errors
def prune(as_json: bool) -> None:
    """Remove what killed runs of scratchpack left behind (and nothing else).

    Temporary directories in TMPDIR and staged outputs in this directory whose
    run has ended, and, when an engine answers, the containers and throw-away
    tags those runs made. What belongs to a run still going is kept.
    """
    from scratchpack.commands.prune import reachable_engine, report_text, run_prune

    result = run_prune(reachable_engine(), [Path(".")])
    _print_report(result, as_json, report_text)


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
