"""A request's cached tools image follows security updates (commands/debug.py).

Tools such as tcpdump parse hostile traffic with raw-socket capabilities: a tools
image resolved once and reused forever would keep a fixed CVE. A request's image
is used as it is for a day after apt was last asked; then the request is resolved
again (the same packages find the same image, new ones make a new one), and when
apt cannot be reached the cached image still serves, with a warning.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scratchpack.commands import debug
from scratchpack.commands.debug import PackageTools, ToolsRequest, ensure_package_tools
from scratchpack.notes import collecting
from scratchpack.packages.apt import PackageError


class _Engine:
    def architecture(self) -> str:
        return "amd64"


def _tools(image: str, cached: bool) -> PackageTools:
    return PackageTools(image, "scratchpack-tools/pkgs:x", ("strace",), ("strace=6:amd64",), cached)


@pytest.fixture
def engine_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The request tag's image in a pretend engine, and what each resolution makes."""
    monkeypatch.setenv("SCRATCHPACK_CACHE", str(tmp_path / "cache"))
    state: dict[str, object] = {"alias": None, "resolved": 0, "next": "sha256:new", "fail": None}

    def labelled(_engine: object, _alias: str, _key: str) -> PackageTools | None:
        image = state["alias"]
        return _tools(str(image), cached=True) if image else None

    def make(*_args: object) -> PackageTools:
        if state["fail"] is not None:
            raise PackageError(str(state["fail"]))
        state["resolved"] = int(state["resolved"]) + 1  # type: ignore[call-overload]
        state["alias"] = state["next"]
        return _tools(str(state["next"]), cached=False)

    monkeypatch.setattr(debug, "_labelled_tools", labelled)
    monkeypatch.setattr(debug, "_make_package_tools", make)
    return state


def _ensure() -> PackageTools:
    return ensure_package_tools(_Engine(), ToolsRequest(("strace",)))  # type: ignore[arg-type]


def _age_stamps(cache: Path, seconds: float) -> None:
    for stamp in (cache / "tools").iterdir():
        then = time.time() - seconds
        os.utime(stamp, (then, then))


def test_a_request_is_resolved_once_a_day(engine_images: dict, tmp_path: Path) -> None:
    assert not _ensure().cached and engine_images["resolved"] == 1
    assert _ensure().cached and engine_images["resolved"] == 1  # within the day: as it is
    _age_stamps(tmp_path / "cache", debug.TOOLS_MAX_AGE + 60)
    engine_images["next"] = "sha256:patched"
    again = _ensure()
    assert not again.cached and again.image == "sha256:patched"
    assert engine_images["resolved"] == 2
    assert _ensure().cached


def test_an_image_found_without_a_check_of_ours_is_resolved_again(engine_images: dict) -> None:
    engine_images["alias"] = "sha256:from-before"  # made before stamps, or retagged since
    assert not _ensure().cached and engine_images["resolved"] == 1


def test_a_stamp_for_another_image_is_no_check_of_this_one(
    engine_images: dict, tmp_path: Path
) -> None:
    _ensure()
    engine_images["alias"] = "sha256:someone-else-tagged"
    assert not _ensure().cached and engine_images["resolved"] == 2


def test_without_apt_the_cached_tools_serve_with_a_warning(
    engine_images: dict, tmp_path: Path
) -> None:
    _ensure()
    _age_stamps(tmp_path / "cache", debug.TOOLS_MAX_AGE + 60)
    engine_images["fail"] = "apt-get update failed: could not resolve deb.debian.org"
    with collecting() as warnings:
        found = _ensure()
    assert found.cached and found.image == "sha256:new"
    assert any("could not be checked for updates" in one for one in warnings.messages)
    assert any("deb.debian.org" in one for one in warnings.messages)


def test_without_apt_and_without_a_cached_image_the_error_stands(engine_images: dict) -> None:
    engine_images["fail"] = "apt-get update failed"
    with pytest.raises(PackageError):
        _ensure()


def test_a_cache_that_cannot_be_written_checks_every_time(
    engine_images: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SCRATCHPACK_CACHE", str(tmp_path / "file"))  # not a directory
    assert not _ensure().cached
    assert not _ensure().cached and engine_images["resolved"] == 2


def test_an_image_id_that_is_not_ascii_is_no_internal_error(engine_images: dict) -> None:
    engine_images["next"] = "sha256:\xe9t\xe9"  # the engine's word
    assert not _ensure().cached
    assert not _ensure().cached  # recorded as something else: asked again, never trusted


def test_a_planted_link_at_the_stamps_partial_name_is_not_written_through(
    engine_images: dict, tmp_path: Path
) -> None:
    _ensure()
    (stamp,) = (tmp_path / "cache" / "tools").iterdir()
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    stamp.unlink()
    stamp.symlink_to(victim)  # the stamp itself a link: replaced, not written through
    _age_stamps_no_follow(stamp)
    _ensure()
    assert victim.read_text() == "mine\n"
    assert not stamp.is_symlink()


def _age_stamps_no_follow(stamp: Path) -> None:
    then = time.time() - debug.TOOLS_MAX_AGE - 60
    os.utime(stamp, (then, then), follow_symlinks=False)
