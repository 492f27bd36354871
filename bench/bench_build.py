#!/usr/bin/env python3
"""Benchmark ``scratchpack build`` end to end against ``docker build`` of the same context.

For one binary (``/usr/bin/curl`` unless ``--binary`` says otherwise), two sides are timed:

1. ``scratchpack``: ``python -m scratchpack build BINARY -t bench-scratchpack:N`` as a
   child process, end to end: resolution, root assembly, context writing and the
   engine build (through the Docker SDK's legacy builder);
2. ``docker build``: ``docker build -q --pull=false --no-cache -t bench-docker:N DIR``
   with ``DOCKER_BUILDKIT=0`` (the same legacy builder), where ``DIR`` is the context
   ``scratchpack build --no-build --context DIR`` wrote once, before any timing: the
   same files and the same Dockerfile.

Every build starts with neither benchmark image on the engine: each image is removed
(with its intermediate layer images, which are the legacy builder's cache) right after
it was built and checked. Every build is checked not to have used the layer cache: all
its layer images must have been created after the build started, and scratchpack's own
build output (its stderr is a terminal, so it prints it) must not say "Using cache".

Round 0 is a warm-up that is not counted; the timed rounds follow, the two sides
alternating which goes first. Nothing is ever pulled. Every image the benchmark made
is removed at the end, also on Ctrl-C (the running build is allowed to finish first).

Run ``python bench/bench_build.py --help`` for the flags; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = "/usr/bin/curl"
SIDES = ("scratchpack", "docker")
LABELS = {"scratchpack": "scratchpack build", "docker": "docker build"}
REPOSITORIES = {"scratchpack": "bench-scratchpack", "docker": "bench-docker"}
SALT_PATH = "/.scratchpack-bench-salt"

# Target: scratchpack's median wall time at most 1.3x docker build's.
MAX_RATIO = 1.3

# Timeouts (seconds) for one build and for the small docker CLI calls around it.
BUILD_TIMEOUT = 600
CLI_TIMEOUT = 120


class BenchError(Exception):
    """Something that makes the measurement meaningless; exit status 2."""


@dataclass
class ChildRun:
    """One finished child process: wall and CPU seconds, exit status, captured output."""

    seconds: float
    cpu_seconds: float
    exit_status: int
    stdout: str
    stderr: str


@dataclass
class Layer:
    """One row of an image's history: its local image ID, creation time and step."""

    id: str
    created: float | None  # Unix time, None when the image is not local ("<missing>")
    created_by: str


@dataclass
class SideStats:
    """The timed rounds of one side."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """Median wall seconds of the timed rounds, or None if none ran."""
        return statistics.median(self.seconds) if self.seconds else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "seconds": self.seconds,
            "median_seconds": self.median,
            "min_seconds": min(self.seconds, default=None),
            "max_seconds": max(self.seconds, default=None),
            "median_cpu_seconds": (
                statistics.median(self.cpu_seconds) if self.cpu_seconds else None
            ),
        }


@dataclass
class Target:
    """One pass/fail goal; ``passed`` is None when it could not be measured."""

    name: str
    measured: float | None
    threshold: float
    unit: str
    passed: bool | None

    def line(self) -> str:
        """The target as one table line."""
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        got = "not measured" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        return f"  {verdict}  {self.name:<44} measured {got}"


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` output stays clean."""
    print(message, file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _drain(fd: int, sink: bytearray) -> None:
    """Read a pty master until the child side is closed (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        sink.extend(chunk)


def _finish_child(proc: subprocess.Popen[bytes]) -> None:
    """After Ctrl-C: let the running child finish (a build takes seconds), or stop it."""
    log("interrupted: letting the running command finish, then removing the images")
    log("(Ctrl-C again stops it now; a half-done build may leave <none> images behind)")
    try:
        proc.wait(timeout=BUILD_TIMEOUT)
        return
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stderr_tty: bool = False,
) -> ChildRun:
    """Run ``argv`` in its own session, reap it with ``os.wait4`` and capture its output.

    The child gets its own session so that Ctrl-C reaches only the benchmark, which
    then lets the child finish (:func:`_finish_child`) before it cleans up. With
    ``stderr_tty`` the child's stderr is a pseudo-terminal (read by a thread).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err_file:
        master = slave = -1
        stderr: IO[bytes] | int = err_file
        if stderr_tty:
            master, slave = os.openpty()
            stderr = slave
        captured = bytearray()
        reader: threading.Thread | None = None
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            if slave >= 0:
                os.close(slave)
        if master >= 0:
            reader = threading.Thread(target=_drain, args=(master, captured), daemon=True)
            reader.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _finish_child(proc)
            raise
        finally:
            if reader is not None:
                reader.join(timeout=10)
            if master >= 0:
                os.close(master)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        if stderr_tty:
            err_text = captured.decode(errors="replace").replace("\r\n", "\n")
        else:
            err_file.seek(0)
            err_text = err_file.read().decode(errors="replace")
        return ChildRun(
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            exit_status=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err_text,
        )


def last_lines(text: str, count: int = 5) -> str:
    """The last ``count`` non-empty lines of ``text``, joined with `` | ``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


# -- the docker CLI, for everything around the timed builds -----------------------------------


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS`` (never a pull) and return what it printed."""
    done = subprocess.run(
        ["docker", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    if check and done.returncode != 0:
        raise BenchError(f"docker {' '.join(args)}: {last_lines(done.stderr or done.stdout, 3)}")
    return done


def parse_time(text: str) -> float:
    """A Docker RFC 3339 timestamp (nanoseconds, ``Z``) as Unix time."""
    return datetime.fromisoformat(text).timestamp()


def image_layers(reference: str) -> list[Layer]:
    """The history of a local image, newest first, with each layer image's creation time."""
    rows = [
        json.loads(line)
        for line in docker("history", "--no-trunc", "--format", "{{json .}}", reference)
        .stdout.strip()
        .splitlines()
    ]
    ids = [row["ID"] for row in rows if row["ID"] != "<missing>"]
    created: dict[str, float] = {}
    if ids:
        for image in json.loads(docker("image", "inspect", *ids).stdout):
            created[image["Id"]] = parse_time(image["Created"])
    return [Layer(row["ID"], created.get(row["ID"]), row["CreatedBy"].strip()) for row in rows]


def image_size(reference: str) -> int:
    """The size of a local image in bytes."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", reference).stdout.strip())


def existing_images(ids: Sequence[str]) -> list[str]:
    """Those of the image IDs that are still on the engine."""
    if not ids:
        return []
    done = docker("image", "inspect", "--format", "{{.Id}}", *ids, check=False)
    return [line for line in done.stdout.split() if line.startswith("sha256:")]


def tagged_images() -> list[str]:
    """Every tagged image on the engine, as REPOSITORY:TAG."""
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return [name for name in out if "<none>" not in name]


def holders_of(layer_ids: set[str], exclude: str) -> list[str]:
    """Tagged images (other than ``exclude``) whose history contains one of ``layer_ids``."""
    found = []
    for name in tagged_images():
        if name == exclude:
            continue
        done = docker("history", "--no-trunc", "--format", "{{.ID}}", name, check=False)
        if layer_ids & set(done.stdout.split()):
            found.append(name)
    return found


def remove_image(tag: str) -> None:
    """Untag ``tag``; the engine then deletes the image and its untagged parents.

    Never forced and never by ID: if someone else's tag points at the same image,
    only our tag goes.
    """
    done = docker("rmi", tag, check=False)
    if done.returncode != 0 and "No such image" not in done.stderr:
        log(f"warning: docker rmi {tag}: {last_lines(done.stderr, 2)}")


# -- the benchmark ----------------------------------------------------------------------------


@dataclass
class Round:
    """The two builds of one round."""

    index: int
    order: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


class Bench:
    """Prepares the docker build context once, then runs and checks the rounds."""

    def __init__(self, binary: str, workdir: str, salt: bool) -> None:
        self.binary = binary
        self.workdir = workdir
        self.context = os.path.join(workdir, "context")
        self.stats = {name: SideStats(name) for name in SIDES}
        self.rounds: list[Round] = []
        self.made: set[str] = set()  # tags this run built (or was building)
        self.notes: list[str] = []
        self.signatures: dict[str, list[str]] = {}
        self.sizes: dict[str, int] = {}
        self.files = 0
        self.content_bytes = 0
        self.extra: list[str] = []  # build options shared by both sides (the salt)
        if salt:
            path = os.path.join(workdir, "salt")
            with open(path, "w") as fh:
                fh.write(secrets.token_hex(16) + "\n")
            self.extra = ["--include", f"{path}:{SALT_PATH}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.scratchpack_env = env
        docker_env = dict(os.environ)
        docker_env["DOCKER_BUILDKIT"] = "0"
        self.docker_env = docker_env

    # -- command lines -------------------------------------------------------------------

    def scratchpack_argv(self, tag: str) -> list[str]:
        """The timed scratchpack command: the whole pipeline, engine build included."""
        return [sys.executable, "-m", "scratchpack", "build", self.binary, "-t", tag, *self.extra]

    def docker_argv(self, tag: str) -> list[str]:
        """The timed docker command: the legacy builder (see the env), no cache, no pull."""
        return ["docker", "build", "-q", "--pull=false", "--no-cache", "-t", tag, self.context]

    # -- preparation ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Check for leftovers and write the docker side's context once (not timed)."""
        leftovers = docker(
            "images",
            "--filter",
            f"reference={REPOSITORIES['scratchpack']}",
            "--filter",
            f"reference={REPOSITORIES['docker']}",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ).stdout.split()
        if leftovers:
            raise BenchError(
                f"images {', '.join(sorted(leftovers))} already exist (an earlier run that was "
                "killed, or a run in progress); they could serve as build cache. "
                f"Remove them with: docker rmi {' '.join(sorted(leftovers))}"
            )
        argv = [
            sys.executable,
            "-m",
            "scratchpack",
            "build",
            self.binary,
            *self.extra,
            "--no-build",
            "--context",
            self.context,
            "--json",
        ]
        run = run_child(argv, env=self.scratchpack_env, cwd=REPO_ROOT)
        if run.exit_status != 0:
            raise BenchError(
                f"scratchpack build --no-build exited {run.exit_status}: {last_lines(run.stderr)}"
            )
        result = json.loads(run.stdout)
        self.files = int(result["files"])
        self.content_bytes = int(result["content_bytes"])
        log(
            f"docker build context written once (not timed): {self.context} "
            f"({self.files} files, {self.content_bytes / 1e6:.2f} MB)"
        )

    # -- one build -----------------------------------------------------------------------

    def build(self, side: str, index: int) -> ChildRun:
        """Build, check and remove one image; return the timed child's measurements."""
        tag = f"{REPOSITORIES[side]}:{index}"
        self.made.add(tag)
        # The previous build's layers and the removed image's deletions are still being
        # written back; flush them so that neither side pays for the other's writes.
        os.sync()
        started = time.time()
        if side == "scratchpack":
            run = run_child(
                self.scratchpack_argv(tag),
                env=self.scratchpack_env,
                cwd=REPO_ROOT,
                stderr_tty=True,  # so that scratchpack prints the engine's build output
            )
        else:
            run = run_child(self.docker_argv(tag), env=self.docker_env)
        if run.exit_status != 0:
            raise BenchError(
                f"{LABELS[side]} of {tag} exited {run.exit_status}: "
                f"{last_lines(run.stderr + run.stdout)}"
            )
        try:
            self._check(side, tag, started, run)
        finally:
            layers = [layer.id for layer in image_layers(tag)] if self._exists(tag) else []
            remove_image(tag)
            self.made.discard(tag)
            left = existing_images(layers)
            if left:
                self.notes.append(
                    f"round {index}: {len(left)} layer image(s) of {tag} survived its removal "
                    f"(other images use them): {', '.join(i[7:19] for i in left)}"
                )
        return run

    @staticmethod
    def _exists(tag: str) -> bool:
        return bool(existing_images([tag]))

    def _check(self, side: str, tag: str, started: float, run: ChildRun) -> None:
        """The image is a fresh legacy-builder image, built without any cache hit."""
        layers = image_layers(tag)
        if any(layer.created is None for layer in layers):
            raise BenchError(
                f"{tag}: history rows without a local image: not the legacy builder "
                "(is DOCKER_BUILDKIT=0 honoured?)"
            )
        cached = [layer for layer in layers if (layer.created or 0.0) < started]
        said_cache = side == "scratchpack" and "Using cache" in run.stderr
        if cached or said_cache:
            ids = {layer.id for layer in cached}
            holders = holders_of(ids, tag) if ids else []
            where = f"; images holding them: {', '.join(holders)}" if holders else ""
            steps = "; ".join(layer.created_by[:80] for layer in cached)
            raise BenchError(
                f"{tag}: the build used the layer cache ({len(cached)} layer(s) older than the "
                f"build: {steps}{where}). Another image on the engine has the same layers; "
                "remove it, or rerun with --salt (a per-run file in both images makes "
                "their layers unique)"
            )
        if side == "scratchpack" and "Step " not in run.stderr:
            self.notes.append(
                f"{tag}: no build output captured from scratchpack; the cache check relied on "
                "layer creation times alone"
            )
        signature = [layer.created_by for layer in layers]
        size = image_size(tag)
        self.signatures.setdefault(side, signature)
        self.sizes.setdefault(side, size)
        if signature != self.signatures[side] or size != self.sizes[side]:
            raise BenchError(f"{tag}: not the same image content as in the warm-up round")
        other = "docker" if side == "scratchpack" else "scratchpack"
        if other in self.signatures and (
            self.signatures[other] != signature or self.sizes[other] != size
        ):
            raise BenchError(
                f"{tag}: the two sides built different images (steps or size differ): "
                f"{signature} {size} vs {self.signatures[other]} {self.sizes[other]}"
            )

    # -- the whole run -------------------------------------------------------------------

    def run(self, rounds: int) -> None:
        """One warm-up round, then ``rounds`` timed rounds, alternating who goes first."""
        for index in range(rounds + 1):
            order = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))
            current = Round(index, order)
            label = "warm-up, not counted" if index == 0 else f"timed {index}/{rounds}"
            for side in order:
                run = self.build(side, index)
                current.seconds[side] = run.seconds
                log(f"[{label}] {LABELS[side]:<18} {run.seconds:8.3f} s")
                if index:
                    self.stats[side].seconds.append(run.seconds)
                    self.stats[side].cpu_seconds.append(run.cpu_seconds)
            if index:
                self.rounds.append(current)

    def cleanup(self) -> None:
        """Remove every image this run built (normally none is left by now)."""
        for tag in sorted(self.made):
            remove_image(tag)
            self.made.discard(tag)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def evaluate(stats: dict[str, SideStats]) -> tuple[float | None, Target]:
    """The ratio of the medians and the target."""
    measured = ratio(stats["scratchpack"].median, stats["docker"].median)
    target = Target(
        f"scratchpack build <= {MAX_RATIO:g}x docker build",
        measured,
        MAX_RATIO,
        "x",
        None if measured is None else measured <= MAX_RATIO,
    )
    return measured, target


def versions() -> dict[str, str]:
    """Engine and CLI versions; raises BenchError when no engine answers."""
    done = docker("version", "--format", "{{.Server.Version}} {{.Client.Version}}", check=False)
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2:
        raise BenchError(f"no Docker engine answers: {last_lines(done.stderr, 2)}")
    return {"engine": words[0], "cli": words[1]}


def render_table(bench: Bench, rounds: int, info: dict[str, str], target: Target) -> str:
    """The human-readable report."""
    lines = [
        f"scratchpack build benchmark: {bench.binary} "
        f"({bench.files} files, {bench.content_bytes / 1e6:.2f} MB)"
        + (f", salted with {SALT_PATH}" if bench.extra else ""),
        f"1 warm-up round (not counted) + {rounds} timed, the two sides alternating",
        f"engine {info['engine']}, docker CLI {info['cli']}, legacy builder on both sides "
        f"(DOCKER_BUILDKIT=0); python {platform.python_version()}, {os.cpu_count()} CPUs",
        "",
        f"{'side':<18} {'median s':>9} {'min s':>8} {'max s':>8} {'client cpu s':>13}",
    ]
    for name, side in bench.stats.items():
        if side.median is None:
            lines.append(f"{LABELS[name]:<18} {'not run':>9}")
            continue
        lines.append(
            f"{LABELS[name]:<18} {side.median:9.3f} {min(side.seconds):8.3f} "
            f"{max(side.seconds):8.3f} {statistics.median(side.cpu_seconds):13.3f}"
        )
    lines += ["", f"{'round':<6} {'first':<12} {'scratchpack s':>14} {'docker s':>9} {'ratio':>7}"]
    for item in bench.rounds:
        rel = ratio(item.seconds["scratchpack"], item.seconds["docker"])
        lines.append(
            f"{item.index:<6} {item.order[0]:<12} {item.seconds['scratchpack']:14.3f} "
            f"{item.seconds['docker']:9.3f} {'-' if rel is None else f'{rel:.2f}x':>7}"
        )
    measured = "-" if target.measured is None else f"{target.measured:.2f}x"
    lines += [
        "",
        f"ratio scratchpack / docker build (medians): {measured}",
        "",
        "Targets:",
        target.line(),
        "",
        "Checks: every build started with no benchmark image on the engine, and every layer "
        "of every image was created during its own build (no cache hit); scratchpack's build "
        "output never said 'Using cache'; both sides built the same steps and size.",
    ]
    if bench.notes:
        lines += ["", "Notes:", *(f"  {note}" for note in bench.notes)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Time scratchpack build end to end against docker build of the same context.",
    )
    parser.add_argument(
        "--binary", default=DEFAULT_BINARY, help=f"program to package (default {DEFAULT_BINARY})"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds after the warm-up (default 5)"
    )
    parser.add_argument(
        "--salt",
        action="store_true",
        help=f"add a per-run random file ({SALT_PATH}) to both images so that no other "
        "image on the engine can serve as their layer cache",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON result, no table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0; 1 with --check when the target is missed; 2 when the measurement is invalid."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        info = versions()
    except BenchError as err:
        log(f"bench_build: {err}")
        return 2
    log(f"{args.binary}: 1 warm-up round (not counted) + {args.rounds} timed rounds")
    with tempfile.TemporaryDirectory(prefix="bench_build.") as workdir:
        bench = Bench(args.binary, workdir, args.salt)
        try:
            bench.prepare()
            bench.run(args.rounds)
        except BenchError as err:
            log(f"bench_build: {err}")
            return 2
        except KeyboardInterrupt:
            log("bench_build: interrupted")
            return 130
        finally:
            bench.cleanup()
    measured, target = evaluate(bench.stats)
    if args.json:
        result = {
            "binary": args.binary,
            "files": bench.files,
            "content_bytes": bench.content_bytes,
            "salted": bool(bench.extra),
            "warmup_rounds": 1,
            "rounds": args.rounds,
            "engine": info["engine"],
            "docker_cli": info["cli"],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "commands": {
                "scratchpack": bench.scratchpack_argv(f"{REPOSITORIES['scratchpack']}:N"),
                "docker": bench.docker_argv(f"{REPOSITORIES['docker']}:N"),
            },
            "docker_env": {"DOCKER_BUILDKIT": "0"},
            "sides": {name: side.as_dict() for name, side in bench.stats.items()},
            "per_round": [
                {"round": item.index, "first": item.order[0], "seconds": item.seconds}
                for item in bench.rounds
            ],
            "ratio": measured,
            "targets": [vars(target)],
            "notes": bench.notes,
        }
        print(json.dumps(result, indent=2))
    else:
        print(render_table(bench, args.rounds, info, target))
    if args.check and target.passed is False:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
