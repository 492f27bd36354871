"""``-f FILE`` (default ``scratchpack.yaml`` here): a command's options, declared in YAML.

The keys are the command's long option names (``tag``, ``package``,
``platform``, ``include``, ``copy``, ``lock``, …) and ``binary`` for its arguments;
repeatable options and ``binary`` take lists, flags ``true``/``false``, the
rest a string (or a number where the option takes one). Options given on the
command line win over the file. An unknown key or a value of the wrong type is
one line naming the file and line::

    tag: curl:latest
    package: [curl]
    platform: [linux/amd64, linux/arm64]
    lock: scratchpack.lock
    output: curl.tar

Paths in the file are taken from the working directory, as on the command line.
``copy`` (``build --copy``) is a list of strings: in a block list a plain
``- ./haproxy.cfg:/etc/haproxy/haproxy.cfg,owner=haproxy`` keeps its commas,
while a flow list (``[a, b]``) splits on them, so quote such a value there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scratchpack.bounded import read_bounded
from scratchpack.errors import InputError

DEFAULT_FILE = "scratchpack.yaml"
MAX_FILE = 1 << 20
ARGUMENT_KEY = "binary"
MAX_DEPTH = 2  # the mapping of options, and one list of values


def option_keys(command: click.Command) -> dict[str, click.Parameter]:
    """YAML key -> the command's parameter: long option names, and ``binary``."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        if isinstance(param, click.Argument):
            keys[ARGUMENT_KEY] = param
            continue
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("--") and name[2:] not in ("help", "file"):
                keys[name[2:]] = param
    return keys


def read_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The options ``path`` declares, by parameter name, as click's ``default_map`` takes them."""
    import yaml

    data = read_bounded(path, MAX_FILE, "an options file")
    try:
        text = data.decode("utf-8")
        _check_shape(text, path)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"{where}: not YAML: {problem}") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise InputError(f"{path}:{node.start_mark.line + 1}: expected a mapping of option names")
    keys = option_keys(command)
    constructor = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        line = f"{path}:{key_node.start_mark.line + 1}"
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in keys:
            known = ", ".join(sorted(keys))
            raise InputError(f"{line}: unknown option {key!r} for {command.name} (known: {known})")
        param = keys[key]
        if param.name in values:
            raise InputError(f"{line}: {key} is given twice")
        try:
            value = constructor.construct_object(value_node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            value = None  # "9" * 5000: more digits than Python converts; said below
        values[str(param.name)] = _checked(value, param, key, line)
    return values


def _check_shape(text: str, path: Path) -> None:
    """Refuse, from the parser's events (no recursion, nothing built), what an options file
    never needs and an attacker uses: tags (``!!python/object``), anchors and aliases
    (alias bombs), nesting deeper than an option's list, a second document."""
    import yaml

    depth = documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = f"{path}:{event.start_mark.line + 1}"
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise InputError(f"{line}: an options file is one document, not several")
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise InputError(f"{line}: anchors and aliases (& and *) are not taken here")
        implicit = getattr(event, "implicit", True)
        if getattr(event, "tag", None) and not (
            any(implicit) if isinstance(implicit, tuple) else implicit
        ):
            raise InputError(f"{line}: tags ({event.tag}) are not taken in an options file")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"{line}: nested deeper than an option's list of values")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _checked(value: Any, param: click.Parameter, key: str, line: str) -> Any:
    """``value`` as the option takes it, or one line saying what it should be."""
    repeatable = isinstance(param, click.Argument) or getattr(param, "multiple", False)
    if repeatable:
        if not isinstance(value, list) or not all(_scalar(item) for item in value):
            raise InputError(f"{line}: {key} is repeatable: give a list of values")
        return tuple(str(item) for item in value)
    if isinstance(param, click.Option) and param.is_flag:
        if not isinstance(value, bool):
            raise InputError(f"{line}: {key} is a flag: true or false")
        return value
    if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{line}: {key} takes a number")
        return value
    if not _scalar(value):
        raise InputError(f"{line}: {key} takes one value, not a list or mapping")
    if isinstance(param.type, click.Choice) and str(value) not in param.type.choices:
        raise InputError(f"{line}: {key} is one of {', '.join(map(str, param.type.choices))}")
    return str(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def config_option(command: click.Command, keys_of: click.Command | None = None) -> click.Command:
    """Add ``-f/--file FILE`` to ``command``: its defaults come from FILE, or scratchpack.yaml.

    ``keys_of``: the command whose options the file declares (``lock`` reads
    ``build``'s file and takes the options it shares with it).
    """

    def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        path = Path(value) if value else Path(DEFAULT_FILE)
        if value is None and not path.is_file():
            return None
        declared = read_config(path, keys_of or command)
        ours = {str(param.name) for param in command.params}
        declared = {name: value for name, value in declared.items() if name in ours}
        ctx.default_map = {**(ctx.default_map or {}), **declared}
        return str(path)

    return click.option(
        "-f",
        "--file",
        "config_file",
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=load,
        help=f"Take options from this YAML file (default: {DEFAULT_FILE} here, if present).",
    )(command)
