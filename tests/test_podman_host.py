"""The example app as a container image, run by Podman in a real test host (no mocks).

The image is built as CI would (examples/app/build_image.py) from the test host's own
rootfs, so its Python is bookworm's 3.11 and its libraries match; it reaches the host
through host.share and is loaded with `podman import`, since no registry is reachable.
Traffic stays on the host's loopback.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.testhost import TestHost, boot, ensure_rootfs, leftovers

pytestmark = pytest.mark.testhost

REPO = Path(__file__).resolve().parents[1]
VERSION = "1.0.0"
IMAGE = f"localhost/choiros:{VERSION}"
UNIT = "choiros-container.service"
CONTAINER = "choiros-backend"
PORT = 8080

# The unit shape the reconciler renders: Podman tells systemd READY (conmon) and the
# container id goes to a file so stop/cleanup find it. ExecStartPre removes that file:
# Podman 4.3's `rm --cidfile` leaves it behind, and the next `run --cidfile` refuses
# ("container id file exists") -- a restart would fail without it.
UNIT_TEXT = f"""\
[Unit]
Description=choiros {VERSION} (container)

[Service]
Type=notify
NotifyAccess=all
ExecStartPre=/bin/rm -f %t/%n.ctr-id
ExecStartPre=/bin/mkdir -p /var/lib/choiros
ExecStart=/usr/bin/podman run --cidfile=%t/%n.ctr-id --rm --init --sdnotify=conmon -d --replace \\
    --name {CONTAINER} --network host \\
    -e DATABASE_PATH=/var/lib/choiros/choiros.db -v /var/lib/choiros:/var/lib/choiros \\
    {IMAGE} /usr/bin/python3 bin/backend --port {PORT}
ExecStop=/usr/bin/podman stop --ignore -t 5 --cidfile=%t/%n.ctr-id
ExecStopPost=/usr/bin/podman rm -f --ignore --cidfile=%t/%n.ctr-id
SuccessExitStatus=143
"""

# Polls a URL from inside the host until it answers 200 and prints the body; the
# host's Python, so one exec replaces a poll loop of execs from here.
WAIT_HTTP = """\
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            sys.stdout.write(response.read().decode())
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.02)
"""


def load_build_image() -> ModuleType:
    app_dir = str(REPO / "examples" / "app")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    import build_image  # type: ignore[import-not-found]

    return build_image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image tar, with the Python of the rootfs the hosts boot from."""
    path, _sha = load_build_image().build_image(VERSION, tmp_path_factory.mktemp("image"), ensure_rootfs())
    return path


def podman_import(host: TestHost, image: Path) -> None:
    shared = host.share / image.name
    shutil.copyfile(image, shared)
    changes = [arg for change in load_build_image().IMPORT_CHANGES for arg in ("--change", change)]
    host.exec(["podman", "import", "--quiet", *changes, f"/share/{image.name}", IMAGE])
    shared.unlink()


@pytest.fixture(scope="module")
def host(image: Path) -> Iterator[TestHost]:
    with boot() as h:
        podman_import(h, image)
        h.write(f"/etc/systemd/system/{UNIT}", UNIT_TEXT.encode())
        h.exec(["systemctl", "daemon-reload"])
        yield h


@pytest.fixture
def unit(host: TestHost) -> Iterator[str]:
    """The unit started (and stopped again after the test, whatever it did)."""
    host.exec(["systemctl", "start", UNIT])
    yield UNIT
    host.exec(["systemctl", "stop", UNIT], check=False)
    host.exec(["systemctl", "reset-failed", UNIT], check=False)


def wait_http(host: TestHost, port: int, path: str = "/health", timeout: float = 10) -> str:
    url = f"http://127.0.0.1:{port}{path}"
    return host.exec(["/usr/bin/python3", "-c", WAIT_HTTP, url, str(timeout)], timeout=timeout + 5).stdout


def unit_state(host: TestHost) -> dict[str, str]:
    out = host.exec(["systemctl", "show", "-p", "ActiveState,Result,SubState", UNIT]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def container_names(host: TestHost) -> list[str]:
    return host.exec(["podman", "ps", "--all", "--format", "{{.Names}}"]).stdout.split()


def container_id(host: TestHost) -> str:
    return host.exec(["podman", "inspect", "--format", "{{.Id}}", CONTAINER]).stdout.strip()


# ------------------------------------------------------------------ the image


def test_image_build_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_image = load_build_image().build_image
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # CI may set it; mtimes are checked below
    runtime = ensure_rootfs()
    first, sha_a = build_image(VERSION, tmp_path / "a", runtime)
    second, sha_b = build_image(VERSION, tmp_path / "b", runtime)
    assert sha_a == sha_b
    assert first.read_bytes() == second.read_bytes()
    assert first.name == f"choiros-{VERSION}.image.tar"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build_image(VERSION, tmp_path / "c", runtime)[1] != sha_a

    with tarfile.open(first) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["usr/bin/python3"].linkname == "python3.11"
    assert members["tmp"].mode == 0o1777
    assert members["app/bin/backend"].mode == 0o755
    assert {m.uid for m in members.values()} == {0}
    assert {m.mtime for m in members.values()} == {0}
    for left_out in ("/__pycache__/", "/test/", "/idlelib/", "/tkinter/", "/ensurepip/"):
        assert not any(left_out in f"/{name}/" for name in members), left_out
    assert first.stat().st_size < 60_000_000


# ------------------------------------------------------------------ Podman in the host


def test_podman_storage_is_the_per_boot_bind(host: TestHost) -> None:
    info = host.exec(["podman", "info", "--format", "{{.Store.GraphDriverName}} {{.Store.GraphRoot}}"])
    assert info.stdout.split() == ["overlay", "/var/lib/containers/storage"]
    # The imported image lives in this boot's folder on this machine, not in the rootfs.
    assert (host.container_storage / "storage" / "overlay-images").is_dir()
    assert not (host.rootfs / "var/lib/containers/storage").exists()
    inspect = host.exec(["podman", "image", "inspect", "--format", "{{.Config.WorkingDir}}", IMAGE])
    assert inspect.stdout.strip() == "/app"


def test_unit_serves_health_on_the_host_network(host: TestHost) -> None:
    started = time.monotonic()
    host.exec(["systemctl", "start", UNIT])
    try:
        body = wait_http(host, PORT)
        elapsed = time.monotonic() - started
        assert f'"version": "{VERSION}"' in body
        print(f"start to first 200: {elapsed:.2f} s")
        assert unit_state(host)["ActiveState"] == "active"
        # --network host: the backend's 127.0.0.1 is the host's own loopback.
        assert CONTAINER in container_names(host)
        assert host.read("/var/lib/choiros/choiros.db") is not None
    finally:
        host.exec(["systemctl", "stop", UNIT], check=False)


def test_restart_replaces_the_container(host: TestHost, unit: str) -> None:
    wait_http(host, PORT)
    before = container_id(host)
    host.exec(["systemctl", "restart", unit])
    assert f'"version": "{VERSION}"' in wait_http(host, PORT)
    assert container_id(host) != before
    assert unit_state(host)["ActiveState"] == "active"


def test_stop_is_clean_and_removes_the_container(host: TestHost, unit: str) -> None:
    wait_http(host, PORT)
    host.exec(["systemctl", "stop", unit])
    state = unit_state(host)
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    assert host.exec(["systemctl", "is-failed", unit], check=False).rc != 0
    assert CONTAINER not in container_names(host)
    closed = host.exec(["curl", "-sS", "-m", "2", f"http://127.0.0.1:{PORT}/health"], check=False)
    assert closed.rc != 0


def test_published_port_variant(host: TestHost) -> None:
    """-p instead of --network host: the backend must listen on the container's interface."""
    run = [
        "podman", "run", "-d", "--rm", "--init", "--name", "choiros-published",
        "-p", "127.0.0.1:8081:8080", "-e", "DATABASE_PATH=/tmp/choiros.db",
        IMAGE, "/usr/bin/python3", "bin/backend", "--port", "8080", "--host", "0.0.0.0",
    ]  # fmt: skip
    host.exec(run)
    try:
        assert f'"version": "{VERSION}"' in wait_http(host, 8081)
    finally:
        host.exec(["podman", "stop", "--ignore", "-t", "5", "choiros-published"])
    assert "choiros-published" not in container_names(host)


def test_each_boot_has_its_own_storage_and_teardown_removes_it(image: Path) -> None:
    with boot() as other:
        assert other.exec(["podman", "images", "--quiet"]).stdout == ""  # nothing leaked in
        podman_import(other, image)
        other.exec(
            ["podman", "run", "-d", "--init", "--name", "left-running", "--network", "host",
             "-e", "DATABASE_PATH=/tmp/choiros.db", IMAGE, "/usr/bin/python3", "bin/backend", "--port", "8090"]
        )  # fmt: skip
        assert f'"version": "{VERSION}"' in wait_http(other, 8090)
        storage, name = other.container_storage, other.name
    # Stopped with a container still running: nothing of the host is left.
    assert not storage.exists()
    assert leftovers(name) == []
