#!/usr/bin/env python3
"""Benchmark ``scratchpack build`` end to end against ``docker build`` of the same context.

For one binary (``/usr/bin/curl`` unless ``--binary`` says otherwise), three sides are
timed, each as a child process:

1. ``scratchpack``: ``python -m scratchpack build BINARY -t bench-scratchpack:N
   --engine docker``, end to end: resolution, root assembly, the context and the
   engine build (through the Docker SDK's legacy builder);
2. ``scratchpack_none``: ``python -m scratchpack build BINARY -t bench-scratchpack-none:N
   --engine none -o WORKDIR/image.tar``: the same, but the image archive is written by
   the built-in writer and no engine is involved. The archive is deleted after each run;
3. ``docker``: ``docker build -q --pull=false --no-cache -t bench-docker:N DIR`` with
   ``DOCKER_BUILDKIT=0`` (the same legacy builder), where ``DIR`` is the context
   ``scratchpack build --no-build --context DIR`` wrote once, before any timing: the
   same files and the same Dockerfile.

The two engine sides (1 and 3) are checked for fairness. Every such build starts with
neither benchmark image on the engine: each image is removed (with its intermediate
layer images, which are the legacy builder's cache) right after it was built and
checked. Every such build is checked not to have used the layer cache: all its layer
images must have been created after the build started, and scratchpack's own build
output (its stderr is a terminal, so it prints it) must not say "Using cache". Side 2
does not touch the engine; it is checked to exit 0 and to leave a non-empty archive.

WORKDIR (the context, the archives) is a temporary directory in the system's temporary
directory, or next to this repository when that one is a RAM file system (tmpfs), so
that the writer writes to a disk as a user's ``-o image.tar`` would.

The code timed (commit, files with uncommitted changes, a fingerprint of their contents)
is printed; a change to it during the run is reported in the notes.

Round 0 is a warm-up that is not counted; the timed rounds follow, cycling through the
six orders of the three sides. Nothing is ever pulled. Every image the benchmark made
is removed at the end, also on Ctrl-C (the running build is allowed to finish first).

Run ``python bench/bench_build.py --help`` for the flags; see bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from benchlib import Target, log, ratio

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = "/usr/bin/curl"
SIDES = ("scratchpack", "scratchpack_none", "docker")
ENGINE_SIDES = ("scratchpack", "docker")  # the sides that build in the engine
LABELS = {
    "scratchpack": "scratchpack --engine docker",
    "scratchpack_none": "scratchpack --engine none",
    "docker": "docker build",
}
SHORT = {"scratchpack": "engine", "scratchpack_none": "none", "docker": "docker"}
REPOSITORIES = {
    "scratchpack": "bench-scratchpack",
    "scratchpack_none": "bench-scratchpack-none",  # only named in the archive, never on the engine
    "docker": "bench-docker",
}
# Round i runs the sides in ORDERS[i % 6]: over six rounds every side is first, second
# and third twice, and builds before each other side three times.
ORDERS = (
    ("scratchpack", "scratchpack_none", "docker"),
    ("scratchpack_none", "docker", "scratchpack"),
    ("docker", "scratchpack", "scratchpack_none"),
    ("docker", "scratchpack_none", "scratchpack"),
    ("scratchpack", "docker", "scratchpack_none"),
    ("scratchpack_none", "scratchpack", "docker"),
)
SALT_PATH = "/.scratchpack-bench-salt"
ARCHIVE_NAME = "image.tar"
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}

# Targets: scratchpack's engine build at most 1.3x docker build's median wall time, and
# the built-in writer (--engine none) faster than docker build.
MAX_RATIO = 1.3
MAX_RATIO_NONE = 1.0

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
class Place:
    """Where the benchmark writes its files: a directory and its file system."""

    parent: str
    fstype: str
    source: str
    same_as_repo: bool
    reason: str

    def describe(self) -> str:
        """One line for the report."""
        repo = "the repository's file system" if self.same_as_repo else "not the repository's"
        return f"{self.fstype} ({self.source}; {repo}); {self.reason}"


def mount_of(path: str) -> tuple[str, str]:
    """The file system type and source of the mount that holds ``path``."""
    real = os.path.realpath(path)
    best, fstype, source = "", "unknown", "unknown"
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype, source = point, fields[2], fields[0]
    except OSError:
        pass
    return fstype, source


def choose_place() -> Place:
    """The system's temporary directory, unless it is in RAM: then the repository's parent.

    A user writes ``-o image.tar`` to a disk; an archive on a tmpfs would make the
    built-in writer look faster than it is for them.
    """
    repo_dev = os.stat(REPO_ROOT).st_dev
    temp = tempfile.gettempdir()
    fstype, source = mount_of(temp)
    if fstype not in RAM_FILESYSTEMS:
        return Place(
            temp, fstype, source, os.stat(temp).st_dev == repo_dev, "the system temporary directory"
        )
    parent = str(REPO_ROOT.parent)
    if not os.access(parent, os.W_OK):
        raise BenchError(
            f"{temp} is a {fstype} and {parent} is not writable: set TMPDIR to a directory "
            "on a disk"
        )
    fstype2, source2 = mount_of(parent)
    return Place(
        parent,
        fstype2,
        source2,
        os.stat(parent).st_dev == repo_dev,
        f"the repository's parent, because {temp} is a {fstype}",
    )


def source_state() -> dict[str, Any]:
    """The scratchpack code being timed: commit, uncommitted changes, a digest per file."""
    files: dict[str, str] = {}
    for directory in ("scratchpack", "templates"):
        for path in sorted((REPO_ROOT / directory).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                files[str(path.relative_to(REPO_ROOT))] = digest
    overall = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "scratchpack", "templates")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted": [line[3:] for line in changed.splitlines()],
        "fingerprint": overall[:16],
        "files": files,
    }


def describe_source(state: dict[str, Any]) -> str:
    """The source state in one line."""
    changes = state["uncommitted"]
    dirty = f" + uncommitted changes in {', '.join(changes)}" if changes else ""
    return f"commit {state['commit']}{dirty} (fingerprint {state['fingerprint']})"


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


# A file in an image: path, mode, uid, gid, tar type, link target, SHA-256 of a regular file.
FileRow = tuple[str, int, int, int, bytes, str, str | None]


def image_files(reference: str, scratch_dir: str) -> list[list[FileRow]]:
    """Every layer's files of a local image (``docker save``), without their mtimes.

    The two engine sides cannot share their ``COPY dir:HASH``: the legacy builder hashes
    the context's tar headers, and scratchpack streams a normalised tar (owners as in
    the image, mtime 0) where the docker CLI tars the directory (owner 0, the files'
    mtimes). So the warm-up compares what ended up in the images instead.
    """
    path = os.path.join(scratch_dir, "saved.tar")
    try:
        done = subprocess.run(
            ["docker", "save", "-o", path, reference],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"docker save {reference}: {last_lines(done.stderr, 3)}")
        layers: list[list[FileRow]] = []
        with tarfile.open(path) as saved:
            manifest = saved.extractfile("manifest.json")
            assert manifest is not None
            for name in json.load(manifest)[0]["Layers"]:
                blob = saved.extractfile(name)
                assert blob is not None
                rows: list[FileRow] = []
                with tarfile.open(fileobj=blob) as layer:
                    for info in layer:
                        digest = None
                        if info.isreg():
                            content = layer.extractfile(info)
                            assert content is not None
                            digest = hashlib.file_digest(content, "sha256").hexdigest()
                        rows.append(
                            (
                                info.name,
                                info.mode,
                                info.uid,
                                info.gid,
                                info.type,
                                info.linkname,
                                digest,
                            )
                        )
                layers.append(sorted(rows))
        return layers
    finally:
        if os.path.lexists(path):
            os.unlink(path)


def without_dir_hashes(steps: Sequence[str]) -> list[str]:
    """History steps with the context hash of each ``COPY dir:HASH`` left out."""
    return [re.sub(r"(dir|file):[0-9a-f]{64}", r"\1:*", step) for step in steps]


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
    """The three builds of one round."""

    index: int
    order: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


class Bench:
    """Prepares the docker build context once, then runs and checks the rounds."""

    def __init__(self, binary: str, workdir: str, salt: bool, place: Place) -> None:
        self.binary = binary
        self.workdir = workdir
        self.place = place
        self.context = os.path.join(workdir, "context")
        self.stats = {name: SideStats(name) for name in SIDES}
        self.rounds: list[Round] = []
        self.made: set[str] = set()  # tags this run built (or was building)
        self.notes: list[str] = []
        self.signatures: dict[str, list[str]] = {}
        self.contents: dict[str, list[list[FileRow]]] = {}
        self.content_check = ""
        self.source = ""
        self.sizes: dict[str, int] = {}
        self.files = 0
        self.content_bytes = 0
        self.archive = os.path.join(workdir, ARCHIVE_NAME)  # the writer's output, per run
        self.archive_bytes: list[int] = []
        self.extra: list[str] = []  # build options shared by all sides (the salt)
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
        return [
            *(sys.executable, "-m", "scratchpack", "build", self.binary, "-t", tag),
            *("--engine", "docker", *self.extra),
        ]

    def scratchpack_none_argv(self, tag: str) -> list[str]:
        """The timed scratchpack command with the built-in writer: no engine at all."""
        return [
            *(sys.executable, "-m", "scratchpack", "build", self.binary, "-t", tag),
            *("--engine", "none", "-o", self.archive, *self.extra),
        ]

    def argv(self, side: str, tag: str) -> list[str]:
        """The timed command of ``side``."""
        if side == "scratchpack":
            return self.scratchpack_argv(tag)
        if side == "scratchpack_none":
            return self.scratchpack_none_argv(tag)
        return self.docker_argv(tag)

    def docker_argv(self, tag: str) -> list[str]:
        """The timed docker command: the legacy builder (see the env), no cache, no pull."""
        return ["docker", "build", "-q", "--pull=false", "--no-cache", "-t", tag, self.context]

    # -- preparation ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Check for leftovers and write the docker side's context once (not timed).

        scratchpack's modules are byte-compiled first, as ``pip install`` does for
        an installed package: run from a checkout under PYTHONDONTWRITEBYTECODE,
        every timed run would otherwise compile them from source again (0.05 s).
        """
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "scratchpack")],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            stdout=subprocess.DEVNULL,
        )
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
        if side == "scratchpack_none":
            return self.write(index)
        tag = f"{REPOSITORIES[side]}:{index}"
        self.made.add(tag)
        # The previous build's layers and the removed image's deletions are still being
        # written back; flush them so that no side pays for another's writes.
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
            if index == 0:
                self._compare_content(side, tag)
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

    def write(self, index: int) -> ChildRun:
        """Write one image archive with the built-in writer, check it, delete it."""
        tag = f"{REPOSITORIES['scratchpack_none']}:{index}"
        if os.path.lexists(self.archive):
            os.unlink(self.archive)
        os.sync()  # as for the engine sides: nobody else's writes pending
        try:
            run = run_child(
                self.scratchpack_none_argv(tag),
                env=self.scratchpack_env,
                cwd=REPO_ROOT,
                stderr_tty=True,  # as a user at a terminal, and as the engine side
            )
            if run.exit_status != 0:
                raise BenchError(
                    f"{LABELS['scratchpack_none']} of {tag} exited {run.exit_status}: "
                    f"{last_lines(run.stderr + run.stdout)}"
                )
            try:
                size = os.stat(self.archive).st_size
            except FileNotFoundError:
                raise BenchError(
                    f"{LABELS['scratchpack_none']} of {tag} exited 0 but wrote no {self.archive}"
                ) from None
            if size == 0:
                raise BenchError(
                    f"{LABELS['scratchpack_none']} of {tag} wrote an empty {self.archive}"
                )
            self.archive_bytes.append(size)
        finally:
            if os.path.lexists(self.archive):
                os.unlink(self.archive)
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
                "remove it, or rerun with --salt (a per-run file in every image makes "
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
        # Across the sides the context hashes differ (see image_files): the same steps
        # otherwise and the same size every round, the same files per the warm-up.
        other = next(name for name in ENGINE_SIDES if name != side)
        if other in self.signatures and (
            without_dir_hashes(self.signatures[other]) != without_dir_hashes(signature)
            or self.sizes[other] != size
        ):
            raise BenchError(
                f"{tag}: the two engine sides built different images (steps or size differ): "
                f"{signature} {size} vs {self.signatures[other]} {self.sizes[other]}"
            )

    def _compare_content(self, side: str, tag: str) -> None:
        """Warm-up: both engine sides' images hold the same files (mtimes aside)."""
        self.contents[side] = image_files(tag, self.workdir)
        other = next(name for name in ENGINE_SIDES if name != side)
        if other not in self.contents:
            return
        mine, theirs = self.contents[side], self.contents[other]
        if mine != theirs:
            differ = sorted(
                {row[0] for a, b in zip(mine, theirs, strict=False) for row in set(a) ^ set(b)}
            )
            raise BenchError(
                f"{tag}: the two engine sides' images hold different files "
                f"({len(mine)} vs {len(theirs)} layers; differing: {', '.join(differ[:10])})"
            )
        files = sum(1 for layer in mine for row in layer if row[6] is not None)
        self.content_check = (
            f"warm-up images of both engine sides compared file by file: {len(mine)} layers, "
            f"{files} regular files, same paths, modes, owners, links and SHA-256 "
            "(mtimes not compared)"
        )

    # -- the whole run -------------------------------------------------------------------

    def run(self, rounds: int) -> None:
        """One warm-up round, then ``rounds`` timed rounds, cycling through the orders."""
        for index in range(rounds + 1):
            order = list(ORDERS[index % len(ORDERS)])
            current = Round(index, order)
            label = "warm-up, not counted" if index == 0 else f"timed {index}/{rounds}"
            for side in order:
                run = self.build(side, index)
                current.seconds[side] = run.seconds
                log(f"[{label}] {LABELS[side]:<27} {run.seconds:8.3f} s")
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


def evaluate(stats: dict[str, SideStats]) -> dict[str, Target]:
    """The ratios of the medians to docker build's, as targets (keyed by side)."""
    docker_median = stats["docker"].median
    engine = ratio(stats["scratchpack"].median, docker_median)
    none = ratio(stats["scratchpack_none"].median, docker_median)
    return {
        "scratchpack": Target(
            f"(a) scratchpack --engine docker <= {MAX_RATIO:g}x docker build",
            engine,
            MAX_RATIO,
            "x",
            None if engine is None else engine <= MAX_RATIO,
        ),
        "scratchpack_none": Target(
            f"(b) scratchpack --engine none < {MAX_RATIO_NONE:.1f}x docker build",
            none,
            MAX_RATIO_NONE,
            "x",
            None if none is None else none < MAX_RATIO_NONE,
        ),
    }


def versions() -> dict[str, str]:
    """Engine and CLI versions; raises BenchError when no engine answers."""
    done = docker("version", "--format", "{{.Server.Version}} {{.Client.Version}}", check=False)
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2:
        raise BenchError(f"no Docker engine answers: {last_lines(done.stderr, 2)}")
    return {"engine": words[0], "cli": words[1]}


def render_table(
    bench: Bench, rounds: int, info: dict[str, str], targets: dict[str, Target]
) -> str:
    """The human-readable report."""
    archive = (
        f"{statistics.median(bench.archive_bytes) / 1e6:.2f} MB" if bench.archive_bytes else "-"
    )
    lines = [
        f"scratchpack build benchmark: {bench.binary} "
        f"({bench.files} files, {bench.content_bytes / 1e6:.2f} MB)"
        + (f", salted with {SALT_PATH}" if bench.extra else ""),
        f"1 warm-up round (not counted) + {rounds} timed, cycling through the 6 orders of "
        "the three sides",
        f"engine {info['engine']}, docker CLI {info['cli']}, legacy builder on both engine "
        f"sides (DOCKER_BUILDKIT=0); python {platform.python_version()}, {os.cpu_count()} CPUs",
        f"scratchpack source: {bench.source}",
        f"--engine none writes {bench.archive} (median {archive}, deleted after each run)",
        f"  on {bench.place.describe()}",
        "",
        f"{'side':<27} {'median s':>9} {'min s':>8} {'max s':>8} {'client cpu s':>13}",
    ]
    for name, side in bench.stats.items():
        if side.median is None:
            lines.append(f"{LABELS[name]:<27} {'not run':>9}")
            continue
        lines.append(
            f"{LABELS[name]:<27} {side.median:9.3f} {min(side.seconds):8.3f} "
            f"{max(side.seconds):8.3f} {statistics.median(side.cpu_seconds):13.3f}"
        )
    lines += [
        "",
        f"{'round':<6} {'order':<20} {'engine s':>9} {'none s':>8} {'docker s':>9} "
        f"{'engine/docker':>14} {'none/docker':>12}",
    ]
    for item in bench.rounds:
        rel = ratio(item.seconds["scratchpack"], item.seconds["docker"])
        rel_none = ratio(item.seconds["scratchpack_none"], item.seconds["docker"])
        lines.append(
            f"{item.index:<6} {','.join(SHORT[side] for side in item.order):<20} "
            f"{item.seconds['scratchpack']:9.3f} {item.seconds['scratchpack_none']:8.3f} "
            f"{item.seconds['docker']:9.3f} {'-' if rel is None else f'{rel:.2f}x':>14} "
            f"{'-' if rel_none is None else f'{rel_none:.2f}x':>12}"
        )

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    lines += [
        "",
        "ratios of the medians:",
        f"  scratchpack --engine docker / docker build: {shown(targets['scratchpack'].measured)}",
        "  scratchpack --engine none   / docker build: "
        f"{shown(targets['scratchpack_none'].measured)}",
        "",
        "Targets:",
        *(target.line(52) for target in targets.values()),
        "",
        "Checks: every engine build started with no benchmark image on the engine, and every "
        "layer of every image was created during its own build (no cache hit); scratchpack's "
        "build output never said 'Using cache'; both engine sides built the same steps and "
        "size every round, each side the same context hashes as in its warm-up; every "
        "--engine none run exited 0 and wrote a non-empty archive.",
    ]
    if bench.content_check:
        lines.append(f"Content: {bench.content_check}.")
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
        help=f"add a per-run random file ({SALT_PATH}) to every side's image so that no other "
        "image on the engine can serve as their layer cache",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON result, no table")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0; 1 with --check when a target is missed; 2 when the measurement is invalid."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        info = versions()
        place = choose_place()
    except BenchError as err:
        log(f"bench_build: {err}")
        return 2
    log(f"{args.binary}: 1 warm-up round (not counted) + {args.rounds} timed rounds")
    source = source_state()
    log(f"scratchpack source: {describe_source(source)}")
    with tempfile.TemporaryDirectory(prefix="bench_build.", dir=place.parent) as workdir:
        bench = Bench(args.binary, workdir, args.salt, place)
        log(f"work directory (context, --engine none archives): {workdir} on {place.describe()}")
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
    source_after = source_state()
    moved = sorted(
        name
        for name in set(source["files"]) | set(source_after["files"])
        if source["files"].get(name) != source_after["files"].get(name)
    )
    if moved:
        bench.notes.append(
            f"scratchpack's source changed during the run ({', '.join(moved)}): the rounds "
            "did not all time the same code; rerun on a quiet tree"
        )
        log(f"warning: scratchpack's source changed during the run: {', '.join(moved)}")
    bench.source = describe_source(source)
    targets = evaluate(bench.stats)
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
            "commands": {name: bench.argv(name, f"{REPOSITORIES[name]}:N") for name in SIDES},
            "archive": {
                "path": bench.archive,
                "filesystem": bench.place.fstype,
                "source": bench.place.source,
                "same_filesystem_as_repository": bench.place.same_as_repo,
                "why_here": bench.place.reason,
                "bytes": bench.archive_bytes,
            },
            "docker_env": {"DOCKER_BUILDKIT": "0"},
            "sides": {name: side.as_dict() for name, side in bench.stats.items()},
            "per_round": [
                {
                    "round": item.index,
                    "first": item.order[0],
                    "order": item.order,
                    "seconds": item.seconds,
                }
                for item in bench.rounds
            ],
            "ratio": targets["scratchpack"].measured,
            "ratio_none": targets["scratchpack_none"].measured,
            "targets": [vars(target) for target in targets.values()],
            "source": {key: source[key] for key in ("commit", "uncommitted", "fingerprint")},
            "source_changed_during_run": moved,
            "content_check": bench.content_check,
            "notes": bench.notes,
        }
        print(json.dumps(result, indent=2))
    else:
        print(render_table(bench, args.rounds, info, targets))
    if args.check and any(target.passed is False for target in targets.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
