"""A token service for the test registry: what GHCR and Docker Hub put in front of their
registries, for the CNCF distribution registry's `auth: token` mode.

The flow it serves (Docker's "token authentication specification", which GHCR follows):
the registry answers a request without a valid token with `401` and
`WWW-Authenticate: Bearer realm="https://.../token",service="...",scope="repository:NAME:pull"`;
the client asks the realm `GET ?service=...&scope=...` with Basic credentials (or none, for
a public repository) and gets `{"token": ..., "access_token": ..., "expires_in": ...}`; it
repeats the request with `Authorization: Bearer <token>`. Scopes are granted per user,
repository and action: what a user may not do is left out of the token (an empty `access`,
as Docker Hub does), and the registry then refuses with `error="insufficient_scope"`.
Wrong credentials get a 401 from the token service itself.

What the distribution registry 2.8 requires of a token (registry/auth/token/token.go and
accesscontroller.go at v2.8.2, read for this):

- A compact JWS whose header names its signing key in one of three ways, tried in this
  order: `x5c` (a certificate chain verified against the `rootcertbundle`), `jwk` (a key
  of the bundle, or one carrying its own `x5c`), `kid` (libtrust's fingerprint of a key in
  the bundle: base32 of the first 240 bits of the SHA-256 of its DER, in groups of four
  joined by ':'). This service sends `x5c` with its signing certificate, which is the
  bundle. `alg` is verified by libtrust: ES256 here, the P-256 signature as r||s (JOSE's
  form, which PyJWT writes).
- Claims: `iss` equal to the configured `issuer`; `aud` equal to the configured `service`,
  as one string (2.8 reads it into a string: a list makes the token malformed); `exp` and
  `nbf` in Unix seconds, each checked with 60 s of leeway (`Leeway`), so a token is
  refused only a minute after its `exp`; `access`, a list of `{type, name, actions}` that
  must hold every (type, name, action) the request needs. `sub`, `iat` and `jti` are
  carried but not checked.
- Refusals are 401s with the challenge again plus `error="invalid_token"` (expired, bad
  signature, wrong issuer or audience) or `error="insufficient_scope"`.

`expire_next(n)` makes the next n tokens expired when issued (their `exp` more than the
leeway in the past, as a token kept past its lifetime by a client's cache or skewed clocks
would be): the registry refuses them, and a client must ask for a new one to go on.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fnmatch
import http.server
import json
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = "reconciler-test-token-service"
SERVICE = "reconciler-test-registry"
LEEWAY = 60  # seconds the registry (2.8) accepts a token past its exp, and before its nbf
LIFETIME = 300  # seconds, as Docker Hub's tokens

# user -> repository pattern -> actions granted. None is the anonymous user.
Grants = Mapping[str | None, Mapping[str, frozenset[str]]]


@dataclass
class Issued:
    """One answer of the token service, for tests to read."""

    user: str | None  # None: anonymous
    scopes: list[str]  # as asked for
    access: list[dict[str, object]]  # as granted
    expired: bool
    client: str  # User-Agent: which client asked (the agent's urllib, Podman, Docker, skopeo)
    token: str


def signing_key(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    """A P-256 key and its self-signed certificate, written as the registry's rootcertbundle."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = folder / "token-signer.crt"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, bundle


class TokenService:
    def __init__(self, folder: Path, users: Mapping[str, str], grants: Grants) -> None:
        self.users = dict(users)  # name -> password
        self.grants = grants
        self.key, cert, self.bundle = signing_key(folder)
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.issued: list[Issued] = []
        self.refused: list[str] = []  # users whose credentials were wrong ("" for a bad header)
        self._expire = 0
        self._expire_for = ""
        self._lock = threading.Lock()

    def expire_next(self, count: int = 1, client: str = "") -> None:
        """The next `count` tokens asked for by a client whose User-Agent starts with
        `client` (any, by default) are expired when issued."""
        with self._lock:
            self._expire, self._expire_for = count, client

    def mark(self) -> int:
        return len(self.issued)

    def since(self, mark: int) -> list[Issued]:
        return self.issued[mark:]

    def allowed(self, user: str | None, repository: str) -> frozenset[str]:
        out: set[str] = set()
        for who in {user, None}:  # what anyone may do, everyone may
            for pattern, actions in (self.grants.get(who) or {}).items():
                if fnmatch.fnmatchcase(repository, pattern):
                    out |= actions
        return frozenset(out)

    def access(self, user: str | None, scopes: list[str]) -> list[dict[str, object]]:
        """What of the scopes asked for the user gets: `repository:NAME:ACTION[,ACTION]`."""
        granted: dict[str, set[str]] = {}
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                asked = {a for a in actions.split(",") if a}
                given = asked & self.allowed(user, name)
                if given:
                    granted.setdefault(name, set()).update(given)
        return [{"type": "repository", "name": n, "actions": sorted(a)} for n, a in granted.items()]

    def token(self, user: str | None, access: list[dict[str, object]], client: str) -> tuple[str, bool]:
        now = int(time.time())
        with self._lock:
            expired = self._expire > 0 and client.startswith(self._expire_for)
            self._expire -= 1 if expired else 0
        exp = now - LEEWAY - 600 if expired else now + LIFETIME
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": exp,
            "nbf": min(now, exp) - 1,
            "iat": min(now, exp) - 1,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": self.x5c}), expired

    def answer(
        self, query: Mapping[str, list[str]], authorization: str | None, client: str
    ) -> tuple[int, dict[str, object]]:
        user: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            try:
                name, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
            if scheme.lower() != "basic" or self.users.get(name) != password:
                self.refused.append(name)
                return 401, {"details": "incorrect username or password"}
            user = name
        if query.get("service", [SERVICE])[0] != SERVICE:
            return 400, {"details": f"unknown service {query['service'][0]!r}"}
        scopes = query.get("scope", [])
        access = self.access(user, scopes)
        token, expired = self.token(user, access, client)
        self.issued.append(Issued(user, scopes, access, expired, client, token))
        issued_at = datetime.datetime.now(datetime.UTC).isoformat()
        return 200, {"token": token, "access_token": token, "expires_in": LIFETIME, "issued_at": issued_at}


def _handler(service: TokenService) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.send_json(404, {"details": "not found"})
                return
            status, body = service.answer(
                urllib.parse.parse_qs(url.query),
                self.headers.get("Authorization"),
                self.headers.get("User-Agent", ""),
            )
            self.send_json(status, body)

        def send_json(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="reconciler test token service"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # what tests need is in service.issued and service.refused

    return Handler


@contextlib.contextmanager
def serve(service: TokenService, address: str, port: int, cert: Path, key: Path) -> Iterator[str]:
    """The service over TLS on address:port until the block ends; yields its realm URL."""
    server = http.server.ThreadingHTTPServer((address, port), _handler(service))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"https://{address}:{port}/token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Grant:
    """Helper to write grants readably: Grant(pull=["choiros/*"], push=[...])."""

    pull: list[str] = field(default_factory=list)
    push: list[str] = field(default_factory=list)

    def table(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for pattern in self.pull:
            out.setdefault(pattern, set()).add("pull")
        for pattern in self.push:
            out.setdefault(pattern, set()).update({"pull", "push"})
        return {k: frozenset(v) for k, v in out.items()}
