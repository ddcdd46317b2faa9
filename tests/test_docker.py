"""Releases as container images under Docker, on a real host that has Docker and no Podman:
the same `release.image` contract, all three strategies, pruning and rollback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.deploying import REPO, Load, Project, serves, unit_pid
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

TESTHOST_RELEASE = "docker"
BACKEND = "command: python3 bin/backend --port {port}\nport: 8080"
HEALTH = "timeout: 15\ninterval: 0.1\nstable: 0.3"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Root file system tars as CI builds them (docker import), and one docker-archive
    (docker load), from the bookworm hosts' own Python."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image, docker_archive  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("images")
    runtime = ensure_rootfs()
    built = {v: build_image(v, out, runtime_root=str(runtime))[0] for v in ("1.0.0", "3.0.0")}
    two = build_image("2.0.0", out, runtime_root=str(runtime))[0]
    built["2.0.0"] = docker_archive(two, "localhost/choiros:2.0.0")[0]
    built["2.1.0-bad"] = build_image("2.1.0-bad", out, runtime_root=str(runtime), fault="health-500")[0]
    return built


def write(project: Project, images: dict[str, Path], version: str, **fields: str) -> None:
    fields.setdefault("health", HEALTH)
    keep = fields.pop("keep", "5")
    body = project.render(version, backend=BACKEND, **fields)
    body = body.replace(
        f"  source: {project.artifacts.get(version)}",
        f"  source: {images[version]}\n  image: localhost/choiros:{version}\n  keep: {keep}",
    )
    project.write(body=body)


def docker_images(host: TestHost) -> set[str]:
    out = host.exec(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stdout
    return set(out.split())


def containers(host: TestHost) -> list[str]:
    return host.exec(["docker", "ps", "-a", "--format", "{{.Names}}"]).stdout.split()


def test_docker_deploys_bumps_reverts_and_systemd_keeps_the_lifecycle(
    project: Project, images: dict[str, Path]
) -> None:
    """No runtime named: the host has only Docker, so Docker runs it. systemctl stop, restart
    and the journal work on the unit as for Podman; a stop does not wait out a timeout."""
    host = project.host
    write(project, images, "1.0.0")
    first = project.once()
    assert first.rc == 0, first.stdout + first.stderr
    assert first.actions()[0] == ("load-image", "localhost/choiros:1.0.0")
    unit = host.read("/etc/systemd/system/choiros-backend.service") or b""
    assert b"/usr/bin/docker run" in unit and b"podman" not in unit
    assert serves(host) == "1.0.0"
    assert containers(host) == ["choiros-backend"]
    assert project.once("--dry-run").rc == 0

    write(project, images, "2.0.0")  # a docker-archive this time: docker load
    bump = project.once()
    assert bump.rc == 0, bump.stdout + bump.stderr
    assert serves(host) == "2.0.0"
    write(project, images, "1.0.0")  # the revert
    back = project.once()
    assert back.rc == 0, back.stdout + back.stderr
    assert not any(a == "load-image" for a, _ in back.actions()), "the image was loaded again"
    assert serves(host) == "1.0.0"
    assert {"localhost/choiros:1.0.0", "localhost/choiros:2.0.0"} <= docker_images(host)

    journal = host.exec(["journalctl", "-u", "choiros-backend", "--no-pager", "-n", "50"]).stdout
    assert "GET /api/version" in journal, "the container's output does not reach the journal"
    started = time.monotonic()
    host.exec(["systemctl", "stop", "choiros-backend"])
    stopped_in = time.monotonic() - started
    state = host.exec(["systemctl", "show", "-p", "ActiveState,Result", "--value", "choiros-backend"])
    assert sorted(state.stdout.split()) == ["inactive", "success"], state.stdout
    assert containers(host) == [], "the container outlived its unit"
    print(f"\ndocker: systemctl stop took {stopped_in:.2f} s")
    assert stopped_in < 5, "the app did not get the SIGTERM (no --init?): the stop waited out the timeout"

    host.exec(
        ["docker", "run", "-d", "--name", "choiros-backend", "localhost/choiros:1.0.0", "sleep"], check=False
    )
    again = project.once()  # a leftover container of the unit's name does not block the start
    assert again.rc == 0, again.stdout + again.stderr
    assert serves(host) == "1.0.0" and project.once("--dry-run").rc == 0


def test_docker_image_failing_its_gate_goes_back_to_the_previous_image(
    project: Project, images: dict[str, Path]
) -> None:
    host = project.host
    write(project, images, "1.0.0", strategy="restart", health="timeout: 10\ninterval: 0.1\nstable: 0.3")
    assert project.once().rc == 0
    write(project, images, "2.1.0-bad", strategy="restart", health="timeout: 6\ninterval: 0.1\nstable: 0.3")
    run = project.once()
    assert run.rc == 3 and run.json["rolled_back_to"] == "1.0.0", run.stdout + run.stderr
    unit = (host.read("/etc/systemd/system/choiros-backend.service") or b"").decode()
    assert "localhost/choiros:1.0.0" in unit and "2.1.0-bad" not in unit
    running = host.exec(["docker", "ps", "--format", "{{.Image}}"]).stdout.split()
    assert running == ["localhost/choiros:1.0.0"], running
    assert serves(host) == "1.0.0"


def test_docker_blue_green_fails_no_request_and_prunes_images(
    project: Project, images: dict[str, Path]
) -> None:
    host = project.host
    write(project, images, "1.0.0", strategy="blue-green", keep="2")
    assert project.once().rc == 0
    blue = unit_pid(host, "choiros-backend-blue.service")
    with Load(host) as load:
        time.sleep(1)
        write(project, images, "2.0.0", strategy="blue-green", keep="2")
        bump = project.once()
        time.sleep(1)
        write(project, images, "1.0.0", strategy="blue-green", keep="2")
        back = project.once()
        time.sleep(1)
    assert bump.rc == 0 and back.rc == 0, bump.stdout + back.stdout
    print(f"\nblue-green under Docker: {load.sent} requests, {len(load.failed)} failed")
    assert load.sent > 100 and load.failed == []
    assert not any(a in ("restart", "start", "load-image") for a, _ in back.actions()), back.actions()
    assert unit_pid(host, "choiros-backend-blue.service") == blue, "rollback restarted blue"

    write(project, images, "3.0.0", strategy="blue-green", keep="2")
    third = project.once()
    assert third.rc == 0, third.stdout + third.stderr
    assert serves(host) == "3.0.0"
    pruned = [t for a, t in third.actions() if a == "prune"]
    assert pruned == ["/opt/choiros/releases/2.0.0"], third.actions()
    assert "localhost/choiros:2.0.0" not in docker_images(host)
    assert {"localhost/choiros:1.0.0", "localhost/choiros:3.0.0"} <= docker_images(host)
