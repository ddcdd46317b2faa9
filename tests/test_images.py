"""Releases as container images on a real host: Podman under systemd, all strategies."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from tests.deploying import REPO, Project, serves, unit_pid
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

IMAGE_BACKEND = "command: python3 bin/backend --port {port}\nport: 8080"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Image archives as CI builds them, from the test hosts' own Debian Python."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("images")
    runtime = ensure_rootfs()
    return {v: build_image(v, out, runtime_root=str(runtime))[0] for v in ("1.0.0", "2.0.0")}


def write(project: Project, images: dict[str, Path], version: str, **fields: str) -> None:
    body = project.render(version, backend=IMAGE_BACKEND, **fields)
    source = project.artifacts.get(version)
    body = body.replace(
        f"  source: {source}", f"  source: {images[version]}\n  image: localhost/choiros:{version}"
    )
    project.write(body=body)


def images_on(host: TestHost) -> set[str]:
    out = host.exec(["podman", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stdout
    return set(out.split())


def test_image_release_deploys_bumps_and_rolls_back_without_reloading(
    project: Project, images: dict[str, Path]
) -> None:
    host = project.host
    write(project, images, "1.0.0")
    first = project.once()
    assert first.rc == 0, first.stdout + first.stderr
    assert first.actions()[0] == ("load-image", "localhost/choiros:1.0.0")
    assert serves(host) == "1.0.0"
    assert "localhost/choiros:1.0.0" in images_on(host)
    assert project.once("--dry-run").rc == 0

    write(project, images, "2.0.0")
    bump = project.once()
    assert bump.rc == 0, bump.stdout + bump.stderr
    assert ("load-image", "localhost/choiros:2.0.0") in bump.actions()
    assert serves(host) == "2.0.0"

    write(project, images, "1.0.0")  # the revert
    back = project.once()
    assert back.rc == 0, back.stdout + back.stderr
    assert not any(a == "load-image" for a, _ in back.actions()), "the image was loaded again"
    assert serves(host) == "1.0.0"
    assert project.once("--dry-run").rc == 0

    unit = host.exec(
        ["systemctl", "show", "-p", "ActiveState,SubState", "--value", "choiros-backend"]
    ).stdout.split()
    assert unit == ["active", "running"]
    host.exec(["systemctl", "stop", "choiros-backend"])
    assert host.exec(["podman", "ps", "-a", "--format", "{{.Names}}"]).stdout.strip() == ""
    assert project.once().rc == 0 and serves(host) == "1.0.0"


class Load:
    """A steady trickle of requests through Caddy while something happens; counts failures."""

    def __init__(self, host: TestHost, rate: float = 50) -> None:
        self.host = host
        self.interval = 1 / rate
        self.sent = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.sent += 1
            try:
                answer = self.host.http("/api/version", timeout=5)
                if answer.status != 200:
                    self.failed.append(f"HTTP {answer.status}")
            except OSError as exc:
                self.failed.append(repr(exc))
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_blue_green_between_two_images_fails_no_request(project: Project, images: dict[str, Path]) -> None:
    host = project.host
    write(project, images, "1.0.0", strategy="blue-green")
    assert project.once().rc == 0
    blue = unit_pid(host, "choiros-backend-blue.service")
    with Load(host) as load:
        time.sleep(1)
        write(project, images, "2.0.0", strategy="blue-green")
        bump = project.once()
        time.sleep(1)
        write(project, images, "1.0.0", strategy="blue-green")
        back = project.once()
        time.sleep(1)
    assert bump.rc == 0 and back.rc == 0, bump.stdout + back.stdout
    print(f"\nblue-green with images under load: {load.sent} requests, {len(load.failed)} failed")
    assert load.sent > 100 and load.failed == []
    assert not any(a in ("restart", "start", "load-image") for a, _ in back.actions()), back.actions()
    assert unit_pid(host, "choiros-backend-blue.service") == blue, "rollback restarted blue"
    assert serves(host) == "1.0.0"
    assert project.once("--dry-run").rc == 0
