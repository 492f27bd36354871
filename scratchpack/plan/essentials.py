"""What a program needs at run time that DT_NEEDED does not show, for a FROM-scratch root.

Defaults are the small, safe things every scratch image lacks (measured on
Debian 12): ``/tmp`` (0 bytes), ``/etc/passwd`` and ``/etc/group`` with root,
nobody and nonroot (about 250 bytes), a files-first ``/etc/nsswitch.conf``
(about 150 bytes, glibc only) and ``libgcc_s.so.1`` (125 KiB) when the closure
calls what glibc unwinds through it. The rest is opt-in because it is big or
changes behaviour: CA certificates (216 KiB), tzdata (3.9 MiB), a locale
(C.UTF-8: 400 KiB), gconv modules (8.2 MiB) and the root's own NSS modules.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scratchpack.errors import InputError
from scratchpack.image.media import Platform
from scratchpack.ld.elf import ElfError, read_elf, undefined_symbols
from scratchpack.ld.resolve import Resolver
from scratchpack.ld.rootfs import RootFS
from scratchpack.plan.entries import Entry, EntryKind, Reason
from scratchpack.plan.programs import SHELL, Program
from scratchpack.plan.rootplan import RootPlan
from scratchpack.plan.users import Wanted, config_words, names_of, root_accounts, select_accounts

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ZONEINFO = "/usr/share/zoneinfo"
LOCALE_DIR = "/usr/lib/locale"
NSSWITCH = "/etc/nsswitch.conf"

NONROOT_UID = 65532
NOBODY_UID = 65534

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nobody:x:{NOBODY_UID}:{NOBODY_UID}:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnobody:x:{NOBODY_UID}:\nnonroot:x:{NONROOT_UID}:\n"
# glibc >= 2.34 has "files" and "dns" built in: no module to copy. Without this
# file, glibc asks DNS before /etc/hosts, and "localhost" may not resolve.
NSSWITCH_DEFAULT = (
    "passwd: files\ngroup: files\nshadow: files\n"
    "hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"
)
# Services glibc implements inside libc itself (no libnss_<service>.so.2 to load).
_BUILTIN_NSS = {"files", "dns"}
# Calls after which glibc dlopens libgcc_s.so.1 to unwind the thread.
_UNWINDING_CALLS = frozenset({"pthread_cancel", "pthread_exit", "thrd_exit", "backtrace"})
# Calls that run /bin/sh; calls that run it when the program names it.
_SHELL_CALLS = frozenset({"system", "popen", "wordexp"})
_SPAWN_CALLS = frozenset(
    {
        "execl",
        "execle",
        "execlp",
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "posix_spawn",
        "posix_spawnp",
    }
)
LIBGCC_S = "libgcc_s.so.1"


@dataclass(frozen=True)
class Essentials:
    """Which runtime extras to add; the defaults are the small, safe ones."""

    tmp: bool = True
    run: bool = True  # /run, where servers put their pid files (nginx's /run/nginx.pid)
    users: bool = True
    nsswitch: bool = True
    libgcc: bool = True
    ca_certs: bool = False
    tzdata: bool = False
    locale: str | None = None
    gconv: bool = False
    nss: bool = False
    shell: str | None = None  # a static busybox (host path) to install as /bin/sh


def imports_any(host_paths: Iterable[str], symbols: frozenset[str]) -> bool:
    """Whether any of these ELF files leaves one of ``symbols`` undefined (imports it)."""
    for path in host_paths:
        try:
            if undefined_symbols(path) & symbols:
                return True
        except (OSError, ElfError):
            continue
    return False


def shell_calls(host_path: str) -> list[str]:
    """The calls through which a program runs ``/bin/sh``, read from the file alone.

    ``system`` and ``popen`` always run it; an ``exec*`` or ``posix_spawn*``
    import does when the file also holds the string ``/bin/sh`` (node's
    child_process, pg_ctl's ``execl("/bin/sh", …)``).
    """
    try:
        imported = undefined_symbols(host_path)
    except (OSError, ElfError):
        return []
    calls = sorted(imported & _SHELL_CALLS)
    spawns = sorted(imported & _SPAWN_CALLS)
    if spawns and not calls and _holds(host_path, b"/bin/sh\0"):
        calls = spawns
    return calls


def _holds(host_path: str, needle: bytes) -> bool:
    try:
        with (
            open(host_path, "rb") as stream,
            mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            return data.find(needle) != -1
    except (OSError, ValueError):
        return False


def add_shell(plan: RootPlan, busybox: str, platform: Platform) -> None:
    """``--shell busybox``: a static busybox at ``/bin/sh`` (busybox runs as its argv[0])."""
    if shell_platform(busybox) != platform:
        raise InputError(f"--shell busybox: {busybox} is not built for {platform}")
    size = os.path.getsize(busybox)
    plan.add(
        Entry(
            SHELL, EntryKind.FILE, 0o755, Reason.ESSENTIAL, "shell", source=busybox, size_hint=size
        )
    )


def shell_platform(busybox: str) -> Platform:
    """The platform of the static busybox ``--shell busybox`` names; refused if not static."""
    try:
        info = read_elf(busybox)
    except FileNotFoundError as err:
        raise InputError(f"--shell busybox: no {busybox} (Debian package busybox-static)") from err
    except (OSError, ElfError) as err:
        raise InputError(f"--shell busybox: {busybox}: {err}") from err
    if not info.is_static:
        raise InputError(f"--shell busybox: {busybox} is not statically linked (busybox-static)")
    return Platform.from_elf(info.machine, info.bits)


def image_platform(resolver: Resolver, programs: Sequence[Program], shell: str | None) -> Platform:
    """The first program's platform: of what it runs, or of the ``--shell`` busybox that
    runs it (a ``#!/bin/sh`` script, :func:`scratchpack.plan.programs.program`)."""
    runs = programs[0].runs
    if runs or not shell:
        first = resolver.read_input(runs[0] if runs else programs[0].path)
        return Platform.from_elf(first.machine, first.bits)
    return shell_platform(shell)


def needs_libgcc_s(host_paths: Iterable[str]) -> bool:
    """glibc dlopens libgcc_s.so.1 for pthread_cancel, pthread_exit and backtrace."""
    return imports_any(host_paths, _UNWINDING_CALLS)


def add_users(plan: RootPlan, root: RootFS, user: str | None, accounts: Iterable[str] = ()) -> None:
    """passwd and group: root, nobody, nonroot, and the root's accounts the image names.

    Named means by ``--user`` or by a word of an included file under ``/etc``
    (nginx's ``user www-data;``), or among ``accounts`` (what the packages of
    ``build --package`` create): those lines come from the root's own
    databases, as ``shrink`` takes them (:mod:`scratchpack.plan.users`).
    """
    wanted = Wanted(names=set(accounts), words=config_words(plan.entries.values()))
    wanted.add_user_spec(user)
    users, groups = select_accounts(*root_accounts(root), wanted)
    ours = names_of(PASSWD.splitlines()) | names_of(GROUP.splitlines())
    our_ids = {"0", str(NOBODY_UID), str(NONROOT_UID)}
    users = [
        line
        for line in users
        if line.split(":")[0] not in ours and line.split(":")[2] not in our_ids
    ]
    groups = [
        line
        for line in groups
        if line.split(":")[0] not in ours and line.split(":")[2] not in our_ids
    ]
    passwd = PASSWD + "".join(f"{line}\n" for line in users)
    group = GROUP + "".join(f"{line}\n" for line in groups)
    if user:
        name, _, group_name = user.partition(":")
        for part, known, what in ((name, passwd, "passwd"), (group_name, group, "group")):
            if part and not part.isdigit() and part not in names_of(known.splitlines()):
                raise InputError(
                    f"--user {user}: no {what} entry {part!r} in {root.top}'s /etc/{what} "
                    "(nor root, nobody, nonroot); use a numeric uid[:gid] or --include your "
                    "own /etc/passwd and /etc/group"
                )
    plan.add_generated("/etc/passwd", passwd.encode(), Reason.ESSENTIAL, "users")
    plan.add_generated("/etc/group", group.encode(), Reason.ESSENTIAL, "users")
    plan.add_dir("/root", 0o700, Reason.ESSENTIAL, "users")
    plan.add_dir("/home", 0o755, Reason.ESSENTIAL, "users")
    plan.add_dir("/home/nonroot", 0o700, Reason.ESSENTIAL, "users", NONROOT_UID, NONROOT_UID)


def user_known(user: str) -> bool:
    """Whether Docker can resolve ``--user`` in an image with only our three accounts."""
    name, _, group = user.partition(":")
    names = {"root", "nobody", "nonroot"}
    return (name.isdigit() or name in names) and (not group or group.isdigit() or group in names)


def nss_services(nsswitch_text: str) -> list[str]:
    """Services named in an nsswitch.conf that glibc loads as ``libnss_<service>.so.2``."""
    services: list[str] = []
    for line in nsswitch_text.splitlines():
        line = line.split("#", 1)[0]
        if ":" not in line:
            continue
        sources = re.sub(r"\[[^]]*\]", " ", line.split(":", 1)[1]).split()
        for service in sources:
            if service not in _BUILTIN_NSS and service not in services:
                services.append(service)
    return services


def locale_directory(root: RootFS, name: str) -> str:
    """The directory of a compiled locale: ``C.UTF-8`` lives in ``/usr/lib/locale/C.utf8``."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)?(@[A-Za-z0-9_-]+)?", name):
        raise InputError(f"--locale {name!r}: expected a locale name such as C.UTF-8 or de_DE.utf8")
    language, _, codeset = name.partition(".")
    normalized = re.sub(r"[^a-z0-9]", "", codeset.lower())
    candidates = [f"{LOCALE_DIR}/{name}"]
    if codeset:
        candidates.insert(0, f"{LOCALE_DIR}/{language}.{normalized}")
    for candidate in candidates:
        if root.is_dir(candidate):
            return candidate
    raise InputError(
        f"locale {name}: no {candidates[0]} in {root.top} "
        "(only compiled locale directories are supported, not locale-archive)"
    )


def gconv_directory(root: RootFS, libc_path: str) -> str:
    """glibc looks for gconv modules in ``<libdir>/gconv`` next to libc."""
    real = root.realpath(libc_path)
    directory = f"{os.path.dirname(real or libc_path)}/gconv"
    if not root.is_dir(directory):
        raise InputError(f"--gconv: no {directory} in {root.top}")
    return directory
