"""Which accounts ``shrink`` keeps in ``/etc/passwd`` and ``/etc/group`` (issue 22, finding 6).

A memcached image runs ``memcached -u memcache``: the account is named only on
its command line, and the shrunk image must still have it. The roots are small
fake images (tests/unit/test_plan.py); nothing is built and no engine runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchpack.image.config import RuntimeConfig
from scratchpack.image.media import Platform
from scratchpack.plan.entries import Reason
from scratchpack.plan.shrink import ShrinkInputs, ShrinkPlan, plan_shrink
from scratchpack.plan.users import Wanted
from tests.cfixtures import is_host_glibc_x86_64
from tests.unit import test_plan

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "bin:x:2:2:bin:/bin:/usr/sbin/nologin\n"
    "sys:x:3:3:sys:/usr/bin:/usr/sbin/nologin\n"
    "games:x:5:60:games:/usr/games:/usr/sbin/nologin\n"
    "www-data:x:33:33::/var/www:/bin/sh\n"
    "memcache:x:100:101:Memcached:/nonexistent:/bin/false\n"
    "nobody:x:65534:65534::/nonexistent:/bin/sh\n"
    "other:x:1000:1000::/home/o:/bin/sh\n"
)
GROUP = (
    "root:x:0:\nbin:x:2:\nsys:x:3:\nstaff:x:50:\ngames:x:60:\nwww-data:x:33:\n"
    "memcache:x:101:\nnogroup:x:65534:\nother:x:1000:\n"
)
BASE = {"root", "nobody"}


# -- names on the command line: a pure table ----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names", "uids", "groups", "gids"),
    [
        (["memcached", "-u", "memcache"], {"memcache"}, set(), set(), set()),
        (["memcached", "--user", "memcache"], {"memcache"}, set(), set(), set()),
        (["memcached", "--user=memcache"], {"memcache"}, set(), set(), set()),
        (["memcached", "-umemcache"], {"memcache"}, set(), set(), set()),
        (["memcached", "-p", "11211", "-u", "memcache", "-v"], {"memcache"}, set(), set(), set()),
        (["server", "-u", "1000"], set(), {1000}, set(), set()),
        (["server", "--user", "www-data:staff"], {"www-data"}, set(), {"staff"}, set()),
        (["server", "-g", "staff"], set(), set(), {"staff"}, set()),
        (["server", "--group=staff", "-g50"], set(), set(), {"staff"}, {50}),
        (["server", "--group", "staff"], set(), set(), {"staff"}, set()),
        # A shell's script is split into words (never run): sh -c 'exec memcached -u memcache'.
        (["sh", "-c", "exec memcached -u memcache 'x y'"], {"memcache"}, set(), set(), set()),
        (["sh", "-c", "unbalanced ' -u memcache"], {"memcache"}, set(), set(), set()),
        # Hostile or meaningless values name nobody.
        (["server", "-u", "memcache:x:0:0::/:/bin/sh"], set(), set(), set(), set()),
        (["server", "-u", "../../etc/shadow"], set(), set(), set(), set()),
        (["server", "-u", "$(reboot)"], set(), set(), set(), set()),
        (["server", "-u", "a" * 40], set(), set(), set(), set()),
        (["server", "-u"], set(), set(), set(), set()),
        (["server", "-u", ""], set(), set(), set(), set()),
        (["nginx", "-g", "daemon off;"], set(), set(), set(), set()),
        (["server", "--users", "memcache", "--userx=memcache"], set(), set(), set(), set()),
        (["server", "memcache", "user", "-v"], set(), set(), set(), set()),
    ],
)
def test_accounts_named_by_arguments(
    argv: list[str], names: set[str], uids: set[int], groups: set[str], gids: set[int]
) -> None:
    wanted = Wanted()
    wanted.add_arguments(argv)
    assert (wanted.names, wanted.uids, wanted.groups, wanted.gids) == (names, uids, groups, gids)


# -- shrink plans of a fake image -----------------------------------------------------------

needs_host_glibc = pytest.mark.skipif(
    not is_host_glibc_x86_64(), reason="plans the host's glibc x86-64 programs"
)


def _root(tmp_path: Path) -> Path:
    root = test_plan.fake_image_root(tmp_path)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "srv").mkdir()
    (root / "srv/app.conf").write_text("listen 11211\nrun_as = games\n")
    (root / "srv/own-passwd").write_text("root:x:0:0::/root:/bin/sh\nmine:x:7:50::/:/bin/sh\n")
    (root / "var/www/html").mkdir(parents=True)
    (root / "var/www/html/index.html").write_text("hello\n")
    return root


def _plan(
    tmp_path: Path,
    config: dict,
    static: bool = True,
    traced: tuple[str, ...] = (),
    includes: tuple[str, ...] = (),
    owners: dict[str, tuple[int, int]] | None = None,
) -> ShrinkPlan:
    runtime = RuntimeConfig.from_json({"Env": ["PATH=/usr/bin:/bin"], **config}, "fake")
    inputs = ShrinkInputs(
        _root(tmp_path), runtime, Platform("amd64"), "sha256:" + "0" * 64, owners or {}
    )
    return plan_shrink(inputs, includes, traced, static=static, tracing=not static, trace_args=None)


def _names(plan: ShrinkPlan, path: str) -> set[str]:
    data = plan.root.entries[path].data
    assert data is not None, f"{path} was not generated"
    return {line.split(":")[0] for line in data.decode().splitlines()}


MEMCACHED_LIKE = {"Entrypoint": ["true"], "Cmd": ["-p", "11211", "-u", "memcache"]}


@needs_host_glibc
@pytest.mark.parametrize(
    ("config", "static", "traced", "includes", "owners", "users", "groups"),
    [
        # Named on the command line (Cmd after Entrypoint), in static and traced mode.
        (MEMCACHED_LIKE, True, (), (), None, BASE | {"memcache"}, {"root", "memcache"}),
        (MEMCACHED_LIKE, False, ("/etc/passwd",), (), None, BASE | {"memcache"}, None),
        ({"Entrypoint": ["true", "--user=memcache", "-g", "staff"]}, True, (), (), None,
         BASE | {"memcache"}, {"root", "memcache", "staff"}),
        # Static mode: a kept home brings its account; a shared system directory does not.
        ({"Entrypoint": ["true"]}, True, (), ("/var/www",), None, BASE | {"www-data"}, None),
        ({"Entrypoint": ["true"]}, False, (), ("/var/www",), None, BASE, None),
        # The owner of a kept file (already so before issue 22: a guard).
        ({"Entrypoint": ["true"]}, True, (), (), {"/usr/share/coreutils/data.txt": (1000, 50)},
         BASE | {"other"}, {"root", "other", "staff"}),
        # A traced run that read the account files looks names up from what it read ...
        ({"Entrypoint": ["true"]}, False, ("/etc/passwd", "/srv/app.conf"), (), None,
         BASE | {"games"}, {"root", "games"}),
        ({"Entrypoint": ["true"]}, False, ("/etc/group", "/srv/app.conf"), (), None,
         BASE | {"games"}, None),
        # ... and one that did not read them looks no name up.
        ({"Entrypoint": ["true"]}, False, ("/srv/app.conf",), (), None, BASE, None),
    ],
)  # fmt: skip
def test_shrink_keeps_the_accounts_the_program_names(
    tmp_path: Path,
    config: dict,
    static: bool,
    traced: tuple[str, ...],
    includes: tuple[str, ...],
    owners: dict[str, tuple[int, int]] | None,
    users: set[str],
    groups: set[str] | None,
) -> None:
    plan = _plan(tmp_path, config, static, traced, includes, owners)
    assert _names(plan, "/etc/passwd") == users
    if groups is not None:
        assert _names(plan, "/etc/group") >= groups
    assert "bin" not in _names(plan, "/etc/passwd") and "sys" not in _names(plan, "/etc/passwd")


@needs_host_glibc
@pytest.mark.parametrize(
    ("include", "kept_path", "source_text", "generated", "generated_has"),
    [
        ("/etc/passwd", "/etc/passwd", PASSWD, "/etc/group", {"games", "www-data", "other"}),
        ("/etc/group", "/etc/group", GROUP, "/etc/passwd", BASE),
        ("/etc", "/etc/passwd", PASSWD, None, set()),
        ("/srv/own-passwd:/etc/passwd", "/etc/passwd", None, "/etc/group", {"staff"}),
    ],
)
def test_an_included_account_file_is_never_overridden(
    tmp_path: Path,
    include: str,
    kept_path: str,
    source_text: str | None,
    generated: str | None,
    generated_has: set[str],
) -> None:
    for static, traced in ((True, ()), (False, ("/etc/passwd", "/etc/group"))):
        plan = _plan(tmp_path / str(static), {"Entrypoint": ["true"]}, static, traced, (include,))
        entry = plan.root.entries[kept_path]
        assert entry.data is None and entry.source is not None, "generated over the include"
        text = Path(entry.source).read_text()
        assert text == (source_text or (tmp_path / str(static) / "root/srv/own-passwd").read_text())
        assert kept_path in plan.kept.reasons.get("include", []) or include == "/etc"
        assert kept_path not in plan.kept.reasons.get("runtime", [])
        if generated is not None:
            assert plan.root.entries[generated].reason is Reason.RUNTIME
            assert _names(plan, generated) >= generated_has
