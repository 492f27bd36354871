"""``build --update``: a lock re-resolved afresh, the image rebuilt, both published together.

A signed repository of the test's (``tests/debkit.py``) holds a small package at
1.0-1; an image of it is written with ``--layers packages`` and its lock. The
repository then gains 1.0-2 (re-signed, same key, same place): ``--update``
names the package's move, changes only its layer and the records layer, says
what a push uploads (those layers and the config) and rewrites the lock; a
second ``--update`` finds nothing to do and rebuilds the very same image. Debian's
``base-files`` and ``base-passwd`` come from the suite's package cache
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.conftest import unavailable
from tests.debkit import Deb, File, Repository, signed_repository
from tests.integration.test_layers_packages import layers

CACHE = Path(os.environ.get("SCRATCHPACK_TEST_CACHE", "/var/cache/scratchpack-tests"))
BUSYBOX = Path("/bin/busybox")
PACKAGE = "scratchpack-test-update-app"


def run(*args: str, cwd: Path, engine: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"SCRATCHPACK_CACHE": str(CACHE / "packages"), "SOURCE_DATE_EPOCH": "0"}
    if not engine:
        env.update(cli.NO_ENGINE)
    return cli.scratchpack("build", *args, cwd=cwd, env=env, timeout=900)


def ok(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if proc.returncode != 0 and "apt could not fetch the package lists" in proc.stderr:
        unavailable(f"no Debian mirror: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def app(version: str) -> Deb:
    return Deb(
        PACKAGE,
        version,
        files={
            "usr/bin/update-app": File(BUSYBOX.read_bytes(), 0o755),
            "usr/share/update-app/version": File(version.encode()),
        },
    )


def publish(top: Path, version: str, keys: Path) -> Repository:
    """The repository at ``top`` offering ``version`` of the package, signed by ``keys``."""
    return signed_repository(top, [app(version)], gnupg_home=keys)


def layer_digests(archive: Path) -> dict[str, str]:
    """Each layer's history comment -> its digest, in an OCI archive the writer made."""
    return {comment: digest for digest, _, comment, _ in layers(archive)}


def first_build(work: Path, *more: str) -> tuple[Repository, list[str]]:
    """The repository at 1.0-1 in ``work``, and the arguments of a build of its package
    into ``work/app.tar`` pinned by ``work/app.lock``."""
    if not BUSYBOX.is_file():
        unavailable(f"{BUSYBOX} is missing: apt-get install busybox-static")
    repo = publish(work / "repo", "1.0-1", work / "gnupg")
    args = ["--package", PACKAGE, "--repository", repo.line, "--lock", str(work / "app.lock"),
            *more, "-t", "update-app:test", "-o", str(work / "app.tar")]  # fmt: skip
    return repo, args


def locked_version(lock: Path) -> str:
    document = json.loads(lock.read_text())
    (platform,) = document["platforms"].values()
    return next(ref["version"] for ref in platform["packages"] if ref["name"] == PACKAGE)


def test_an_update_moves_one_package_and_only_its_layers(tmp_path: Path) -> None:
    repo, args = first_build(tmp_path, "--layers", "packages")
    image, lock = tmp_path / "app.tar", tmp_path / "app.lock"
    first = ok(run("--json", *args, cwd=tmp_path))
    assert "update" not in first and locked_version(lock) == "1.0-1"
    assert any(archive["uri"] == repo.uri for archive in first["archives"])
    old_layers = layer_digests(image)

    again = publish(tmp_path / "repo", "1.0-2", tmp_path / "gnupg")
    assert again.line == repo.line  # the same repository, re-signed
    updated = ok(run("--json", *args, "--update", cwd=tmp_path))["update"]
    assert updated["packages"] == [
        {"platform": "linux/amd64", "name": PACKAGE, "change": "upgraded",
         "old": "1.0-1", "new": "1.0-2"}
    ]  # fmt: skip
    assert locked_version(lock) == "1.0-2"  # the lock moved with the image
    new_layers = layer_digests(image)
    changed = sorted(comment for comment, digest in new_layers.items()
                     if old_layers.get(comment) != digest)  # fmt: skip
    assert changed == ["package records", f"packages: {PACKAGE}"]
    (platform,) = updated["images"]
    assert updated["compared_with"] == str(image) and not updated["identical"]
    new = [layer for layer in platform["layers"] if not layer["kept"]]
    assert sorted(layer["digest"] for layer in new) == sorted(new_layers[c] for c in changed)
    with tarfile.open(image) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))  # fmt: skip
    config_size = manifest["config"]["size"]
    assert updated["upload_bytes"] == sum(layer["size"] for layer in new) + config_size
    assert updated["digest"] == index["manifests"][0]["digest"]

    text = run(*args, "--update", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    digest = updated["digest"]
    assert f"no package changed: the image is byte-identical (digest {digest})" in text.stdout
    again = ok(run("--json", *args, "--update", cwd=tmp_path))["update"]
    assert again["identical"] and again["packages"] == [] and again["upload_bytes"] == 0
    assert again["digest"] == digest and layer_digests(image) == new_layers


def layout_layers(layout: Path) -> dict[str, str]:
    """Each layer's history comment -> its digest, in a layout directory, every blob the
    index names present and of its digest (what a reader of the layout needs)."""
    import hashlib

    def blob(digest: str) -> bytes:
        data = (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    assert (layout / "oci-layout").is_file()
    (entry,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    comments = [
        step.get("comment", "") for step in config["history"] if not step.get("empty_layer")
    ]
    digests = [layer["digest"] for layer in manifest["layers"]]
    for digest in digests:
        blob(digest)
    return dict(zip(comments, digests, strict=True))


def test_an_update_replaces_a_layout_directory(tmp_path: Path) -> None:
    """-o DIR, an OCI layout: --update reads it to compare, then swaps it for the new one
    (nothing left beside it); without --update the directory stays refused. (A second,
    identical --update is the archive's test above: each build here resolves, ~5 s.)"""
    _repo, args = first_build(tmp_path, "--layers", "packages")
    layout = tmp_path / "app-layout"
    args[args.index(str(tmp_path / "app.tar"))] = str(layout)
    ok(run("--json", *args, cwd=tmp_path))
    old_layers = layout_layers(layout)
    refused = run(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "exists and is not empty; choose a new path" in (
        refused.stderr
    )
    publish(tmp_path / "repo", "1.0-2", tmp_path / "gnupg")
    updated = ok(run("--json", *args, "--update", cwd=tmp_path))
    new_layers = layout_layers(layout)
    changed = sorted(comment for comment, digest in new_layers.items()
                     if old_layers.get(comment) != digest)  # fmt: skip
    assert changed == ["package records", f"packages: {PACKAGE}"]
    (platform,) = updated["update"]["images"]
    assert updated["update"]["compared_with"] == str(layout)
    new = sorted(layer["digest"] for layer in platform["layers"] if not layer["kept"])
    assert new == sorted(new_layers[comment] for comment in changed)
    assert updated["manifest_digest"] == updated["update"]["digest"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "app-layout",
        "app.lock",
        "gnupg",
        "repo",
    ]


def test_update_refuses_a_lock_that_is_not_there(tmp_path: Path) -> None:
    proc = run("--package", PACKAGE, "--lock", str(tmp_path / "none.lock"), "--update",
               "-t", "update-app:none", "-o", str(tmp_path / "x.tar"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "--update re-resolves an existing lock: no file" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_failed_update_leaves_the_image_and_the_lock_as_they_were(tmp_path: Path) -> None:
    """1.0-2 is resolved and written, then --verify cannot run (no engine): neither the
    image nor the lock moves, and nothing is left beside them."""
    _repo, args = first_build(tmp_path)
    image, lock = tmp_path / "app.tar", tmp_path / "app.lock"
    ok(run("--json", *args, cwd=tmp_path))
    publish(tmp_path / "repo", "1.0-2", tmp_path / "gnupg")
    before = (image.read_bytes(), lock.read_bytes())
    proc = run(*args, "--update", "--verify", "--version", cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert (image.read_bytes(), lock.read_bytes()) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "app.lock",
        "app.tar",
        "gnupg",
        "repo",
    ]


def test_an_update_whose_repository_another_key_signed_fails(tmp_path: Path) -> None:
    """The attack: the repository's new index is signed by a key the line does not name.
    apt keeps its previous lists; an update must not then report 'no package changed'."""
    _repo, args = first_build(tmp_path)
    ok(run("--json", *args, cwd=tmp_path))
    publish(tmp_path / "repo", "1.0-2", tmp_path / "another-key")
    before = ((tmp_path / "app.tar").read_bytes(), (tmp_path / "app.lock").read_bytes())
    proc = run(*args, "--update", cwd=tmp_path)
    assert ((tmp_path / "app.tar").read_bytes(), (tmp_path / "app.lock").read_bytes()) == before
    assert proc.returncode != 0 and "not signed by its signed-by key" in proc.stderr


@pytest.mark.engine
def test_an_update_into_the_engine_compares_with_the_engines_image(
    tmp_path: Path, docker_client: Any
) -> None:
    """No -o: the written image is loaded under TAG, and the next --update reads TAG back
    from the engine to compare (its layers by content: the engine stores them unpacked)."""
    tag = f"scratchpack-test/update:{uuid.uuid4().hex[:12]}"
    _repo, args = first_build(tmp_path, "--layers", "packages")
    args = [arg for arg in args if arg not in ("-o", str(tmp_path / "app.tar"))]
    args[args.index("update-app:test")] = tag
    try:
        first = ok(run("--json", *args, cwd=tmp_path, engine=True))
        assert first["loaded"] is True
        same = ok(run("--json", *args, "--update", cwd=tmp_path, engine=True))["update"]
        assert same["compared_with"] == f"the engine's {tag}" and same["identical"]
        publish(tmp_path / "repo", "1.0-2", tmp_path / "gnupg")
        moved = ok(run("--json", *args, "--update", cwd=tmp_path, engine=True))
        (image,) = moved["update"]["images"]
        assert [layer["kept"] for layer in image["layers"]].count(False) == 2
        assert docker_client.images.get(tag).attrs["RootFS"]["Layers"] == moved["diff_ids"]
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)
    assert not list(tmp_path.glob("*.tar"))
