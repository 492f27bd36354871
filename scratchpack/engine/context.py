"""``build``'s Docker build context: the Dockerfile from a Jinja2 template, and ``rootfs/``.

The template ships inside the wheel (``scratchpack/templates``); in a source
checkout it is the repository's top-level ``templates/``. Users may pass their
own template with the same variables (``--template``), which Jinja2 renders.
The bundled one is written by :func:`bundled_dockerfile` instead, line for line
what Jinja2 makes of it (a test renders both): importing Jinja2 and compiling
the template took 30 ms of every build's start. Only ``build`` renders
a Dockerfile, and only from its own options: images made from another image's
configuration (``shrink``, ``debug``) are written by the built-in writer, so
nothing of someone else's is ever rendered into a Dockerfile.

The context is streamed (:func:`context_stream`): the engine reads the tar as
it is made, with no copy of the root on disk or in memory; its last files may
still be in the making while the first are sent (:func:`context_then`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scratchpack import __version__
from scratchpack.errors import InputError
from scratchpack.image import tarstream
from scratchpack.image.config import ImageConfig
from scratchpack.image.tarstream import FileSpan
from scratchpack.plan.entries import Entry
from scratchpack.plan.rootplan import write_tree

DOCKERFILE_TEMPLATE = "Dockerfile.j2"


@dataclass(frozen=True)
class OwnedTree:
    """A directory of the context copied with an owner other than root."""

    uid: int
    gid: int
    source: str  # relative to the context
    dest: str  # in-image path


def templates_dir() -> Path:
    """Where the bundled templates are: inside the installed package, or the checkout's."""
    packaged = Path(__file__).parent.parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).parent.parent.parent / "templates"


def quote(value: str) -> str:
    """A Dockerfile double-quoted word: backslash, quote and ``$`` escaped.

    A Dockerfile cannot hold a newline inside a value; :func:`check_dockerfile_values`
    refuses those before rendering.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def literal(value: str) -> str:
    """A Dockerfile word taken literally: ``$`` escaped, so the builder expands nothing."""
    return value.replace("\\", "\\\\").replace("$", "\\$")


def builder_word(value: str) -> str:
    """``value`` escaped for the builder's word processing: it reads ``\\``, ``$`` and quotes
    in COPY's paths, even in the JSON form, so each is taken literally."""
    for char in ("\\", "$", "'", '"'):
        value = value.replace(char, "\\" + char)
    return value


def copy_form(tree: OwnedTree) -> str:
    """``["owned/N/", "/dest/"]``: COPY's JSON form, each path one literal word.

    The JSON form keeps spaces, brackets and a leading ``-`` inside one path;
    the source is ours (a number), never globbed into something else.
    """
    return exec_form([tree.source, builder_word(tree.dest)])


def exec_form(argv: list[str] | tuple[str, ...]) -> str:
    """A JSON array, the exec form that runs argv without a shell (there is none)."""
    return json.dumps(list(argv), ensure_ascii=False)


def check_dockerfile_values(config: ImageConfig) -> None:
    """Refuse what a Dockerfile cannot express, instead of building something else."""
    for option, pairs in (("--env", config.env), ("--label", config.labels)):
        for key, value in pairs:
            if _has_newline(key) or _has_newline(value):
                raise InputError(
                    f"{option} {key}: a Dockerfile cannot hold a newline in a value; "
                    "build with --engine none, whose image config can"
                )
    for instruction, value in (
        ("WORKDIR", config.workdir),
        ("USER", config.user),
        *(("EXPOSE", port) for port in config.expose),
    ):
        if value is not None and _has_newline(value):
            raise InputError(
                f"{instruction} {value!r}: a newline cannot be written in a Dockerfile"
            )


def check_owned_trees(owned: list[OwnedTree]) -> None:
    """Refuse an owned path with a control character: no image needs one, and a user's own
    template may render ``dest`` as it is."""
    for tree in owned:
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in tree.dest):
            raise InputError(
                f"{tree.dest!r}: a path with a control character (owned by "
                f"{tree.uid}:{tree.gid}) cannot be copied by a Dockerfile; build with "
                "--engine none"
            )


def _has_newline(value: str) -> bool:
    return "\n" in value or "\r" in value


def render_dockerfile(
    config: ImageConfig, owned: list[OwnedTree], template: Path | None = None
) -> str:
    """The Dockerfile text for ``config``; ``template`` replaces the bundled one."""
    check_dockerfile_values(config)
    check_owned_trees(owned)
    if template is None:
        return bundled_dockerfile(config, owned)
    return render_template(config, owned, template)


def bundled_dockerfile(config: ImageConfig, owned: list[OwnedTree]) -> str:
    """What the bundled ``Dockerfile.j2`` renders for ``config``, without Jinja2.

    Values are checked (:func:`check_dockerfile_values`, :func:`check_owned_trees`)
    by the caller; each is escaped by the filter the template applies to it.
    """
    lines = [
        f"# Generated by scratchpack {__version__}: every file comes from rootfs/, the",
        "# minimal root scratchpack assembled; this Dockerfile is not part of the image.",
        "FROM scratch",
        "COPY rootfs/ /",
        *(f"COPY --chown={item.uid}:{item.gid} {copy_form(item)}" for item in owned),
        *(f"ENV {key}={quote(value)}" for key, value in config.env),
        *(f"LABEL {quote(key)}={quote(value)}" for key, value in config.labels),
        *(f"EXPOSE {literal(port)}" for port in config.expose),
    ]
    if config.workdir:
        lines.append(f"WORKDIR {literal(config.workdir)}")
    if config.user:
        lines.append(f"USER {literal(config.user)}")
    if config.entrypoint is not None:
        lines.append(f"ENTRYPOINT {exec_form(config.entrypoint)}")
    if config.cmd is not None:
        lines.append(f"CMD {exec_form(config.cmd)}")
    return "".join(line + "\n" for line in lines)


def render_template(
    config: ImageConfig, owned: list[OwnedTree], template: Path | None = None
) -> str:
    """``template`` (the bundled ``Dockerfile.j2`` when None) rendered by Jinja2."""
    import jinja2  # imported here: only a user's own template needs it

    if template is not None:
        loader = jinja2.FileSystemLoader(str(template.parent))
        name = template.name
    else:
        loader = jinja2.FileSystemLoader(str(templates_dir()))
        name = DOCKERFILE_TEMPLATE
    environment = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["quote"] = quote
    environment.filters["exec_form"] = exec_form
    environment.filters["literal"] = literal
    environment.filters["copy_form"] = copy_form
    try:
        return environment.get_template(name).render(
            version=__version__,
            owned=owned,
            env=list(config.env),
            labels=list(config.labels),
            expose=list(config.expose),
            workdir=config.workdir,
            user=config.user,
            entrypoint=list(config.entrypoint) if config.entrypoint is not None else None,
            cmd=list(config.cmd) if config.cmd is not None else None,
        )
    except jinja2.TemplateError as err:
        where = f"{template}" if template else name
        raise InputError(f"template {where}: {err}") from err


def owned_trees(entries: list[Entry]) -> list[OwnedTree]:
    """Entries owned by someone other than root, copied with ``COPY --chown``.

    The parent directory is what gets copied: COPY creates its destination
    itself (0755), so copying an entry's parent is what keeps the entry's mode.
    Each tree's context directory is a number (``owned/3/``), never a name
    taken from the image's paths: a package chooses those, and the builder
    globs and expands a COPY source.
    """
    trees: dict[tuple[int, int, str], OwnedTree] = {}
    for entry in entries:
        if entry.uid or entry.gid:
            key = (entry.uid, entry.gid, _parent(entry))
            if key not in trees:
                trees[key] = OwnedTree(entry.uid, entry.gid, f"owned/{len(trees)}/", key[2])
    return list(trees.values())


def _parent(entry: Entry) -> str:
    return entry.path.rsplit("/", 1)[0] + "/"


def _context_entries(entries: list[Entry]) -> dict[str, list[Entry]]:
    """The entries of each context directory (``rootfs/``, ``owned/N/``), renamed to their
    paths there."""
    trees = {(tree.uid, tree.gid, tree.dest): tree for tree in owned_trees(entries)}
    placed: dict[str, list[Entry]] = {"rootfs/": []}
    for entry in entries:
        if entry.uid or entry.gid:
            tree = trees[(entry.uid, entry.gid, _parent(entry))]
            name = "/" + entry.path.rsplit("/", 1)[1]
            placed.setdefault(tree.source, []).append(dataclasses.replace(entry, path=name))
        else:
            placed["rootfs/"].append(entry)
    return placed


@dataclass(frozen=True)
class Context:
    """The build context as the pieces of a tar, in order, and its length when known.

    A piece is bytes, or a host file's content (:class:`~scratchpack.image.tarstream.FileSpan`)
    for the sender to copy in the kernel. A context whose last files are still being
    planned while it is sent (:func:`context_then`) has no length: it goes in chunks.
    """

    pieces: Iterable[bytes | FileSpan]
    size: int | None = None


def context_stream(entries: list[Entry], dockerfile: str) -> Context:
    """The Dockerfile, ``rootfs/`` and ``owned/`` as one tar, streamed."""
    members = [_dockerfile_member(dockerfile), *_placed_members(entries)]
    return Context(tarstream.pieces(members), tarstream.size(members))


def context_then(first: list[Entry], dockerfile: str, more: Callable[[], list[Entry]]) -> Context:
    """``first``'s ``rootfs/`` and ``owned/``, then, once they are sent, ``more()``'s entries
    in ``rootfs/``, then the Dockerfile: the engine reads the context whole before it.

    ``more()`` adds root's entries only (package records), so ``first``'s owned trees,
    which the Dockerfile copies, are the whole context's.
    """

    def members() -> Iterator[tarstream.Member]:
        yield from _placed_members(first)
        rest = more()
        if any(entry.uid or entry.gid for entry in rest):
            raise ValueError("the entries that follow a streamed context's first are root's")
        yield from tarstream.entry_members(rest, 0, "rootfs/")
        yield _dockerfile_member(dockerfile)

    return Context(tarstream.pieces(members()))


def context_chunks(context: Context) -> Iterator[bytes]:
    """The context's bytes, its host files read, gathered a megabyte at a time: for a
    sender of bytes only (the SDK), which sends each as an HTTP chunk of its own."""
    pending = bytearray()
    for piece in context.pieces:
        for data in tarstream.span_chunks(piece) if isinstance(piece, FileSpan) else (piece,):
            pending += data
            if len(pending) >= tarstream.CHUNK:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


def _dockerfile_member(dockerfile: str) -> tarstream.Member:
    data = dockerfile.encode()
    return tarstream.Member(tarstream.regular("Dockerfile", len(data)), data=data)


def _placed_members(entries: list[Entry]) -> Iterator[tarstream.Member]:
    for directory, placed in _context_entries(entries).items():
        yield from tarstream.entry_members(placed, 0, directory)


def write_context(
    entries: list[Entry], config: ImageConfig, directory: str, template: Path | None = None
) -> None:
    """Lay out ``rootfs/``, ``owned/`` and the Dockerfile in the empty ``directory``."""
    dockerfile = render_dockerfile(config, owned_trees(entries), template)
    for where, placed in _context_entries(entries).items():
        write_tree(placed, f"{directory}/{where.rstrip('/')}")
    with open(f"{directory}/Dockerfile", "w", encoding="utf-8") as stream:
        stream.write(dockerfile)
