"""Releases as container images on a real host: Podman under systemd, all strategies."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.deploying import REPO, Load, Project, serves, unit_pid
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
    built = {v: build_image(v, out, runtime_root=str(runtime))[0] for v in ("1.0.0", "2.0.0")}
    built["2.1.0-bad"] = build_image("2.1.0-bad", out, runtime_root=str(runtime), fault="health-500")[0]
    return built


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


def test_an_image_failing_its_gate_rolls_back_to_the_previous_image(
    project: Project, images: dict[str, Path]
) -> None:
    """The whole good state comes back, image included: not the failed image under the good
    version's name."""
    host = project.host
    write(project, images, "1.0.0", health="timeout: 3\ninterval: 0.1\nstable: 0.3")
    assert project.once().rc == 0
    write(project, images, "2.1.0-bad", health="timeout: 3\ninterval: 0.1\nstable: 0.3")
    run = project.once()
    assert run.rc == 3 and run.json["rolled_back_to"] == "1.0.0", run.stdout
    unit = host.exec(["cat", "/etc/systemd/system/choiros-backend.service"]).stdout
    assert "localhost/choiros:1.0.0" in unit and "2.1.0-bad" not in unit
    running = host.exec(["podman", "ps", "--format", "{{.Image}}"]).stdout.split()
    assert running == ["localhost/choiros:1.0.0"], running
    assert serves(host) == "1.0.0"


def test_a_container_gets_the_env_values_verbatim_and_keeps_its_database(
    project: Project, images: dict[str, Path]
) -> None:
    """systemd reads the EnvironmentFile (its quoting), podman hands each variable on as it is:
    inside the container every value equals the desired one, and DATABASE_PATH is the real
    one, so the database outlives the container."""
    host = project.host
    tricky = 'a "quoted" value with $HOME, `ticks`, spaces and a back\\slash'
    env = f"DATABASE_PATH: /var/lib/choiros/choiros.db\nCORS_ALLOW_ORIGINS: https://choir.example\nTRICKY: '{tricky}'"
    write(project, images, "1.0.0", env=env)
    assert project.once().rc == 0, "deploy"
    inside = host.exec(
        [
            "podman",
            "exec",
            "choiros-backend",
            "python3",
            "-c",
            "import json,os;print(json.dumps(dict(os.environ)))",
        ]
    )
    seen = json.loads(inside.stdout)
    assert seen["TRICKY"] == tricky and seen["DATABASE_PATH"] == "/var/lib/choiros/choiros.db"
    assert seen["CORS_ALLOW_ORIGINS"] == "https://choir.example"
    post = host.exec(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"text": "kept"}',
            "http://127.0.0.1/api/notes",
        ]
    ).stdout
    assert post == "201"
    host.exec(["systemctl", "restart", "choiros-backend"])
    host.wait_http("/api/notes", timeout=20)
    notes = json.loads(host.http("/api/notes").text)
    assert [n["text"] for n in notes] == ["kept"], "the database did not survive a restart of the container"


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
    monkeypatch.setattr(
        build_image, "app_members", lambda v, fault, *part: {**app_members(v, fault, *part), **extra}
    )
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
