"""A server that is not empty: two apps sharing one Caddy, and a host set up by hand that is
adopted. Each app owns only its Caddy fragment; everything the reconciler did not write is
left alone, or replaced with --adopt and a dated backup."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from tests.deploying import WATCHED_PATHS, Load, Project, serves, serves_site

pytestmark = pytest.mark.testhost

NOTES_SITE = "notes.example"
NOTES = {
    "proxy": f'site: "http://{NOTES_SITE}"',
    "backend": "command: bin/backend --port {port}\nport: 9080",
    "strategy": "blue-green",
}


@pytest.fixture
def notes(project: Project, tmp_path: Path) -> Project:
    root = tmp_path / "notes"
    root.mkdir()
    return Project(root, project.artifacts, project.host, app="notes")


def test_two_apps_share_one_caddy_and_never_disturb_each_other(project: Project, notes: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    notes.write("1.0.0", **NOTES)
    first = notes.once()
    assert first.rc == 0, first.stdout
    main = (host.read("/etc/caddy/Caddyfile") or b"").decode()
    assert main.count("import /etc/caddy/apps/*.caddy") == 1
    assert sorted(host.exec(["ls", "/etc/caddy/apps"]).stdout.split()) == ["choiros.caddy", "notes.caddy"]
    assert serves(host) == "1.0.0" and serves_site(host, NOTES_SITE) == "1.0.0"

    with Load(host, rate=25) as choiros_load, Load(host, rate=25, site=NOTES_SITE) as notes_load:
        for version in ("2.0.0", "1.0.0"):  # each app bumped, then rolled back, in turn
            project.write(version)
            assert project.once().rc == 0
            notes.write(version, **NOTES)
            assert notes.once().rc == 0
    print(
        f"\ntwo apps, each bumped and rolled back: choiros {choiros_load.sent} requests, "
        f"{len(choiros_load.failed)} failed; notes {notes_load.sent} requests, {len(notes_load.failed)} failed"
    )
    assert notes_load.failed == [] and choiros_load.failed == []
    assert serves(host) == "1.0.0" and serves_site(host, NOTES_SITE) == "1.0.0"

    # A third app claiming choiros's site, or its port, is refused before anything changes.
    before = host.tree_state(WATCHED_PATHS)
    notes.write("1.0.0", **{**NOTES, "proxy": 'site: ":80"'})
    clash = notes.once()
    assert clash.rc == 1 and "already served by app 'choiros'" in clash.json["error"], clash.stdout
    notes.write("1.0.0", **{**NOTES, "backend": "command: bin/backend --port {port}\nport: 8079"})
    clash = notes.once()  # its green colour would take 8080+1... no: blue is 8080
    assert clash.rc == 1 and "already used by app 'choiros'" in clash.json["error"], clash.stdout
    assert host.tree_state(WATCHED_PATHS) == before

    # Removing one app's fragment touches nothing of the other.
    host.exec(["rm", "/etc/caddy/apps/notes.caddy"])
    host.exec(["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force"])
    assert serves(host) == "1.0.0"
    assert project.once().json["actions"] == [], "choiros's run touched notes's configuration"
    notes.write("1.0.0", **NOTES)
    assert notes.once().rc == 0 and serves_site(host, NOTES_SITE) == "1.0.0"


HAND_UNIT = """[Unit]
Description=choiros, set up by hand
[Service]
WorkingDirectory=/srv/choiros
ExecStart=/srv/choiros/bin/backend --port 8080
Environment=DATABASE_PATH=/var/lib/choiros/choiros.db
StateDirectory=choiros
Restart=on-failure
[Install]
WantedBy=multi-user.target
"""

HAND_CADDYFILE = """# written by hand
http://other.example {
\trespond "the other site" 200
}

:80 {
\thandle /api/* {
\t\treverse_proxy 127.0.0.1:8080
\t}
\thandle {
\t\troot * /srv/choiros/frontend/dist
\t\tfile_server
\t}
}
"""


def _set_up_by_hand(project: Project) -> None:
    """The way a deploy script would have done it: a release in a plain folder, a unit
    running it, and a Caddyfile with another site in it."""
    host = project.host
    with tarfile.open(project.artifacts["1.0.0"]) as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                host.write(f"/srv/choiros/{member.name.lstrip('./')}", data, mode=member.mode & 0o755)
    host.write("/etc/systemd/system/choiros-backend.service", HAND_UNIT.encode())
    host.write("/etc/caddy/Caddyfile", HAND_CADDYFILE.encode())
    host.exec(["systemctl", "daemon-reload"])
    host.exec(["systemctl", "enable", "--now", "choiros-backend"])
    host.exec(["systemctl", "reload", "caddy"])
    host.wait_http("/api/version", timeout=15)


def test_a_host_set_up_by_hand_is_adopted_only_when_asked(project: Project) -> None:
    host = project.host
    _set_up_by_hand(project)
    assert serves(host) == "1.0.0"
    project.write("1.0.0")
    before = host.tree_state(WATCHED_PATHS + ["/srv"])
    refused = project.once("--dry-run")
    assert refused.rc == 1, refused.stdout
    error = refused.json["error"]
    assert "choiros-backend.service exists and was not written by the reconciler" in error
    assert "/etc/caddy/Caddyfile already serves :80 itself" in error and "--adopt" in error
    assert project.once().rc == 1 and host.tree_state(WATCHED_PATHS + ["/srv"]) == before

    with Load(host, rate=25) as load, Load(host, rate=10, path="/", site="other.example") as other:
        time.sleep(0.5)
        adopted = project.once("--adopt")
        time.sleep(0.5)
    assert adopted.rc == 0, adopted.stdout
    print(
        f"\nadopted under load: {load.sent} requests, {len(load.failed)} failed; the other site {len(other.failed)} failed"
    )
    assert other.failed == [], other.failed[:3]
    # The hand-written site proxies without retries: the one restart shows as a few 502s.
    assert len(load.failed) <= 5 and set(load.failed) <= {"HTTP 502"}, load.failed
    assert serves(host) == "1.0.0"
    assert host.http("/", headers={"Host": "other.example"}).text == "the other site"
    backups = host.exec(["find", "/var/lib/reconciler/choiros/adopted", "-type", "f"]).stdout.split()
    assert any(b.endswith("/etc/systemd/system/choiros-backend.service") for b in backups), backups
    assert any(b.endswith("/etc/caddy/Caddyfile") for b in backups), backups
    history = [
        json.loads(line)
        for line in host.exec(["cat", "/var/lib/reconciler/choiros/history.jsonl"]).stdout.splitlines()
    ]
    assert sorted(history[-1]["adopted"]) == [
        "/etc/caddy/Caddyfile",
        "/etc/systemd/system/choiros-backend.service",
    ]
    assert project.once("--dry-run").rc == 0, "adopted once, nothing left to adopt"


def test_adopting_with_a_release_that_fails_goes_back_to_the_hand_made_setup(project: Project) -> None:
    """No good state is recorded on a host set up by hand: what it ran is the state to go
    back to, its own unit and Caddyfile included."""
    host = project.host
    _set_up_by_hand(project)
    project.write("2.1.0-bad", health="timeout: 3\ninterval: 0.1\nstable: 0.3")
    run = project.once("--adopt")
    assert run.rc == 3, run.stdout
    assert run.json["rolled_back_to"] == "the setup found on the host (/srv/choiros)", run.json
    assert (host.read("/etc/systemd/system/choiros-backend.service") or b"").decode() == HAND_UNIT
    assert (host.read("/etc/caddy/Caddyfile") or b"").decode() == HAND_CADDYFILE
    assert host.read("/etc/caddy/apps/choiros.caddy") is None
    assert serves(host) == "1.0.0"
    assert host.http("/", headers={"Host": "other.example"}).text == "the other site"
