"""A real container registry for the tests: Debian's docker-registry (the CNCF distribution
registry) on this machine, with TLS from a test CA, listening only on one test host's veth
gateway address (10.231.N.1), which that host reaches directly and nothing else does.
Images are pushed with skopeo from docker-archives built like CI builds them; each push
records the manifest digest the registry gave it.

Two ways to authenticate, as the registries users push to do:

- `auth="htpasswd"`: Basic auth against a bcrypt htpasswd line, as ECR answers.
- `auth="token"`: the registry in `auth: token` mode with a token service beside it
  (tests/token_service.py, on PORT + 1 of the same address), as GHCR and Docker Hub work: a
  Bearer challenge, a token asked for with Basic credentials or none, scopes granted per
  user, repository and action. USER may pull `choiros/*`, PUSHER may push anything, and
  anyone, without credentials, may pull `public/*`.

Its log is how a test proves a revert pulled nothing: every manifest or blob request is a
line in it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import token_service
from tests.deploying import WATCHED_PATHS
from tests.testhost import TestHost

PORT = 5000
USER = "ci-deploy"
PASSWORD = "s3cret-pull-t0ken"  # the value tests look for everywhere it must not be
PUSHER = "ci-push"  # token mode: the only user that may push
PUSHER_PASSWORD = "push-0nly-from-ci"


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, **kw)  # type: ignore[call-overload, no-any-return]


def make_ca(folder: Path, address: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `address` (in subjectAltName): (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=reconciler test CA"])  # fmt: skip
    _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={address}"])  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)])  # fmt: skip
    return ca, cert, key


@dataclass
class Registry:
    address: str  # host:port, as image references name it
    folder: Path
    ca: Path
    process: subprocess.Popen[bytes]
    log: Path
    digests: dict[str, str] = field(default_factory=dict)  # what tests pushed: version -> digest
    archives: dict[str, Path] = field(default_factory=dict)
    tokens: token_service.TokenService | None = None  # token mode: the service that signs them
    realm: str = ""  # token mode: where tokens are asked for

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def pulls_since(self, mark: int) -> list[str]:
        """Manifest and blob requests logged after line `mark` (see log_lines)."""
        return [ln for ln in self.log_lines()[mark:] if "/manifests/" in ln or "/blobs/" in ln]

    def authfile(self, password: str = PASSWORD, user: str = USER) -> Path:
        import base64

        path = self.folder / f"auth-{abs(hash((user, password)))}.json"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.address: {"auth": token}}}))
        return path

    def push(self, archive: Path, repo: str, tag: str) -> str:
        """skopeo copy of a docker-archive to REPO:TAG here; returns the manifest digest."""
        digest_file = self.folder / "digest"
        authfile = self.authfile(PUSHER_PASSWORD, PUSHER) if self.tokens else self.authfile()
        _run([
            "skopeo", "copy", "--insecure-policy", "--quiet",
            "--dest-authfile", str(authfile), "--dest-cert-dir", str(self.folder / "certs"),
            "--digestfile", str(digest_file),
            f"docker-archive:{archive}", f"docker://{self.address}/{repo}:{tag}",
        ])  # fmt: skip
        return digest_file.read_text().strip()

    def trust_on(self, host: TestHost) -> None:
        """The host's runtimes (and the agent's pin check) trust the test CA for this registry."""
        data = self.ca.read_bytes()
        for folder in ("/etc/docker/certs.d", "/etc/containers/certs.d"):
            host.write(f"{folder}/{self.address}/ca.crt", data)


def token_grants() -> token_service.Grants:
    return {
        USER: token_service.Grant(pull=["choiros/*"]).table(),
        PUSHER: token_service.Grant(push=["*"]).table(),
        None: token_service.Grant(pull=["public/*"]).table(),
    }


@contextlib.contextmanager
def serve(host: TestHost, folder: Path, auth: str = "htpasswd") -> Iterator[Registry]:
    """The registry, listening on `host`'s gateway address, until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(folder, host.gateway)
    certs = folder / "certs"
    certs.mkdir()
    shutil.copyfile(ca, certs / "ca.crt")
    with contextlib.ExitStack() as stack:
        tokens, realm = None, ""
        if auth == "token":
            users = {USER: PASSWORD, PUSHER: PUSHER_PASSWORD}
            tokens = token_service.TokenService(folder, users, token_grants())
            realm = stack.enter_context(token_service.serve(tokens, host.gateway, PORT + 1, cert, key))
            settings: dict[str, object] = {
                "token": {
                    "realm": realm,
                    "service": token_service.SERVICE,
                    "issuer": token_service.ISSUER,
                    "rootcertbundle": str(tokens.bundle),
                }
            }
        else:
            htpasswd = _run(["htpasswd", "-nbB", USER, PASSWORD]).stdout.strip()
            (folder / "htpasswd").write_text(htpasswd + "\n")
            settings = {"htpasswd": {"realm": "reconciler-test", "path": str(folder / "htpasswd")}}
        registry = stack.enter_context(_registry(host, folder, ca, cert, key, settings))
        registry.tokens = tokens
        registry.realm = realm if tokens else ""
        yield registry


@contextlib.contextmanager
def _registry(
    host: TestHost, folder: Path, ca: Path, cert: Path, key: Path, auth: dict[str, object]
) -> Iterator[Registry]:
    config = folder / "config.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "info", "accesslog": {"disabled": False}},
                "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
                "http": {
                    "addr": f"{host.gateway}:{PORT}",
                    "tls": {"certificate": str(cert), "key": str(key)},
                },
                "auth": auth,
            }
        )
    )
    log = folder / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = Registry(f"{host.gateway}:{PORT}", folder, ca, process, log)
    try:
        deadline = time.monotonic() + 15
        while "listening on" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        registry.trust_on(host)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Watch:
    """Every command line on the host, sampled while something runs."""

    def __init__(self, host: TestHost) -> None:
        self.host = host
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for _ in range(2000):  # bounded: at most a few minutes
            if self.stop.is_set():
                return
            out = self.host.exec(["ps", "-eo", "args", "--no-headers"], check=False).stdout
            self.seen |= set(out.splitlines())

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def nowhere(said: str, host: TestHost, password: str = PASSWORD) -> None:
    """The password is in nothing a run printed (`said`) or left on the host: no file the
    reconciler may touch, nothing under /run, /tmp, /var/log or /root, not the journal, and
    no auth folder outlived its pull."""
    assert password not in said
    found = host.exec(
        ["grep", "-rl", "--", password, *WATCHED_PATHS, "/run", "/tmp", "/var/log", "/root"], check=False
    )
    assert found.stdout == "", f"the password was left in {found.stdout}"
    journal = host.exec(["journalctl", "--no-pager", "-o", "cat"]).stdout
    assert password not in journal
    left = host.exec(["sh", "-c", "ls -d /run/reconciler-pull-* 2>/dev/null || true"]).stdout
    assert left == "", f"an auth folder outlived its pull: {left}"
