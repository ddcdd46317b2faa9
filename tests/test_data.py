"""Data-aware switches on a real host: SQLite snapshots before a switch, restored on the way back."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.deploying import Project, serves

pytestmark = pytest.mark.testhost

DATA = "sqlite: /var/lib/choiros/choiros.db\nrestore_on_rollback: true"


def add_note(project: Project, text: str) -> None:
    request = urllib.request.Request(
        f"http://{project.host.address}/api/notes",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as answer:
        assert answer.status == 201


def notes(project: Project) -> list[str]:
    return [n["text"] for n in json.loads(project.host.http("/api/notes").text)]


def test_snapshot_on_the_way_out_restore_on_the_way_back(project: Project) -> None:
    project.write("1.0.0", data=DATA)
    assert project.once().rc == 0
    add_note(project, "written under 1.0.0")

    project.write("2.0.0", data=DATA)
    bump = project.once()
    assert bump.rc == 0, bump.stdout
    assert (
        "snapshot",
        "/var/lib/choiros/choiros.db -> /var/lib/reconciler/choiros/snapshots/1.0.0.sqlite",
    ) in bump.actions()
    add_note(project, "written under 2.0.0")
    assert notes(project) == ["written under 1.0.0", "written under 2.0.0"]
    check = project.host.exec(
        [
            "sqlite3",
            "/var/lib/reconciler/choiros/snapshots/1.0.0.sqlite",
            "PRAGMA integrity_check; SELECT count(*) FROM notes;",
        ]
    ).stdout.split()
    assert check == ["ok", "1"], check

    project.write("1.0.0", data=DATA)
    back = project.once()
    assert back.rc == 0, back.stdout
    kinds = [a for a, _ in back.actions()]
    assert kinds.index("snapshot") < kinds.index("restore") < kinds.index("restart")
    assert serves(project.host) == "1.0.0"
    assert notes(project) == ["written under 1.0.0"], "the database was not restored"
    assert project.once("--dry-run").rc == 0
