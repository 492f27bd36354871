"""Benchmark: ``scratchpack shrink`` of a file-heavy image against reading the image at all.

The image is a Debian 12 root with Node.js (the suite's cached debootstrap root,
``/var/cache/scratchpack-tests/debian-node-*.tar``, or any ``--root-tar``) and a
second layer of ``--files`` small files (100,000 by default), like a
``node_modules`` tree: ``--shape files`` puts 100 in a directory
(``pkg{N}/file{M}.js``), ``--shape dirs`` each in a directory of its own
(``p{N}/m{M}/index.js``, real trees' shape: the root then holds as many
directories as files). Each image is made once in the local engine and reused.

The baseline is the physical minimum of reading that image: ``docker save`` piped
into ``tar -x``, then every layer's tar extracted in order into one root with GNU
tar (every layer's bytes out of the engine, every file onto disk).
Against it, in one run, interleaved over ``--rounds``:

- ``shrink IMAGE -t TAG`` through the engine (read, unpack, plan, write, load);
- ``shrink IMAGE -t TAG -o out.tar`` (the same, written by the built-in writer).

Targets: shape ``files`` (issue 15), each shrink at most 1.5x the baseline and peak
RSS under 300 MB; shape ``dirs`` (issue 26), each at most 0.5x and under 200 MB;
both, ``-o`` no slower than the engine path. Every child is reaped with
``os.wait4`` for its wall time and peak RSS; the peak is also given per entry of
the image (its layers' files, directories and links), what the index of the
root grows by.

    python bench/bench_shrink.py [--shape files|dirs] [--rounds 3] [--files 100000]
                                 [--json] [--check]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Target, log, ratio

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_TARS = "/var/cache/scratchpack-tests/debian-node-*.tar"
BASE = "scratchpack-bench/node-root:1"
IMAGE = {
    "files": "scratchpack-bench/node-files:{files}",
    "dirs": "scratchpack-bench/node-dirs:{files}",
}


def member_name(shape: str, number: int) -> str:
    """Where small file ``number`` goes: 100 to a directory ("files"), or one per directory."""
    if shape == "dirs":  # node_modules-like: p{N}/m{M}/index.js, a directory per file
        return f"node_modules/p{number // 100}/m{number % 100}/index.js"
    return f"node_modules/pkg{number // 100}/file{number % 100}.js"


def run(command: list[str] | str, shell: bool = False) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (KiB) and status of one child, reaped with wait4."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        shell=shell,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        log(f"  exit {code}: {error.strip()[-400:]}")
    return elapsed, usage.ru_maxrss, code


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def image_entries(root_tar: str, files: int, shape: str) -> int:
    """The entries of the image's two layers: the root tar's, and the small files' with
    their directories (the top two included)."""
    with tarfile.open(root_tar) as tar:
        base = sum(1 for _ in tar)
    directories = files // 100 + (files if shape == "dirs" else 0)
    return base + files + directories + 2


TARGETS = {"files": (1.5, 300), "dirs": (0.5, 200)}  # (times the baseline, MB of peak RSS)


def targets_of(shape: str, median: dict[str, float], peak: dict[str, float]) -> list[Target]:
    most, megabytes = TARGETS[shape]
    engine_ratio = ratio(median["engine"], median["baseline"])
    output_ratio = ratio(median["output"], median["baseline"])
    highest = max(peak["engine"], peak["output"])
    return [
        Target("shrink (engine) / save+untar", engine_ratio, most, "x",
               engine_ratio is not None and engine_ratio <= most),
        Target("shrink -o / save+untar", output_ratio, most, "x",
               output_ratio is not None and output_ratio <= most),
        Target("shrink -o / shrink (engine)", ratio(median["output"], median["engine"]), 1.0, "x",
               median["output"] <= median["engine"] * 1.05),
        Target("peak RSS of shrink", highest, megabytes, " MB", highest < megabytes),
    ]  # fmt: skip


def make_image(root_tar: str, files: int, shape: str) -> str:
    """The Debian root imported as one layer, and a layer of ``files`` small files on top."""
    name = IMAGE[shape].format(files=files)
    if image_exists(name):
        return name
    if not image_exists(BASE):
        log(f"importing {root_tar} as {BASE}")
        subprocess.run(
            ["docker", "import", "--change", 'CMD ["node", "-e", "console.log(1)"]',
             "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin", root_tar, BASE],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    log(f"building {name}: {files} small files in a second layer")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {BASE}\nCOPY node_modules /app/node_modules\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for number in range(files):
            body = f"module.exports = {number};\n".encode()
            info = tarfile.TarInfo(member_name(shape, number))
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    build = subprocess.run(
        ["docker", "build", "-q", "--pull=false", "-t", name, "-"],
        input=context.getvalue(), capture_output=True, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder: FROM a local image
    )  # fmt: skip
    if build.returncode != 0:
        raise SystemExit(f"docker build failed: {build.stderr.decode()[-400:]}")
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--root-tar", default=None, help=f"default: {ROOT_TARS}")
    parser.add_argument("--shape", choices=sorted(IMAGE), default="files",
                        help="files: 100 a directory; dirs: a directory per file")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    root_tar = args.root_tar or next(iter(sorted(glob.glob(ROOT_TARS))), None)
    if root_tar is None:
        raise SystemExit(f"no {ROOT_TARS}: run the suite once (tests/debian_images.py makes it)")
    image = make_image(root_tar, args.files, args.shape)
    python = [sys.executable, "-m", "scratchpack"]
    work = Path(tempfile.mkdtemp(prefix="bench-shrink-"))
    results: dict[str, list[tuple[float, int]]] = {"baseline": [], "engine": [], "output": []}
    try:
        for number in range(args.rounds + 1):
            label = "warm-up" if number == 0 else f"round {number}/{args.rounds}"
            out, root = work / "untar", work / "root"
            out.mkdir()
            root.mkdir()
            os.sync()  # no side pays for writing back another's files (as bench_build)
            base = run(
                f"docker save {image} | tar -x -C {out} && "
                f"for layer in $(python3 -c 'import json,sys; "
                f'print(" ".join(json.load(open(sys.argv[1]))[0]["Layers"]))\' '
                f"{out}/manifest.json); do tar -x -f {out}/$layer -C {root}; done",
                shell=True,
            )
            shutil.rmtree(out)
            shutil.rmtree(root)
            os.sync()
            engine = run([*python, "shrink", image, "-t", "scratchpack-bench/thin:1"])
            archive = work / "thin.tar"
            os.sync()
            output = run([*python, "shrink", image, "-t", "scratchpack-bench/thin:1",
                          "-o", str(archive)])  # fmt: skip
            archive.unlink(missing_ok=True)
            log(f"{label}: save+untar {base[0]:.1f} s, shrink {engine[0]:.1f} s, "
                f"shrink -o {output[0]:.1f} s")  # fmt: skip
            if number:
                for key, value in (("baseline", base), ("engine", engine), ("output", output)):
                    results[key].append((value[0], value[1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["docker", "rmi", "scratchpack-bench/thin:1"], capture_output=True)
    median = {key: statistics.median(t for t, _ in values) for key, values in results.items()}
    peak = {key: max(rss for _, rss in values) / 1024 for key, values in results.items()}
    targets = targets_of(args.shape, median, peak)
    entries = image_entries(root_tar, args.files, args.shape)
    per_entry = {key: megabytes * 2**20 / entries for key, megabytes in peak.items()}
    if args.json:
        print(json.dumps({"image": image, "shape": args.shape, "files": args.files,
                          "entries": entries, "median_seconds": median, "peak_rss_mb": peak,
                          "peak_rss_bytes_per_entry": per_entry,
                          "targets": [t.__dict__ for t in targets]}, indent=2))  # fmt: skip
    else:
        print(f"image {image}: {entries} entries, {args.rounds} rounds, medians")
        for key, label in (("baseline", "docker save | tar -x"), ("engine", "shrink"),
                           ("output", "shrink -o")):  # fmt: skip
            print(f"  {label:<22} {median[key]:7.2f} s   peak RSS {peak[key]:6.0f} MB"
                  f" ({per_entry[key]:4.0f} B/entry)")  # fmt: skip
        for target in targets:
            print(target.line())
    return 1 if args.check and not all(t.passed for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
