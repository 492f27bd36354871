#!/usr/bin/env python3
"""Benchmark ``scratchpack deps`` against pax-utils' ``lddtree`` and a loop of ``ldd``.

Every ELF regular file (symlinks skipped, 4-byte ``\\x7fELF`` magic checked) in
/usr/bin and /usr/sbin is resolved three ways:

1. ``scratchpack``: one ``python -m scratchpack deps --json FILE...`` process;
2. ``lddtree``: one process of pax-utils' Python ``lddtree`` over the same files;
3. ``ldd loop``: one ``ldd FILE`` process per file, run one after the other.

Round 1 is a warm-up that fills the page cache and checks each tool's output;
it is not counted. The timed rounds follow, the three tools interleaved in each
round. Wall time, CPU time and peak RSS come from ``os.wait4`` on each child.

Run ``python bench/bench_deps.py --help`` for the flags; see bench/README.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchlib import Target, log, ratio

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIRS = ("/usr/bin", "/usr/sbin")
ELF_MAGIC = b"\x7fELF"
TOOLS = ("scratchpack", "lddtree", "ldd")
LABELS = {"scratchpack": "scratchpack", "lddtree": "lddtree", "ldd": "ldd loop"}

# Targets: scratchpack >= 10x faster than lddtree, <= 0.5x the ldd loop, < 200 MB peak RSS.
MIN_SPEEDUP_VS_LDDTREE = 10.0
MAX_FRACTION_OF_LDD_LOOP = 0.5
MAX_PEAK_RSS_MB = 200.0

# How many offending files or warning lines a note quotes before summarising.
MAX_QUOTED = 10


@dataclass
class ChildRun:
    """One finished child process: wall and CPU seconds, exit status, peak RSS."""

    seconds: float
    cpu_seconds: float
    exit_status: int
    max_rss_kb: int


@dataclass
class ToolStats:
    """Everything measured and noticed for one tool across the timed rounds."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    exit_statuses: list[int] = field(default_factory=list)
    peak_rss_kb: int = 0
    failed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """Median wall seconds of the timed rounds, or None if none ran."""
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def peak_rss_mb(self) -> float:
        """Largest peak RSS of any child in any round, in MiB."""
        return self.peak_rss_kb / 1024

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
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "exit_statuses": self.exit_statuses,
            "failed": self.failed,
            "notes": self.notes,
        }


def find_elf_files(dirs: Sequence[str], limit: int | None) -> list[str]:
    """ELF regular files (no symlinks) directly in ``dirs``, sorted by name per directory."""
    found: list[str] = []
    for directory in dirs:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log(f"warning: cannot list {directory}: {exc}")
            continue
        for entry in entries:
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                continue
            try:
                with open(entry.path, "rb") as fh:
                    if fh.read(4) != ELF_MAGIC:
                        continue
            except OSError:
                continue
            found.append(entry.path)
            if limit is not None and len(found) >= limit:
                return found
    return found


def run_child(
    argv: Sequence[str],
    *,
    stdout: IO[Any] | int = subprocess.DEVNULL,
    stderr: IO[Any] | int = subprocess.DEVNULL,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run ``argv`` to completion and reap it with ``os.wait4`` for its own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        exit_status=proc.returncode,
        max_rss_kb=usage.ru_maxrss,  # KiB on Linux
    )


def find_lddtree() -> tuple[str | None, str]:
    """Path of pax-utils' Python ``lddtree`` (or ``lddtree.py``), and what was found."""
    candidates = [shutil.which("lddtree"), shutil.which("lddtree.py")]
    seen: list[str] = []
    for path in filter(None, candidates):
        try:
            with open(path, "rb") as fh:
                first = fh.readline().decode(errors="replace").strip()
        except OSError:
            continue
        seen.append(f"{path}: {first}")
        if "python" in first:
            return path, f"{path} ({first})"
    why = "; ".join(seen) if seen else "not installed (Debian package pax-utils)"
    return None, f"no Python lddtree found: {why}"


def tail(path: str, lines: int = MAX_QUOTED) -> list[str]:
    """The last ``lines`` non-empty lines of a text file."""
    with open(path, errors="replace") as fh:
        text = [line.rstrip() for line in fh if line.strip()]
    return text[-lines:]


def json_strings(value: Any) -> Iterator[str]:
    """Every string (keys included) anywhere in a decoded JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


def quote_files(files: Sequence[str]) -> str:
    """At most MAX_QUOTED file names, comma-separated."""
    shown = ", ".join(files[:MAX_QUOTED])
    return shown + (f", ... ({len(files) - MAX_QUOTED} more)" if len(files) > MAX_QUOTED else "")


class Bench:
    """Runs the tools over one fixed file list and collects their statistics."""

    def __init__(self, files: list[str], tools: Sequence[str], workdir: str) -> None:
        self.files = files
        self.tools = list(tools)
        self.workdir = workdir
        self.stats = {name: ToolStats(name) for name in self.tools}
        self.lddtree: str | None = None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.scratchpack_env = env
        if "lddtree" in self.tools:
            self.lddtree, found = find_lddtree()
            self.stats["lddtree"].notes.append(f"lddtree: {found}")
            if self.lddtree is None:
                self.stats["lddtree"].failed = True

    # -- command lines -----------------------------------------------------------------

    def scratchpack_argv(self) -> list[str]:
        """One scratchpack process over every file."""
        return [sys.executable, "-m", "scratchpack", "deps", "--json", *self.files]

    def lddtree_argv(self) -> list[str]:
        """One lddtree process over every file, run by this interpreter (it has pyelftools).

        lddtree globs its arguments, so names such as ``[`` are escaped.
        """
        assert self.lddtree is not None
        return [sys.executable, self.lddtree, *(glob.escape(f) for f in self.files)]

    # -- one round of each tool ----------------------------------------------------------

    def _temp(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def run_scratchpack(self, warmup: bool) -> ChildRun:
        """Run scratchpack once; in the warm-up, check its JSON covers every file."""
        out_path, err_path = self._temp("scratchpack.out"), self._temp("scratchpack.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            run = run_child(
                self.scratchpack_argv(),
                stdout=out if warmup else subprocess.DEVNULL,
                stderr=err,
                cwd=REPO_ROOT,
                env=self.scratchpack_env,
            )
        stats = self.stats["scratchpack"]
        if run.exit_status not in (0, 1):
            stats.failed = True
            stats.notes.append(
                f"scratchpack exited {run.exit_status} (0 or 1 expected): "
                + " | ".join(tail(err_path, 5))
            )
        elif warmup:
            self._check_scratchpack_output(out_path, err_path, run.exit_status)
        return run

    def _check_scratchpack_output(self, out_path: str, err_path: str, status: int) -> None:
        stats = self.stats["scratchpack"]
        try:
            with open(out_path) as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            stats.notes.append(f"scratchpack: --json output does not parse: {exc}")
            return
        mentioned = set(json_strings(document))
        missing = [f for f in self.files if f not in mentioned]
        if missing:
            stats.notes.append(
                f"scratchpack: {len(missing)} of {len(self.files)} input files not named in "
                f"the JSON output: {quote_files(missing)}"
            )
        else:
            stats.notes.append(f"scratchpack: JSON names all {len(self.files)} input files")
        if status == 1:
            said = " | ".join(tail(err_path, 3))
            suffix = f": {said}" if said else ""
            stats.notes.append(f"scratchpack: exit 1 (some library not found){suffix}")

    def run_lddtree(self, warmup: bool) -> ChildRun:
        """Run lddtree once; in the warm-up, check it printed a tree for every file."""
        out_path, err_path = self._temp("lddtree.out"), self._temp("lddtree.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            run = run_child(
                self.lddtree_argv(), stdout=out if warmup else subprocess.DEVNULL, stderr=err
            )
        if warmup:
            self._check_lddtree_output(out_path, err_path, run.exit_status)
        return run

    def _check_lddtree_output(self, out_path: str, err_path: str, status: int) -> None:
        stats = self.stats["lddtree"]
        # Each processed file starts an unindented "PATH (interpreter => ...)" line.
        shown: set[str] = set()
        with open(out_path, errors="replace") as fh:
            for line in fh:
                if line[:1] not in (" ", "\n", "") and " (interpreter => " in line:
                    shown.add(line.split(" (interpreter => ", 1)[0])
        missing = [f for f in self.files if f not in shown]
        if missing:
            stats.notes.append(
                f"lddtree: printed no tree for {len(missing)} of {len(self.files)} files "
                f"(exit {status}): {quote_files(missing)}"
            )
        else:
            stats.notes.append(f"lddtree: printed a tree for all {len(self.files)} files")
        warnings = tail(err_path, 10_000)
        if warnings:
            stats.notes.append(f"lddtree: {len(warnings)} stderr lines, last ones:")
            stats.notes.extend(f"    {w}" for w in warnings[-MAX_QUOTED:])

    def run_ldd_loop(self, warmup: bool) -> ChildRun:
        """Run ``ldd FILE`` for each file in turn; in the warm-up, note the failures."""
        start = time.perf_counter()
        cpu = 0.0
        rss = 0
        failures: list[tuple[str, int, str]] = []  # (file, exit status, last output line)
        for path in self.files:
            if warmup:
                done = subprocess.run(
                    ["ldd", path], stdin=subprocess.DEVNULL, capture_output=True, check=False
                )
                if done.returncode != 0:
                    output = (done.stderr or done.stdout).decode(errors="replace").strip()
                    last = output.splitlines()[-1] if output else ""
                    failures.append((path, done.returncode, last))
                continue
            run = run_child(["ldd", path])
            cpu += run.cpu_seconds
            rss = max(rss, run.max_rss_kb)
        seconds = time.perf_counter() - start
        if warmup and failures:
            stats = self.stats["ldd"]
            stats.notes.append(
                f"ldd: nonzero exit for {len(failures)} of {len(self.files)} files, e.g.:"
            )
            stats.notes.extend(
                f"    {path}: exit {code}: {reason}" for path, code, reason in failures[:MAX_QUOTED]
            )
        return ChildRun(seconds=seconds, cpu_seconds=cpu, exit_status=0, max_rss_kb=rss)

    # -- the whole run -------------------------------------------------------------------

    def run(self, rounds: int) -> None:
        """One warm-up round, then ``rounds`` timed rounds; each round runs every tool."""
        runners = {
            "scratchpack": self.run_scratchpack,
            "lddtree": self.run_lddtree,
            "ldd": self.run_ldd_loop,
        }
        for index in range(rounds + 1):
            warmup = index == 0
            label = "warm-up, not counted" if warmup else f"timed {index}/{rounds}"
            for name in self.tools:
                stats = self.stats[name]
                if stats.failed:
                    continue
                run = runners[name](warmup)
                log(f"[{label}] {LABELS[name]:<12} {run.seconds:8.3f} s  exit {run.exit_status}")
                if warmup or stats.failed:
                    continue
                stats.seconds.append(run.seconds)
                stats.cpu_seconds.append(run.cpu_seconds)
                stats.exit_statuses.append(run.exit_status)
                stats.peak_rss_kb = max(stats.peak_rss_kb, run.max_rss_kb)


def evaluate(stats: dict[str, ToolStats]) -> tuple[dict[str, float | None], list[Target]]:
    """The speed ratios and the three targets."""
    sp = stats.get("scratchpack")
    sp_ok = sp is not None and not sp.failed and sp.median is not None
    sp_median = sp.median if sp_ok and sp is not None else None

    def median_of(name: str) -> float | None:
        tool = stats.get(name)
        return tool.median if tool is not None and not tool.failed else None

    ratios = {
        "lddtree_over_scratchpack": ratio(median_of("lddtree"), sp_median),
        "ldd_loop_over_scratchpack": ratio(median_of("ldd"), sp_median),
    }
    speedup = ratios["lddtree_over_scratchpack"]
    fraction = ratio(sp_median, median_of("ldd"))
    rss = sp.peak_rss_mb if sp_ok and sp is not None else None
    targets = [
        Target(
            f"scratchpack >= {MIN_SPEEDUP_VS_LDDTREE:g}x faster than lddtree",
            speedup,
            MIN_SPEEDUP_VS_LDDTREE,
            "x",
            None if speedup is None else speedup >= MIN_SPEEDUP_VS_LDDTREE,
        ),
        Target(
            f"scratchpack <= {MAX_FRACTION_OF_LDD_LOOP:g}x the ldd loop time",
            fraction,
            MAX_FRACTION_OF_LDD_LOOP,
            "x",
            None if fraction is None else fraction <= MAX_FRACTION_OF_LDD_LOOP,
        ),
        Target(
            f"scratchpack peak RSS < {MAX_PEAK_RSS_MB:g} MB",
            rss,
            MAX_PEAK_RSS_MB,
            " MB",
            None if rss is None else rss < MAX_PEAK_RSS_MB,
        ),
    ]
    return ratios, targets


def render_table(
    files: list[str],
    dirs: Sequence[str],
    rounds: int,
    stats: dict[str, ToolStats],
    targets: list[Target],
) -> str:
    """The human-readable report."""
    sp = stats.get("scratchpack")
    sp_median = sp.median if sp is not None and not sp.failed else None
    lines = [
        f"scratchpack deps benchmark: {len(files)} ELF files from {', '.join(dirs)}",
        f"1 warm-up round (not counted: fills the page cache, checks output) + {rounds} timed",
        f"python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs",
        "",
        f"{'tool':<12} {'median s':>9} {'min s':>8} {'max s':>8} {'cpu s':>8} "
        f"{'peak RSS MB':>12} {'x scratchpack':>14}",
    ]
    for name, tool in stats.items():
        if tool.failed or tool.median is None:
            lines.append(f"{LABELS[name]:<12} {'failed' if tool.failed else 'not run':>9}")
            continue
        times = tool.seconds
        rel = ratio(tool.median, sp_median)
        lines.append(
            f"{LABELS[name]:<12} {tool.median:9.3f} {min(times):8.3f} {max(times):8.3f} "
            f"{statistics.median(tool.cpu_seconds):8.3f} {tool.peak_rss_mb:12.1f} "
            f"{'-' if rel is None else f'{rel:.2f}x':>14}"
        )
    lines += ["", "Targets:", *(t.line() for t in targets)]
    notes = [note for tool in stats.values() for note in tool.notes]
    if notes:
        lines += ["", "Notes (from the warm-up round unless said):", *(f"  {n}" for n in notes)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Time scratchpack deps against lddtree and an ldd loop.",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds after the warm-up (default 5)"
    )
    parser.add_argument("--limit", type=int, help="only the first N ELF files (quick checks)")
    parser.add_argument("--dirs", nargs="+", default=list(DEFAULT_DIRS), help="directories to scan")
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default all)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON result, no table")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or not tools:
        parser.error(f"--tools takes names from {','.join(TOOLS)}; got {args.tools!r}")
    args.tools = [t for t in TOOLS if t in tools]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0; 1 with --check when a measured target is missed; 2 when scratchpack fails."""
    args = parse_args(argv)
    files = find_elf_files(args.dirs, args.limit)
    if not files:
        log(f"no ELF files found in {', '.join(args.dirs)}")
        return 2
    log(f"{len(files)} ELF files; 1 warm-up round (not counted) + {args.rounds} timed rounds")
    with tempfile.TemporaryDirectory(prefix="bench_deps.") as workdir:
        bench = Bench(files, args.tools, workdir)
        bench.run(args.rounds)
    ratios, targets = evaluate(bench.stats)
    if args.json:
        result = {
            "files": len(files),
            "dirs": list(args.dirs),
            "warmup_rounds": 1,
            "rounds": args.rounds,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "tools": {name: tool.as_dict() for name, tool in bench.stats.items()},
            "ratios": ratios,
            "targets": [vars(t) for t in targets],
        }
        print(json.dumps(result, indent=2))
    else:
        print(render_table(files, args.dirs, args.rounds, bench.stats, targets))
    sp = bench.stats.get("scratchpack")
    if sp is not None and sp.failed:
        return 2
    if args.check and any(t.passed is False for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
