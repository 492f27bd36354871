"""A real registry on loopback for push tests: Debian's ``docker-registry`` (distribution 2.8).

:func:`start_registry` writes its own configuration in a temp directory (the
packaged one listens on every interface with htpasswd auth): storage in the temp
directory, ``http.addr`` on ``127.0.0.1`` and a free port, and optionally

- ``htpasswd``: Basic auth (distribution 2.8 allows it without TLS; bcrypt lines
  come from ``htpasswd -B``, the ``bcrypt`` module or libxcrypt's ``crypt``);
- ``token``: Bearer auth through :class:`TokenServer`, a small token service in a
  thread that signs RS256 JWTs with ``openssl`` — the scheme of Docker Hub, GHCR,
  Harbor;
- ``tls``: HTTPS with a self-signed certificate for 127.0.0.1 made by ``openssl``;
- ``readonly``: maintenance read-only mode, a real registry refusing uploads.

:func:`write_layout` makes a tiny deterministic OCI layout to push.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from tests.fake_registry import Recorder, Servers, json_answer

DOCKER_REGISTRY = Path("/usr/bin/docker-registry")  # Debian package docker-registry
SKOPEO = Path("/usr/bin/skopeo")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TOKEN_SERVICE = "scratchpack-test-registry"
TOKEN_ISSUER = "scratchpack-test-issuer"


class Unavailable(Exception):
    """A prerequisite of the registry tests is missing (skip, or fail in CI)."""


def free_port() -> int:
    """A loopback TCP port nothing listens on (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- secrets -------------------------------------------------------------------------


def htpasswd_line(user: str, password: str) -> str:
    """``user:$2y$...``: distribution's htpasswd accepts bcrypt only."""
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run(
            [tool, "-Bbn", user, password], check=True, capture_output=True, text=True
        ).stdout
        return out.strip()
    try:
        import bcrypt  # type: ignore[import-not-found]

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        return f"{user}:{hashed}"
    except ImportError:
        pass
    try:  # libxcrypt (libcrypt1, part of every Debian) implements bcrypt
        lib = ctypes.CDLL("libcrypt.so.1")
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
        hashed = lib.crypt(password.encode(), salt) if salt else None
    except (OSError, AttributeError):
        hashed = None
    if not hashed or not hashed.startswith(b"$2"):
        raise Unavailable(
            "no bcrypt for an htpasswd file: install apache2-utils (htpasswd) or python3-bcrypt"
        )
    return f"{user}:{hashed.decode()}"


@dataclass(frozen=True)
class KeyPair:
    """A self-signed RSA certificate for 127.0.0.1/localhost and its key (PEM files)."""

    cert: Path
    key: Path

    def sign_rs256(self, data: bytes) -> bytes:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=data,
            check=True,
            capture_output=True,
        ).stdout

    def libtrust_key_id(self) -> str:
        """The ``kid`` distribution derives from a root certificate (libtrust's fingerprint)."""
        pem = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-pubkey", "-noout"],
            check=True,
            capture_output=True,
        ).stdout
        der = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=pem,
            check=True,
            capture_output=True,
        ).stdout
        encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
        return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def make_keypair(directory: Path) -> KeyPair:
    if shutil.which("openssl") is None:
        raise Unavailable("no openssl to make a test certificate (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(pair.key), "-out", str(pair.cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return pair


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# --- the token service ---------------------------------------------------------------


@dataclass
class TokenServer:
    """Docker's token protocol: ``GET /token?service=&scope=`` with optional Basic auth.

    Right credentials get the scope's actions, none get an anonymous token without
    any (as Docker Hub does for push), wrong ones get 401. ``token_key`` chooses
    ``token`` or ``access_token`` in the answer; ``requests`` counts token requests.
    """

    keys: KeyPair
    user: str
    password: str
    token_key: str = "token"
    requests: int = 0
    url: str = ""
    _servers: Servers = field(default_factory=Servers, repr=False)

    def start(self) -> TokenServer:
        address, _handler = self._servers.serve("127.0.0.1", self._answer)
        self.url = f"http://{address}/token"
        return self

    def stop(self) -> None:
        self._servers.stop()

    def _answer(self, request: Recorder) -> None:
        parts = urlsplit(request.path)
        if request.command != "GET" or parts.path != "/token":
            json_answer(404, {"errors": [{"code": "NOT_FOUND", "message": "no such page"}]})(
                request
            )
            return
        self.requests += 1
        auth = request.headers.get("Authorization", "")
        granted: list[str] = []
        subject = ""
        if auth:
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if auth != f"Basic {expected}":
                json_answer(401, {"details": "wrong user name or password"})(request)
                return
            granted, subject = ["pull", "push"], self.user
        query = parse_qs(parts.query)
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a in granted]
            access.append({"type": kind, "name": name, "actions": wanted})
        service = query.get("service", [""])[0]
        token = self.issue(subject, service, access)
        json_answer(200, {self.token_key: token})(request)

    def issue(self, subject: str, audience: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.keys.libtrust_key_id()}
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": audience,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{self.requests}",
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self.keys.sign_rs256(signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"


# --- the registry ---------------------------------------------------------------------


@dataclass
class Registry:
    """A running ``docker-registry serve`` on 127.0.0.1; ``address`` is ``127.0.0.1:PORT``."""

    address: str
    scheme: str
    process: subprocess.Popen[bytes]
    log: Path
    ca_file: Path | None = None
    auth: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """A request to the registry API as its test user (Basic auth registries only)."""
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("verify", str(self.ca_file) if self.ca_file else True)
        if self.auth is not None:
            kwargs.setdefault("auth", self.auth)
        return requests.request(method, f"{self.url}{path}", **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def start_registry(
    directory: Path,
    *,
    htpasswd: tuple[str, str] | None = None,
    tls: KeyPair | None = None,
    token: TokenServer | None = None,
    readonly: bool = False,
) -> Iterator[Registry]:
    """Run a registry with its own config in ``directory`` until the block ends."""
    if not DOCKER_REGISTRY.exists():
        raise Unavailable(f"{DOCKER_REGISTRY} is missing (Debian package docker-registry)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory / 'data'}",
    ]
    if readonly:
        lines += ["  maintenance:", "    readonly:", "      enabled: true"]
    lines += ["http:", f"  addr: 127.0.0.1:{port}", "  secret: scratchpack-tests"]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls.cert}", f"    key: {tls.key}"]
    if htpasswd is not None:
        (directory / "htpasswd").write_text(htpasswd_line(*htpasswd) + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: test", f"    path: {directory / 'htpasswd'}"]
    elif token is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.url}",
            f"    service: {TOKEN_SERVICE}",
            f"    issuer: {TOKEN_ISSUER}",
            f"    rootcertbundle: {token.keys.cert}",
        ]
    config = directory / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = directory / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(DOCKER_REGISTRY), "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    registry = Registry(
        f"127.0.0.1:{port}",
        "https" if tls else "http",
        process,
        log,
        ca_file=tls.cert if tls else None,
        auth=htpasswd,
    )
    try:
        _wait_until_up(registry)
        yield registry
    finally:
        registry.stop()


def _wait_until_up(registry: Registry, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with {registry.process.returncode}: "
                f"{registry.log.read_text(errors='replace')[-2000:]}"
            )
        try:
            response = registry.api("GET", "/v2/", timeout=2)
            if response.status_code in (200, 401):
                return
        except requests.exceptions.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer GET /v2/ within {timeout:g} s")


# --- a layout to push --------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A written OCI layout: where, its manifest digest and every blob digest it holds."""

    path: Path
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]


def _write_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / hexdigest).write_bytes(data)
    return f"sha256:{hexdigest}", len(data)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _layer(files: dict[str, bytes]) -> bytes:
    """A deterministic gzip layer: sorted entries, root-owned, mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o755, 0
            tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def write_layout(
    path: Path, layers: list[dict[str, bytes]] | None = None, tag: str = "latest"
) -> Layout:
    """A minimal OCI image layout (one manifest) with these layers' files, byte-stable."""
    layers = layers if layers is not None else [{"hello.txt": b"hello from scratchpack\n"}]
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_descriptors, diff_ids = [], []
    for files in layers:
        data = _layer(files)
        digest, size = _write_blob(blobs, data)
        raw = gzip.decompress(data)
        diff_ids.append(f"sha256:{hashlib.sha256(raw).hexdigest()}")
        layer_descriptors.append(
            {
                "digest": digest,
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": size,
            }
        )
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_digest, config_size = _write_blob(blobs, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "digest": config_digest,
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config_size,
        },
        "layers": layer_descriptors,
    }
    manifest_digest, manifest_size = _write_blob(blobs, _canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "digest": manifest_digest,
                "mediaType": OCI_MANIFEST,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_bytes(_canonical(index))
    (path / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    return Layout(
        path,
        manifest_digest,
        config_digest,
        tuple(d["digest"] for d in layer_descriptors),
    )


def registry_or_unavailable(directory: Path, **options: object) -> Iterator[Registry]:
    """A running registry for a fixture; skips (or fails in CI) when one cannot start."""
    from tests.conftest import unavailable

    try:
        with start_registry(directory, **options) as running:  # type: ignore[arg-type]
            yield running
    except Unavailable as missing:
        unavailable(str(missing))
