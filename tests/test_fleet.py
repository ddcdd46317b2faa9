"""Several real hosts at once: a fleet deploy, a failure budget, --limit, an unreachable host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploying import REPO, RESET_SCRIPT, WATCHED_PATHS, serves, serves_once_settled
from tests.scraping import free_port, scrape, value
from tests.testhost import TestHost, boot_many

pytestmark = pytest.mark.testhost

NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[TestHost]]:
    with boot_many(3) as hosts:
        yield hosts


class Fleet:
    def __init__(self, hosts: list[TestHost], artifacts: dict[str, Path], root: Path) -> None:
        self.hosts = dict(zip(NAMES, hosts, strict=True))
        self.artifacts = artifacts
        self.root = root
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("".join(h.known_hosts.read_text() for h in hosts))
        for host in hosts:
            host.exec(["bash", "-c", RESET_SCRIPT], timeout=60)

    def write(self, version: str, *, extra_hosts: str = "", rollout: str = "") -> None:
        targets = "".join(f"  - {{target: {h.ssh_target}, name: {n}}}\n" for n, h in self.hosts.items())
        (self.root / "desired-state.yaml").write_text(
            f"""app: choiros
target:
{targets}{extra_hosts}release:
  version: "{version}"
  source: {self.artifacts[version]}
backend:
  command: bin/backend --port {{port}}
  port: 8080
health: {{timeout: 4, interval: 0.1, stable: 0.3}}
env:
  DATABASE_PATH: /var/lib/choiros/choiros.db
{rollout}"""
        )

    def reconcile(
        self, *args: str, command: tuple[str, ...] = ("--once",)
    ) -> tuple[int, dict[str, Any], str]:
        cmd = [
            sys.executable,
            "-m",
            "reconciler",
            *command,
            "--json",
            *args,
            "-f",
            str(self.root / "desired-state.yaml"),
        ]
        for host in self.hosts.values():
            cmd += ["-i", str(host.key_path)]
        cmd += ["--known-hosts", str(self.known_hosts)]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            check=False,
            timeout=180,
        )
        return proc.returncode, json.loads(proc.stdout), proc.stderr

    def serving(self) -> dict[str, str | None]:
        return {n: serves(h) for n, h in self.hosts.items()}

    def serving_while_it_converges(self) -> dict[str, str | None]:
        return {n: serves_once_settled(h) for n, h in self.hosts.items()}


@pytest.fixture
def fleet_project(fleet: list[TestHost], artifacts: dict[str, Path], tmp_path: Path) -> Fleet:
    return Fleet(fleet, artifacts, tmp_path)


def test_fleet_deploy_converges_every_host_in_batches(fleet_project: Fleet) -> None:
    f = fleet_project
    f.write("1.0.0")
    t0 = time.monotonic()
    rc, out, err = f.reconcile()
    took = time.monotonic() - t0
    assert rc == 0, err
    assert out["result"] == "converged" and out["batches"] == [["a"], ["b"], ["c"]]
    assert {n: h["result"] for n, h in out["hosts"].items()} == dict.fromkeys(NAMES, "converged")
    assert f.serving() == dict.fromkeys(NAMES, "1.0.0")
    rc, out, _ = f.reconcile("--dry-run")
    assert rc == 0 and all(h["actions"] == [] for h in out["hosts"].values())

    f.write("2.0.0", rollout="rollout: {max_unavailable: 2}\n")
    rc, out, err = f.reconcile()
    assert rc == 0, err
    assert out["batches"] == [["a", "b"], ["c"]]
    assert f.serving() == dict.fromkeys(NAMES, "2.0.0")
    print(f"\nfirst fleet deploy of 3 hosts in batches of 1: {took:.1f} s")


def test_a_failing_host_stops_the_rollout_and_leaves_the_fleet_serving(fleet_project: Fleet) -> None:
    f = fleet_project
    f.write("1.0.0")
    assert f.reconcile()[0] == 0
    # Host b already holds a broken 2.0.0 (as after a bad disk or a tampered upload): it will
    # not be uploaded again, and it fails its health gate there only.
    bad = f.artifacts["2.1.0-bad"]
    b = f.hosts["b"]
    b.exec(["mkdir", "-p", "/opt/choiros/releases/2.0.0"])
    subprocess.run(["tar", "-xzf", str(bad), "-C", str(b.root) + "/opt/choiros/releases/2.0.0"], check=True)
    b.write("/opt/choiros/releases/2.0.0/VERSION", b"2.0.0\n")
    f.write("2.0.0")
    rc, out, _ = f.reconcile()
    results = {n: h["result"] for n, h in out["hosts"].items()}
    assert rc == 3, out
    assert results == {"a": "converged", "b": "rolled_back", "c": "not_reached"}
    assert out["stopped"] is True
    assert {n: h["serving"] for n, h in out["hosts"].items()} == {"a": "2.0.0", "b": "1.0.0", "c": "1.0.0"}
    assert f.serving() == {"a": "2.0.0", "b": "1.0.0", "c": "1.0.0"}
    assert all(h["serving_since"] for h in out["hosts"].values()), out["hosts"]

    # Next run: b's 2.0.0 is quarantined; its entry still says what it serves, and since when.
    rc, out, _ = f.reconcile()
    b_entry = out["hosts"]["b"]
    assert rc == 3 and b_entry["result"] == "quarantined", out
    assert b_entry["serving"] == "1.0.0" and b_entry["serving_since"], b_entry
    # b's backend stopped by hand: the quarantined run brings it back to its last good state,
    # and says so (it used to fail verifying against the quarantined configuration).
    b.exec(["systemctl", "stop", "choiros-backend.service"])
    rc, out, err = f.reconcile()
    b_entry = out["hosts"]["b"]
    assert b_entry["result"] == "quarantined" and b_entry["applied"], (b_entry, err)
    assert b_entry["serving"] == "1.0.0" and serves(b) == "1.0.0"
    assert "brought back to its last good state" in b_entry["error"]


def test_failure_budget_lets_the_rollout_continue(fleet_project: Fleet) -> None:
    f = fleet_project
    f.write("1.0.0")
    assert f.reconcile()[0] == 0
    bad = f.artifacts["2.1.0-bad"]
    a = f.hosts["a"]
    a.exec(["mkdir", "-p", "/opt/choiros/releases/2.0.0"])
    subprocess.run(["tar", "-xzf", str(bad), "-C", str(a.root) + "/opt/choiros/releases/2.0.0"], check=True)
    a.write("/opt/choiros/releases/2.0.0/VERSION", b"2.0.0\n")
    f.write("2.0.0", rollout="rollout: {max_failed: 1}\n")
    rc, out, _ = f.reconcile()
    assert rc == 3
    assert {n: h["result"] for n, h in out["hosts"].items()} == {
        "a": "rolled_back",
        "b": "converged",
        "c": "converged",
    }
    assert f.serving() == {"a": "1.0.0", "b": "2.0.0", "c": "2.0.0"}


def test_rollback_by_hand_goes_back_in_batches_on_the_limited_hosts(fleet_project: Fleet) -> None:
    f = fleet_project
    for version in ("1.0.0", "2.0.0"):
        f.write(version)
        assert f.reconcile()[0] == 0
    c_before = f.hosts["c"].tree_state(WATCHED_PATHS)
    rc, out, err = f.reconcile("--limit", "a,b", "--reason", "INC-9", command=("rollback",))
    assert rc == 0, err
    assert out["result"] == "held" and out["batches"] == [["a"], ["b"]], out
    assert f.serving() == {"a": "1.0.0", "b": "1.0.0", "c": "2.0.0"}
    assert f.hosts["c"].tree_state(WATCHED_PATHS) == c_before, "--limit was not respected"
    # The whole fleet's next run: the held hosts stay, and say so (exit 4); c has nothing to do.
    rc, out, _ = f.reconcile()
    assert rc == 4 and {n: h["result"] for n, h in out["hosts"].items()} == {
        "a": "held",
        "b": "held",
        "c": "noop",
    }
    # Without VERSION the hosts must agree on where to go: a and b (held) have nothing left.
    before = {n: h.tree_state(WATCHED_PATHS) for n, h in f.hosts.items()}
    rc, out, err = f.reconcile(command=("rollback",))
    assert rc == 1 and "a: nothing to roll back to" in err and "nothing was changed" in err, err
    assert {n: h.tree_state(WATCHED_PATHS) for n, h in f.hosts.items()} == before
    # A release one host cannot go back to stops the rollback before any host changes.
    f.hosts["b"].exec(["bash", "-c", "rm -rf /opt/choiros/releases/2.0.0"])
    before = {n: h.tree_state(WATCHED_PATHS) for n, h in f.hosts.items()}
    rc, out, err = f.reconcile("2.0.0", command=("rollback",))
    assert rc == 1 and out["hosts"]["b"]["result"] == "failed" and "2.0.0" in out["hosts"]["b"]["error"], out
    assert {n: h.tree_state(WATCHED_PATHS) for n, h in f.hosts.items()} == before


def test_limit_touches_only_the_named_host(fleet_project: Fleet) -> None:
    f = fleet_project
    f.write("1.0.0")
    assert f.reconcile()[0] == 0
    before = {n: f.hosts[n].tree_state(WATCHED_PATHS) for n in ("b", "c")}
    f.write("2.0.0")
    rc, out, err = f.reconcile("--limit", "a")
    assert rc == 0, err
    assert list(out["hosts"]) == ["a"]
    assert f.serving() == {"a": "2.0.0", "b": "1.0.0", "c": "1.0.0"}
    assert {n: f.hosts[n].tree_state(WATCHED_PATHS) for n in ("b", "c")} == before
    rc, out, _ = f.reconcile("--limit", "nosuch")
    assert rc == 1 and "neither a host nor a group" in out["error"]


def test_an_unreachable_host_is_reported_while_the_others_converge(fleet_project: Fleet) -> None:
    f = fleet_project
    ghost = "  - {target: ssh://root@127.0.0.1:1, name: ghost}\n"
    f.write("1.0.0", extra_hosts=ghost, rollout="rollout: {max_failed: 1}\n")
    rc, out, _ = f.reconcile()
    assert rc == 1
    assert out["hosts"]["ghost"]["result"] == "failed"
    assert "cannot reach 127.0.0.1:1" in out["hosts"]["ghost"]["error"]
    assert {n: out["hosts"][n]["result"] for n in NAMES} == dict.fromkeys(NAMES, "converged")
    assert f.serving() == dict.fromkeys(NAMES, "1.0.0")


def test_watch_keeps_converging_the_fleet_around_an_unreachable_host(fleet_project: Fleet) -> None:
    f = fleet_project
    ghost = "  - {target: ssh://root@127.0.0.1:1, name: ghost}\n"
    f.write("1.0.0", extra_hosts=ghost)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "reconciler",
        "--watch",
        "--interval",
        "1",
        "--metrics-listen",
        f"127.0.0.1:{port}",
        "-f",
        str(f.root / "desired-state.yaml"),
    ]
    for host in f.hosts.values():
        cmd += ["-i", str(host.key_path)]
    cmd += ["--known-hosts", str(f.known_hosts)]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        deadline = time.monotonic() + 40
        while f.serving_while_it_converges() != dict.fromkeys(NAMES, "1.0.0"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.3)
        assert f.serving() == dict.fromkeys(NAMES, "1.0.0")
        time.sleep(5)
        # Metrics per host: each converged once, the unreachable one only failed.
        m = scrape(port)
        for name in NAMES:
            assert value(m, "reconciler_passes_total", host=name, result="converged") == 1
            assert value(m, "reconciler_serving_info", host=name, release="1.0.0") == 1
        assert value(m, "reconciler_failures_total", host="ghost") >= 1
        assert value(m, "reconciler_last_success_timestamp_seconds", host="ghost") == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    ghost_failures = [e for e in events if e.get("event") == "pass failed" and e.get("host") == "ghost"]
    assert 1 <= len(ghost_failures) <= 4, "the unreachable host must be retried with backoff"
    assert [e["retry_in_s"] for e in ghost_failures] == sorted(
        e["retry_in_s"] for e in ghost_failures
    ) or len(ghost_failures) == 1
