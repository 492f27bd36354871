"""JSON documents of images: written canonically, read as the untrusted input they are."""

from __future__ import annotations

import json
from typing import Any

from scratchpack.errors import InputError

# An index, manifest or config larger than this is not one (a real config is kilobytes).
MAX_DOCUMENT = 16 << 20


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces: the same document always gives the same bytes (and digest)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(data: bytes, what: str, kind: str = "image metadata") -> Any:
    """A JSON document from someone else (an image, a registry); one clear :class:`InputError`
    if it is not one. ``kind`` names what it should be, for the message.

    Deep nesting (``[[[[...]]]]``) exhausts Python's recursion, not our memory:
    it is refused like any other malformed document.
    """
    if len(data) > MAX_DOCUMENT:
        raise InputError(f"{what} is too large to be {kind} ({len(data)} bytes)")
    try:
        return json.loads(data)
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be {kind}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{what} is not valid JSON ({_short(err)})") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{what} is not a JSON object")
    return value


def optional_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object, or {} for null/absent; anything else is refused."""
    if value is None:
        return {}
    return json_object(value, what)


def string_list(value: Any, what: str) -> tuple[str, ...] | None:
    """A JSON array of strings, or None for null/absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{what} must be a list of strings, not {_kind(value)}")
    return tuple(value)


def optional_string(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]
