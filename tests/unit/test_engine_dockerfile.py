"""The bundled Dockerfile, written without Jinja2, is what Jinja2 renders of Dockerfile.j2."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from scratchpack.engine.context import (
    OwnedTree,
    bundled_dockerfile,
    render_dockerfile,
    render_template,
)
from scratchpack.image.config import ImageConfig

OWNED = [
    [],
    [OwnedTree(65532, 65532, "owned/0/", "/home/")],
    [
        OwnedTree(100, 101, "owned/0/", "/var/lib/app data/"),
        OwnedTree(0, 5, "owned/1/", '/srv/-x/$HOME/"q"/\\b/'),
    ],
]
CONFIGS = [
    ImageConfig(entrypoint=("/usr/bin/curl",)),
    ImageConfig(entrypoint=None),
    ImageConfig(entrypoint=None, cmd=("sh", "-c", 'echo "$HOME" \\ `id`')),
    ImageConfig(entrypoint=(), cmd=()),
    ImageConfig(
        entrypoint=("/app/run", "--name=é ü", "${X}"),
        cmd=("--flag", "a b"),
        env=(("PATH", "/usr/bin:/bin"), ("A_B", 'x "y" $z \\ w'), ("EMPTY", "")),
        workdir="/srv/$dir with space",
        user="1000:1000",
        expose=("80", "443/tcp", "$PORT"),
        labels=(("org.example.x", 'a "b" $c'), ("k y", "")),
    ),
    ImageConfig(entrypoint=("/x",), workdir="", user=""),
]


@pytest.mark.parametrize(
    ("config", "owned"),
    list(itertools.product(CONFIGS, OWNED)),
)
def test_bundled_dockerfile_is_what_jinja2_renders(
    config: ImageConfig, owned: list[OwnedTree]
) -> None:
    assert bundled_dockerfile(config, owned) == render_template(config, owned, None)
    assert render_dockerfile(config, owned) == render_template(config, owned, None)


def test_a_user_template_is_still_rendered_by_jinja2(tmp_path: Path) -> None:
    template = tmp_path / "mine.j2"
    template.write_text(
        "FROM scratch\n{% for key, value in env %}ENV {{ key }}={{ value | quote }}\n{% endfor %}"
    )
    config = ImageConfig(entrypoint=None, env=(("A", "$b"),))
    assert render_dockerfile(config, [], template) == 'FROM scratch\nENV A="\\$b"\n'


def test_the_bundled_dockerfile_needs_no_jinja2() -> None:
    """A build through the engine with the bundled template never imports Jinja2."""
    import subprocess

    code = (
        "import sys\n"
        "from scratchpack.engine.context import render_dockerfile\n"
        "from scratchpack.image.config import ImageConfig\n"
        "render_dockerfile(ImageConfig(entrypoint=('/x',)), [])\n"
        "print('jinja2' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
