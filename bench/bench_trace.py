"""Benchmark: parsing a strace log as ``shrink --trace`` reads it, against reading it at all.

The log is synthetic and shaped like the one that took 87 s before (issue 15):
``--lines`` lines (20,000) of about ``--width`` bytes (4 KB) each — execve calls
with long argument vectors, openat and newfstatat of long paths, clone, chdir,
``<unfinished ...>``/``<... resumed>`` pairs — 80 MB in all, with
``--paths`` distinct paths. It is streamed from a file through
:func:`scratchpack.trace.parse.lines_of` into :func:`parse_log`, as the archive
API's stream is. The baseline is reading the same file in 1 MiB chunks.

Targets: at least 30 MB/s; peak memory growth bounded by the distinct paths, not
the log (a log twice as long with the same paths must not grow the parser's
memory by more than 10%). Memory is measured with tracemalloc.

    python bench/bench_trace.py [--lines 20000] [--width 4096] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import Target, log

from scratchpack.trace.parse import lines_of, parse_log


def synthetic_log(path: Path, lines: int, width: int, paths: int) -> int:
    """Write the log; its size in bytes."""
    padding = "x" * max(0, width - 200)
    with open(path, "w") as out:
        for number in range(lines):
            pid = 100 + number % 7
            target = f"/usr/lib/app/{number % paths:06d}/module-{padding[: 40 + number % 60]}.py"
            kind = number % 6
            if kind == 0:
                out.write(
                    f'{pid} execve("/usr/bin/python3", ["python3", "-c", "{padding}"], '
                    f"0x7ffd /* 20 vars */) = 0\n"
                )
            elif kind == 1:
                out.write(
                    f'{pid} openat(AT_FDCWD, "{target}", O_RDONLY|O_CLOEXEC) = 3</{padding}>\n'
                )
            elif kind == 2:
                out.write(f'{pid} newfstatat(AT_FDCWD, "{target}", {{st_mode=S_IFREG|0644, '
                          f"st_size={number}, ...}}, 0) = 0 {padding}\n")  # fmt: skip
            elif kind == 3:
                out.write(f'{pid} openat(AT_FDCWD, "{target}", O_RDONLY <unfinished ...>\n')
                out.write(f"{pid} <... openat resumed>) = 4 {padding[:2000]}\n")
            elif kind == 4:
                out.write(
                    f"{pid} clone(child_stack=NULL, flags=CLONE_VM|SIGCHLD) = {pid + 1} {padding}\n"
                )
            else:
                out.write(f'{pid} chdir("/usr/lib/app/{number % paths:06d}") = 0 {padding}\n')
    return path.stat().st_size


def parse_file(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(path, "rb") as stream:
        parsed = parse_log(lines_of(stream), "/")
    return time.perf_counter() - started, len(parsed.paths)


def read_file(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as stream:
        while stream.read(1 << 20):
            pass
    return time.perf_counter() - started


def peak_memory(path: Path) -> int:
    tracemalloc.start()
    with open(path, "rb") as stream:
        parse_log(lines_of(stream), "/")
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--paths", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as work:
        log_path = Path(work) / "trace.log"
        size = synthetic_log(log_path, args.lines, args.width, args.paths)
        double = Path(work) / "double.log"
        synthetic_log(double, args.lines * 2, args.width, args.paths)
        log(f"synthetic log: {size / 1e6:.1f} MB, {args.lines} lines, {args.paths} paths")
        parse_file(log_path)  # warm-up: the page cache
        times, reads = [], []
        found = 0
        for number in range(args.rounds):
            elapsed, found = parse_file(log_path)
            reads.append(read_file(log_path))
            times.append(elapsed)
            log(f"round {number + 1}/{args.rounds}: parsed in {elapsed:.2f} s")
        one, two = peak_memory(log_path), peak_memory(double)
    parse_s = statistics.median(times)
    read_s = statistics.median(reads)
    rate = size / 1e6 / parse_s
    growth = two / one - 1
    targets = [
        Target("parse rate", rate, 30, " MB/s", rate >= 30),
        Target("memory growth for a log twice as long", growth * 100, 10, " %", growth <= 0.10),
    ]
    if args.json:
        print(json.dumps({"bytes": size, "parse_seconds": parse_s, "read_seconds": read_s,
                          "rate_mb_s": rate, "paths": found, "peak_bytes": [one, two],
                          "targets": [t.__dict__ for t in targets]}, indent=2))  # fmt: skip
    else:
        print(f"log {size / 1e6:.1f} MB: parse {parse_s:.2f} s ({rate:.0f} MB/s), "
              f"read alone {read_s:.3f} s; {found} paths; peak {one / 1e6:.1f} MB "
              f"(twice the log: {two / 1e6:.1f} MB)")  # fmt: skip
        for target in targets:
            print(target.line())
    return 1 if args.check and not all(t.passed for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
