"""The pause as the agent keeps it, run in-process against a temporary state folder: who,
when and why are recorded under the lock, every observation reports it (so a plan made
before it is stale), an apply with actions is refused while it holds unless forced, and
pause and resume are written to the host's history. Runs on real hosts are in
tests/test_operations.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.agent.main import handle
from reconciler.agent.protocol import PROTOCOL
from reconciler.observe.snapshot import pause_of


def request(op: str, **fields: Any) -> dict[str, Any]:
    answer = handle({"op": op, "protocol": PROTOCOL, **fields}, None, lambda e: None)
    assert answer["event"] in ("result", "error"), answer
    return answer


def observe(state: Path) -> dict[str, Any]:
    spec = {"state": str(state), "releases": str(state / "releases"), "files": [], "links": [], "units": []}
    return request("observe", observe=spec)["snapshot"]


def pause(state: Path, reason: str | None) -> dict[str, Any]:
    return request(
        "pause",
        state=str(state),
        pause=None if reason is None else {"by": "alice@laptop", "reason": reason},
        holder={"user": "alice@laptop"},
        lock_timeout=1,
    )


def apply(state: Path, victim: Path, *, force: bool = False) -> dict[str, Any]:
    spec = {"state": str(state), "releases": str(state / "releases"), "files": [], "links": [], "units": []}
    return request(
        "apply",
        observe=spec,
        actions=[{"kind": "remove_file", "path": str(victim), "backup": False}],
        lock_timeout=1,
        holder={"user": "t"},
        force=force or None,
    )


def test_pause_is_recorded_observed_enforced_and_resumed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    victim = tmp_path / "hand-fix"
    victim.write_text("fixed by hand")
    before = observe(state)
    assert before["state"]["paused"] == {}

    answer = pause(state, "incident 42: hand fix on the Caddyfile")
    assert answer["before"] is None
    recorded = answer["after"]
    assert (
        recorded["by"] == "alice@laptop" and recorded["reason"].startswith("incident 42") and recorded["at"]
    )
    assert (state / "paused.json").stat().st_mode & 0o777 == 0o600

    during = observe(state)
    assert pause_of(during["state"]["paused"]) is not None
    assert during["fingerprint"] != before["fingerprint"], "a plan made before the pause must be stale"

    refused = apply(state, victim)
    assert refused["event"] == "error" and refused["code"] == "paused"
    assert "paused by alice@laptop" in refused["error"] and "incident 42" in refused["error"]
    assert victim.exists(), "nothing may run while paused"

    forced = apply(state, victim, force=True)
    assert forced["event"] == "result" and forced["ok"], forced
    assert not victim.exists()

    resumed = pause(state, None)
    assert resumed["before"]["reason"].startswith("incident 42") and resumed["after"] is None
    assert observe(state)["state"]["paused"] == {}
    assert pause(state, None)["before"] is None  # resuming twice is harmless

    kinds = [json.loads(line).get("kind") for line in (state / "history.jsonl").read_text().splitlines()]
    assert kinds == ["pause", None, "resume"]  # the forced apply is recorded without a kind


def test_notes_are_appended_to_the_history(tmp_path: Path) -> None:
    state = tmp_path / "state"
    note = {
        "kind": "notify",
        "event": "deploy",
        "webhook": "webhook 1 (hooks.example)",
        "ok": True,
        "attempts": 1,
    }
    answer = request("note", state=str(state), records=[note], lock_timeout=1)
    assert answer["ok"]
    (line,) = (state / "history.jsonl").read_text().splitlines()
    assert json.loads(line) | {"finished": "x"} == note | {"finished": "x"}
