"""When things go wrong, on a real host: a crash after every action, concurrent runs, SSH
faults, Caddy and systemd faults, hostile values and secrets. Each test states its figure."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from tests.deploying import REPO, WATCHED_PATHS, Project, allow_faults, reset_host, serves, unit_pid
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

BACKEND = "choiros-backend.service"
FRAGMENT = "/etc/caddy/apps/choiros.caddy"
# v1 -> v2 with a unit change (a new argument) and a Caddyfile change (another health path).
CHANGED_BACKEND = "command: bin/backend --port {port} --host 127.0.0.1\nport: 8080\nhealth: /api/version"
LEFTOVER_MARKS = (".tmp-", ".candidate-", ".incoming-", ".trash-", ".flatten")


def leftovers(host: TestHost) -> list[str]:
    """Temporary files an interrupted action could leave; none may exist at a boundary."""
    state = host.tree_state(WATCHED_PATHS)
    return sorted(p for p in state if any(m in p for m in LEFTOVER_MARKS))


def halves(host: TestHost, timeout: float = 10) -> tuple[str | None, str | None]:
    """(version in the page Caddy serves, version the backend answers through Caddy).

    With restart and symlink-swap the backend switches before the Caddy reload that moves
    the frontend, so a crash in between serves two complete releases; each must be whole."""
    deadline = time.monotonic() + timeout
    page = api = None
    while time.monotonic() < deadline:
        try:
            text = host.http("/", timeout=3).text
            page = next((v for v in ("1.0.0", "2.0.0") if f"choiros {v}" in text), None)
            answer = host.http("/api/version", timeout=3)
            api = json.loads(answer.text)["version"] if answer.status == 200 else None
        except (OSError, ValueError):
            page = api = None
        if page and api:
            break
        time.sleep(0.2)
    return page, api


def wait_serving(host: TestHost, timeout: float = 10) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            version = serves(host)
        except (OSError, AssertionError, ValueError):
            version = None
        if version:
            return version
        time.sleep(0.2)
    return None


def run_on_host(
    project: Project, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`target: local`: the reconciler process runs on the test host itself."""
    host = project.host
    share = Path(host.share) / "project"
    share.mkdir(parents=True, exist_ok=True)
    for artifact in project.artifacts.values():
        target = share / artifact.name
        if artifact.is_file() and not target.exists():
            target.write_bytes(artifact.read_bytes())
    body = (project.root / "desired-state.yaml").read_text()
    body = body.replace(f"target: {host.ssh_target}", "target: local")
    for artifact in project.artifacts.values():
        body = body.replace(str(artifact), f"/share/project/{artifact.name}")
    (share / "desired-state.yaml").write_text(body)
    result = host.exec(
        [host.python, "-m", "reconciler", *args, "-f", "/share/project/desired-state.yaml"],
        env={"PYTHONPATH": "/src", **(env or {})},
        check=False,
        timeout=120,
    )
    return subprocess.CompletedProcess(args, result.rc, result.stdout, result.stderr)


# --- 1. crash at every action boundary ------------------------------------------------------


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_sigkill_after_every_action_leaves_a_serving_host_that_the_next_run_converges(
    project: Project, where: str
) -> None:
    host = project.host

    def deploy(version: str, fault: int = 0, **fields: str) -> int:
        project.write(version, **fields)
        env = {"RECONCILER_FAULT_AFTER_ACTION": str(fault)} if fault else None
        if where == "ssh":
            return project.once(env=env).rc
        return run_on_host(project, "--once", env=env).returncode

    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.0.0", backend=CHANGED_BACKEND)
    plan = project.once("--dry-run").actions()
    kinds = [a for a, _ in plan]
    assert "write" in kinds and "validate+write" in kinds and "restart" in kinds
    k = len(plan)
    survived = []
    for i in range(1, k + 1):
        reset_host(host)
        allow_faults(host)
        assert deploy("1.0.0") == 0
        rc = deploy("2.0.0", fault=i, backend=CHANGED_BACKEND)
        assert rc != 0, f"fault after action {i} did not stop the run"
        page, api = halves(host)
        assert page in ("1.0.0", "2.0.0") and api in ("1.0.0", "2.0.0"), (
            f"site down after crash {i}: {page} {api}"
        )
        assert leftovers(host) == [], f"half-written files after action {i}"
        current = host.exec(["readlink", "-e", "/opt/choiros/current"], check=False)
        assert current.rc == 0, f"dangling current after action {i}"
        assert deploy("2.0.0", backend=CHANGED_BACKEND) == 0, f"no convergence after a crash after action {i}"
        assert project.once("--dry-run").rc == 0
        assert wait_serving(host) == "2.0.0"
        cmdline = host.exec(["cat", f"/proc/{unit_pid(host, BACKEND)}/cmdline"]).stdout
        assert "--host" in cmdline, f"the unit written before crash {i} was not restarted"
        survived.append(i)
    print(f"\ncrash points survived ({where}): {len(survived)}/{k}: {[a for a, _ in plan]}")
    assert len(survived) == k


# --- 3. concurrency -------------------------------------------------------------------------


def test_concurrent_runs_never_interleave(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.4.0-slow", health="timeout: 20\ninterval: 0.1\nstable: 0.3")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [
        sys.executable,
        "-m",
        "reconciler",
        "--once",
        "--json",
        "-f",
        str(project.root / "desired-state.yaml"),
    ]
    base += ["-i", str(host.key_path), "--known-hosts", str(host.known_hosts)]
    first = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while not (host.read("/var/lib/reconciler/choiros/lock") or b"").strip():
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        t0 = time.monotonic()
        second = project.once()
        assert time.monotonic() - t0 < 5, "a run without --lock-timeout must fail at once"
        assert second.rc == 1, second.stdout
        error = second.json["error"]
        assert "holds the lock" in error
        for field in ("user=", "pid=", "since=", "client_pid="):
            assert field in error, error
        third = project.once("--lock-timeout", "30")
        assert third.rc == 0, third.stdout + third.stderr
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    runs = json.loads(project.reconcile("status", "--json", "-n", "50").stdout)["runs"]
    spans = sorted((r["locked_at"], r["finished_at"]) for r in runs if "locked_at" in r)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)), spans
    assert serves(host) == "2.4.0-slow"


def test_fault_points_are_ignored_unless_the_host_allows_them(project: Project) -> None:
    """A production host ignores the tests' fault points, whatever the environment says."""
    project.write("1.0.0")
    run = project.once(env={"RECONCILER_FAULT_AFTER_ACTION": "2"})
    assert run.rc == 0, run.stderr
    assert serves(project.host) == "1.0.0"


def test_lock_of_a_killed_run_is_recovered(project: Project) -> None:
    project.write("1.0.0")
    allow_faults(project.host)
    assert project.once(env={"RECONCILER_FAULT_AFTER_ACTION": "2"}).rc != 0
    run = project.once()  # no --lock-timeout: the dead holder's lock must already be free
    assert run.rc == 0, run.stdout
    assert serves(project.host) == "1.0.0"


# --- 4. SSH faults ---------------------------------------------------------------------------


def test_unreachable_host(project: Project) -> None:
    project.write("1.0.0")
    run = project.once("--target", "ssh://root@127.0.0.1:1")
    assert run.rc == 1 and "cannot reach 127.0.0.1:1" in run.json["error"]


def test_refused_auth(project: Project, tmp_path: Path) -> None:
    project.write("1.0.0")
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    before = project.host.tree_state(WATCHED_PATHS)
    env = dict(os.environ, PYTHONPATH=str(REPO), SSH_AUTH_SOCK="")
    cmd = [
        sys.executable,
        "-m",
        "reconciler",
        "--once",
        "--json",
        "-f",
        str(project.root / "desired-state.yaml"),
    ]
    cmd += ["-i", str(stranger), "--known-hosts", str(project.host.known_hosts)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=tmp_path)
    assert run.returncode == 1 and "refused authentication" in json.loads(run.stdout)["error"]
    assert project.host.tree_state(WATCHED_PATHS) == before


def test_changed_and_unknown_host_keys(project: Project, tmp_path: Path) -> None:
    project.write("1.0.0")
    host = project.host
    wrong = tmp_path / "known_wrong"
    other = paramiko.RSAKey.generate(2048)
    wrong.write_text(f"{host.address} ssh-rsa {other.get_base64()}\n")
    forged = project.reconcile("--once", "--json", known_hosts=wrong)
    assert forged.rc == 1 and "CHANGED" in json.loads(forged.stdout)["error"]

    empty = tmp_path / "known_empty"
    empty.write_text("")
    unknown = project.reconcile("--once", "--json", known_hosts=empty)
    assert unknown.rc == 1 and "unknown" in json.loads(unknown.stdout)["error"]
    assert "ssh-keyscan" in json.loads(unknown.stdout)["error"]

    trusted = project.reconcile("--once", "--json", "--accept-new-host-key", known_hosts=empty)
    assert trusted.rc == 0, trusted.stdout
    assert host.address in empty.read_text()


def test_connection_cut_during_apply(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.0.0", backend=CHANGED_BACKEND)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "reconciler", "--once", "-f", str(project.root / "desired-state.yaml")]
    cmd += ["-i", str(host.key_path), "--known-hosts", str(host.known_hosts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip().startswith("ok 2/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    page, api = halves(host)
    assert page in ("1.0.0", "2.0.0") and api in ("1.0.0", "2.0.0")
    time.sleep(1)  # the host side notices the cut and stops at the next action boundary
    assert leftovers(host) == []
    run = project.once()
    assert run.rc == 0, run.stdout
    assert project.once("--dry-run").rc == 0 and serves(host) == "2.0.0"


# --- 5. Caddy and systemd faults --------------------------------------------------------------


def test_invalid_caddyfile_never_goes_live(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    live = host.read(FRAGMENT)
    project.write("1.0.0", proxy='site: ":99999"')
    run = project.once()
    assert run.rc == 1 and "caddy refused the configuration" in run.json["error"]
    assert host.read(FRAGMENT) == live
    assert serves(host) == "1.0.0" and leftovers(host) == []


def test_reload_refused_by_caddy_keeps_the_old_config_serving(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    live = host.read(FRAGMENT)
    project.write("1.0.0", proxy='site: ":22"')  # valid syntax, but sshd holds the port
    run = project.once()
    assert run.rc == 1, run.stdout
    assert "Caddy refused to load" in run.json["error"]
    assert host.read(FRAGMENT) == live, "the refused config stayed on disk"
    assert serves(host) == "1.0.0"
    project.write("1.0.0")
    assert project.once().rc == 0 and project.once("--dry-run").rc == 0


def test_unit_that_fails_to_start_is_reported_with_its_journal(project: Project) -> None:
    # A program of the host, not of the release: one the release lacks is refused before upload.
    project.write("1.0.0", backend="command: /usr/local/bin/no-such-program --port {port}\nport: 8080")
    run = project.once()
    assert run.rc == 1
    error = run.json["error"]
    assert "last journal lines of choiros-backend.service" in error
    assert "no-such-program" in error


# --- 6. injection and secrets -------------------------------------------------------------------

HOSTILE_VALUES = {
    "SUBST": "$(touch /tmp/pwned-subst)",
    "BACKTICK": "`touch /tmp/pwned-tick`",
    "QUOTES": "'; touch /tmp/pwned-quote; echo '\"",
    "BACKSLASH": "a\\b\\\\c\\",
    "PERCENT": "100%h %n",
    "DOLLAR": "$HOME ${PATH} $$",
    "UNICODE": "caf\u00e9 \u2603",
}


def test_hostile_env_values_reach_the_process_literally(project: Project) -> None:
    host = project.host
    env_yaml = "\n".join(f"{k}: {json.dumps(v)}" for k, v in HOSTILE_VALUES.items())
    # `$$` in YAML text means a literal `$` in reconcile's ${} syntax; write each value as {value: ...}
    env_yaml = "\n".join(f"{k}: {{value: {json.dumps(v)}}}" for k, v in HOSTILE_VALUES.items())
    project.write("1.0.0", env="DATABASE_PATH: /var/lib/choiros/choiros.db\n" + env_yaml)
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    environ = host.exec(["cat", f"/proc/{unit_pid(host, BACKEND)}/environ"]).stdout.split("\0")
    seen = dict(item.split("=", 1) for item in environ if "=" in item)
    for key, value in HOSTILE_VALUES.items():
        assert seen.get(key) == value, (key, seen.get(key), value)
    pwned = host.exec(["bash", "-c", "ls /tmp/pwned-* 2>/dev/null | wc -l"]).stdout.strip()
    assert pwned == "0"
    assert project.once("--dry-run").rc == 0


def test_secret_values_appear_only_in_the_environment_file(project: Project) -> None:
    host = project.host
    token = "tok-" + secrets.token_hex(12)
    rotated = "tok-" + secrets.token_hex(12)
    env = "DATABASE_PATH: /var/lib/choiros/choiros.db\nAPI_TOKEN: ${DEPLOY_API_TOKEN}"
    project.write("1.0.0", env=env)
    outputs = []
    for value, flags in ((token, ["--json"]), (rotated, ["-v"]), (rotated, ["--dry-run", "--json"])):
        run = project.reconcile("--once", *flags, env={"DEPLOY_API_TOKEN": value})
        assert run.rc == 0, run.stdout + run.stderr
        outputs += [run.stdout, run.stderr]
    status = project.reconcile("status", "--json")
    outputs += [status.stdout, status.stderr]
    text = "\n".join(outputs)
    assert token not in text and rotated not in text
    assert "API_TOKEN (secret)" in text
    files = host.exec(
        [
            "bash",
            "-c",
            "grep -rl -e "
            + token
            + " -e "
            + rotated
            + " /var/lib/reconciler /etc/systemd/system /etc/caddy /opt/choiros /etc/choiros || true",
        ]
    ).stdout.split()
    # The environment file, and the last good states (which keep it, for a rollback to restore
    # the configuration too) in the state folder, which only root can enter.
    assert sorted(files) == ["/etc/choiros/backend.env", "/var/lib/reconciler/choiros/good.json"], files
    modes = host.exec(
        [
            "stat",
            "-c",
            "%a",
            "/etc/choiros/backend.env",
            "/var/lib/reconciler/choiros/good.json",
            "/var/lib/reconciler/choiros",
        ]
    ).stdout.split()
    assert modes == ["640", "600", "700"]


def test_a_truncated_state_file_stops_the_run_with_its_name_and_what_to_do(project: Project) -> None:
    """A truncated quarantine.json once ended the run in a traceback; now it is named, with
    what to do, and nothing is changed until it is dealt with."""
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    path = "/var/lib/reconciler/choiros/quarantine.json"
    host.write(path, b'{"0123456789abcdef": {"version": "2.0')
    project.write("2.0.0")
    before = host.tree_state(WATCHED_PATHS)
    run = project.once()
    assert run.rc == 1, run.stdout
    error = run.json["error"]
    assert path in error and "not valid JSON" in error and "Move it away and run again" in error
    assert "Traceback" not in run.stdout + run.stderr
    assert host.tree_state(WATCHED_PATHS) == before
    status = project.reconcile("status")
    assert status.rc == 0 and f"problem: {path}" in status.stdout, status.stdout
    host.exec(["rm", path])
    assert project.once().rc == 0 and serves(host) == "2.0.0"
