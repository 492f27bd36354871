"""A user's own files land under /app: the same binary from two directories is the same image.

Issue 22, item 6. The BINARY (and a DEST-less ``--include``) is copied into two
temporary directories of different depths and built with the built-in writer
(reproducible, SOURCE_DATE_EPOCH 0): the archives are byte-identical and name no
directory of the build machine. In the engine the image runs with Entrypoint
``/app/NAME``, and an ``$ORIGIN`` library beside the program still loads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests import cli
from tests.cfixtures import REPO_ROOT

SAMPLES = REPO_ROOT / "samples"
# sample, what a copy of it holds, the program, in the image, what it prints
HELLO = ("hello-world", ("hello-world",), "/app/hello-world", "Hello from scratchpack!\n")
GREET = ("origin-lib", ("greet", "lib"), "/app/greet", "greetings from libgreet 1.0.0\n")


@pytest.fixture(scope="module", autouse=True)
def samples() -> None:
    subprocess.run(["make", "-s", "-C", str(SAMPLES)], check=True)


def copy_sample(sample: str, files: tuple[str, ...], directory: Path) -> Path:
    """The sample's ``files`` in ``directory``, as a clone there would have them."""
    directory.mkdir(parents=True)
    for name in files:
        source = SAMPLES / sample / name
        if source.is_dir():
            shutil.copytree(source, directory / name, symlinks=True)
        else:
            shutil.copy2(source, directory / name)
    return directory / files[0]


def write(directory: Path, output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = cli.scratchpack(
        "build", *args, "-t", "stable:test", "--json", "-o", output,
        cwd=directory, env={**cli.NO_ENGINE, "SOURCE_DATE_EPOCH": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def archive_config(archive: Path) -> dict:
    """The image configuration of a ``-o x.tar`` archive (its docker-archive manifest)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]


def layer_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        names: list[str] = []
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(layer)) as inner:  # type: ignore[arg-type]
                names += inner.getnames()
    return names


@pytest.mark.parametrize(("sample", "files", "in_image", "output"), [HELLO, GREET])
def test_the_same_binary_from_two_directories_gives_the_same_archive(
    tmp_path: Path, sample: str, files: tuple[str, ...], in_image: str, output: str
) -> None:
    archives = []
    for directory in (tmp_path / "one", tmp_path / "two" / "clone" / "deeper"):
        program = copy_sample(sample, files, directory)
        archive = directory / "x.tar"
        proc = write(directory, archive, str(program))
        assert proc.stderr == ""  # the default entrypoint follows its program silently
        archives.append(archive)
    one, two = (hashlib.sha256(archive.read_bytes()).hexdigest() for archive in archives)
    assert one == two
    assert archive_config(archives[0])["config"]["Entrypoint"] == [in_image]
    names = layer_names(archives[0])
    assert in_image.lstrip("/") in names
    assert not any(name.startswith(str(tmp_path).lstrip("/")) for name in names)


def test_config_words_follow_the_move_and_src_src_keeps_a_path(tmp_path: Path) -> None:
    """``--cmd`` naming a moved file is rewritten with a warning; ``SRC:SRC`` stays put."""
    program = copy_sample(*HELLO[:2], tmp_path / "src")
    (tmp_path / "src" / "note.txt").write_text("a note\n")
    kept = tmp_path / "src" / "kept.txt"
    kept.write_text("kept\n")
    note = tmp_path / "src" / "note.txt"
    proc = write(
        tmp_path, tmp_path / "x.tar", str(program), "--include", str(note),
        "--include", f"{kept}:{kept}", "--cmd", str(note),
    )  # fmt: skip
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"Cmd: {note} is now /app/note.txt" in warnings[0], warnings
    config = archive_config(tmp_path / "x.tar")["config"]
    assert config["Entrypoint"] == ["/app/hello-world"] and config["Cmd"] == ["/app/note.txt"]
    names = layer_names(tmp_path / "x.tar")
    assert {"app/hello-world", "app/note.txt", str(kept).lstrip("/")} <= set(names)


@pytest.mark.engine
@pytest.mark.parametrize(("sample", "files", "in_image", "output"), [HELLO, GREET])
def test_the_engine_runs_the_image_from_app(  # type: ignore[no-untyped-def]
    docker_client, tmp_path: Path, sample: str, files: tuple[str, ...], in_image: str, output: str
) -> None:
    program = copy_sample(sample, files, tmp_path / "clone")
    tag = f"scratchpack-test/stable:{uuid.uuid4().hex[:12]}"
    proc = cli.scratchpack("build", program, "-t", tag, "--engine", "docker", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    try:
        assert docker_client.images.get(tag).attrs["Config"]["Entrypoint"] == [in_image]
        ran = docker_client.containers.run(tag, remove=True, network_disabled=True)
        assert ran.decode() == output
    finally:
        docker_client.images.remove(tag, force=True)
