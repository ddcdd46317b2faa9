"""Images pulled from a real registry that needs credentials, pinned by digest: Debian's
docker-registry with htpasswd auth and TLS from a test CA (tests/registry.py), reached by a
Docker host over its own veth. Credentials come from the environment of whoever runs
`reconcile` and must show up nowhere: not in `ps` on the host during the pull, not in a unit,
a file, the history, a log or --json."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests import registry as reg
from tests.deploying import REPO, WATCHED_PATHS, Project
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

TESTHOST_RELEASE = "docker"
REPO_NAME = "choiros/backend"
ENV = {"REG_USER": reg.USER, "REG_PASSWORD": reg.PASSWORD}


@pytest.fixture(scope="module")
def registry(testhost: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[reg.Registry]:
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image, docker_archive  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("pushed")
    with reg.serve(testhost, tmp_path_factory.mktemp("registry")) as registry:
        for version in ("1.0.0", "2.0.0"):
            tar = build_image(version, out, runtime_root=str(ensure_rootfs()))[0]
            archive = docker_archive(tar, f"{REPO_NAME}:{version}")[0]
            registry.digests[version] = registry.push(archive, REPO_NAME, version)
            registry.archives[version] = archive
        yield registry


def write(
    project: Project, registry: reg.Registry, version: str, digest: str | None = None, tag: str = ""
) -> None:
    digest = digest or registry.digests[version]
    image = f"{registry.address}/{REPO_NAME}:{tag or version}"
    body = project.render(version, backend="command: python3 bin/backend --port {port}\nport: 8080")
    body = body.replace(
        f"  source: {project.artifacts.get(version)}\n",
        f"  image: {image}\n  digest: {digest}\n",
    )
    body += "registry_auth:\n  username: ${REG_USER}\n  password: ${REG_PASSWORD}\n"
    project.write(body=body)


def test_pull_by_digest_with_credentials_then_a_revert_pulls_nothing(
    project: Project, registry: reg.Registry
) -> None:
    host = project.host
    write(project, registry, "1.0.0")
    with reg.Watch(host) as watch:
        first = project.once(env=ENV)
    assert first.rc == 0, first.stdout + first.stderr
    pulls = [(a["action"], a["reason"]) for a in first.json["actions"] if a["action"] == "load-image"]
    assert (
        len(pulls) == 1 and "with registry credentials (${REG_USER}, ${REG_PASSWORD}, secret)" in pulls[0][1]
    )
    assert host.http("/api/version").text.count("1.0.0") == 1
    assert any("docker" in line and "pull" in line for line in watch.seen), "the pull was not seen"
    assert not any(reg.PASSWORD in line or reg.USER in line for line in watch.seen), "credentials in ps"
    history = host.exec(["cat", "/var/lib/reconciler/choiros/history.jsonl"]).stdout
    assert reg.PASSWORD not in history and reg.USER not in history
    reg.nowhere(first.stdout + first.stderr, host)
    digests = host.exec(["docker", "image", "ls", "--digests", "--format", "{{.Tag}} {{.Digest}}"]).stdout
    assert f"1.0.0 {registry.digests['1.0.0']}" in digests

    write(project, registry, "2.0.0")
    bump = project.once(env=ENV)
    assert bump.rc == 0, bump.stdout + bump.stderr
    assert '"2.0.0"' in host.http("/api/version").text

    write(project, registry, "1.0.0")  # the revert
    mark = len(registry.log_lines())
    back = project.once(env=ENV)
    assert back.rc == 0, back.stdout + back.stderr
    assert not any(a == "load-image" for a, _ in back.actions())
    assert registry.pulls_since(mark) == [], "the revert asked the registry for something"
    assert '"1.0.0"' in host.http("/api/version").text
    reg.nowhere(back.stdout + back.stderr, host)


def test_wrong_credentials_and_an_unknown_digest_change_nothing(
    project: Project, registry: reg.Registry
) -> None:
    host = project.host
    write(project, registry, "1.0.0")
    assert project.once(env=ENV).rc == 0
    before = host.tree_state(WATCHED_PATHS)
    images = host.exec(["docker", "image", "ls", "-q"]).stdout

    write(project, registry, "2.0.0")
    wrong = project.once(env=dict(ENV, REG_PASSWORD="not-the-password"))
    assert wrong.rc == 1, wrong.stdout + wrong.stderr
    assert "refused the credentials in registry_auth" in wrong.stdout + wrong.stderr
    assert "not-the-password" not in wrong.stdout + wrong.stderr

    write(project, registry, "2.0.0", digest="sha256:" + "0" * 63 + "1")
    unknown = project.once(env=ENV)
    assert unknown.rc == 1, unknown.stdout + unknown.stderr
    assert (
        "has no image" in unknown.stdout + unknown.stderr
        and "0" * 63 + "1" in unknown.stdout + unknown.stderr
    )

    after = host.tree_state(WATCHED_PATHS)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed <= {"/var/lib/reconciler/choiros/history.jsonl"}, changed
    assert host.exec(["docker", "image", "ls", "-q"]).stdout == images
    assert '"1.0.0"' in host.http("/api/version").text


def test_a_digest_its_tag_does_not_point_to_is_refused(project: Project, registry: reg.Registry) -> None:
    """The tag `moving` first names 1.0.0's image, then is pushed again with 2.0.0's: a desired
    state still pinning the first digest under that tag is refused before any pull."""
    host = project.host
    first = registry.push(registry.archives["1.0.0"], REPO_NAME, "moving")
    second = registry.push(registry.archives["2.0.0"], REPO_NAME, "moving")
    assert first != second
    write(project, registry, "1.0.0", digest=first, tag="moving")
    mark = len(registry.log_lines())
    run = project.once(env=ENV)
    assert run.rc == 1, run.stdout + run.stderr
    said = run.stdout + run.stderr
    assert f"points to {second}" in said and f"not to the pinned {first}" in said, said
    assert not any("/blobs/" in line for line in registry.pulls_since(mark)), "layers were pulled"
    assert host.exec(["docker", "image", "ls", "-q"]).stdout == ""
    assert host.exec(["ls", "/opt"]).stdout.strip() == ""
