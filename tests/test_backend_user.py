"""backend.user on a real host: the backend runs as that system user, writes its SQLite
database under /var/lib/<app>/ and can read its environment file; a user the host does not
have is refused before anything changes."""

from __future__ import annotations

import json

import pytest

from tests.deploying import WATCHED_PATHS, Project, serves, unit_pid
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

USER = "choiros-svc"
BACKEND = "command: bin/backend --port {port}\nport: 8080\nuser: %s"


@pytest.fixture(scope="module")
def service_user(testhost: TestHost) -> str:
    """A system user as an operator would create it (the reconciler creates no accounts)."""
    shell = ["--no-create-home", "--shell", "/usr/sbin/nologin"]
    testhost.exec(["useradd", "--system", "--user-group", *shell, USER])
    return USER


def ids(host: TestHost, user: str) -> tuple[str, str]:
    return (
        host.exec(["id", "-u", user]).stdout.strip(),
        host.exec(["id", "-g", user]).stdout.strip(),
    )


def test_backend_runs_as_its_user_and_writes_its_database(project: Project, service_user: str) -> None:
    host = project.host
    project.write("1.0.0", backend=BACKEND % service_user)
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    assert serves(host) == "1.0.0"

    uid, gid = ids(host, service_user)
    pid = unit_pid(host, "choiros-backend.service")
    status = host.exec(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [uid] * 4, status  # real, effective, saved, filesystem
    assert fields["Gid"].split() == [gid] * 4, status

    note = host.exec(
        [
            "curl",
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"text": "written by the service user"}',
            "http://127.0.0.1/api/notes",
        ]
    ).stdout
    assert json.loads(note)["text"] == "written by the service user"
    stat = ["stat", "-c", "%U:%G %a", "/var/lib/choiros", "/var/lib/choiros/choiros.db"]
    owners = host.exec(stat).stdout.split("\n")
    assert owners[0].startswith(f"{service_user}:{service_user} ")
    assert owners[1].startswith(f"{service_user}:{service_user} ")

    env = host.exec(["stat", "-c", "%U:%G %a", "/etc/choiros/backend.env"]).stdout.strip()
    assert env == f"root:{service_user} 640"
    as_user = host.exec(["runuser", "-u", service_user, "--", "cat", "/etc/choiros/backend.env"])
    assert "DATABASE_PATH=" in as_user.stdout
    environ = host.exec(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
    assert "CORS_ALLOW_ORIGINS=https://choir.example" in environ
    assert project.once("--dry-run").rc == 0


def test_a_backend_user_missing_on_the_host_is_refused_before_anything_changes(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    before = host.tree_state(WATCHED_PATHS)
    pid = unit_pid(host, "choiros-backend.service")
    project.write("2.0.0", backend=BACKEND % "ghost")
    run = project.reconcile("--once")
    assert run.rc != 0
    assert "backend.user 'ghost' does not exist on the host" in run.stderr, run.stderr
    assert "useradd --system --user-group" in run.stderr
    assert host.tree_state(WATCHED_PATHS) == before
    assert unit_pid(host, "choiros-backend.service") == pid
    assert serves(host) == "1.0.0"
