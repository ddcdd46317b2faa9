"""Before a pinned image is pulled, ask its registry two questions over the Registry HTTP API
(what Docker and Podman speak): does the pinned digest exist, and does the image's tag point
to it? Either "no" refuses the deploy before anything is pulled, as do credentials the
registry refuses. Only manifests are asked for (HEAD), never layers.

Trust is the runtime's own for that registry: the system's CAs plus the certificates in
/etc/docker/certs.d/HOST:PORT/ or /etc/containers/certs.d/HOST:PORT/, for its token service
too (as Docker and Podman trust it). Authentication is what registries ask for in their
401: Basic (the distribution registry with htpasswd, ECR) or a Bearer token fetched from the
realm they name (GHCR, Docker Hub; tested against the distribution registry in token mode).
"""

from __future__ import annotations

import base64
import glob
import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

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


def challenge_params(challenge: str) -> tuple[str, dict[str, str]]:
    """The scheme of a WWW-Authenticate challenge and its quoted parameters (realm, service,
    scope, error)."""
    scheme, _, rest = challenge.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Credentials follow a redirect only to the host they were meant for (urllib's own
    handler copies every header to wherever the redirect points)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        moved = urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        if new is not None and moved:
            new.remove_header("Authorization")
        return new


class Registry:
    """The manifest questions of one pin check, authenticated as the registry asks.

    Bearer (GHCR, Docker Hub, the distribution registry with `auth: token`): the 401 names a
    realm, a service and a scope; the token is asked for there (Basic credentials, or none
    for a public repository) and sent as `Bearer`. A token the registry refuses later
    (`error="invalid_token"`: it expired, or the clocks disagree) is asked for again once; a
    token without the scope (`error="insufficient_scope"`) is not: the credentials do not
    allow this repository, and a new token would say the same.
    """

    def __init__(self, registry: str, auth: Json | None) -> None:
        self.registry = registry
        self.auth = auth
        self.context = _context(registry)
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self.context), _SameHostRedirects()
        )
        self.header: str | None = None  # Authorization, once the registry said which kind
        self.refusal = ""  # why the last 401 was one, in words, for the error

    def _basic(self) -> str | None:
        if not self.auth:
            return None
        token = base64.b64encode(f"{self.auth['username']}:{self.auth['password']}".encode()).decode()
        return f"Basic {token}"

    def head(self, name: str, reference: str) -> tuple[int, str | None]:
        """(HTTP status, Docker-Content-Digest) of a manifest."""
        url = f"https://{_endpoint(self.registry)}/v2/{name}/manifests/{reference}"
        renewed = False
        for _attempt in range(3):  # anonymous, authorized, authorized with a renewed token
            request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
            if self.header:
                request.add_header("Authorization", self.header)
            try:
                # https:// only: the URL is built above from the registry's host name.
                with self.opener.open(request, timeout=30) as answer:
                    return answer.status, answer.headers.get("Docker-Content-Digest")
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    return exc.code, None
                scheme, params = challenge_params(exc.headers.get("WWW-Authenticate", ""))
                self.refusal = params.get("error", "")
                if self.header is not None:
                    bearer = self.header.startswith("Bearer ")
                    if not bearer or renewed or self.refusal == "insufficient_scope":
                        return 401, None
                    renewed = True  # a token it took before, refused now: ask for a new one
                self.header = self._authorize(scheme, params, name)
                if not self.header:
                    return 401, None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise AgentError(
                    f"cannot reach the registry {self.registry}: {reason}", code="registry"
                ) from None
        return 401, None

    def _authorize(self, scheme: str, params: dict[str, str], name: str) -> str | None:
        if scheme == "basic":
            return self._basic()
        if scheme != "bearer":
            self.refusal = f"it asks for {scheme or 'no'} authentication, which is not supported"
            return None
        realm = params.get("realm", "")
        if not realm.startswith("https://"):
            self.refusal = f"its token service {realm!r} is not HTTPS, and a token is only asked for over TLS"
            return None
        query = [("scope", scope) for scope in (params.get("scope") or f"repository:{name}:pull").split(" ")]
        if params.get("service"):
            query.append(("service", params["service"]))
        sep = "&" if "?" in realm else "?"
        request = urllib.request.Request(f"{realm}{sep}{urllib.parse.urlencode(query)}")  # noqa: S310
        basic = self._basic()
        if basic:
            request.add_header("Authorization", basic)
        try:
            with self.opener.open(request, timeout=30) as answer:
                body = json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                self.refusal = f"its token service {realm} refused them (HTTP {exc.code})"
                return None
            raise AgentError(
                f"the token service {realm} of the registry {self.registry} answered HTTP {exc.code}",
                code="registry",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AgentError(
                f"cannot reach the token service {realm} of the registry {self.registry}: {reason}",
                code="registry",
            ) from None
        except ValueError:
            raise AgentError(
                f"the token service {realm} of the registry {self.registry} answered with no JSON",
                code="registry",
            ) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise AgentError(
                f"the token service {realm} of the registry {self.registry} answered without a token",
                code="registry",
            )
        return f"Bearer {token}"

    def why_refused(self, repo: str) -> str:
        """The refusal in words: what the credentials are not allowed, or who refused them."""
        if self.refusal == "insufficient_scope":
            if not self.auth:
                return f"{repo} is not public"
            return f"they do not allow pulling {repo} (the token granted no pull on it)"
        if self.refusal == "invalid_token":
            return "the registry refused the token its token service gave, twice"
        return self.refusal


def check_pin(image: str, digest: str, auth: Json | None) -> None:
    """Refuse, before pulling, a digest the registry does not have, or one its tag does not name."""
    repo, tag = split_ref(image)
    registry = registry_of(repo)
    name = _path(repo, registry)
    client = Registry(registry, auth)
    status, _ = client.head(name, digest)
    if status in (401, 403):
        why = client.why_refused(name)
        raise AgentError(
            f"the registry {registry} refused "
            + ("the credentials in registry_auth" if auth else "an anonymous pull; give registry_auth")
            + f" for {repo} (HTTP {status}{': ' + why if why else ''}); nothing was pulled",
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
