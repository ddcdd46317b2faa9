"""backend.user with release.image on real hosts, Podman and Docker both: the container runs
as the user's uid and gid (seen from the host in /proc/<pid>/status), systemd makes
/var/lib/<app> theirs as it does for a release folder (handing over a database a root
container wrote), the environment file is theirs to read, a release task in a container runs
as the same user, and all of it survives a restart. A user the host lacks stops the run
before anything changes.

Each case runs once on a Podman host and once on a Docker host; the images are built once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import both_runtimes
from tests.deploying import REPO, WATCHED_PATHS, Project, serves, unit_pid
from tests.testhost import TestHost, ensure_rootfs

pytestmark = pytest.mark.testhost

USER = "choiros-svc"
UNIT = "choiros-backend.service"
# A release task that leaves, in the state folder, the uid:gid it ran as.
TASK = (
    "python3 -c \"__import__('pathlib').Path('/var/lib/choiros/task-' + __import__('os').environ"
    "['RECONCILER_RELEASE']).write_text(str(__import__('os').getuid()) + ':' + str(__import__('os').getgid()))\""
)


# Every test runs on a Podman host, then on a Docker host.
testhost, runtime = both_runtimes.testhost, both_runtimes.runtime


@pytest.fixture(scope="module")
def service_user(testhost: TestHost) -> tuple[str, str]:
    """A system user as an operator would create it (the reconciler creates no accounts):
    its uid and gid, as text."""
    shell = ["--no-create-home", "--shell", "/usr/sbin/nologin"]
    testhost.exec(["useradd", "--system", "--user-group", *shell, USER])
    uid = testhost.exec(["id", "-u", USER]).stdout.strip()
    gid = testhost.exec(["id", "-g", USER]).stdout.strip()
    return uid, gid


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Root file system tars as CI builds them (imported by either runtime), once for both hosts."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("images")
    return {v: build_image(v, out, runtime_root=str(ensure_rootfs()))[0] for v in ("1.0.0", "2.0.0")}


def write(
    project: Project, images: dict[str, Path], version: str, user: str | None = None, shared: str = "uploads"
) -> None:
    backend = "command: python3 bin/backend --port {port}\nport: 8080" + (f"\nuser: {user}" if user else "")
    body = project.render(version, backend=backend, shared=f"[{shared}]")
    body = body.replace(
        f"  source: {project.artifacts.get(version)}\n",
        f"  source: {images[version]}\n  image: localhost/choiros:{version}\n"
        f"  tasks:\n    before_switch:\n      - >-\n        {TASK}\n",
    )
    project.write(body=body)


def container_processes(host: TestHost, runtime: str) -> list[int]:
    """The container's processes as the host sees them: its init and the app under it."""
    init = int(host.exec([runtime, "inspect", "--format", "{{.State.Pid}}", "choiros-backend"]).stdout)
    children = host.exec(["cat", f"/proc/{init}/task/{init}/children"]).stdout.split()
    return [init, *(int(c) for c in children)]


def ids_of(host: TestHost, pid: int) -> tuple[list[str], list[str]]:
    """(Uid, Gid) of a process: real, effective, saved and file system ids."""
    status = host.exec(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["Uid"].split(), fields["Gid"].split()


def owners(host: TestHost, *paths: str) -> list[str]:
    return host.exec(["stat", "-c", "%u:%g %a", *paths]).stdout.splitlines()


def notes(host: TestHost) -> list[str]:
    return [n["text"] for n in json.loads(host.http("/api/notes").text)]


def add_note(host: TestHost, text: str) -> None:
    body = json.dumps({"text": text})
    curl = ["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json", "-d", body]
    host.exec([*curl, "http://127.0.0.1/api/notes"])


def test_a_container_runs_as_backend_user_and_a_user_the_host_lacks_is_refused(
    project: Project, images: dict[str, Path], runtime: str, service_user: tuple[str, str]
) -> None:
    """First as root (the only way before), with a note in the database; then a backend.user
    the host lacks, refused with the host unchanged; then one it has: the migration task and
    the container run as the user, the root-written database is handed over by systemd as for
    a release folder, and a restart keeps all of it."""
    host = project.host
    uid, gid = service_user
    write(project, images, "1.0.0")
    first = project.once()
    assert first.rc == 0, first.stdout + first.stderr
    assert serves(host) == "1.0.0"
    assert host.read("/var/lib/choiros/task-1.0.0") == b"0:0", "the task on a first deploy, as root"
    assert owners(host, "/opt/choiros/shared/uploads") == ["0:0 755"], "the folder the container binds"
    add_note(host, "written as root")
    assert owners(host, "/var/lib/choiros/choiros.db") == ["0:0 644"]

    before, pid = host.tree_state(WATCHED_PATHS), unit_pid(host, UNIT)
    loaded = host.exec([runtime, "image", "ls", "-q"]).stdout
    write(project, images, "2.0.0", user="ghost")
    ghost = project.reconcile("--once")
    assert ghost.rc != 0
    assert "backend.user 'ghost' does not exist on the host" in ghost.stderr, ghost.stderr
    assert "useradd --system --user-group" in ghost.stderr
    assert host.tree_state(WATCHED_PATHS) == before
    assert unit_pid(host, UNIT) == pid and serves(host) == "1.0.0"
    assert host.exec([runtime, "image", "ls", "-q"]).stdout == loaded, "an image was loaded"

    write(project, images, "2.0.0", user=USER, shared="uploads, cache")
    bump = project.once()
    assert bump.rc == 0, bump.stdout + bump.stderr
    assert serves(host) == "2.0.0"
    assert host.read("/var/lib/choiros/task-2.0.0") == f"{uid}:{gid}".encode(), "the task ran as another user"
    unit = (host.read(f"/etc/systemd/system/{UNIT}") or b"").decode()
    assert f"--user={uid}:{gid}" in unit and f"User={USER}" in unit, unit

    def runs_as_the_user() -> list[int]:
        pids = container_processes(host, runtime)
        assert len(pids) >= 2, pids
        for pid in pids:
            assert ids_of(host, pid) == ([uid] * 4, [gid] * 4), (pid, ids_of(host, pid))
        return pids

    first_pids = runs_as_the_user()
    assert "written as root" in notes(host), "the database a root container wrote was lost"
    add_note(host, "written by the service user")
    listing = host.exec(["find", "/var/lib/choiros", "-printf", "%u:%g %m %p\n"]).stdout.splitlines()
    assert all(line.startswith(f"{USER}:{USER} ") for line in listing), listing
    assert owners(host, "/var/lib/choiros")[0] == f"{uid}:{gid} 755"
    assert owners(host, "/etc/choiros/backend.env") == [f"0:{gid} 640"]
    shared = owners(host, "/opt/choiros/shared/uploads", "/opt/choiros/shared/cache")
    assert shared == ["0:0 755", f"{uid}:{gid} 755"], "shared folders are made once, for the user of the time"
    readable = host.exec(["runuser", "-u", USER, "--", "cat", "/etc/choiros/backend.env"])
    assert "DATABASE_PATH=" in readable.stdout
    assert project.once("--dry-run").rc == 0, "a second run would change something"

    host.exec(["systemctl", "restart", "choiros-backend"])
    host.wait_http("/api/version", timeout=20)
    after = runs_as_the_user()
    assert after != first_pids, "the restart did not start a new container"
    assert notes(host) == ["written as root", "written by the service user"]
    again = host.exec(["find", "/var/lib/choiros", "-printf", "%u:%g %m %p\n"]).stdout.splitlines()
    assert all(line.startswith(f"{USER}:{USER} ") for line in again), "systemd took the folder back"
