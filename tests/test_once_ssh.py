"""`reconcile --once` over SSH against a real systemd + sshd + Caddy host."""

from __future__ import annotations

import json

import pytest

from tests.deploying import WATCHED_PATHS, Project, serves, unit_pid

pytestmark = pytest.mark.testhost

BACKEND = "choiros-backend.service"
FRAGMENT = "/etc/caddy/apps/choiros.caddy"


def test_deploy_from_scratch_then_nothing_to_do(project: Project) -> None:
    project.write("1.0.0")
    run = project.once()
    assert run.rc == 0, run.stderr
    assert run.json["result"] == "converged" and run.json["applied"]
    assert ("upload", "/opt/choiros/releases/1.0.0") in run.actions()
    assert all(a["reason"] for a in run.json["actions"])
    assert serves(project.host) == "1.0.0"

    dry = project.once("--dry-run")
    assert dry.rc == 0 and dry.json["actions"] == [] and dry.json["result"] == "noop"
    again = project.once()
    assert again.rc == 0 and again.json["actions"] == [] and not again.json["applied"]


def test_bump_plans_only_what_is_needed_and_revert_needs_no_upload(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.0.0")
    dry = project.once("--dry-run")
    assert dry.rc == 2
    assert dry.actions() == [
        ("upload", "/opt/choiros/releases/2.0.0"),
        ("write", f"/etc/systemd/system/{BACKEND}"),
        ("write", "/etc/choiros/backend.env"),
        ("daemon-reload", "systemd"),
        ("symlink", "/opt/choiros/previous -> releases/1.0.0"),
        ("symlink", "/opt/choiros/current -> releases/2.0.0"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        # the static frontend switches with the backend, after its health gate
        ("validate+write", FRAGMENT),
        ("reload", "caddy.service"),
        ("record-good", "2.0.0"),
    ]
    assert serves(project.host) == "1.0.0", "a dry run changed the host"
    run = project.once()
    assert run.rc == 0, run.stderr
    assert run.actions() == dry.actions()
    assert serves(project.host) == "2.0.0"

    project.write("1.0.0")  # the revert
    back = project.once()
    assert back.rc == 0, back.stderr
    assert back.actions() == [
        ("write", f"/etc/systemd/system/{BACKEND}"),
        ("write", "/etc/choiros/backend.env"),
        ("daemon-reload", "systemd"),
        ("symlink", "/opt/choiros/previous -> releases/2.0.0"),
        ("symlink", "/opt/choiros/current -> releases/1.0.0"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        ("validate+write", FRAGMENT),
        ("reload", "caddy.service"),
        ("record-good", "1.0.0"),
    ]
    assert serves(project.host) == "1.0.0"
    assert project.once("--dry-run").rc == 0


def test_static_to_dev_server_and_back(project: Project) -> None:
    dev = "mode: dev-server\ndev_command: bin/frontend-dev --port 3000\ndev_port: 3000"
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("1.0.0", frontend=dev)
    run = project.once()
    assert run.rc == 0, run.stderr
    names = [a for a, _ in run.actions()]
    assert names.index("start") < names.index("reload"), "the dev server must run before Caddy routes to it"
    page = project.host.http("/")
    assert page.status == 200 and "dev server" in page.text and page.headers.get("X-Dev-Server") == "1"
    assert project.once("--dry-run").rc == 0

    project.write("1.0.0")
    back = project.once()
    assert back.rc == 0, back.stderr
    names = [a for a, _ in back.actions()]
    assert names.index("reload") < names.index("stop"), "Caddy must stop routing before the dev server stops"
    assert serves(project.host) == "1.0.0" and "dev server" not in project.host.http("/").text
    assert project.host.read("/etc/systemd/system/choiros-frontend.service") is None
    assert project.once("--dry-run").rc == 0


def test_hand_edited_caddyfile_and_stopped_unit_are_restored(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    host = project.host
    host.write(FRAGMENT, b':80 {\n\trespond "hand edited" 200\n}\n')
    host.exec(["systemctl", "reload", "caddy"])
    host.exec(["systemctl", "stop", BACKEND])
    assert host.http("/").text == "hand edited"
    run = project.once()
    assert run.rc == 0, run.stderr
    assert sorted(run.actions()) == sorted(
        [
            ("start", BACKEND),
            ("health-check", "http://127.0.0.1:8080/health"),
            ("validate+write", FRAGMENT),
            ("reload", "caddy.service"),
        ]
    )
    assert serves(host) == "1.0.0"
    assert project.once("--dry-run").rc == 0


def test_unit_description_edit_is_fixed_without_restart(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    host = project.host
    path = "/etc/systemd/system/choiros-backend.service"
    pid = unit_pid(host, BACKEND)
    host.write(path, (host.read(path) or b"").replace(b"Description=choiros backend", b"Description=edited"))
    host.exec(["systemctl", "daemon-reload"])
    run = project.once()
    assert run.rc == 0, run.stderr
    assert run.actions() == [("write", path), ("daemon-reload", "systemd")]
    assert unit_pid(host, BACKEND) == pid


def test_env_change_restarts_the_backend_only(project: Project) -> None:
    dev = "mode: dev-server\ndev_command: bin/frontend-dev --port 3000\ndev_port: 3000"
    project.write("1.0.0", frontend=dev)
    assert project.once().rc == 0
    host = project.host
    backend, frontend = unit_pid(host, BACKEND), unit_pid(host, "choiros-frontend.service")
    project.write(
        "1.0.0",
        frontend=dev,
        env="DATABASE_PATH: /var/lib/choiros/choiros.db\nCORS_ALLOW_ORIGINS: https://other.example",
    )
    run = project.once()
    assert run.rc == 0, run.stderr
    assert run.actions() == [
        ("write", "/etc/choiros/backend.env"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        ("record-good", "1.0.0"),
    ]
    assert "CORS_ALLOW_ORIGINS" in run.json["actions"][0]["reason"]
    assert unit_pid(host, BACKEND) != backend
    assert unit_pid(host, "choiros-frontend.service") == frontend
    allowed = host.http("/api/version", headers={"Origin": "https://other.example"})
    assert allowed.headers.get("Access-Control-Allow-Origin") == "https://other.example"


def test_restart_strategy(project: Project) -> None:
    project.write("1.0.0", strategy="restart")
    assert project.once().rc == 0
    project.write("2.0.0", strategy="restart")
    run = project.once()
    assert run.rc == 0, run.stderr
    assert not any(t.startswith("/opt/choiros/previous") for _, t in run.actions())
    assert serves(project.host) == "2.0.0"


def test_bad_input_changes_nothing_on_the_host(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    host = project.host
    before = host.tree_state(WATCHED_PATHS)
    body = (
        project.render("2.0.0")
        .replace('version: "2.0.0"', 'version: "../../etc"')
        .replace("port: 8080", "port: eighty")
    )
    project.write(body=body)
    run = project.reconcile("--once")
    assert run.rc == 1
    assert "desired-state.yaml:4:" in run.stderr and "release.version" in run.stderr
    assert "backend.port" in run.stderr and "nothing was changed" in run.stderr
    assert host.tree_state(WATCHED_PATHS) == before


def test_missing_artifact_is_refused_before_touching_the_host(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    before = project.host.tree_state(WATCHED_PATHS)
    project.write("9.9.9")
    run = project.reconcile("--once")
    assert run.rc == 1 and "release.source" in run.stderr and "does not exist" in run.stderr
    assert project.host.tree_state(WATCHED_PATHS) == before


def test_json_output_shape(project: Project) -> None:
    project.write("1.0.0")
    run = project.once("--dry-run")
    assert run.rc == 2
    data = json.loads(run.stdout)
    assert set(data) >= {"actions", "changed", "result", "applied"}
    assert data["changed"] is True and data["result"] == "changes_pending"
    assert all(set(a) == {"action", "target", "reason"} for a in data["actions"])


def test_history_records_each_apply(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    status = project.reconcile("status", "--json")
    assert status.rc == 0, status.stderr
    answer = json.loads(status.stdout)
    assert answer["serving"] == "1.0.0" and answer["serving_unit"] == "choiros-backend.service"
    runs = answer["runs"]
    assert runs[-1]["result"] == "ok" and runs[-1]["version"] == "1.0.0"
    assert runs[-1]["actions"] and "user" in runs[-1]


def test_many_requests_on_one_connection(project: Project) -> None:
    """The agent leaves as soon as it has answered: sshd allows ten sessions per connection,
    so a lingering agent would refuse watch mode's fast no-op passes."""
    from reconciler.agent.protocol import PROTOCOL
    from reconciler.executors.ssh import SSHExecutor
    from reconciler.executors.ssh_options import SSHOptions
    from reconciler.spec.model import Target

    host = project.host
    options = SSHOptions(identity=(str(host.key_path),), known_hosts=str(host.known_hosts))
    executor = SSHExecutor(Target("ssh", host=host.address, user="root", port=22), options)
    try:
        answers = [
            executor.request(
                {"op": "history", "protocol": PROTOCOL, "state": "/var/lib/reconciler/x", "limit": 1}
            )
            for _ in range(25)
        ]
    finally:
        executor.close()
    assert [a["event"] for a in answers] == ["result"] * 25


def test_install_section_edit_is_put_back_with_its_links(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    host = project.host
    path = "/etc/systemd/system/choiros-backend.service"
    host.write(
        path, (host.read(path) or b"").replace(b"WantedBy=multi-user.target", b"WantedBy=default.target")
    )
    host.exec(["systemctl", "daemon-reload"])
    host.exec(["systemctl", "reenable", "choiros-backend.service"])  # links now follow the edit
    run = project.once()
    assert run.rc == 0, run.stdout
    assert ("reenable", BACKEND) in run.actions()
    links = host.exec(
        [
            "bash",
            "-c",
            "ls /etc/systemd/system/*.wants/ | grep -c choiros-backend; ls /etc/systemd/system/multi-user.target.wants/",
        ]
    ).stdout
    assert "choiros-backend.service" in links.split("\n", 1)[1]
    assert project.once("--dry-run").rc == 0


def test_a_backend_that_changes_directory_is_not_restarted_every_pass(project: Project) -> None:
    """What a process runs is read from what the reconciler gave it (the release named in its
    environment, its invocation), not from its working directory, which the app may change."""
    project.write("2.5.0-chdir")
    assert project.once().rc == 0
    host = project.host
    pid = unit_pid(host, BACKEND)
    assert host.exec(["readlink", f"/proc/{pid}/cwd"]).stdout.strip() == "/"
    for _ in range(2):
        again = project.once()
        assert again.rc == 0 and again.json["actions"] == [], again.json["actions"]
    assert unit_pid(host, BACKEND) == pid
