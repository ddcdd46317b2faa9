"""Running it for months, on a real host: notifications of a deploy, an automatic rollback
and a quarantine (and receivers that hang or fail delaying nothing), secrets from an
age-encrypted file, watch mode's metrics moving as passes happen, and a pause that keeps a
hand fix through several drift ticks until `resume`. One host for the module."""

from __future__ import annotations

import json
import time

import pyrage
import pytest
from pyrage import x25519

from tests.deploying import WATCHED_PATHS, Project, serves
from tests.receivers import receivers
from tests.scraping import free_port, scrape, value
from tests.test_watch import save_atomically, wait_until, watching

pytestmark = pytest.mark.testhost

FAST_FAIL = "timeout: 3\ninterval: 0.1\nstable: 0.3"


def hook(url: str, *extra: str) -> str:
    return "\n".join([f"- url: {url}", *(f"  {line}" for line in extra)])


def test_notifications_for_a_deploy_a_rollback_and_a_quarantine_with_secrets_from_age(
    project: Project,
) -> None:
    key = x25519.Identity.generate()
    secrets = project.root / "secrets"
    secrets.mkdir()
    token = "age-secret-" + str(key.to_public())[-12:]
    (secrets / "prod.env.age").write_bytes(pyrage.encrypt(f"API_TOKEN={token}\n".encode(), [key.to_public()]))
    env = {
        "RECONCILER_AGE_IDENTITY": str(key),
        "HOOK_TOKEN": "Bearer hook-secret-123",
        "SLACK_URL": "",  # filled below
    }
    with receivers("ok", "ok", "hang", "fail") as (plain, slack, hanging, failing):
        env["SLACK_URL"] = slack.url
        notify = "\n".join(
            (
                hook(plain.url, "header: {name: Authorization, from_env: HOOK_TOKEN}"),
                hook("${SLACK_URL}", "format: slack", "events: [rollback, quarantine]"),
                hook(hanging.url, "timeout: 2", "retries: 0"),
                hook(failing.url, "timeout: 2", "retries: 1"),
            )
        )
        fields = {
            "notify": notify,
            "env": "DATABASE_PATH: /var/lib/choiros/choiros.db\n"
            "API_TOKEN: {from_age: secrets/prod.env.age, key: API_TOKEN}",
        }
        outputs = []

        def run(version: str, **extra: str) -> tuple[int, dict[str, object], float]:
            project.write(version, **fields, **extra)
            t0 = time.monotonic()
            result = project.once(env=env)
            took = time.monotonic() - t0
            outputs.append(result.stdout + result.stderr)
            return result.rc, result.json, took

        rc, out, _ = run("1.0.0")
        assert rc == 0, out
        assert plain.events() == ["deploy"]
        rc, out, took = run("2.1.0-bad", health=FAST_FAIL)
        assert rc == 3 and out["result"] == "rolled_back", out
        told = plain.posts[-1]["t"]
        assert out["serving"] == "1.0.0" and out["serving_since"]
        rc, out, _ = run("2.1.0-bad", health=FAST_FAIL)
        assert rc == 3 and out["result"] == "quarantined", out
        assert plain.events() == ["deploy", "rollback", "quarantine"], "exactly these, in this order"
        assert [p["body"]["text"].split("*")[0] for p in slack.posts] == [":rotating_light: ", ":no_entry: "]
        assert hanging.hits == 3 and failing.hits == 6  # each event tried once, and twice with a retry
    deploy, rollback, quarantine = (p["body"] for p in plain.posts)
    assert all(p["headers"]["Authorization"] == "Bearer hook-secret-123" for p in plain.posts)
    assert deploy["version"] == "1.0.0" and deploy["serving"] == "1.0.0" and deploy["previous"] is None
    assert any(a["action"] == "upload" for a in deploy["actions"])
    assert rollback["version"] == "2.1.0-bad" and rollback["rolled_back_to"] == "1.0.0"
    assert rollback["serving"] == "1.0.0" and "health" in rollback["error"]
    assert quarantine["serving"] == "1.0.0" and "quarantined" in quarantine["error"]
    assert {p["host"] for p in (deploy, rollback, quarantine)} == {project.host.address}
    # The good receiver heard of the rollback as soon as it happened; the hanging and failing
    # ones cost the run at most their timeout (2 s), once, at exit.
    print(f"\nrollback run (3 s gate) with a hanging and a failing receiver: {took:.1f} s")
    assert told > 0 and took < 3 + 2 + 5

    # The age secret reached the EnvironmentFile, and nothing else.
    assert f'API_TOKEN="{token}"' in project.host.read("/etc/choiros/backend.env").decode()
    assert not any(token in text for text in outputs)
    assert all(token not in json.dumps(p["body"]) for p in plain.posts)
    history = project.host.read("/var/lib/reconciler/choiros/history.jsonl").decode()
    assert token not in history

    # Every delivery's outcome is in the host's history, and status shows it.
    notes = [json.loads(line) for line in history.splitlines() if '"notify"' in line]
    delivered = sorted((n["event"], n["ok"]) for n in notes if n["webhook"].startswith("webhook 1 "))
    assert delivered == [("deploy", True), ("quarantine", True), ("rollback", True)]
    assert {n["ok"] for n in notes if n["webhook"].startswith(("webhook 3 ", "webhook 4 "))} == {False}
    status = project.reconcile("status", "-n", "40", env=env)
    assert "notified    rollback to webhook 1 (127.0.0.1): delivered" in status.stdout, status.stdout
    assert "serves 1.0.0 since" in status.stdout

    # A wrong key, or a tampered file: a clear error at the from_age field, host untouched.
    before = project.host.tree_state(WATCHED_PATHS)
    project.write("1.0.0", env=fields["env"])
    wrong = project.once(env={"RECONCILER_AGE_IDENTITY": str(x25519.Identity.generate())})
    assert wrong.rc == 1 and "env.API_TOKEN.from_age:" in wrong.json["error"]
    assert "wrong key" in wrong.json["error"]
    cipher = bytearray((secrets / "prod.env.age").read_bytes())
    cipher[-3] ^= 0x01
    (secrets / "prod.env.age").write_bytes(bytes(cipher))
    tampered = project.once(env=env)
    assert tampered.rc == 1 and "damaged or tampered with" in tampered.json["error"]
    assert project.host.tree_state(WATCHED_PATHS) == before


def test_watch_serves_metrics_that_move_with_each_pass_and_notifies(project: Project) -> None:
    port = free_port()
    host = project.host.address
    with receivers("ok") as (plain,):
        notify = hook(plain.url)
        path = project.write("1.0.0", notify=notify)
        with watching(project, "--interval", "1", "--metrics-listen", f"127.0.0.1:{port}") as w:
            w.wait_for("converged", timeout=40)
            m = scrape(port)
            assert value(m, "reconciler_passes_total", host=host, result="converged") == 1
            assert value(m, "reconciler_actions_applied_total", host=host, action="upload") == 1
            assert value(m, "reconciler_last_success_timestamp_seconds", host=host) > time.time() - 60
            assert value(m, "reconciler_serving_info", host=host, release="1.0.0") == 1
            assert value(m, "reconciler_rollbacks_total", host=host) == 0
            wait_until(
                lambda: value(scrape(port), "reconciler_passes_total", host=host, result="noop") >= 2, 10
            )

            # Drift: a hand-edited Caddyfile is put back, counted and told as drift.
            project.host.write("/etc/caddy/apps/choiros.caddy", b':80 {\n\trespond "hand edited"\n}\n')
            project.host.exec(["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force"])
            w.wait_for("converged", count=2, timeout=15)
            m = scrape(port)
            assert value(m, "reconciler_drift_corrected_total", host=host) == 1
            assert value(m, "reconciler_passes_total", host=host, result="converged") == 2

            # A release that fails its gate: rolled back, then quarantined.
            save_atomically(path, project.render("2.1.0-bad", notify=notify, health=FAST_FAIL))
            w.wait_for("release not deployed", timeout=30)
            w.wait_for("release quarantined", timeout=30)
            m = scrape(port)
            assert value(m, "reconciler_rollbacks_total", host=host) == 1
            assert value(m, "reconciler_failures_total", host=host) == 1
            assert value(m, "reconciler_quarantined_releases", host=host) == 1
            assert value(m, "reconciler_serving_info", host=host, release="1.0.0") == 1
            assert value(m, "reconciler_pass_duration_seconds_count", host=host) >= 5
            plain.wait_for(4)
            assert w.stop() == 0
        assert plain.events() == ["deploy", "drift_corrected", "rollback", "quarantine"]
    assert serves(project.host) == "1.0.0"
    # Each delivery was noted in the host's history (the last one as watch mode stopped).
    history = project.host.read("/var/lib/reconciler/choiros/history.jsonl").decode()
    notes = [json.loads(line) for line in history.splitlines() if '"notify"' in line]
    assert sorted(n["event"] for n in notes if n["ok"]) == [
        "deploy",
        "drift_corrected",
        "quarantine",
        "rollback",
    ]


def test_a_pause_keeps_a_hand_fix_through_drift_ticks_until_resume(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    paused = project.reconcile("pause", "--reason", "incident 42: serving a maintenance page")
    assert paused.rc == 0, paused.stderr
    host.write("/etc/caddy/apps/choiros.caddy", b':80 {\n\trespond "maintenance"\n}\n')
    host.exec(["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force"])

    once = project.once()
    assert once.rc == 4 and once.json["result"] == "paused", once.stdout
    # What serves is asked of Caddy: the hand-made page routes to no backend.
    assert "incident 42" in once.json["error"] and once.json["serving"] is None
    assert once.json["actions"], "the plan a resume would run is still shown"
    status = project.reconcile("status", "--json")
    assert json.loads(status.stdout)["paused"]["reason"] == "incident 42: serving a maintenance page"
    assert "PAUSED: paused by" in project.reconcile("status").stdout

    with watching(project, "--interval", "1") as w:
        time.sleep(5)  # four or five drift ticks
        assert host.http("/").text == "maintenance", "the hand fix must survive while paused"
        said = w.named("host paused; not converging")
        assert len(said) == 1 and "incident 42" in said[0]["error"]
        assert not w.named("converged")
        t0 = time.monotonic()
        resumed = project.reconcile("resume")
        assert resumed.rc == 0 and "resumed" in resumed.stdout
        w.wait_for("converged", timeout=10)
        print(f"\nresumed -> converged after {time.monotonic() - t0:.1f} s (drift interval 1 s)")
        assert serves(host) == "1.0.0"
        assert w.stop() == 0

    # --once --force overrides a pause once; the pause stays.
    assert project.reconcile("pause").rc == 0
    host.exec(["systemctl", "stop", "choiros-backend.service"])
    forced = project.once("--force")
    assert forced.rc == 0 and forced.json["result"] == "converged", forced.stdout
    assert project.once().rc == 4
    history = host.read("/var/lib/reconciler/choiros/history.jsonl").decode()
    kinds = [json.loads(line).get("kind") for line in history.splitlines()]
    assert kinds.count("pause") == 2 and kinds.count("resume") == 1
