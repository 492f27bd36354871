"""Push an OCI image layout straight to a registry through the distribution API.

No engine is involved: an engine push recompresses the layers and so changes the
manifest digest, while pushing the layout's own bytes keeps the digest the layout
(and anything that refers to it: a signature, an SBOM, a deployment pin) names.

The flow is the distribution spec's, the one ``docker push`` uses: per blob
``HEAD`` (exists: skip), ``POST .../blobs/uploads/`` and one monolithic ``PUT`` of
the file with ``?digest=``; then ``PUT .../manifests/<tag>`` with the manifest bytes
exactly as stored. Authentication answers the registry's challenge (``Basic`` or
``Bearer`` through a token service).

Transport follows docker's rules: HTTPS with certificate verification, except for
*insecure* registries (``insecure=True``, or a loopback address: ``localhost``,
``127.0.0.0/8``, ``::1``, which docker treats as insecure by default). For those,
HTTPS without verification is tried first and plain HTTP after it, exactly docker's
fallback, so both a plain-HTTP ``registry:2`` and a self-signed one work. A private
CA is trusted with ``ca_file`` or ``REQUESTS_CA_BUNDLE``.

``requests`` (already installed as docker-py's dependency) rather than urllib:
connection reuse across the many small requests of a push, streamed file bodies
with ``Content-Length``, redirects that drop ``Authorization`` when they leave the
registry's host (blob storage on S3 and the like), and the usual environment
(``REQUESTS_CA_BUNDLE``, proxies).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from urllib3.exceptions import InsecureRequestWarning

from scratchpack import __version__
from scratchpack.errors import EXIT_PUSH, InputError, ScratchpackError
from scratchpack.image.digest import Digest, HashingReader
from scratchpack.image.documents import parse_json
from scratchpack.image.model import Blob, BytesBlob, Image, ImageIndex
from scratchpack.image.reference import DOCKER_HUB, Reference

_DOCKER_HUB_API = "registry-1.docker.io"
# Keys under which `docker login` stores Docker Hub credentials, newest habit last.
_DOCKER_HUB_CONFIG_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)

_SHA256_RE = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1 << 20


class PushError(ScratchpackError):
    """A push that did not complete; the message is one line the user can act on."""

    exit_code = EXIT_PUSH


class _Transient(PushError):
    """A failure worth another try: 429, 5xx gateways, a reset connection, a timeout."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# docker, skopeo and crane retry these; so does scratchpack.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_RETRIES = 5
_BACKOFF = 1.0  # seconds before the first retry; doubled each time
_MAX_DELAY = 60.0


def _retry_after(value: str | None) -> float | None:
    """``Retry-After``: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from datetime import datetime, timezone
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Credentials:
    """A registry user name and password (or token used as a password)."""

    username: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback


@dataclass(frozen=True)
class PushResult:
    """What a push did: the full reference, the manifest digest the registry now serves."""

    reference: str
    manifest_digest: str
    blobs_uploaded: int
    blobs_skipped: int


# --- references ---------------------------------------------------------------


def parse_reference(ref: str) -> tuple[str, str, str]:
    """Split ``[REGISTRY/]NAME[:TAG]`` into (registry, repository, tag) by docker's rules.

    Unwritten registries are ``docker.io``, where one-component names get
    docker's ``library/`` prefix; see :class:`scratchpack.image.reference.Reference`.
    """
    return Reference.parse(ref).push_target()


def _host_of(registry: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, brackets removed."""
    if registry.startswith("["):
        return registry[1 : registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def _is_loopback(registry: str) -> bool:
    """Whether docker would treat this registry as insecure by default (loopback)."""
    host = _host_of(registry).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_regular_bytes(path: Path, limit: int = 1 << 20) -> bytes:
    """A small regular file's bytes; a FIFO or a device is refused, not waited on."""
    import stat as stat_module

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as stream:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return data


# --- credentials ----------------------------------------------------------------


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
    try:
        data = read_regular_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PushError(f"cannot read registry credentials from {path}: {exc}") from None
    try:
        config = parse_json(data, str(path))
    except InputError as exc:
        raise PushError(f"cannot read registry credentials: {exc}") from None
    if not isinstance(config, dict):
        raise PushError(f"cannot read registry credentials from {path}: not a JSON object")
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


# --- HTTP -----------------------------------------------------------------------------


def _short(digest: str) -> str:
    """``sha256:0123456789ab…`` (a tag stays whole)."""
    return f"{digest[:19]}…" if digest.startswith("sha") else digest


def _human_size(size: int) -> str:
    """Decimal units, like docker's progress."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _exception_reason(exc: BaseException) -> str:
    """The useful core of a requests/urllib3 exception ("Connection refused")."""
    text = str(exc)
    ssl = re.search(r"\[SSL(?:: [A-Z_]+)?\] ([^()'\"]+)", text)
    if ssl:
        return ssl.group(1).strip()
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip()
    return _one_line(text, 200)


def _registry_message(response: requests.Response) -> str:
    """The registry's own words: ``errors[0].message`` (and code), else the status line."""
    try:
        body = response.json()
        error = body["errors"][0]
        message = str(error.get("message") or error.get("code"))
        code = error.get("code")
        if code and code.lower().replace("_", " ") != message.lower():
            message = f"{message} ({code})"
        return _one_line(message)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    text = _one_line(response.text or "", 160) if response.text else ""
    reason = f"{response.status_code} {response.reason or ''}".strip()
    return f"{reason}: {text}" if text and not text.lstrip().startswith("<") else reason


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): quoted if quoted or not bare else bare
        for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]*))', rest)
    }
    return scheme.lower(), params


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, default ports filled in: what credentials belong to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Client:
    """One push's HTTP session: the chosen scheme, the TLS rule and the cached auth."""

    def __init__(
        self,
        registry: str,
        repository: str,
        credentials: Credentials | None,
        insecure: bool,
        ca_file: str | Path | None,
        timeout: float,
        retries: int = DEFAULT_RETRIES,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.retries = retries
        self.report = progress or (lambda _line: None)
        self.registry = registry
        self.repository = repository
        self.credentials = credentials
        self.insecure = insecure or _is_loopback(registry)
        self.timeout = timeout
        self.api_host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        # What TLS checks everything but the registry itself gets: never relaxed.
        self.strict_verify: bool | str = str(ca_file) if ca_file else True
        self.verify: bool | str = self.strict_verify
        self.base = f"https://{self.api_host}"
        self.authorization: str | None = None
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"scratchpack/{__version__}"
        # A callable auth: ours is applied to every request to the registry's own origin,
        # never to another one, and ~/.netrc is never consulted.
        self.session.auth = self._apply_auth
        self.secrets: list[str] = []  # what a server's text must never show
        if credentials is not None:
            self.secrets += [self._basic().split()[1], credentials.password]

    @property
    def origin(self) -> tuple[str, str, int]:
        return _origin(self.base)

    def _ours(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own origin (scheme, host and port)."""
        return _origin(url) == self.origin

    def _apply_auth(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.authorization and self._ours(request.url or ""):
            request.headers["Authorization"] = self.authorization
        else:
            request.headers.pop("Authorization", None)
        return request

    def redact(self, text: str) -> str:
        """Server text without anything that could be the user's credentials, on one line."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return _one_line(_CONTROL.sub("?", text))

    def close(self) -> None:
        self.session.close()

    # -- transport

    def _send(
        self,
        method: str,
        url: str,
        *,
        verify: bool | str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        if verify is None:
            verify = self.verify if self._ours(url) else self.strict_verify
        try:
            return self.session.request(method, url, timeout=self.timeout, verify=verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise PushError(
                f"TLS error talking to {self.registry}: {_exception_reason(exc)}; "
                "for a plain-HTTP registry use --insecure, for a private CA set "
                "REQUESTS_CA_BUNDLE to its certificate"
            ) from None
        except requests.exceptions.Timeout:
            raise _Transient(
                f"{self.registry} did not answer within {self.timeout:g} s "
                f"({method} {urlsplit(url).path})"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            reason = _exception_reason(exc)
            if "refused" in reason.lower() or "name or service" in reason.lower():
                raise PushError(f"cannot connect to {self.registry}: {reason}") from None
            raise _Transient(f"the connection to {self.registry} broke: {reason}") from None
        except requests.exceptions.RequestException as exc:
            raise PushError(
                f"request to {self.registry} failed: {_exception_reason(exc)}"
            ) from None

    def connect(self) -> None:
        """``GET /v2/``: pick the scheme (docker's insecure fallback) and answer a challenge."""
        if self.insecure:
            try:
                response = self._send("GET", f"https://{self.api_host}/v2/", verify=False)
                self.verify = False
            except PushError:
                self.base = f"http://{self.api_host}"
                response = self._send("GET", f"{self.base}/v2/")
        else:
            response = self._send("GET", f"{self.base}/v2/")
        self._transient(response)
        if response.status_code == 401:
            self._authenticate(response)
            response = self._send("GET", f"{self.base}/v2/")
            self._transient(response)
            if response.status_code == 401:
                self._fail_auth()
        if response.status_code == 404:
            raise PushError(
                f"{self.registry} does not serve the registry API (GET /v2/ answered 404)"
            )
        if response.status_code != 200:
            self._fail(response, "GET /v2/")

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], bytes | BinaryIO] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send, answering one 401 challenge (expired token, wider scope) with a retry."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.base}{url}"
        for attempt in (1, 2):
            data = body() if body is not None else None
            try:
                response = self._send(method, url, data=data, **kwargs)
            finally:
                if data is not None and hasattr(data, "close"):
                    data.close()
            self._transient(response)
            if response.status_code != 401 or attempt == 2:
                return response
            if not self._ours(response.url or url):
                where = "{}://{}:{}".format(*_origin(response.url or url))
                raise PushError(
                    f"{where}, where {self.registry} sent the upload, asks for credentials; "
                    f"they go to {self.registry} only"
                )
            if "WWW-Authenticate" not in response.headers:
                return response
            self._authenticate(response)
        raise AssertionError("unreachable")

    @staticmethod
    def _transient(response: requests.Response) -> None:
        """A busy or failing registry's answer, as a failure worth another try."""
        if response.status_code in RETRY_STATUSES:
            raise _Transient(
                f"{response.status_code} {response.reason or ''}".strip(),
                _retry_after(response.headers.get("Retry-After")),
            )

    def retrying(self, what: str, step: Callable[[], Any]) -> Any:
        """Run one step of the push, again after transient failures, with backoff.

        Waits double from :data:`_BACKOFF` (a registry's Retry-After wins), at most
        :data:`_MAX_DELAY`; after the last attempt the failure names the registry,
        the repository and the step.
        """
        import time

        for attempt in range(self.retries + 1):
            try:
                return step()
            except _Transient as err:
                if attempt == self.retries:
                    tries = "once" if attempt == 0 else f"{attempt + 1} times"
                    raise PushError(
                        f"{self.registry}/{self.repository}: {what} failed (tried {tries}): "
                        f"{self.redact(str(err))}"
                    ) from None
                delay = err.retry_after if err.retry_after is not None else _BACKOFF * 2**attempt
                delay = min(delay, _MAX_DELAY)
                self.report(f"retrying {what} in {delay:g} s: {self.redact(str(err))}")
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- auth

    def _fail_auth(self) -> NoReturn:
        if self.credentials is None:
            raise PushError(
                f"authentication required for {self.registry}: check --registry-user "
                "or ~/.docker/config.json"
            )
        raise PushError(
            f"authentication denied for {self.registry} (user {self.credentials.username!r}): "
            "check --registry-user or ~/.docker/config.json"
        )

    def _basic(self) -> str:
        assert self.credentials is not None
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _authenticate(self, response: requests.Response) -> None:
        """Answer ``WWW-Authenticate``; the result is cached for every later request."""
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                self._fail_auth()
            self.authorization = self._basic()
        elif scheme == "bearer":
            token = self._token(params)
            self.secrets.append(token)
            self.authorization = f"Bearer {token}"
        else:
            raise PushError(
                f"{self.registry} asks for an unsupported authentication scheme {scheme!r}"
            )

    def _token(self, params: dict[str, str]) -> str:
        """A token from the challenge's realm for ``repository:<name>:pull,push``."""
        realm = params.get("realm")
        if not realm:
            raise PushError(f"{self.registry} sent a Bearer challenge without a realm")
        query = {"scope": f"repository:{self.repository}:pull,push"}
        if params.get("service"):
            query["service"] = params["service"]
        realm_origin = _origin(realm)
        same_host = realm_origin[1] == self.origin[1]
        if realm_origin[0] not in ("http", "https"):
            raise PushError(f"{self.registry} names a token realm that is not a URL: {realm!r}")
        if realm_origin[0] == "http" and not (same_host and self.insecure):
            raise PushError(
                f"{self.registry} names a token service over plain HTTP on another host "
                f"({self.redact(realm)}); credentials are not sent there"
            )
        # The realm the registry's challenge named gets the credentials, with strict TLS
        # unless it is the (insecure) registry's own host.
        verify = self.verify if same_host else self.strict_verify
        headers = {"Authorization": self._basic()} if self.credentials else {}
        # Not through the session: its auth hook would send the registry's old token. The
        # no-op auth keeps requests from replacing our header with a ~/.netrc entry.
        try:
            response = requests.get(
                realm,
                params=query,
                headers={"User-Agent": self.session.headers["User-Agent"], **headers},
                auth=_keep_headers,
                timeout=self.timeout,
                verify=verify,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise PushError(
                f"TLS error talking to the token service {self.redact(realm)} of "
                f"{self.registry}: {_exception_reason(exc)}"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise PushError(
                f"cannot get a token for {self.registry} from {self.redact(realm)}: "
                f"{_exception_reason(exc)}"
            ) from None
        if response.status_code in (401, 403):
            self._fail_auth()
        if response.status_code != 200:
            raise PushError(
                f"the token service {self.redact(realm)} of {self.registry} answered "
                f"{self.redact(_registry_message(response))}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PushError(
                f"the token service {self.redact(realm)} of {self.registry} returned no token"
            )
        return token

    # -- errors

    def _fail(self, response: requests.Response, what: str) -> NoReturn:
        status = response.status_code
        if status == 401:
            self._fail_auth()
        message = self.redact(_registry_message(response))
        if status == 403:
            raise PushError(f"push to {self.registry}/{self.repository} denied: {message}")
        if status == 404:
            raise PushError(
                f"{self.registry}: repository {self.repository} or its endpoint not found "
                f"({what}): {message}"
            )
        raise PushError(f"{self.registry}: {what} failed: {message}")


# --- the push ---------------------------------------------------------------------


@contextmanager
def _quiet_insecure() -> Iterator[None]:
    """Unverified HTTPS is a decision already made (insecure registry): no warning per request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        yield


def _push_blob(
    client: _Client, digest: str, size: int, blob: Blob, progress: Callable[[str], None]
) -> bool:
    """Upload one blob unless the registry has it; True if it was uploaded."""
    name = client.repository
    response = client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    if response.status_code == 200:
        progress(f"exists {_short(digest)}")
        return False
    if response.status_code != 404:
        client._fail(response, f"HEAD blob {_short(digest)}")
    progress(f"uploading {_short(digest)} ({_human_size(size)})")
    response = client.request("POST", f"/v2/{name}/blobs/uploads/")
    if response.status_code != 202:
        client._fail(response, "starting a blob upload")
    location = response.headers.get("Location")
    if not location:
        raise PushError(f"{client.registry} started an upload without a Location header")
    location = urljoin(response.url, location)
    separator = "&" if urlsplit(location).query else "?"
    url = f"{location}{separator}{urlencode({'digest': digest})}"
    with contextlib.ExitStack() as stack:

        def body() -> BinaryIO:  # streamed; reopened if a 401 forces a retry
            return stack.enter_context(blob.open())

        response = client.request(
            "PUT",
            url,
            body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
    if response.status_code != 201:
        client._fail(response, f"uploading blob {_short(digest)}")
    return True


def push_image(
    image: Image | ImageIndex,
    reference: str,
    credentials: Credentials | None = None,
    insecure: bool = False,
    progress: Callable[[str], None] | None = None,
    timeout: float = 60,
    ca_file: str | Path | None = None,
    retries: int = DEFAULT_RETRIES,
) -> PushResult:
    """Push ``image`` (or an image index and its images) as ``reference``; no engine needed.

    Its blobs are streamed from where they are (the writer hashed them as it
    wrote them); the manifest goes up byte for byte, so the registry's digest
    is the image's, and a registry that reports another one is an error. An
    index's images go up by digest first, then the index under the tag.
    ``insecure`` allows plain HTTP / unverified HTTPS (always allowed for
    loopback registries, as docker does); ``ca_file`` trusts a private CA.
    ``progress`` receives one line per blob. Raises :class:`PushError` (exit
    5), or :class:`~scratchpack.errors.InputError` for a malformed reference.
    """
    registry, repository, tag = parse_reference(reference)
    images = image.images if isinstance(image, ImageIndex) else (image,)
    blobs: dict[str, tuple[int, Blob]] = {}
    for one in images:
        for layer in one.layers:
            blobs.setdefault(layer.digest, (layer.size, layer.blob))
        blobs.setdefault(one.image_id, (len(one.config_bytes), BytesBlob(one.config_bytes)))
    # (where, bytes, media type): the images' manifests by digest, then the tag's.
    manifests = [
        (one.manifest_descriptor.digest, one.manifest_bytes, one.manifest_descriptor.media_type)
        for one in images
    ]
    if isinstance(image, ImageIndex):
        manifests.append((tag, image.index_bytes, image.descriptor.media_type))
    else:
        manifests[-1] = (tag, image.manifest_bytes, image.manifest_descriptor.media_type)
    top_digest = image.digest if isinstance(image, ImageIndex) else image.manifest_descriptor.digest
    report = progress or (lambda _line: None)
    client = _Client(registry, repository, credentials, insecure, ca_file, timeout, retries, report)
    uploaded = skipped = 0

    def put_manifest(where: str, data: bytes, media_type: object) -> requests.Response:
        response = client.request(
            "PUT",
            f"/v2/{repository}/manifests/{where}",
            body=lambda: data,
            headers={"Content-Type": str(media_type)},
        )
        if response.status_code != 201:
            client._fail(response, f"PUT manifest {_short(where)}")
        return response

    try:
        with _quiet_insecure():
            client.retrying("GET /v2/", client.connect)
            for digest, (size, blob) in blobs.items():
                # An upload cut off or refused for a while starts again from its POST.
                step = functools.partial(_push_blob, client, digest, size, blob, report)
                if client.retrying(f"uploading blob {_short(digest)}", step):
                    uploaded += 1
                else:
                    skipped += 1
            for where, data, media_type in manifests:
                step = functools.partial(put_manifest, where, data, media_type)
                response = client.retrying(f"PUT manifest {_short(where)}", step)
    finally:
        client.close()
    echoed = response.headers.get("Docker-Content-Digest")
    if echoed and echoed != top_digest:
        raise PushError(
            f"{registry} stored the manifest as {echoed}, not {top_digest}: it rewrote the manifest"
        )
    report(f"pushed {top_digest} as {registry}/{repository}:{tag}")
    return PushResult(f"{registry}/{repository}:{tag}", top_digest, uploaded, skipped)


def push_layout(layout_dir: str | Path, reference: str, *args: Any, **kwargs: Any) -> PushResult:
    """Push the one image of an OCI layout directory that this process did not write.

    Bytes read from disk are checked before anything is sent: every blob is
    hashed against its name, so a corrupt layout pushes nothing. (Images the
    writer just made need no such pass: :func:`push_image` them.)
    """
    from scratchpack.image.readers import open_path

    layout = Path(layout_dir)
    if not (layout / "oci-layout").is_file() or not (layout / "index.json").is_file():
        raise PushError(f"{layout}: not an OCI image layout (no oci-layout or index.json)")
    try:
        image = open_path(str(layout), layout, layout).image
        for layer in image.layers:
            with layer.blob.open() as stream:
                reader = HashingReader(stream, Digest.parse(layer.digest).algorithm)
                actual = reader.drain()
            if actual != layer.digest or reader.size != layer.size:
                raise PushError(
                    f"{layout}: the layer blob {layer.digest} is corrupt: its content hashes "
                    f"to {actual} ({reader.size} bytes)"
                )
    except InputError as err:
        raise PushError(str(err)) from None
    return push_image(image, reference, *args, **kwargs)
