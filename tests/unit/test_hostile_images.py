"""Images, archives and files built to hurt: each ends in one clear line, exit 2.

Every field of an OCI index, manifest and config and of a docker archive's
manifest.json is replaced in turn by values of the wrong type (digests kept
consistent, so the field itself is what gets read); a small layer that
expands without bound, a FIFO or a device given as the image, deeply nested
JSON in ``~/.docker/config.json``, ELF headers the kernel refuses. Nothing may
end in another exception (exit 70) or hang.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchpack.errors import InputError
from scratchpack.image.readers import open_image
from scratchpack.image.registry import PushError, credentials_from_docker_config
from scratchpack.image.unpack import unpack
from scratchpack.ld.resolve import Resolver
from tests import cli
from tests.cfixtures import REPO_ROOT
from tests.imagekit import d, f, layer, sha, write_docker_archive, write_oci

LAYERS = [layer(d("bin"), f("bin/app", b"app", mode=0o755))]
HOSTILE = [7, 1.5, "x", [], {}, None, True, [[["deep"]]], {"a": {"b": [1]}}, -1]


def paths_of(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a JSON document, containers included."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*prefix, key)
            yield from paths_of(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield (*prefix, index)
            yield from paths_of(value, (*prefix, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    result = copy.deepcopy(document)
    target = result
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return result


class Layout:
    """An OCI layout whose documents can be rewritten, digests kept consistent."""

    def __init__(self, top: Path) -> None:
        self.top = write_oci(top, LAYERS)
        self.index = json.loads((self.top / "index.json").read_text())
        self.manifest = self._blob(self.index["manifests"][0]["digest"])
        self.config = self._blob(self.manifest["config"]["digest"])

    def _blob(self, digest: str) -> Any:
        return json.loads((self.top / "blobs/sha256" / digest[7:]).read_bytes())

    def _put(self, document: Any) -> tuple[str, int]:
        data = json.dumps(document).encode()
        (self.top / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        return sha(data), len(data)

    def write(self, index: Any, manifest: Any, config: Any) -> None:
        if isinstance(manifest, dict) and isinstance(manifest.get("config"), dict):
            digest, size = self._put(config)
            if manifest["config"].get("digest") == self.manifest["config"]["digest"]:
                manifest["config"].update(digest=digest, size=size)
        if isinstance(index, dict) and isinstance(index.get("manifests"), list):
            first = index["manifests"][0] if index["manifests"] else None
            if (
                isinstance(first, dict)
                and first.get("digest") == self.index["manifests"][0]["digest"]
            ):
                digest, size = self._put(manifest)
                first.update(digest=digest, size=size)
        (self.top / "index.json").write_text(json.dumps(index))


def read_and_unpack(reference: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    source = open_image(str(reference), work / "w")
    source.image.config  # noqa: B018 - every field checked
    (work / "root").mkdir(exist_ok=True)
    unpack(source.image, work / "root")


def assert_clear(error: BaseException) -> None:
    assert isinstance(error, InputError), f"{type(error).__name__}: {error}"
    text = str(error)
    assert text and "\n" not in text and error.exit_code == 2


@pytest.mark.parametrize("document", ["index", "manifest", "config"])
def test_every_oci_field_of_the_wrong_type_is_a_clear_error(tmp_path: Path, document: str) -> None:
    original = Layout(tmp_path / "original")
    fields = list(paths_of(getattr(original, document)))
    assert fields
    tried = 0
    for number, path in enumerate(fields):
        for value_number, value in enumerate(HOSTILE):
            work = tmp_path / f"{document}-{number}-{value_number}"
            layout = Layout(work / "layout")
            documents = {
                "index": layout.index,
                "manifest": layout.manifest,
                "config": layout.config,
            }
            documents[document] = replaced(documents[document], path, value)
            layout.write(documents["index"], documents["manifest"], documents["config"])
            try:
                read_and_unpack(layout.top, work)
            except Exception as error:
                assert_clear(error)
            tried += 1
    assert tried == len(fields) * len(HOSTILE)


def test_every_docker_manifest_field_of_the_wrong_type_is_a_clear_error(tmp_path: Path) -> None:
    archive = write_docker_archive(tmp_path / "docker.tar", LAYERS)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])
    for number, path in enumerate(paths_of(manifest)):
        for value_number, value in enumerate(HOSTILE):
            work = tmp_path / f"docker-{number}-{value_number}"
            work.mkdir()
            changed = dict(
                members, **{"manifest.json": json.dumps(replaced(manifest, path, value)).encode()}
            )
            target = work / "image.tar"
            with tarfile.open(target, "w") as tar:
                for name, data in changed.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            try:
                read_and_unpack(target, work)
            except Exception as error:
                assert_clear(error)


def test_a_small_layer_that_expands_without_bound_is_refused(tmp_path: Path) -> None:
    # 64 MiB of zeros compress to 64 kB; the bound here is 16 MiB.
    big = layer(f("zeros", b"\0" * (64 << 20)))
    image = write_oci(tmp_path / "bomb", [big], blobs=[gzip.compress(big, 9)])
    source = open_image(str(image), tmp_path / "w")
    (tmp_path / "root").mkdir()
    with pytest.raises(InputError, match="unpacks to more than the --max-unpacked-size") as error:
        unpack(source.image, tmp_path / "root", max_bytes=16 << 20)
    assert_clear(error.value)
    assert sum(p.stat().st_size for p in (tmp_path / "root").rglob("*") if p.is_file()) == 0


def test_a_fifo_or_a_device_given_as_the_image_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    for reference in (fifo, Path("/dev/zero")):
        with pytest.raises(InputError, match="not a regular file") as error:
            open_image(str(reference), tmp_path / "w")
        assert_clear(error.value)


def test_a_deeply_nested_docker_config_is_a_push_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"auths":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(PushError, match="nested too deeply") as error:
        credentials_from_docker_config("registry.example", config)
    assert "\n" not in str(error.value) and error.value.exit_code == 5


def patched(tmp_path: Path, name: str, phnum: int) -> Path:
    data = bytearray(Path("/usr/bin/true").read_bytes())
    data[56:58] = struct.pack("<H", phnum)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("name", "phnum"), [("xnum", 0xFFFF), ("none", 0), ("many", 2000)])
def test_elf_headers_the_kernel_refuses_are_input_errors(
    tmp_path: Path, name: str, phnum: int
) -> None:
    program = patched(tmp_path, name, phnum)
    with pytest.raises(InputError, match="corrupt") as error:
        Resolver().read_input(str(program))
    assert_clear(error.value)
    done = cli.scratchpack("deps", program, cwd=REPO_ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "statically linked" not in done.stdout
