"""The HTTP client of a push: auth challenges, tokens, retries, bounds, deadlines, redirects.

Transport follows docker's rules: HTTPS with certificate verification, except for
*insecure* registries (``insecure=True``, or a loopback address: ``localhost``,
``127.0.0.0/8``, ``::1``, which docker treats as insecure by default: see
:func:`is_loopback`). For those, HTTPS without verification is tried first and
plain HTTP after it, exactly docker's fallback, so both a plain-HTTP ``registry:2``
and a self-signed one work. A private CA is trusted with ``ca_file`` or
``REQUESTS_CA_BUNDLE``. Authentication answers the registry's challenge (``Basic``
or ``Bearer`` through a token service).

``requests`` (already installed as docker-py's dependency) rather than urllib:
connection reuse across the many small requests of a push, streamed file bodies
with ``Content-Length``, and the usual environment (``REQUESTS_CA_BUNDLE``,
proxies). A registry is another party's server, so nothing it sends is trusted:
every answer's body is read raw and bounded (:data:`MAX_ANSWER_BODY`,
:data:`MAX_TOKEN_BODY`), every request has a total deadline (:data:`REQUEST_DEADLINE`,
:func:`upload_deadline`) besides requests' per-read timeout, redirects are followed
here (``Authorization`` only on the registry's own origin), tokens are checked
before they go into a header, and failures are told in words
(:func:`transport_failure`), with the user's secrets taken out of any server text.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InsecureRequestWarning

from scratchpack import __version__
from scratchpack.errors import InputError, exception_chain
from scratchpack.image.documents import parse_json
from scratchpack.image.reference import DOCKER_HUB
from scratchpack.image.registry_auth import Credentials, PushError, origin

_DOCKER_HUB_API = "registry-1.docker.io"

# --- bounds on what a registry (or its token service) can make us wait for or hold ------

REQUEST_DEADLINE = 60.0
"""Seconds one request may take whole: connect, headers, body and redirects.

requests' timeout bounds each read, so an answer that drips a byte every few
seconds would never end; this ends it. The answers of a push are bytes to
kilobytes, so a minute is generous on any link. Read at call time (tests lower it).
"""
UPLOAD_THROUGHPUT = 64 << 10
"""Bytes per second a blob upload is granted at least (see :func:`upload_deadline`).

Half a megabit: slower than any link images are pushed over, so only a registry
that stalls on purpose meets the deadline, and how long it can hold a push is
proportional to what the user chose to push (a 1 GB layer: about 4 h 20 min).
"""
MAX_TOKEN_BODY = 64 << 10  # a token service's JSON answer; real ones are a few kB
MAX_TOKEN = 8 << 10  # a bearer token (a JWT of a few kB at most) goes into every header
MAX_ANSWER_BODY = 64 << 10  # any other answer: read this much (errors: shown cut to a line)
_MAX_REDIRECTS = 10
_TOKEN68ISH = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no space, CR, LF or control
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def upload_deadline(size: int) -> float:
    """The whole time an upload of ``size`` bytes gets: a request's, plus its size at
    :data:`UPLOAD_THROUGHPUT` (a fixed deadline would fail big layers on slow links)."""
    return REQUEST_DEADLINE + size / UPLOAD_THROUGHPUT


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


def _host_of(registry: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, brackets removed."""
    if registry.startswith("["):
        return registry[1 : registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """Whether docker would treat this registry as insecure by default (loopback)."""
    host = _host_of(registry).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


# --- the deadline of one request ------------------------------------------------------

_active = threading.local()  # the _Deadline of the request this thread is making


class _Deadline:
    """The end of one request: when it passes, the request's sockets are shut down.

    A shut-down socket ends a read blocked in any phase (TLS handshake, status line,
    headers, body), so a registry that drips its answer gets exactly this long.
    The connections are the ones :class:`_WatchedPool` hands out while it is active.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._stops: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outer: _Deadline | None = None
        self._watcher = threading.Thread(target=self._watch, name="registry-deadline", daemon=True)

    def remaining(self) -> float:
        return max(0.001, self.ends - time.monotonic())

    def watch(self, stop: Callable[[], object]) -> None:
        """Call ``stop`` when the deadline passes: it shuts a socket of this request."""
        with self._lock:
            self._stops.append(stop)

    def _watch(self) -> None:
        if self._done.wait(self.ends - time.monotonic()):
            return
        while True:  # again and again: a connection still connecting has no socket yet
            with self._lock:
                if self._done.is_set():
                    return
                self.expired = True
                for stop in self._stops:
                    with contextlib.suppress(OSError, ValueError, RuntimeError):
                        stop()
            if self._done.wait(0.05):
                return

    def __enter__(self) -> _Deadline:
        self._outer = getattr(_active, "deadline", None)
        _active.deadline = self
        self._watcher.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        _active.deadline = self._outer
        with self._lock:
            self._done.set()
        self._watcher.join()


def _shut_connection(connection: Any) -> None:
    """Shut a connection's socket: a read blocked on it (handshake, headers) ends at once."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedPool:
    """Registers each connection it hands out with the active :class:`_Deadline`.

    Until the headers are in, the connection holds the socket; once they are (the
    body phase), the response does, and :meth:`RegistryClient._exchange` watches that.
    """

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = getattr(_active, "deadline", None)
        if deadline is not None:
            deadline.watch(functools.partial(_shut_connection, connection))
        return connection


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    pass


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with pools (direct or through a proxy) a deadline can end."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _OwnRedirects(requests.Session):
    """A session that leaves redirects to us: requests reads a redirect's body whole
    (even with ``allow_redirects=False``, to offer ``Response.next``)."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def _watched_session(auth: Any) -> requests.Session:
    session = _OwnRedirects()
    for prefix in ("https://", "http://"):
        session.mount(prefix, _WatchedAdapter())
    session.headers["User-Agent"] = f"scratchpack/{__version__}"
    # Bodies are read raw and bounded: nothing a server compresses is inflated.
    session.headers["Accept-Encoding"] = "identity"
    session.auth = auth  # a callable: ~/.netrc is never consulted
    return session


# --- answers, and failures in words -------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A server's answer with its body already read, bounded: nothing streams on later."""

    status: int
    reason: str
    headers: Mapping[str, str]
    url: str
    body: bytes
    cut: bool  # the body was longer than what was read


def _read_body(response: requests.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, as sent (not inflated); True if there was more."""
    if response.request is not None and response.request.method == "HEAD":
        return b"", False
    data = response.raw.read(limit + 1, decode_content=False)
    return data[:limit], len(data) > limit


class _Breakage(Enum):
    """How a request failed on its way; the value is the words a user reads."""

    TLS = "failed the TLS handshake"
    REFUSED = "refused the connection"
    UNKNOWN_HOST = "has a host name that does not resolve"
    UNREACHABLE = "cannot be reached"
    TIMEOUT = "did not answer in time"
    GARBLED = "sent an answer that is not HTTP"
    CLOSED = "closed the connection"
    BAD_ADDRESS = "was named by an address that is not a usable URL"
    OTHER = "failed"

    @property
    def transient(self) -> bool:
        """Worth another try (docker, skopeo and crane retry these too)."""
        return self in (
            _Breakage.TIMEOUT,
            _Breakage.CLOSED,
            _Breakage.GARBLED,
            _Breakage.UNREACHABLE,
        )


_BREAKAGE_RULES: tuple[tuple[tuple[type[BaseException], ...], _Breakage], ...] = (
    ((ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError), _Breakage.TLS),
    ((ConnectionRefusedError,), _Breakage.REFUSED),
    ((socket.gaierror, urllib3.exceptions.NameResolutionError), _Breakage.UNKNOWN_HOST),
    (
        (TimeoutError, urllib3.exceptions.TimeoutError, requests.exceptions.Timeout),
        _Breakage.TIMEOUT,
    ),
    ((urllib3.exceptions.InvalidChunkLength, http.client.LineTooLong), _Breakage.GARBLED),
    (
        (
            http.client.RemoteDisconnected,
            ConnectionResetError,
            BrokenPipeError,
            ConnectionAbortedError,
            http.client.IncompleteRead,
            requests.exceptions.ChunkedEncodingError,
        ),
        _Breakage.CLOSED,
    ),
    (
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidHeader,
            urllib3.exceptions.LocationValueError,
            http.client.InvalidURL,
        ),
        _Breakage.BAD_ADDRESS,
    ),
    ((http.client.HTTPException, urllib3.exceptions.ProtocolError), _Breakage.GARBLED),
)


@dataclass(frozen=True)
class _Failure:
    """A transport failure in words: its kind and the host's own detail (never a repr)."""

    breakage: _Breakage
    detail: str = ""


def transport_failure(exc: BaseException) -> _Failure:
    """What a requests/urllib3/socket exception means, in words, whatever wraps it."""
    causes = exception_chain(exc)
    for kinds, breakage in _BREAKAGE_RULES:
        if any(isinstance(cause, kinds) for cause in causes):
            return _Failure(breakage, _tls_detail(causes) if breakage is _Breakage.TLS else "")
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return _Failure(_Breakage.UNREACHABLE)
    strerror = next((c.strerror for c in causes if isinstance(c, OSError) and c.strerror), None)
    return _Failure(_Breakage.OTHER, (strerror or type(causes[-1]).__name__).lower())


def _tls_detail(causes: list[BaseException]) -> str:
    """OpenSSL's words ("certificate verify failed: self-signed certificate")."""
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return f"certificate verify failed: {cause.verify_message}"
    for cause in causes:
        if isinstance(cause, ssl.SSLError) and isinstance(cause.reason, str) and cause.reason:
            return cause.reason.lower().replace("_", " ")
    return "the handshake failed"


def _registry_message(answer: Answer) -> str:
    """The server's own words: ``errors[0].message`` (and code), else the status and body.

    Not cut to a line here: secrets are taken out of the whole text first (a cut
    could split one and show its start), then :meth:`RegistryClient.redact` cuts.
    """
    status = f"{answer.status} {answer.reason}".strip()
    document: Any = None
    if answer.body and not answer.cut:
        with contextlib.suppress(InputError):
            document = parse_json(answer.body, "the answer")
    errors = document.get("errors") if isinstance(document, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    if isinstance(first, dict):
        code, said = first.get("code"), first.get("message")
        code = code if isinstance(code, str) else ""
        message = said if isinstance(said, str) and said else code
        if message:
            same = code.lower().replace("_", " ") == message.lower()
            return message if not code or same else f"{message} ({code})"
    if answer.cut and answer.body.lstrip()[:1] in (b"{", b"["):
        return f"{status} (with an answer larger than {MAX_ANSWER_BODY} bytes)"
    text = answer.body.decode("utf-8", "replace").strip()
    return f"{status}: {text}" if text and not text.startswith("<") else status


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


def follow(base: str, location: str) -> str:
    """``Location`` (an upload's, a redirect's) made absolute; one line if it is no URL."""
    try:
        url = urljoin(base, location)
    except ValueError:
        url = ""
    if origin(url)[0] not in ("http", "https"):
        raise PushError(f"the server at {_netloc(base)} sent an address that is not a usable URL")
    return url


def _netloc(url: str) -> str:
    """``host:port`` of a URL we already requested (ours or a server's, shown cleaned)."""
    return _CONTROL.sub("?", urlsplit(url).netloc)[:200]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class RegistryClient:
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
        self.insecure = insecure  # loopback included by the caller: see is_loopback
        self.timeout = timeout
        self.api_host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        # What TLS checks everything but the registry itself gets: never relaxed.
        self.strict_verify: bool | str = str(ca_file) if ca_file else True
        self.verify: bool | str = self.strict_verify
        self.base = f"https://{self.api_host}"
        self.authorization: str | None = None
        # A callable auth: ours is applied to every request to the registry's own origin,
        # never to another one, and ~/.netrc is never consulted.
        self.session = _watched_session(self._apply_auth)
        # The token service's: not through the registry's auth hook (it would send the
        # registry's old token); the no-op auth keeps ~/.netrc out of it too.
        self.token_session = _watched_session(_keep_headers)
        self.secrets: list[str] = []  # what a server's text must never show
        self.actions = "pull,push"  # the token scope asked for; a reader asks for "pull"
        if credentials is not None:
            self.secrets += [credentials.basic().split()[1], credentials.password]

    @property
    def own_origin(self) -> tuple[str, str, int]:
        """The registry's origin as chosen by :meth:`connect`: only it gets credentials."""
        return origin(self.base)

    def _ours(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own origin (scheme, host and port)."""
        return origin(url) == self.own_origin

    def _apply_auth(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.authorization and self._ours(request.url or ""):
            request.headers["Authorization"] = self.authorization
        else:
            request.headers.pop("Authorization", None)
        return request

    def redact(self, text: str, limit: int = 300) -> str:
        """Server text without anything that could be the user's credentials, on one line.

        Secrets go first, the cut to ``limit`` after: a cut could split a secret.
        """
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return _one_line(_CONTROL.sub("?", text), limit)

    def close(self) -> None:
        self.session.close()
        self.token_session.close()

    # -- transport

    def _who(self, url: str) -> str:
        if self._ours(url):
            return f"the registry at {self.registry}"
        return f"the server at {_netloc(url)}"

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], bytes | BinaryIO] | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | None = None,
        deadline: float | None = None,
        doing: str | None = None,
        limit: int = MAX_ANSWER_BODY,
    ) -> Answer:
        """One request and its answer, redirects followed, all within one deadline.

        Redirects are followed here, not by requests, which would read a redirect's
        body whole. ``verify`` is for the registry's own origin; any other gets
        strict TLS. ``body`` makes the request body (again for a 307/308).
        """
        doing = doing or f"{method} {urlsplit(url).path}"
        sent = dict(headers or {})
        with _Deadline(REQUEST_DEADLINE if deadline is None else deadline) as clock:
            for _hop in range(_MAX_REDIRECTS + 1):
                tls = (self.verify if verify is None else verify) if self._ours(url) else None
                answer = self._exchange(
                    self.session,
                    method,
                    url,
                    clock,
                    doing,
                    headers=sent,
                    body=body,
                    verify=tls,
                    limit=limit,
                )
                if answer.status not in _REDIRECTS or "Location" not in answer.headers:
                    return answer
                url = follow(answer.url, answer.headers["Location"])
                to_get = answer.status in (302, 303) and method != "HEAD"
                if to_get or (answer.status == 301 and method == "POST"):
                    method, body = "GET", None
                    sent = {k: v for k, v in sent.items() if not k.lower().startswith("content-")}
        raise PushError(f"{self._who(url)} redirected {doing} more than {_MAX_REDIRECTS} times")

    def _exchange(
        self,
        session: requests.Session,
        method: str,
        url: str,
        clock: _Deadline,
        doing: str,
        *,
        headers: Mapping[str, str],
        body: Callable[[], bytes | BinaryIO] | None = None,
        verify: bool | str | None = None,
        limit: int = MAX_ANSWER_BODY,
        service: str | None = None,
    ) -> Answer:
        """One HTTP exchange, its body read (at most ``limit`` bytes) before the deadline."""
        data = body() if body is not None else None
        per_read = min(self.timeout, clock.remaining())
        try:
            response = session.request(
                method,
                url,
                data=data,
                headers=dict(headers),
                verify=self.strict_verify if verify is None else verify,
                timeout=(per_read, self.timeout),
                stream=True,
                allow_redirects=False,
            )
            # http.client hands a closing connection's socket to the response: watch it there.
            clock.watch(getattr(response.raw, "shutdown", lambda: None))
            try:
                content, cut = _read_body(response, limit)
            finally:
                if cut or clock.expired:  # an unread rest: the connection cannot be reused
                    response.close()
                else:
                    response.raw.release_conn()
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._transport_error(exc, url, doing, clock, service) from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise self._transport_error(exc, url, doing, clock, service) from None
        finally:
            if data is not None and hasattr(data, "close"):
                data.close()
        if clock.expired:  # the shut-down socket may have looked like the body's end
            raise self._transport_error(None, url, doing, clock, service)
        reason = response.reason or ""
        return Answer(response.status_code, reason, response.headers, url, content, cut)

    def _transport_error(
        self,
        exc: BaseException | None,
        url: str,
        doing: str,
        clock: _Deadline,
        service: str | None = None,
    ) -> PushError:
        """A failed request as one line of words; transient ones (for the registry) retried."""
        who = service or self._who(url)
        late = clock.expired or exc is None
        failure = _Failure(_Breakage.TIMEOUT) if late else transport_failure(exc)
        kind = failure.breakage
        make = PushError if service or not kind.transient else _Transient
        target = self.registry if service is None and self._ours(url) else who
        if late:
            return make(f"{who} did not finish {doing} within {clock.seconds:.0f} s")
        if kind is _Breakage.TLS:
            hint = (
                "; for a plain-HTTP registry use --insecure, for a private CA set "
                "REQUESTS_CA_BUNDLE to its certificate"
                if target == self.registry
                else ""
            )
            return PushError(f"TLS error talking to {target}: {failure.detail}{hint}")
        if kind is _Breakage.REFUSED:
            return PushError(f"cannot connect to {target}: Connection refused")
        if kind is _Breakage.UNKNOWN_HOST:
            return PushError(f"cannot connect to {target}: its host name does not resolve")
        if kind is _Breakage.TIMEOUT:
            return make(f"{who} did not answer within {self.timeout:g} s during {doing}")
        detail = f" ({failure.detail})" if failure.detail else ""
        return make(f"{who} {kind.value}{detail} during {doing}")

    def connect(self) -> None:
        """``GET /v2/``: pick the scheme (docker's insecure fallback) and answer a challenge."""
        if self.insecure:
            try:
                answer = self._send("GET", f"https://{self.api_host}/v2/", verify=False)
                self.verify = False
            except PushError:
                self.base = f"http://{self.api_host}"
                answer = self._send("GET", f"{self.base}/v2/")
        else:
            answer = self._send("GET", f"{self.base}/v2/")
        self._transient(answer)
        if answer.status == 401:
            self._authenticate(answer)
            answer = self._send("GET", f"{self.base}/v2/")
            self._transient(answer)
            if answer.status == 401:
                self._fail_auth()
        if answer.status == 404:
            raise PushError(
                f"{self.registry} does not serve the registry API (GET /v2/ answered 404)"
            )
        if answer.status != 200:
            self.fail(answer, "GET /v2/")

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], bytes | BinaryIO] | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Send, answering one 401 challenge (expired token, wider scope) with a retry."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.base}{url}"
        for attempt in (1, 2):
            answer = self._send(method, url, body=body, **kwargs)
            self._transient(answer)
            if answer.status != 401 or attempt == 2:
                return answer
            if not self._ours(answer.url):
                where = "{}://{}:{}".format(*origin(answer.url))
                raise PushError(
                    f"{self.redact(where)}, where {self.registry} sent the upload, asks for "
                    f"credentials; they go to {self.registry} only"
                )
            if "WWW-Authenticate" not in answer.headers:
                return answer
            self._authenticate(answer)
        raise AssertionError("unreachable")

    @staticmethod
    def _transient(answer: Answer) -> None:
        """A busy or failing registry's answer, as a failure worth another try."""
        if answer.status in RETRY_STATUSES:
            raise _Transient(
                f"{answer.status} {answer.reason}".strip(),
                _retry_after(answer.headers.get("Retry-After")),
            )

    def retrying(self, what: str, step: Callable[[], Any]) -> Any:
        """Run one step of the push, again after transient failures, with backoff.

        Waits double from :data:`_BACKOFF` (a registry's Retry-After wins), at most
        :data:`_MAX_DELAY`; after the last attempt the failure names the registry,
        the repository and the step.
        """
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

    def _authenticate(self, answer: Answer) -> None:
        """Answer ``WWW-Authenticate``; the result is cached for every later request."""
        scheme, params = _parse_challenge(answer.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                self._fail_auth()
            self.authorization = self.credentials.basic()
        elif scheme == "bearer":
            token = self._token(params)
            self.secrets.append(token)
            self.authorization = f"Bearer {token}"
        else:
            raise PushError(
                f"{self.registry} asks for an unsupported authentication scheme "
                f"{self.redact(scheme, 40)!r}"
            )

    def _token(self, params: dict[str, str]) -> str:
        """A token from the challenge's realm for ``repository:<name>:pull,push``."""
        realm = params.get("realm")
        if not realm:
            raise PushError(f"{self.registry} sent a Bearer challenge without a realm")
        query = {"scope": f"repository:{self.repository}:{self.actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        realm_origin = origin(realm)
        same_host = realm_origin[1] == self.own_origin[1]
        if realm_origin[0] not in ("http", "https"):
            raise PushError(
                f"{self.registry} names a token realm that is not a URL: {self.redact(realm)}"
            )
        if realm_origin[0] == "http" and not (same_host and self.insecure):
            raise PushError(
                f"{self.registry} names a token service over plain HTTP on another host "
                f"({self.redact(realm)}); credentials are not sent there"
            )
        service = f"the token service {self.redact(realm, 200)} of {self.registry}"
        # The realm the registry's challenge named gets the credentials, with strict TLS
        # unless it is the (insecure) registry's own host.
        verify = self.verify if same_host else self.strict_verify
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        separator = "&" if urlsplit(realm).query else "?"
        url = f"{realm}{separator}{urlencode(query)}"
        with _Deadline(REQUEST_DEADLINE) as clock:
            answer = self._exchange(
                self.token_session,
                "GET",
                url,
                clock,
                "the token request",
                headers=headers,
                verify=verify,
                limit=MAX_TOKEN_BODY,
                service=service,
            )
        if answer.status in (401, 403):
            self._fail_auth()
        if answer.status != 200:
            raise PushError(f"{service} answered {self.redact(_registry_message(answer))}")
        if answer.cut:
            raise PushError(f"{service} answered more than {MAX_TOKEN_BODY} bytes for a token")
        return _token_of(answer.body, service)

    # -- errors

    def fail(self, answer: Answer, what: str) -> NoReturn:
        status = answer.status
        if status == 401:
            self._fail_auth()
        message = self.redact(_registry_message(answer))
        if status == 403:
            raise PushError(f"push to {self.registry}/{self.repository} denied: {message}")
        if status == 404:
            raise PushError(
                f"{self.registry}: repository {self.repository} or its endpoint not found "
                f"({what}): {message}"
            )
        raise PushError(f"{self.registry}: {what} failed: {message}")


def _token_of(body: bytes, service: str) -> str:
    """The bearer token in a token service's JSON answer, checked before it goes in a header.

    A token is printed nowhere: one that is not visible ASCII (CR/LF would inject
    headers) or is longer than :data:`MAX_TOKEN` is refused without being shown.
    """
    try:
        document = parse_json(body, f"the answer of {service}", kind="a token service's answer")
    except InputError as err:
        raise PushError(str(err)) from None
    token = None
    if isinstance(document, dict):
        token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise PushError(f"{service} returned no token")
    if len(token) > MAX_TOKEN or not _TOKEN68ISH.fullmatch(token):
        raise PushError(
            f"{service} returned a token that is not a bearer token (visible ASCII, no "
            f"spaces, at most {MAX_TOKEN} bytes); it is not shown"
        )
    return token


@contextmanager
def quiet_insecure() -> Iterator[None]:
    """Unverified HTTPS is a decision already made (insecure registry): no warning per request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        yield
