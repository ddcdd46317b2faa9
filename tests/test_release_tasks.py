"""What real releases need besides a restart, on a real host: migrations that run once before
traffic moves (and leave the database as it was when they fail), maintenance mode, shared
folders that outlive releases, and a stop that gives a worker time to finish."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.deploying import REPO, Project, serves

pytestmark = pytest.mark.testhost

MIGRATE = """#!/usr/bin/env python3
# A migration: adds notes.tag in the database the new configuration names. It notes what
# served while it ran, and with FAIL_MIGRATION set it half-migrates and fails.
import json, os, sqlite3, sys, urllib.request
db = os.environ["DATABASE_PATH"]
try:
    serving = json.load(urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=2))["version"]
except OSError:
    serving = None
with sqlite3.connect(db) as c:
    c.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL)")
    if "tag" not in [r[1] for r in c.execute("PRAGMA table_info(notes)")]:
        c.execute("ALTER TABLE notes ADD COLUMN tag TEXT")
    if os.environ.get("FAIL_MIGRATION"):
        c.execute("INSERT INTO notes (text, created_at) VALUES ('half-migrated', 'now')")
with open("/var/lib/choiros/migrations.log", "a") as log:
    log.write(json.dumps({"db": db, "serving": serving, "release": os.environ.get("RECONCILER_RELEASE")}) + "\\n")
sys.exit(1 if os.environ.get("FAIL_MIGRATION") else 0)
"""
TASKS = "  tasks:\n    before_switch: [bin/migrate]\n    timeout: 60"
SQLITE = "sqlite: /var/lib/choiros/choiros.db"


@pytest.fixture(scope="module")
def migrating(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 2.0.0 of the example app, with a migration in bin/."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    release, _ = build.build("2.0.0", tmp_path_factory.mktemp("migrating"), fmt="dir")
    script = Path(release) / "bin" / "migrate"
    script.write_text(MIGRATE)
    script.chmod(0o755)
    return Path(release)


def _with_tasks(project: Project, version: str, source: Path, env: str, data: str = SQLITE) -> None:
    body = project.render(version, env=env, data=data)
    body = body.replace(f"  source: {project.artifacts[version]}", f"  source: {source}\n{TASKS}")
    project.write(body=body)


def _log(project: Project) -> list[dict[str, str]]:
    raw = project.host.read("/var/lib/choiros/migrations.log") or b""
    return [json.loads(line) for line in raw.decode().splitlines()]


def test_a_migration_runs_once_before_the_switch_with_the_new_configuration(
    project: Project, migrating: Path
) -> None:
    host = project.host
    project.write("1.0.0", data=SQLITE)
    assert project.once().rc == 0
    env = "DATABASE_PATH: /var/lib/choiros/v2.db\nCORS_ALLOW_ORIGINS: https://choir.example"
    # The database moves to a new file: data.sqlite moves with DATABASE_PATH (they must agree).
    _with_tasks(project, "2.0.0", migrating, env, data="sqlite: /var/lib/choiros/v2.db")
    run = project.once()
    assert run.rc == 0, run.stdout
    names = [a for a, _ in run.actions()]
    assert names.index("snapshot") < names.index("task") < names.index("restart"), names
    assert _log(project) == [{"db": "/var/lib/choiros/v2.db", "serving": "1.0.0", "release": "2.0.0"}]
    assert serves(host) == "2.0.0"
    again = project.once()
    assert again.rc == 0 and again.json["actions"] == [] and len(_log(project)) == 1, "it ran again"


def test_a_failing_migration_switches_nothing_and_puts_the_database_back(
    project: Project, migrating: Path
) -> None:
    host = project.host
    project.write("1.0.0", data=SQLITE)
    assert project.once().rc == 0
    host.exec(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"text": "kept"}',
            "http://127.0.0.1/api/notes",
        ]
    )
    env = "DATABASE_PATH: /var/lib/choiros/choiros.db\nCORS_ALLOW_ORIGINS: https://choir.example\nFAIL_MIGRATION: 'yes'"
    _with_tasks(project, "2.0.0", migrating, env)
    run = project.once()
    assert run.rc == 1, run.stdout
    error = run.json["error"]
    assert "task before_switch[0]" in error and "exited 1" in error and "database is back" in error, error
    assert "nothing was switched" in error
    assert serves(host) == "1.0.0"
    local = Path(project.root) / "copy.db"
    local.write_bytes(host.read("/var/lib/choiros/choiros.db") or b"")
    with sqlite3.connect(local) as db:
        assert [r[0] for r in db.execute("SELECT text FROM notes")] == ["kept"], "the half migration stayed"
        assert "tag" not in [r[1] for r in db.execute("PRAGMA table_info(notes)")]
    history = host.exec(["tail", "-n", "1", "/var/lib/reconciler/choiros/history.jsonl"]).stdout
    assert "exited 1" in json.loads(history)["error"]


def test_maintenance_from_the_file_and_from_the_command(project: Project) -> None:
    host = project.host
    project.write("1.0.0", proxy="maintenance: true")
    assert project.once().rc == 0
    page = host.http("/")
    assert page.status == 503 and page.headers.get("Retry-After") == "120" and "maintenance" in page.text
    assert host.http("/health").status == 200, "health checks still reach the backend"
    project.write("1.0.0")
    assert project.once().rc == 0 and host.http("/").status == 200

    on = project.reconcile("maintenance", "on", "--reason", "restoring a backup")
    assert on.rc == 0, on.stdout + on.stderr
    assert host.http("/").status == 503 and host.http("/api/version").status == 503
    status = project.reconcile("status")
    assert "maintenance: on" in status.stdout and "restoring a backup" in status.stdout
    assert project.once().json["actions"] == [], "a normal run keeps the maintenance switched on by hand"
    off = project.reconcile("maintenance", "off")
    assert off.rc == 0 and host.http("/").status == 200 and serves(host) == "1.0.0"


def test_shared_folders_outlive_releases_and_stop_settings_reach_the_unit(project: Project) -> None:
    host = project.host
    backend = "command: bin/backend --port {port}\nport: 8080\nstop_timeout: 45\nstop_signal: SIGINT"
    project.write("1.0.0", shared="[uploads]", backend=backend)
    assert project.once().rc == 0
    host.write("/opt/choiros/shared/uploads/photo.jpg", b"jpeg")
    for version in ("2.0.0", "1.0.0"):
        project.write(version, shared="[uploads]", backend=backend)
        assert project.once().rc == 0
        assert host.read(f"/opt/choiros/releases/{version}/uploads/photo.jpg") == b"jpeg"
    shown = host.exec(["systemctl", "show", "-p", "TimeoutStopUSec,KillSignal", "choiros-backend"]).stdout
    assert "TimeoutStopUSec=45s" in shown and "KillSignal=2" in shown, shown


def test_a_first_deploy_migrates_as_backend_user_and_the_output_is_in_the_journal(project: Project) -> None:
    """On a fresh host the migration runs before the backend ever started, so before systemd
    made its state folder: the task's unit makes it (StateDirectory=) as the backend's would,
    owned by backend.user. Its output is filed in the journal under the task's unit."""
    host = project.host
    host.exec(
        ["bash", "-c", "id -u choiros-svc || useradd --system --user-group --no-create-home choiros-svc"]
    )
    body = project.render(
        "1.0.0", backend="command: bin/backend --port {port}\nport: 8080\nuser: choiros-svc"
    )
    project.write(
        body=body.replace("  source:", "  tasks:\n    before_switch: [bin/backend --migrate]\n  source:", 1)
    )
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    assert serves(host) == "1.0.0"
    owners = host.exec(["stat", "-c", "%U", "/var/lib/choiros", "/var/lib/choiros/choiros.db"]).stdout.split()
    assert owners == ["choiros-svc", "choiros-svc"]
    journal = host.exec(["journalctl", "--no-pager", "-o", "cat", "-u", "reconciler-task-choiros-*"]).stdout
    assert "database /var/lib/choiros/choiros.db is at choiros 1.0.0's schema" in journal, journal
