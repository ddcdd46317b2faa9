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


def image_with(out: Path, version: str, extra: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> Path:
    """An image like CI builds, with `extra` members (build_image.Member) added under /app."""
    import build_image  # type: ignore[import-not-found]

    app_members = build_image.app_members
    monkeypatch.setattr(build_image, "app_members", lambda v, fault: {**app_members(v, fault), **extra})
    return Path(build_image.build_image(version, out, runtime_root=str(ensure_rootfs()))[0])


def test_static_folder_out_of_an_image_is_refused_when_its_links_lead_out(
    project: Project, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman cp copies links as they are; Caddy would follow `passwd` to the host's file."""
    from build_image import Member  # type: ignore[import-not-found]

    host = project.host
    write(project, images, "1.0.0")
    assert project.once().rc == 0
    dist = "app/frontend/dist"
    extra = {
        f"{dist}/d": Member("symlink", 0o777, target="."),
        f"{dist}/passwd": Member("symlink", 0o777, target="d/" * 24 + "../" * 24 + "etc/passwd"),
    }
    images = dict(images, **{"6.6.6": image_with(tmp_path, "6.6.6", extra, monkeypatch)})
    project.artifacts["6.6.6"] = images["6.6.6"]  # so that write() finds the source line
    write(project, images, "6.6.6")
    run = project.reconcile("--once")
    assert run.rc == 1, run.stdout
    assert (
        "frontend/dist/passwd" in run.stdout + run.stderr and "outside the release" in run.stdout + run.stderr
    )
    on_host = host.exec(["ls", "-A", "/opt/choiros/releases"]).stdout.split()
    assert on_host == ["1.0.0"], "a release or its staging was left"
    assert "root:x:0:0" not in host.http("/passwd", timeout=5).text
    assert serves(host) == "1.0.0"


def test_static_folder_out_of_an_image_gets_release_modes(
    project: Project, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from build_image import Member  # type: ignore[import-not-found]

    host = project.host
    extra = {
        "app/frontend/dist": Member("dir", 0o777),
        "app/frontend/dist/open": Member("dir", 0o2777),
        "app/frontend/dist/open/tool": Member("file", 0o4777, data=b"#!/bin/sh\n"),
        "app/frontend/dist/open/page.html": Member("file", 0o666, data=b"<p>hi</p>\n"),
    }
    images = dict(images, **{"7.0.0": image_with(tmp_path, "7.0.0", extra, monkeypatch)})
    project.artifacts["7.0.0"] = images["7.0.0"]  # so that write() finds the source line
    write(project, images, "7.0.0")
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    dist = "/opt/choiros/releases/7.0.0/frontend/dist"
    out = host.exec(
        ["stat", "-c", "%a %n", dist, f"{dist}/open", f"{dist}/open/tool", f"{dist}/open/page.html"]
    )
    modes = dict(reversed(line.split(" ", 1)) for line in out.stdout.splitlines())
    assert modes == {
        dist: "755",
        f"{dist}/open": "755",
        f"{dist}/open/tool": "755",
        f"{dist}/open/page.html": "644",
    }
    assert host.http("/open/page.html", timeout=5).text == "<p>hi</p>\n"
