"""Separate backend and frontend images, as CI builds and pushes them, pulled by digest with
credentials from a real registry by Podman: the static frontend copied out of its own image
and served by Caddy, or run as its own dev-server container. A bump of one image restarts
only what uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import registry as reg
from tests import workflows
from tests.deploying import REPO, Project, unit_pid
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

ENV = {"REG_USER": reg.USER, "REG_PASSWORD": reg.PASSWORD}
BACKEND = "choiros/backend"
FRONTEND = "choiros/frontend"


@pytest.fixture(scope="module")
def registry(testhost: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[reg.Registry]:
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image, docker_archive  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("pushed")
    with reg.serve(testhost, tmp_path_factory.mktemp("registry")) as registry:
        for version in ("1.0.0", "2.0.0"):
            for repo, part in ((BACKEND, "backend"), (FRONTEND, "frontend")):
                tar = build_image(version, out, runtime_root=str(ensure_rootfs()), part=part)[0]
                archive = docker_archive(tar, f"{repo}:{version}")[0]
                registry.digests[f"{part}:{version}"] = registry.push(archive, repo, version)
        yield registry


def write(project: Project, registry: reg.Registry, backend: str, front: str, **fields: str) -> None:
    fields.setdefault("backend", "command: python3 bin/backend --port {port}\nport: 8080")
    frontend_lines = (
        f"image: {registry.address}/{FRONTEND}:{front}\ndigest: {registry.digests['frontend:' + front]}"
    )
    fields["frontend"] = fields.get("frontend", "mode: static") + "\n" + frontend_lines
    body = project.render(backend, **fields)
    body = body.replace(
        f"  source: {project.artifacts.get(backend)}\n",
        f"  image: {registry.address}/{BACKEND}:{backend}\n  digest: {registry.digests['backend:' + backend]}\n",
    )
    body += "registry_auth:\n  username: ${REG_USER}\n  password: ${REG_PASSWORD}\n"
    project.write(body=body)


def page_and_api(host: TestHost) -> tuple[str, str]:
    page = host.http("/", timeout=5).text
    version = "2.0.0" if "choiros 2.0.0" in page else "1.0.0" if "choiros 1.0.0" in page else "?"
    api = host.http("/api/version", timeout=5).text
    return version, "2.0.0" if "2.0.0" in api else "1.0.0" if "1.0.0" in api else "?"


def test_static_frontend_from_its_own_image_and_each_bump_restarts_only_what_uses_it(
    project: Project, registry: reg.Registry
) -> None:
    host = project.host
    write(project, registry, "1.0.0", "1.0.0")
    first = project.once(env=ENV)
    assert first.rc == 0, first.stdout + first.stderr
    assert page_and_api(host) == ("1.0.0", "1.0.0")
    folders = host.exec(["ls", "/opt/choiros/frontends"]).stdout.split()
    assert len(folders) == 1 and folders[0].startswith("10.231."), folders
    assert host.exec(["ls", "-A", "/opt/choiros/releases/1.0.0"]).stdout == "", (
        "the backend image's release holds a frontend"
    )
    assert reg.PASSWORD not in first.stdout + first.stderr
    backend = unit_pid(host, "choiros-backend.service")

    write(project, registry, "1.0.0", "2.0.0")  # the frontend alone
    fe_bump = project.once(env=ENV)
    assert fe_bump.rc == 0, fe_bump.stdout + fe_bump.stderr
    assert [a for a, _ in fe_bump.actions()] == ["frontend-image", "validate+write", "reload", "record-good"]
    assert unit_pid(host, "choiros-backend.service") == backend, "a frontend bump restarted the backend"
    assert page_and_api(host) == ("2.0.0", "1.0.0")

    write(project, registry, "2.0.0", "2.0.0")  # the backend alone
    be_bump = project.once(env=ENV)
    assert be_bump.rc == 0, be_bump.stdout + be_bump.stderr
    kinds = [a for a, _ in be_bump.actions()]
    assert "restart" in kinds and "frontend-image" not in kinds and "validate+write" not in kinds, kinds
    assert page_and_api(host) == ("2.0.0", "2.0.0")

    write(project, registry, "2.0.0", "1.0.0")  # the frontend's revert: its folder is still there
    mark = len(registry.log_lines())
    back = project.once(env=ENV)
    assert back.rc == 0, back.stdout + back.stderr
    assert [a for a, _ in back.actions()] == ["validate+write", "reload", "record-good"], back.actions()
    assert registry.pulls_since(mark) == []
    assert page_and_api(host) == ("1.0.0", "2.0.0")
    assert project.once("--dry-run", env=ENV).rc == 0


def test_dev_server_runs_from_its_own_image_and_a_backend_bump_leaves_it_running(
    project: Project, registry: reg.Registry
) -> None:
    host = project.host
    dev = "mode: dev-server\ndev_command: python3 bin/frontend-dev --port 3000\ndev_port: 3000"
    write(project, registry, "1.0.0", "1.0.0", frontend=dev, strategy="restart")
    first = project.once(env=ENV)
    assert first.rc == 0, first.stdout + first.stderr
    unit = (host.read("/etc/systemd/system/choiros-frontend.service") or b"").decode()
    assert f"{registry.address}/{FRONTEND}:1.0.0" in unit and "podman run" in unit
    page = host.http("/", timeout=5).text
    assert "dev server" in page and "choiros 1.0.0" in page
    frontend = unit_pid(host, "choiros-frontend.service")

    write(project, registry, "2.0.0", "1.0.0", frontend=dev, strategy="restart")
    bump = project.once(env=ENV)
    assert bump.rc == 0, bump.stdout + bump.stderr
    assert ("restart", "choiros-backend.service") in bump.actions()
    assert unit_pid(host, "choiros-frontend.service") == frontend, "a backend bump restarted the dev server"
    assert '"2.0.0"' in host.http("/api/version", timeout=5).text


def test_ci_job_builds_pushes_both_images_and_deploys_them_by_digest(
    project: Project, registry: reg.Registry, tmp_path: Path
) -> None:
    """examples/ci: push-images.sh builds both images, pushes them and pins their digests in
    the desired-state file; the deploy step of github-actions-containers.yml, run from the
    workflow file with the env it sets, then deploys that file, pulling by digest. (The images
    step itself pushes to GHCR, which this machine cannot reach: its script is run here with
    the test registry instead.)"""
    host = project.host
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "ci", repo / "examples" / "ci")
    state = repo / "examples" / "ci" / "desired-state.containers.yaml"
    state.write_text(state.read_text().replace("ssh://root@203.0.113.10", host.ssh_target))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        REGISTRY=f"{registry.address}/ci",
        DESIRED_STATE=str(state),
        IMAGE_RUNTIME_ROOT=str(ensure_rootfs()),
        REGISTRY_CERT_DIR=str(registry.folder / "certs"),
        REGISTRY_USER=reg.USER,
        REGISTRY_PASSWORD=reg.PASSWORD,
    )
    push = subprocess.run(
        [str(REPO / "examples" / "ci" / "push-images.sh"), "3.1.4"],
        env=env,
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert push.returncode == 0, push.stdout + push.stderr
    pinned = state.read_text()
    assert 'version: "3.1.4"' in pinned and "0" * 64 not in pinned
    assert f"image: {registry.address}/ci/choiros-frontend:3.1.4" in pinned
    contexts = {
        "secrets": {"DEPLOY_SSH_KEY": host.key_path.read_text(), "REGISTRY_PULL_TOKEN": reg.PASSWORD},
        "vars": {"DEPLOY_KNOWN_HOSTS": host.known_hosts.read_text(), "REGISTRY_PULL_USER": reg.USER},
        "github": {"repository_owner": "acme"},
    }
    step = workflows.step("github-actions-containers.yml", "deploy", "Plan and deploy the pinned images")
    deploy = workflows.run(step, contexts, workspace=repo, runner_temp=tmp_path / "runner")
    assert deploy.rc == 0, deploy.stdout + deploy.stderr
    assert "== deploy" in deploy.stdout and reg.PASSWORD not in deploy.stdout + deploy.stderr
    page = host.http("/", timeout=5).text
    assert "choiros 3.1.4" in page and '"3.1.4"' in host.http("/api/version", timeout=5).text


def test_a_frontend_image_whose_links_lead_out_is_refused(
    project: Project, registry: reg.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frontend's own image gets the release checks too: a chain of links that leads to
    the host's /etc/passwd is refused before the folder is renamed into place."""
    import build_image  # type: ignore[import-not-found]
    from build_image import Member

    host = project.host
    write(project, registry, "1.0.0", "1.0.0")
    assert project.once(env=ENV).rc == 0
    dist = "app/frontend/dist"
    extra = {
        f"{dist}/d": Member("symlink", 0o777, target="."),
        f"{dist}/passwd": Member("symlink", 0o777, target="d/" * 24 + "../" * 24 + "etc/passwd"),
    }
    members = build_image.app_members
    monkeypatch.setattr(build_image, "app_members", lambda v, f, *part: {**members(v, f, *part), **extra})
    tar = build_image.build_image("6.6.6", tmp_path, runtime_root=str(ensure_rootfs()), part="frontend")[0]
    archive = build_image.docker_archive(tar, f"{FRONTEND}:6.6.6")[0]
    registry.digests["frontend:6.6.6"] = registry.push(archive, FRONTEND, "6.6.6")
    before = host.exec(["ls", "-A", "/opt/choiros/frontends"]).stdout
    write(project, registry, "1.0.0", "6.6.6")
    run = project.once(env=ENV)
    said = run.stdout + run.stderr
    assert run.rc == 1 and "frontend/dist/passwd" in said and "outside the release" in said, said
    assert host.exec(["ls", "-A", "/opt/choiros/frontends"]).stdout == before, (
        "a folder or its staging was left"
    )
    assert "root:x:0:0" not in host.http("/passwd", timeout=5).text
    assert page_and_api(host) == ("1.0.0", "1.0.0")
