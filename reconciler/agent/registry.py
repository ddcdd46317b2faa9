"""Before a pinned image is pulled, ask its registry two questions over the Registry HTTP API
(what Docker and Podman speak): does the pinned digest exist, and does the image's tag point
to it? Either "no" refuses the deploy before anything is pulled, as do credentials the
registry refuses. Only manifests are asked for (HEAD), never layers.

Trust is the runtime's own for that registry: the system's CAs plus the certificates in
/etc/docker/certs.d/HOST:PORT/ or /etc/containers/certs.d/HOST:PORT/. Authentication is
what registries ask for in their 401: Basic (the distribution registry with htpasswd, ECR)
or a Bearer token fetched from the realm they name (GHCR, Docker Hub).
"""

from __future__ import annotations

import base64
import glob
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

from .protocol import AgentError, Json
from .runtime import registry_of, split_ref

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CERT_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")


def _context(registry: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for folder in CERT_DIRS:
        for path in sorted(glob.glob(f"{folder}/{registry}/*.crt")):
            context.load_verify_locations(cafile=path)
    return context


def _endpoint(registry: str) -> str:
    return "registry-1.docker.io" if registry == "docker.io" else registry


def _path(repo: str, registry: str) -> str:
    name = repo[len(registry) + 1 :] if repo.startswith(registry + "/") else repo
    if registry == "docker.io" and "/" not in name:
        name = f"library/{name}"
    return name


class Registry:
    def __init__(self, registry: str, auth: Json | None) -> None:
        self.registry = registry
        self.auth = auth
        self.context = _context(registry)
        self.header: str | None = None  # Authorization, once the registry said which kind

    def _basic(self) -> str | None:
        if not self.auth:
            return None
        token = base64.b64encode(f"{self.auth['username']}:{self.auth['password']}".encode()).decode()
        return f"Basic {token}"

    def head(self, name: str, reference: str) -> tuple[int, str | None]:
        """(HTTP status, Docker-Content-Digest) of a manifest."""
        url = f"https://{_endpoint(self.registry)}/v2/{name}/manifests/{reference}"
        for _attempt in range(2):
            request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
            if self.header:
                request.add_header("Authorization", self.header)
            try:
                # https:// only: the URL is built above from the registry's host name.
                with urllib.request.urlopen(request, timeout=30, context=self.context) as answer:  # noqa: S310
                    return answer.status, answer.headers.get("Docker-Content-Digest")
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.header is None:
                    self.header = self._authorize(exc.headers.get("WWW-Authenticate", ""), name)
                    if self.header:
                        continue
                return exc.code, None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise AgentError(
                    f"cannot reach the registry {self.registry}: {reason}", code="registry"
                ) from None
        return 401, None

    def _authorize(self, challenge: str, name: str) -> str | None:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self._basic()
        if scheme.lower() != "bearer":
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        query = {"scope": params.get("scope") or f"repository:{name}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params.get("realm", "")
        if not realm.startswith("https://"):
            return None  # a token is only ever asked for over TLS
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")  # noqa: S310
        basic = self._basic()
        if basic:
            request.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as answer:  # noqa: S310
                body = json.loads(answer.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            return None
        token = body.get("token") or body.get("access_token")
        return f"Bearer {token}" if token else None


def check_pin(image: str, digest: str, auth: Json | None) -> None:
    """Refuse, before pulling, a digest the registry does not have, or one its tag does not name."""
    repo, tag = split_ref(image)
    registry = registry_of(repo)
    name = _path(repo, registry)
    client = Registry(registry, auth)
    status, _ = client.head(name, digest)
    if status in (401, 403):
        raise AgentError(
            f"the registry {registry} refused "
            + ("the credentials in registry_auth" if auth else "an anonymous pull; give registry_auth")
            + f" for {repo} (HTTP {status}); nothing was pulled",
            code="registry_auth",
        )
    if status == 404:
        raise AgentError(
            f"the registry {registry} has no image {repo}@{digest}: check release digest (or push it); "
            "nothing was pulled",
            code="registry",
        )
    if status != 200:
        raise AgentError(
            f"the registry {registry} answered HTTP {status} for {repo}@{digest}", code="registry"
        )
    status, pointed = client.head(name, tag)
    if status == 404:
        raise AgentError(
            f"the registry {registry} has no tag {tag} of {repo}; nothing was pulled", code="registry"
        )
    if status != 200:
        raise AgentError(f"the registry {registry} answered HTTP {status} for {repo}:{tag}", code="registry")
    if pointed and pointed != digest:
        raise AgentError(
            f"{repo}:{tag} points to {pointed} in the registry, not to the pinned {digest}: refusing an "
            "image its tag does not name (pin the digest the tag points to, or push the tag again); "
            "nothing was pulled",
            code="registry_pin",
        )
