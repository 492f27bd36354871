"""Shrink an existing image: keep only what its program needs, and its configuration.

The source image (in the engine, or an archive) is unpacked safely into a
temporary root; its program is found through the image's own PATH and
resolved inside that root with ``--root`` semantics. What is kept, and why:

- ``closure``: the program(s), their loader and libraries (and what glibc will
  dlopen for them: libgcc_s, NSS modules named in the root's nsswitch.conf);
- ``package``: in static mode, the files of the Debian package that owns the
  program and of its sibling packages from the same source (conffiles, data,
  the empty log and run directories it owns), without docs, man pages or
  translations — and the closures of ELF files among them;
- ``trace``: with ``--trace``, every file the running program touched;
- ``include``: what ``--include`` names;
- ``runtime``: CA certificates when the closure speaks TLS, ``/tmp``, the
  ``/etc/passwd`` and ``/etc/group`` entries of the users that are needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from scratchpack.assemble import RootPlan
from scratchpack.build import (
    DEFAULT_PATH,
    BuildOptions,
    ImagePlan,
    add_include,
    check_complete,
    resolve_for_image,
)
from scratchpack.config import ImageConfig, config_from_summary
from scratchpack.dpkg import DpkgIndex
from scratchpack.errors import InputError
from scratchpack.essentials import Essentials
from scratchpack.resolve import Closure, Resolver
from scratchpack.rootfs import RootFS
from scratchpack.unpack import UnpackReport

SOURCE_LABEL = "org.scratchpack.source.digest"
# Parts of a package that a running program never reads.
_NOT_NEEDED = re.compile(
    r"^/usr/share/(doc|doc-base|man|info|locale|lintian|bug|menu|help|gtk-doc|reportbug)(/|$)"
)
_TLS_LIBRARIES = ("libssl.so", "libgnutls.so", "libnss3.so", "libmbedtls.so", "libwolfssl.so")
_CA_PATHS = ("/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem")
_SHELLS = {"sh", "bash", "dash", "ash", "busybox"}


@dataclass
class Kept:
    """Why each path of the new image is there."""

    reasons: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths

    def add(self, reason: str, path: str) -> None:
        self.reasons.setdefault(reason, []).append(path)


@dataclass
class ShrinkPlan:
    image: ImagePlan
    kept: Kept
    programs: list[str]
    warnings: list[str]


def program_argv(summary: dict[str, Any], trace_args: list[str] | None = None) -> list[str]:
    """What docker runs: Entrypoint + Cmd (``trace_args`` replacing Cmd)."""
    entrypoint = list(summary.get("Entrypoint") or [])
    cmd = list(trace_args if trace_args is not None else (summary.get("Cmd") or []))
    argv = entrypoint + cmd
    if not argv:
        raise InputError("the image has neither an Entrypoint nor a Cmd: nothing to keep")
    return argv


def _env(summary: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in summary.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def which(root: RootFS, name: str, search_path: str, workdir: str = "/") -> str | None:
    """The in-root path the image's PATH finds for ``name`` (a path is taken as it is)."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.normpath(f"{workdir}/{name}")
        return path if root.exists(path) else None
    for directory in search_path.split(":"):
        candidate = f"{directory.rstrip('/') or ''}/{name}"
        host = root.host_path(candidate)
        if host is not None and os.path.isfile(host):
            return candidate
    return None


def find_programs(
    root: RootFS, argv: list[str], env: dict[str, str], workdir: str, warnings: list[str]
) -> list[str]:
    """The in-root files the image runs: its program and, for shells and scripts, theirs."""
    search_path = env.get("PATH", DEFAULT_PATH)
    first = which(root, argv[0], search_path, workdir)
    if first is None:
        raise InputError(f"{argv[0]}: not found through the image's PATH ({search_path})")
    programs = [first]
    name = os.path.basename(first)
    if name in _SHELLS and "-c" in argv[1:]:
        script = argv[argv.index("-c", 1) + 1 : argv.index("-c", 1) + 2]
        programs += _commands_of(root, " ".join(script), search_path, workdir, warnings, first)
    elif _is_script(root, first):
        text = root.read_text(first) or ""
        interpreter = text[2:].split("\n", 1)[0].split()
        if interpreter:
            found = which(root, interpreter[0], search_path, workdir)
            if found:
                programs.append(found)
        programs += _commands_of(root, text, search_path, workdir, warnings, first)
    return list(dict.fromkeys(programs))


def _is_script(root: RootFS, path: str) -> bool:
    data = root.read_bytes(path) or b""
    return data.startswith(b"#!")


def _commands_of(
    root: RootFS, text: str, search_path: str, workdir: str, warnings: list[str], where: str
) -> list[str]:
    """Commands a shell snippet or script names, found by a static scan (best effort)."""
    found: list[str] = []
    unresolved: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        for command in re.split(r"&&|\|\||[;|]", line):
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            while words and (words[0] in ("exec", "then", "else", "do", "!", "command")):
                words = words[1:]
            if not words or "=" in words[0] or not re.match(r"^[\w./+-]+$", words[0]):
                continue
            path = which(root, words[0], search_path, workdir)
            if path is not None and _is_executable_file(root, path):
                found.append(path)
            elif words[0] not in _SHELL_WORDS:
                unresolved.append(words[0])
    if unresolved or "$" in text:
        warnings.append(
            f"{where}: a shell script; its commands were found by a static scan, which cannot "
            "follow variables or functions — use --trace to see what really runs"
        )
    return found


_SHELL_WORDS = {
    "if", "fi", "for", "while", "until", "case", "esac", "done", "in", "set", "export", "local",
    "echo", "printf", "test", "[", "[[", "]]", "cd", "shift", "return", "exit", "read", "true",
    "false", "trap", "unset", "eval", "wait", ":", ".", "source", "function", "elif", "{", "}",
}  # fmt: skip


def _is_executable_file(root: RootFS, path: str) -> bool:
    host = root.host_path(path)
    return host is not None and os.path.isfile(host) and os.access(host, os.X_OK)


def package_files(index: DpkgIndex, root: RootFS, program: str) -> tuple[list[str], list[str]]:
    """Static mode: the owning package's files and its source siblings', and their names."""
    owner = index.owner(program)
    if owner is None:
        return [], []
    source = owner.source or owner.name
    keys = [
        key
        for key, package in index.packages.items()
        if package.name == owner.name
        or ((package.source or package.name) == source and not _support_package(package.name))
    ]
    paths: list[str] = []
    for key in sorted(keys):
        for path in index.files(key):
            if path in ("/.", "/") or _NOT_NEEDED.match(path):
                continue
            if root.host_path(path) is not None and os.path.lexists(root.host_path(path) or ""):
                paths.append(path)
    names = sorted({index.packages[key].name for key in keys})
    return paths, names


def _support_package(name: str) -> bool:
    return name.endswith(("-doc", "-dbg", "-dbgsym", "-dev", "-dbgsym", "-tests"))


def users_needed(
    root: RootFS, plan: RootPlan, user: str | None, owners: dict[str, tuple[int, int]]
) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` holding only the entries the new image needs.

    root, nobody, the image's USER, the owners of every kept file, and any user
    named in a kept file under /etc (nginx's ``user www-data;``).
    """
    passwd = (root.read_text("/etc/passwd") or "").splitlines()
    group = (root.read_text("/etc/group") or "").splitlines()
    uids = {0, 65534}
    gids = {0, 65534}
    names: set[str] = set()
    if user:
        name, _, group_name = user.partition(":")
        (uids if name.isdigit() else names).add(int(name) if name.isdigit() else name)  # type: ignore[arg-type]
        if group_name:
            (gids if group_name.isdigit() else names).add(
                int(group_name) if group_name.isdigit() else group_name  # type: ignore[arg-type]
            )
    for path in plan.entries:
        uid, gid = owners.get(path, (0, 0))
        uids.add(uid)
        gids.add(gid)
    words = _words_in_config(root, plan)
    kept_users = []
    for line in passwd:
        fields = line.split(":")
        if len(fields) >= 4 and (
            fields[0] in names or _int(fields[2]) in uids or fields[0] in words
        ):
            kept_users.append(line)
            gids.add(_int(fields[3]))
    kept_groups = [
        line
        for line in group
        if len(line.split(":")) >= 3
        and (_int(line.split(":")[2]) in gids or line.split(":")[0] in names)
    ]
    return "\n".join(kept_users) + "\n", "\n".join(kept_groups) + "\n"


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _words_in_config(root: RootFS, plan: RootPlan) -> set[str]:
    words: set[str] = set()
    for entry in plan.entries.values():
        if entry.kind == "file" and entry.path.startswith("/etc/") and entry.source:
            try:
                if os.path.getsize(entry.source) > 1 << 20:
                    continue
                with open(entry.source, encoding="utf-8", errors="replace") as stream:
                    words.update(re.findall(r"[A-Za-z_][\w.-]*", stream.read()))
            except OSError:
                continue
    return words


def plan_shrink(
    root_dir: Path,
    summary: dict[str, Any],
    report: UnpackReport,
    source_digest: str,
    includes: Iterable[str] = (),
    traced: Iterable[str] = (),
    static: bool = True,
    allow_missing: bool = False,
    trace_args: list[str] | None = None,
) -> ShrinkPlan:
    """What the shrunk image holds and how it runs; nothing is built yet."""
    root = RootFS(root_dir)
    resolver = Resolver(
        root_dir,
        library_path=_env(summary).get("LD_LIBRARY_PATH", ""),
        cwd=summary.get("WorkingDir") or "/",
    )
    options = BuildOptions(binaries=[], root=str(root_dir), essentials=Essentials(nss=True))
    env = _env(summary)
    workdir = summary.get("WorkingDir") or "/"
    warnings: list[str] = []
    kept = Kept()
    plan = RootPlan()
    argv = program_argv(summary, trace_args)
    programs = find_programs(root, argv, env, workdir, warnings)

    elf_paths: list[str] = []
    for program in programs:
        plan.add_path(root, program, "closure")
        kept.add("closure", program)
        if root.is_elf(program):
            elf_paths.append(program)
    program_elves = set(elf_paths)
    if static:
        index = DpkgIndex.load(root)
        for program in programs:
            paths, packages = package_files(index, root, program)
            if packages:
                kept.reasons.setdefault("packages", []).extend(packages)
            for path in paths:
                _keep(plan, root, path, "package", kept)
                if root.is_elf(path):
                    elf_paths.append(path)
    for path in traced:
        if root.host_path(path) is None:
            continue
        _keep(plan, root, path, "trace", kept)
        if root.is_elf(path):
            elf_paths.append(path)
    for include in includes:
        for image_path, source in add_include(plan, root, include):
            kept.add("include", image_path)
            if root.is_elf(source):
                elf_paths.append(source)

    closures: list[Closure] = []
    for path in dict.fromkeys(elf_paths):
        try:
            info = resolver.read_input(path)
        except InputError:
            continue
        if info.is_static:
            continue
        # What glibc dlopens (libgcc_s, NSS modules) is added for the programs only.
        if path in program_elves:
            closure = resolve_for_image(resolver, path, options, warnings)
        else:
            closure = resolver.resolve(path)
        check_complete(closure, allow_missing, warnings)
        closures.append(closure)
        missing = {item.soname for item in closure.missing}
        if closure.interpreter and closure.interpreter not in missing:
            _keep(plan, root, closure.interpreter, "closure", kept)
        for library in closure.libraries:
            _keep(plan, root, library.path, "closure", kept)
    if any(lib.soname.startswith(_TLS_LIBRARIES) for c in closures for lib in c.libraries):
        for path in _CA_PATHS:
            if root.exists(path):
                _keep(plan, root, path, "runtime", kept)
    if root.is_dir("/tmp"):
        plan.add_dir("/tmp", 0o1777, "runtime")
    if root.exists("/etc/nsswitch.conf") and any(c.loader == "glibc" for c in closures):
        _keep(plan, root, "/etc/nsswitch.conf", "runtime", kept)
    plan.apply_owners(report.owners)
    passwd, group = users_needed(root, plan, summary.get("User"), report.owners)
    plan.add_generated("/etc/passwd", passwd.encode(), "runtime")
    plan.add_generated("/etc/group", group.encode(), "runtime")
    kept.add("runtime", "/etc/passwd")
    kept.add("runtime", "/etc/group")

    config = image_config(summary, source_digest)
    first = resolver.read_input(elf_paths[0]) if elf_paths else None
    if first is None:
        raise InputError(f"{programs[0]}: not an ELF program, and no ELF program found to keep")
    image = ImagePlan(plan, config, closures, warnings, first.machine, first.bits)
    return ShrinkPlan(image, kept, programs, warnings)


def _keep(plan: RootPlan, root: RootFS, path: str, reason: str, kept: Kept) -> None:
    """Add ``path`` with the links on its way (the loader opens it by that name)."""
    if root.realpath(path) is None:
        return
    new = path not in plan.entries
    plan.add_path(root, path, reason)
    if new:
        kept.add(reason, path)


def image_config(summary: dict[str, Any], source_digest: str) -> ImageConfig:
    """The source's run-time settings, unchanged, plus a label naming the source image."""
    config = config_from_summary(summary)
    config.labels = sorted({**dict(config.labels), SOURCE_LABEL: source_digest}.items())
    return config


def kept_sizes(plan: RootPlan, kept: Kept) -> dict[str, dict[str, int]]:
    """Files and bytes per reason (each file counted under the first reason that kept it)."""
    by_reason: dict[str, dict[str, int]] = {}
    for entry in plan.files:
        reason = entry.reason.split(":", 1)[0]
        if reason.startswith("parent"):
            continue
        slot = by_reason.setdefault(reason, {"files": 0, "bytes": 0})
        slot["files"] += 1
        slot["bytes"] += entry.size
    return by_reason


@dataclass
class ShrinkOutcome:
    """What ``shrink`` did: sizes, the new image, and why each file is in it."""

    source: str
    source_digest: str
    size_before: int
    plan: ShrinkPlan
    by_reason: dict[str, dict[str, int]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        kept = {reason: sorted(set(paths)) for reason, paths in self.plan.kept.reasons.items()}
        return {
            "source": self.source,
            "source_digest": self.source_digest,
            "size_before": self.size_before,
            "size_after": self.result.get("size"),
            "programs": self.plan.programs,
            "kept": kept,
            "by_reason": self.by_reason,
            "warnings": self.plan.warnings,
            **self.result,
        }


def render_report(outcome: ShrinkOutcome) -> str:
    """The human-readable report: sizes, then the kept files grouped by reason."""
    data = outcome.to_json()
    before, after = data["size_before"], data["size_after"] or 0
    lines = [
        f"{data['source']} ({before / 1e6:.1f} MB) -> {data.get('tag')} ({after / 1e6:.1f} MB), "
        f"{100 * (1 - after / before) if before else 0:.0f}% smaller",
        f"programs: {', '.join(data['programs'])}",
    ]
    for reason, numbers in sorted(data["by_reason"].items()):
        lines.append(f"  {reason:8} {numbers['files']:5} files {numbers['bytes'] / 1e6:8.2f} MB")
    for reason, paths in sorted(data["kept"].items()):
        if reason == "packages":
            lines.append(f"packages: {', '.join(paths)}")
            continue
        lines.append(f"{reason}:")
        lines.extend(f"  {path}" for path in paths)
    return "\n".join(lines) + "\n"


def run_shrink(
    image: str,
    tag: str,
    *,
    includes: Iterable[str] = (),
    trace: bool = False,
    probe_cmd: list[str] | None = None,
    trace_args: list[str] | None = None,
    trace_timeout: float = 60,
    engine_mode: str = "auto",
    output: Path | None = None,
    allow_missing: bool = False,
    show_progress: bool = False,
) -> ShrinkOutcome:
    """Read the source, plan what to keep, build or write the new image.

    Temporary roots and containers are removed whatever happens (Ctrl-C too);
    the source image is only read.
    """
    from scratchpack.build import context_archive
    from scratchpack.pipeline import choose_engine, write_image
    from scratchpack.progress import terminal_progress
    from scratchpack.unpack import image_config_summary, unpack_into

    in_engine = not os.path.lexists(os.path.expanduser(image))
    engine = None
    if in_engine or trace or engine_mode == "docker":
        from scratchpack.engine import Engine

        engine = Engine()
    with tempfile.TemporaryDirectory(prefix="scratchpack-shrink-") as work:
        workdir = Path(work)
        say = terminal_progress if show_progress else None
        if say:
            say(f"reading {image}")
        source, root_dir, report = unpack_into(
            image, engine.client if engine else None, workdir, show_progress
        )
        summary = image_config_summary(source)
        traced: frozenset[str] = frozenset()
        if trace:
            assert engine is not None
            traced = _trace(engine, image, source, summary, workdir, probe_cmd, trace_args,
                            trace_timeout, say)  # fmt: skip
        plan = plan_shrink(
            root_dir, summary, report, source.digest, includes, traced,
            static=True, allow_missing=allow_missing, trace_args=trace_args if trace else None,
        )  # fmt: skip
        outcome = ShrinkOutcome(
            image, source.digest, report.bytes, plan, kept_sizes(plan.image.root, plan.kept)
        )
        builder = engine if engine_mode == "docker" else None
        if builder is None and engine_mode == "auto" and output is None:
            builder = engine or choose_engine("auto", None)
        if builder is not None:
            with context_archive(plan.image) as context:
                image_id = builder.build(context, tag, say)
            info = builder.image(image_id)
            outcome.result = {"tag": tag, "engine": "docker", "image": info.id, "size": info.size}
        else:
            target = output or Path(re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".tar")
            written = write_image(plan.image, tag, target, False, show_progress)
            size = sum(layer.uncompressed_size for layer in written.layers)
            outcome.result = {
                "tag": tag, "engine": "none", "image": written.image_id,
                "output": str(target), "size": size,
            }  # fmt: skip
    return outcome


def _trace(engine, image, source, summary, workdir, probe_cmd, trace_args, timeout, say):  # type: ignore[no-untyped-def]
    """Run the source under the tracer; an archive source is loaded into the engine first."""
    from scratchpack.trace import package_tracer, trace_image

    tracer = package_tracer(workdir / "tracer")
    loaded = None
    reference = image
    if os.path.lexists(os.path.expanduser(image)):
        with _docker_loadable(Path(image).expanduser()) as archive:
            engine.load(archive)
        loaded = reference = source.digest
    try:
        result = trace_image(
            engine, reference, source.config.get("config") or {}, tracer,
            probe_cmd=probe_cmd, trace_args=trace_args, timeout=timeout, progress=say,
        )  # fmt: skip
    finally:
        if loaded:
            engine.remove_image(loaded)
    return result.paths


@contextlib.contextmanager
def _docker_loadable(path: Path) -> Iterator[BinaryIO]:
    """An image archive file as it is, or a layout directory packed for ``docker load``."""
    from scratchpack.oci import archive_layout

    if path.is_file():
        with open(path, "rb") as stream:
            yield stream
        return
    with tempfile.TemporaryFile() as stream:
        archive_layout(path, stream, 0)
        stream.seek(0)
        yield stream
