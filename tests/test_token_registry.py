"""GHCR's flow against a real token-auth registry, for Podman and Docker both: Debian's
docker-registry in `auth: token` mode with a token service beside it (tests/registry.py,
tests/token_service.py). The registry answers with a Bearer challenge; the host agent (its
pin check) and the runtime (its pull) each ask the token service for a token, with the
credentials of `registry_auth` or, for a public repository, none; the registry verifies the
signed token and its scope on every request.

Each case runs once on a Podman host and once on a Docker host; the images are built once
and pushed to each host's registry."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import both_runtimes
from tests import registry as reg
from tests.deploying import REPO, WATCHED_PATHS, Project, serves
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

CLIENTS = {"podman": "containers/", "docker": "docker/"}  # how each runtime's requests introduce themselves
AGENT = "Python-urllib/"  # the host agent's pin check
PRIVATE = "choiros/backend"  # ci-deploy may pull it
PUBLIC = "public/backend"  # anyone may pull it, without credentials
OTHER = "other/backend"  # exists, but ci-deploy's tokens grant nothing on it
ENV = {"REG_USER": reg.USER, "REG_PASSWORD": reg.PASSWORD}


# Every test runs on a Podman host, then on a Docker host.
testhost, runtime = both_runtimes.testhost, both_runtimes.runtime


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """docker-archives of the example app as CI builds them, once for both hosts."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image, docker_archive  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("images")
    built = {}
    for version in ("1.0.0", "2.0.0"):
        tar = build_image(version, out, runtime_root=str(ensure_rootfs()))[0]
        built[version] = docker_archive(tar, f"{PRIVATE}:{version}")[0]
    return built


@pytest.fixture(scope="module")
def registry(
    testhost: TestHost, archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[reg.Registry]:
    with reg.serve(testhost, tmp_path_factory.mktemp("registry"), auth="token") as registry:
        for version, archive in archives.items():
            registry.digests[version] = registry.push(archive, PRIVATE, version)
            registry.archives[version] = archive
        registry.digests["public"] = registry.push(archives["1.0.0"], PUBLIC, "1.0.0")
        registry.digests["other"] = registry.push(archives["1.0.0"], OTHER, "1.0.0")
        yield registry


def tokens(registry: reg.Registry) -> reg.token_service.TokenService:
    assert registry.tokens is not None
    return registry.tokens


def write(
    project: Project,
    registry: reg.Registry,
    version: str,
    *,
    repo: str = PRIVATE,
    digest: str | None = None,
    tag: str = "",
    auth: bool = True,
) -> None:
    image = f"{registry.address}/{repo}:{tag or version}"
    body = project.render(version, backend="command: python3 bin/backend --port {port}\nport: 8080")
    body = body.replace(
        f"  source: {project.artifacts.get(version)}\n",
        f"  image: {image}\n  digest: {digest or registry.digests[version]}\n",
    )
    if auth:
        body += "registry_auth:\n  username: ${REG_USER}\n  password: ${REG_PASSWORD}\n"
    project.write(body=body)


def image_ids(host: TestHost, runtime: str) -> str:
    return host.exec([runtime, "image", "ls", "-q"]).stdout


def asked(issued: list[reg.token_service.Issued], client: str) -> list[reg.token_service.Issued]:
    return [i for i in issued if i.client.startswith(client)]


def test_pulled_by_digest_with_credentials_through_tokens_renewed_when_refused(
    project: Project, registry: reg.Registry, runtime: str
) -> None:
    """A private image, pulled by digest: the agent's pin check and the runtime's pull each
    get a token for ci-deploy with pull on that repository alone. Each first gets one that
    is already expired (as one kept past its lifetime, or under skewed clocks, would be), and
    the registry refuses it: the agent asks its token service again; the runtime's pull fails
    `unauthorized` and the agent pulls again, which starts with a new token. The password is
    in no command line, file, journal, history or output."""
    host = project.host
    write(project, registry, "1.0.0")
    tokens(registry).expire_next(1, client=AGENT)
    mark, log = tokens(registry).mark(), len(registry.log_lines())
    with reg.Watch(host) as watch:
        first = project.once(env=ENV)
    assert first.rc == 0, first.stdout + first.stderr
    assert serves(host) == "1.0.0"
    pulls = [a["reason"] for a in first.json["actions"] if a["action"] == "load-image"]
    assert len(pulls) == 1 and "with registry credentials (${REG_USER}, ${REG_PASSWORD}, secret)" in pulls[0]
    issued = tokens(registry).since(mark)
    pull_only = [{"type": "repository", "name": PRIVATE, "actions": ["pull"]}]
    for client in (AGENT, CLIENTS[runtime]):  # the pin check, then the runtime's own pull
        mine = asked(issued, client)
        assert mine and all(i.user == reg.USER and i.access == pull_only for i in mine), (client, issued)
    assert [i.expired for i in asked(issued, AGENT)][:2] == [True, False], issued
    assert any("token not to be used after" in line for line in registry.log_lines()[log:])
    requests = registry.pulls_since(log)
    assert any(
        f"HEAD /v2/{PRIVATE}/manifests/{registry.digests['1.0.0']}" in r and '" 200 ' in r for r in requests
    )
    assert any("/blobs/" in r and '" 200 ' in r for r in requests), "no layer came through the token flow"
    listed = host.exec([runtime, "image", "ls", "--digests", "--format", "{{.Tag}} {{.Digest}}"]).stdout
    assert f"1.0.0 {registry.digests['1.0.0']}" in listed

    write(project, registry, "2.0.0")
    tokens(registry).expire_next(1, client=CLIENTS[runtime])
    mark = tokens(registry).mark()
    with reg.Watch(host) as bump_watch:
        bump = project.once(env=ENV)
    assert bump.rc == 0, bump.stdout + bump.stderr
    pulled = asked(tokens(registry).since(mark), CLIENTS[runtime])
    assert [i.expired for i in pulled][:1] == [True] and any(not i.expired for i in pulled), pulled
    assert serves(host) == "2.0.0"

    seen = watch.seen | bump_watch.seen
    assert any(runtime in line and "pull" in line for line in seen), "the pull was not seen"
    assert not any(reg.PASSWORD in line or reg.USER in line for line in seen), "credentials in ps"
    reg.nowhere(first.stdout + first.stderr + bump.stdout + bump.stderr, host)
    assert project.once("--dry-run", env=ENV).rc == 0


def test_a_public_image_is_pulled_with_no_credentials(
    project: Project, registry: reg.Registry, runtime: str
) -> None:
    host = project.host
    write(project, registry, "1.0.0", repo=PUBLIC, digest=registry.digests["public"], auth=False)
    mark = tokens(registry).mark()
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    assert serves(host) == "1.0.0"
    reason = next(a["reason"] for a in run.json["actions"] if a["action"] == "load-image")
    assert "credentials" not in reason, reason
    issued = tokens(registry).since(mark)
    public = [{"type": "repository", "name": PUBLIC, "actions": ["pull"]}]
    for client in (AGENT, CLIENTS[runtime]):
        mine = asked(issued, client)
        assert mine and all(i.user is None and i.access == public for i in mine), (client, issued)
    assert all(i.user is None for i in issued), "a token was asked for with credentials"


def test_refused_pulls_stop_the_run_and_change_nothing(
    project: Project, registry: reg.Registry, runtime: str
) -> None:
    """Wrong credentials, none for a private image, credentials whose tokens grant nothing on
    the repository named, an unknown digest, and a digest its tag no longer names: each stops
    the run before any layer is pulled, saying why, with the host byte for byte as it was. The
    registry checks a token's scope itself: one for choiros/backend opens no other repository."""
    host = project.host
    write(project, registry, "1.0.0")
    assert project.once(env=ENV).rc == 0
    before, images = host.tree_state(WATCHED_PATHS), image_ids(host, runtime)
    log = len(registry.log_lines())

    write(project, registry, "2.0.0")
    wrong = project.once(env=dict(ENV, REG_PASSWORD="not-the-password"))
    said = wrong.stdout + wrong.stderr
    assert wrong.rc == 1, said
    assert "refused the credentials in registry_auth" in said and "its token service" in said, said
    assert "not-the-password" not in said and reg.PASSWORD not in said

    write(project, registry, "2.0.0", auth=False)
    anonymous = project.once()
    said = anonymous.stdout + anonymous.stderr
    assert anonymous.rc == 1 and "refused an anonymous pull; give registry_auth" in said, said
    assert f"{PRIVATE} is not public" in said, said

    write(project, registry, "1.0.0", repo=OTHER, digest=registry.digests["other"])
    mark = tokens(registry).mark()
    other = project.once(env=ENV)
    said = other.stdout + other.stderr
    assert other.rc == 1, said
    assert "refused the credentials in registry_auth" in said and f"do not allow pulling {OTHER}" in said, (
        said
    )
    agent = asked(tokens(registry).since(mark), AGENT)
    assert agent and all(i.user == reg.USER and i.access == [] for i in agent), agent

    write(project, registry, "2.0.0", digest="sha256:" + "0" * 63 + "1")
    unknown = project.once(env=ENV)
    said = unknown.stdout + unknown.stderr
    assert unknown.rc == 1 and "has no image" in said and "0" * 63 + "1" in said, said

    first = registry.push(registry.archives["1.0.0"], PRIVATE, "moving")
    second = registry.push(registry.archives["2.0.0"], PRIVATE, "moving")
    write(project, registry, "2.0.0", digest=first, tag="moving")
    moved = project.once(env=ENV)
    said = moved.stdout + moved.stderr
    assert moved.rc == 1 and f"points to {second}" in said and f"not to the pinned {first}" in said, said

    from_host = [r for r in registry.pulls_since(log) if r.startswith(host.address + " ")]
    assert any("/manifests/" in r for r in from_host), "the host asked the registry nothing"
    assert not any("/blobs/" in r for r in from_host), "a layer was pulled"
    after = host.tree_state(WATCHED_PATHS)
    assert {p for p in set(before) | set(after) if before.get(p) != after.get(p)} <= {
        "/var/lib/reconciler/choiros/history.jsonl"
    }
    assert image_ids(host, runtime) == images and serves(host) == "1.0.0"

    token = ask_token(registry, f"repository:{PRIVATE}:pull", reg.USER, reg.PASSWORD)
    assert head(registry, PRIVATE, registry.digests["1.0.0"], token) == (200, "")
    assert head(registry, OTHER, registry.digests["other"], token) == (401, "insufficient_scope")


# --- talking to the registry directly ---------------------------------------------------------


def _context(registry: reg.Registry) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(registry.ca))


def ask_token(registry: reg.Registry, scope: str, user: str, password: str) -> str:
    query = urllib.parse.urlencode({"service": reg.token_service.SERVICE, "scope": scope})
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{registry.realm}?{query}", headers={"Authorization": f"Basic {basic}", "User-Agent": "tests"}
    )
    with urllib.request.urlopen(request, timeout=10, context=_context(registry)) as answer:
        return str(json.load(answer)["token"])


def head(registry: reg.Registry, repo: str, reference: str, token: str) -> tuple[int, str]:
    """(status, the challenge's error) of a manifest HEAD with a Bearer token."""
    url = f"https://{registry.address}/v2/{repo}/manifests/{reference}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    request = urllib.request.Request(
        url, method="HEAD", headers={"Authorization": f"Bearer {token}", "Accept": accept}
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=_context(registry)) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as exc:
        challenge = exc.headers.get("WWW-Authenticate", "")
        error = challenge.split('error="', 1)[1].split('"', 1)[0] if 'error="' in challenge else ""
        return exc.code, error
