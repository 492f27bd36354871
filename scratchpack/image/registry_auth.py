"""Registry credentials: where they come from and which origin they go to.

The user gives them (``--registry-user`` with the password on stdin, the CLI's
part) or ``docker login`` stored them in docker's config file, read here the way
docker reads it, without running any credential helper. They are sent to the
registry's own origin (scheme, host and port) only: :func:`origin` is what the
transport compares, so a server that redirects or names another host never sees
them.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scratchpack.bounded import Refusal, read_bounded
from scratchpack.errors import EXIT_PUSH, InputError, ScratchpackError
from scratchpack.image.documents import parse_json
from scratchpack.image.reference import DOCKER_HUB

# Keys under which `docker login` stores Docker Hub credentials, newest habit last.
_DOCKER_HUB_CONFIG_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)
MAX_DOCKER_CONFIG = 1 << 20  # docker's config is a few kB; a larger "config" is not one


class PushError(ScratchpackError):
    """A push that did not complete; the message is one line the user can act on."""

    exit_code = EXIT_PUSH


@dataclass(frozen=True)
class Credentials:
    """A registry user name and password (or token used as a password)."""

    username: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback

    def basic(self) -> str:
        """The ``Authorization`` value of HTTP Basic auth."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, default ports filled in: what credentials belong to.

    A URL a server made up that does not parse (``http://[::1``, port 99999) is
    nobody's origin: it gets no credentials, and requesting it fails in words.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "", "", 0
    return parts.scheme, (parts.hostname or "").lower(), port


# --- who logs in -----------------------------------------------------------------------------


def check_login_options(user: str | None, password_stdin: bool) -> None:
    """``--registry-user`` and ``--registry-password-stdin`` come together, or neither."""
    if password_stdin and not user:
        raise InputError("--registry-password-stdin needs --registry-user")
    if user and not password_stdin:
        raise InputError("--registry-user needs --registry-password-stdin (the password)")


def login_credentials(
    registry: str,
    user: str | None,
    read_password: Callable[[], str],
    note: Callable[[str], None] | None = None,
) -> Credentials | None:
    """``user`` with the password ``read_password`` gives (read only now, once every check
    passed), else what docker's config keeps for ``registry`` (and only for it)."""
    if user:
        return Credentials(user, read_password())
    return credentials_from_docker_config(registry, note=note)


# --- docker's config file -------------------------------------------------------------


def default_docker_config() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (docker's lookup)."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def _config_key_matches(key: str, registry: str) -> bool:
    """``docker login`` keys are ``host[:port]`` or a URL such as ``https://host/v1/``."""
    if key == registry:
        return True
    if "://" in key:
        return urlsplit(key).netloc == registry
    return key.rstrip("/") == registry


def credentials_from_docker_config(
    registry: str,
    config_path: str | Path | None = None,
    note: Callable[[str], None] | None = None,
) -> Credentials | None:
    """The credentials ``docker login`` stored for ``registry``, or None.

    Reads ``auths`` entries: ``auth`` (base64 ``user:password``) or
    ``username``/``password``. Credential helpers (``credsStore``,
    ``credHelpers``) are programs scratchpack does not run: an entry kept there
    gives None, and ``note`` (if given) is told why, so the caller can point the
    user at ``--registry-user``. A missing file gives None; an unreadable or
    corrupt one raises :class:`PushError`.
    """
    path = Path(config_path) if config_path is not None else default_docker_config()
    config = _read_docker_config(path)
    if config is None:
        return None
    keys = _DOCKER_HUB_CONFIG_KEYS if registry == DOCKER_HUB else (registry,)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for wanted in keys:
        for key, entry in auths.items():
            if not _config_key_matches(key, wanted) or not isinstance(entry, dict):
                continue
            found = _entry_credentials(entry, path, key)
            if found is not None:
                return found
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    helper = next((helpers[k] for k in keys if k in helpers), None) or config.get("credsStore")
    if helper and note is not None:
        note(
            f"{path} keeps credentials in the credential helper 'docker-credential-{helper}', "
            f"which scratchpack does not run; for {registry} use --registry-user "
            "and --registry-password-stdin"
        )
    return None


def _read_docker_config(path: Path) -> dict[str, Any] | None:
    """docker's config as a JSON object; None if there is none."""

    def words(refusal: Refusal, detail: str) -> str:
        if refusal is Refusal.NOT_REGULAR:
            detail = f"{path} is not a regular file"
        elif refusal is Refusal.TOO_LARGE:
            detail = f"{path} is larger than {MAX_DOCKER_CONFIG} bytes"
        else:
            detail = detail.lower()  # the OS's words, inside our sentence
        return f"cannot read registry credentials from {path}: {detail}"

    try:
        data = read_bounded(
            path, MAX_DOCKER_CONFIG, "", PushError, regular_only=True, missing_ok=True, words=words
        )
    except FileNotFoundError:
        return None
    try:
        config = parse_json(data, str(path))
    except InputError as exc:
        raise PushError(f"cannot read registry credentials: {exc}") from None
    if not isinstance(config, dict):
        raise PushError(f"cannot read registry credentials from {path}: not a JSON object")
    return config


def _entry_credentials(entry: dict[str, Any], path: Path, key: str) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise PushError(f"{path}: the 'auth' of {key!r} is not base64 user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise PushError(f"{path}: the 'auth' of {key!r} is not base64 user:password")
        return Credentials(username, password)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    return None
