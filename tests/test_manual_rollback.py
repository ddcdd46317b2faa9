"""`reconcile rollback` as pure functions over a model host: which recorded good state it goes
to, the plan that goes there, and the planner's hold rule, with a hypothesis property that a
held host is never moved away from the held state by any plan while the desired file still
names what it named. The agent's side of the hold (its record, resume, the sizes request)
runs in-process against a temporary state folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.agent.main import handle
from reconciler.agent.protocol import PROTOCOL
from reconciler.observe.snapshot import CADDY_UNIT, GoodState, hold_of
from reconciler.plan import identity, manual
from reconciler.plan.actions import (
    CheckHealth,
    LoadCaddy,
    RecordHold,
    RemoveFile,
    SetSymlink,
    Systemctl,
    WriteCaddyfile,
    WriteFile,
)
from reconciler.plan.inventory import inventory
from reconciler.plan.planner import plan
from reconciler.spec.model import DesiredState
from tests.model_host import ModelHost, file_state
from tests.test_planner import desired, empty_host

BROKEN = "2.6.0"  # passes its gate; bad for users (the model cannot tell, as a gate cannot)
REQUEST = manual.Request(None, "alice@laptop", "INC-7")


def deployed(strategy: str, *versions: str, host: ModelHost | None = None) -> ModelHost:
    host = host or ModelHost(empty_host())
    for version in versions:
        assert host.run(plan(desired(version, strategy=strategy), host.snapshot())) == "ok"
    return host


def serving_release(host: ModelHost) -> str | None:
    routed = host.routed_units()
    return host.process(routed[0]).release if routed else None


def rolled_back(strategy: str, *versions: str, version: str | None = None) -> tuple[ModelHost, DesiredState]:
    host = deployed(strategy, *versions)
    d = desired(versions[-1], strategy=strategy)
    choice = manual.choose(d, host.snapshot(), version)
    assert choice.target is not None, choice.error
    assert host.run(manual.plan_rollback(d, host.snapshot(), choice.target, REQUEST)) == "ok"
    return host, d


# --- choosing the target ---------------------------------------------------------------------


def test_without_a_version_it_goes_to_the_newest_good_state_that_does_not_serve() -> None:
    host = deployed("symlink-swap", "1.0.0", "2.0.0", "3.0.0")
    choice = manual.choose(desired("3.0.0"), host.snapshot(), None)
    assert choice.target is not None and choice.target.version == "2.0.0"


def test_a_named_release_goes_to_its_good_state() -> None:
    host = deployed("symlink-swap", "1.0.0", "2.0.0", "3.0.0")
    choice = manual.choose(desired("3.0.0"), host.snapshot(), "1.0.0")
    assert choice.target is not None and choice.target.version == "1.0.0"


def test_nothing_to_go_back_to_says_what_there_is() -> None:
    empty = manual.choose(desired("1.0.0"), empty_host(), None)
    assert empty.target is None and "no good state is recorded on this host yet" in str(empty.error)
    host = deployed("symlink-swap", "1.0.0")
    one = manual.choose(desired("1.0.0"), host.snapshot(), None)
    assert one.target is None and "1.0.0 serves now" in str(one.error)


def test_a_release_not_on_the_host_or_never_good_is_refused_listing_what_can_be_gone_to() -> None:
    host = deployed("symlink-swap", "1.0.0", "2.0.0")
    missing = manual.choose(desired("2.0.0"), host.snapshot(), "0.9.0")
    assert missing.target is None
    assert "release 0.9.0 is not on the host" in str(missing.error)
    assert "It can go back to: 1.0.0" in str(missing.error)
    observed = host.snapshot()
    never = replace(observed, good=tuple(g for g in observed.good if g.version != "1.0.0"))
    refused = manual.choose(desired("2.0.0"), never, "1.0.0")
    assert "is on the host, but no good state of it is recorded" in str(refused.error)


def test_a_pruned_release_a_quarantined_configuration_or_another_strategy_is_skipped() -> None:
    host = deployed("symlink-swap", "1.0.0", "2.0.0", "3.0.0")
    observed = host.snapshot()
    d = desired("3.0.0")
    pruned = replace(observed, releases={k: v for k, v in observed.releases.items() if k != "2.0.0"})
    choice = manual.choose(d, pruned, None)
    assert choice.target is not None and choice.target.version == "1.0.0"
    assert "no longer on the host (pruned)" in str(manual.choose(d, pruned, "2.0.0").error)
    two = next(g for g in observed.good if g.version == "2.0.0")
    from reconciler.observe.snapshot import QuarantineEntry

    bad = replace(observed, quarantine={two.config: QuarantineEntry("2.0.0", "flaked", two.config)})
    assert manual.choose(d, bad, None).target.version == "1.0.0"  # type: ignore[union-attr]
    other = manual.choose(desired("3.0.0", strategy="blue-green"), observed, "2.0.0")
    assert "recorded under strategy symlink-swap" in str(other.error)


def test_while_held_a_second_rollback_goes_further_back() -> None:
    host, d = rolled_back("symlink-swap", "1.0.0", "2.0.0", "3.0.0")
    assert serving_release(host) == "2.0.0"
    again = manual.choose(d, host.snapshot(), None)
    assert again.target is not None and again.target.version == "1.0.0"
    assert host.run(manual.plan_rollback(d, host.snapshot(), again.target, REQUEST)) == "ok"
    hold = host.snapshot().hold
    assert hold is not None and hold.version == "1.0.0" and len(hold.passed) == 2
    assert "already rolled back from" in str(manual.choose(d, host.snapshot(), None).error)


# --- the plan --------------------------------------------------------------------------------


def test_blue_green_to_the_warm_colour_is_a_checked_switch_and_nothing_restarts() -> None:
    host = deployed("blue-green", "1.0.0", BROKEN)
    invocations = {
        u: host.units[u].invocation for u in ("choiros-backend-blue.service", "choiros-backend-green.service")
    }
    d = desired(BROKEN, strategy="blue-green")
    target = manual.choose(d, host.snapshot(), None).target
    assert target is not None
    p = manual.plan_rollback(d, host.snapshot(), target, REQUEST)
    kinds = [a.summary()["action"] for a in p.actions]
    assert not any(isinstance(a, (Systemctl, WriteFile)) for a in p.actions), kinds
    gate = next(a for a in p.actions if isinstance(a, CheckHealth))
    assert not gate.unless_gated and kinds.index("health-check") < kinds.index("reload")
    assert kinds[0] == "hold" and "record-good" in kinds
    assert p.rollback is not None and p.rollback.to == BROKEN
    assert host.run(p) == "ok" and serving_release(host) == "1.0.0"
    assert {u: host.units[u].invocation for u in invocations} == invocations


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["restart", "symlink-swap", "blue-green"]),
    st.integers(0, 12),
    st.booleans(),
)
def test_an_interrupted_rollback_leaves_the_host_back_or_held_never_half_way(
    strategy: str, at: int, killed: bool
) -> None:
    """The client gone (the agent then undoes what it started) or the agent killed, at any
    step: the host serves what it served, not held; or the target, held; and a next plain
    run (CI, watch mode) completes whichever it was, never bringing the bad release back
    over a hold."""
    host = deployed(strategy, "1.0.0", BROKEN)
    d = desired(BROKEN, strategy=strategy)
    target = manual.choose(d, host.snapshot(), None).target
    assert target is not None
    p = manual.plan_rollback(d, host.snapshot(), target, REQUEST)
    result = host.run(p, kill_at=at) if killed else host.run(p, cancel_at=at)
    hold = host.snapshot().hold
    if result in ("cancelled", "ok") and host.routed_units():
        assert {serving_release(host)} == ({"1.0.0"} if hold is not None else {BROKEN}), (result, hold)
    nxt = plan(d, host.snapshot())
    assert host.run(nxt) == "ok"
    routed = host.routed_units()
    assert routed and all(host.gated(u) for u in routed)
    assert serving_release(host) == ("1.0.0" if host.snapshot().hold is not None else BROKEN)


def test_a_failing_target_goes_back_to_what_served() -> None:
    host = deployed("symlink-swap", "1.0.0", BROKEN)
    host.healthy = lambda p: p.release != "1.0.0"  # 1.0.0 no longer starts (say, a migrated database)
    d = desired(BROKEN)
    target = manual.choose(d, host.snapshot(), None).target
    assert target is not None
    p = manual.plan_rollback(d, host.snapshot(), target, REQUEST)
    assert host.run(p) == "rolled_back"
    assert serving_release(host) == BROKEN and host.snapshot().hold is None
    assert not host.quarantine, "a state that passed before is not quarantined by a rollback by hand"


# --- the hold --------------------------------------------------------------------------------


def test_a_held_host_plans_nothing_a_new_file_deploys_and_ends_the_hold() -> None:
    host, d = rolled_back("symlink-swap", "1.0.0", BROKEN)
    held = plan(d, host.snapshot())
    assert held.actions == () and held.held is not None and "rolled back from 2.6.0" in held.held
    same_config = desired(BROKEN, keep=3)  # release.keep is not part of the configuration
    assert plan(same_config, host.snapshot()).held is not None
    moved = plan(desired("3.0.0"), host.snapshot())
    assert moved.held is None and isinstance(moved.actions[-1], RecordHold) and moved.actions[-1].hold is None
    assert host.run(moved) == "ok" and serving_release(host) == "3.0.0" and host.snapshot().hold is None


def test_a_revert_to_the_held_release_ends_the_hold_with_nothing_else_to_do() -> None:
    host, _ = rolled_back("symlink-swap", "1.0.0", BROKEN)
    revert = plan(desired("1.0.0"), host.snapshot())
    assert [type(a) for a in revert.actions] == [RecordHold]
    assert host.run(revert) == "ok" and not plan(desired("1.0.0"), host.snapshot()).actions


def test_a_hold_whose_good_state_is_gone_is_a_blocker() -> None:
    host, d = rolled_back("symlink-swap", "1.0.0", BROKEN)
    observed = host.snapshot()
    lost = plan(d, replace(observed, good=()))
    assert lost.blockers and "`reconcile resume` ends the hold" in lost.blockers[0]


def _perturb(host: ModelHost, what: str, d: DesiredState) -> None:
    """Something a person or the machine does to a held host."""
    backend = [u for u in host.units if u.startswith("choiros-backend")]
    if what == "stop" and backend:
        host.stop(backend[0])
    elif what == "edit-env":
        path = next(p for p in host.files if p.endswith(".env") and host.files[p])
        host.files[path] = file_state((host.files[path].content or "") + "EDITED=1\n", 0o640)  # type: ignore[union-attr]
    elif what == "edit-fragment":
        fragment = "/etc/caddy/apps/choiros.caddy"
        host.files[fragment] = file_state((host.files[fragment].content or "") + "# edited by hand\n")  # type: ignore[union-attr]
    elif what == "edit-unit":
        path = next(p for p in host.files if p.endswith(".service") and host.files[p])
        host.files[path] = file_state((host.files[path].content or "") + "\n# hand edit\n")  # type: ignore[union-attr]
    elif what == "current":
        from reconciler.observe.snapshot import LinkState

        host.links["/opt/choiros/current"] = LinkState("symlink", f"releases/{d.release.version}", True)
    elif what == "caddy-down":
        host.stop(CADDY_UNIT)
    elif what == "tick":
        host.tick()


def _within_held_state(action: Any, held: GoodState) -> bool:
    """An action that only puts back the held state: its recorded files, links and units."""
    if isinstance(action, (WriteFile, WriteCaddyfile)):
        recorded = held.files.get(action.path)
        return recorded is not None and recorded.content == action.content
    if isinstance(action, RemoveFile):
        return action.path in held.files and held.files[action.path] is None
    if isinstance(action, SetSymlink):
        return held.links.get(action.path) == action.target_path
    if isinstance(action, Systemctl):
        return action.unit in held.gates and action.verb in ("start", "restart") and bool(action.unless_runs)
    if isinstance(action, CheckHealth):
        return action.unit in held.gates
    return isinstance(action, LoadCaddy) or action.summary()["action"] == "daemon-reload"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["restart", "symlink-swap", "blue-green"]),
    st.booleans(),
    st.lists(
        st.tuples(
            st.sampled_from(
                ["stop", "edit-env", "edit-fragment", "edit-unit", "current", "caddy-down", "tick", "none"]
            ),
            st.sampled_from([2, 3, 5]),  # release.keep: not part of the configuration
            st.one_of(st.none(), st.integers(0, 8)),  # the agent killed before this step
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_a_held_host_is_never_moved_away_from_the_held_state(
    strategy: str, named: bool, steps: list[tuple[str, int, int | None]]
) -> None:
    """Whatever happens to a held host, while the desired file names the configuration it
    named, every plan only puts the held state back, and every run that completes leaves it
    serving, gated."""
    host, d = rolled_back(strategy, "1.0.0", BROKEN, "3.0.0", version="1.0.0" if named else None)
    hold = host.snapshot().hold
    assert hold is not None
    held = next(g for g in host.good if g.config == hold.config)
    for what, keep, kill_at in steps:
        file = desired("3.0.0", strategy=strategy, keep=keep)
        assert identity.fingerprint(file) == hold.desired_config
        _perturb(host, what, file)
        p = plan(file, host.snapshot())
        assert p.held is not None and not p.blockers, p.blockers
        strays = [a.summary() for a in p.actions if not _within_held_state(a, held)]
        assert not strays, f"after {what}: a held host was planned away from {held.version}: {strays}"
        result = host.run(p, kill_at=kill_at)
        if result == "ok":
            routed = host.routed_units()
            assert routed and all(host.gated(u) for u in routed), f"after {what}: not serving gated"
            assert {host.process(u).release for u in routed} == {held.version}
            assert not plan(file, host.snapshot()).actions, "not converged to the held state"
        assert host.snapshot().hold == hold, "the hold changed without the file changing"


# --- what is on the host ---------------------------------------------------------------------


def test_inventory_marks_links_good_states_quarantine_and_the_pick() -> None:
    host = deployed("symlink-swap", "1.0.0", "2.0.0", "3.0.0")
    observed = host.snapshot()
    sizes = {v: {"size": 4096, "files": 3, "image_size": None} for v in observed.releases}
    table = inventory(desired("3.0.0"), observed, sizes).as_json()
    rows = {r["version"]: r for r in table["releases"]}
    assert rows["3.0.0"]["serving"] and rows["3.0.0"]["current"] and rows["2.0.0"]["previous"]
    assert table["rollback"] == "2.0.0" and rows["2.0.0"]["rollback_pick"]
    assert all(rows[v]["good"] for v in rows) and rows["1.0.0"]["size"] == 4096


# --- the agent's side ------------------------------------------------------------------------


def _request(op: str, **fields: Any) -> dict[str, Any]:
    answer = handle({"op": op, "protocol": PROTOCOL, **fields}, None, lambda e: None)
    assert answer["event"] in ("result", "error"), answer
    return answer


def _spec(state: Path) -> dict[str, Any]:
    return {"state": str(state), "releases": str(state / "releases"), "files": [], "links": [], "units": []}


def test_the_hold_is_recorded_under_the_lock_observed_and_ended_by_resume(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record = {
        "version": "1.0.0",
        "config": "c1",
        "by": "alice@laptop",
        "reason": "INC-7",
        "desired_config": "c2",
    }
    applied = _request(
        "apply",
        observe=_spec(state),
        actions=[{"kind": "record_hold", "hold": record}],
        lock_timeout=1,
        holder={"user": "t"},
    )
    assert applied["ok"], applied
    assert (state / "held.json").stat().st_mode & 0o777 == 0o600
    seen = hold_of(_request("observe", observe=_spec(state))["snapshot"]["state"]["held"])
    assert seen is not None and seen.version == "1.0.0" and seen.reason == "INC-7" and seen.at
    resumed = _request("pause", state=str(state), pause=None, holder={"user": "bob@ops"}, lock_timeout=1)
    assert resumed["held"]["version"] == "1.0.0" and resumed["before"] is None
    assert not (state / "held.json").exists()
    assert (
        _request("pause", state=str(state), pause=None, holder={"user": "b"}, lock_timeout=1)["held"] is None
    )
    kinds = [json.loads(line).get("kind") for line in (state / "history.jsonl").read_text().splitlines()]
    assert kinds == [None, "unhold"]


def test_the_releases_request_weighs_folders_without_following_links(tmp_path: Path) -> None:
    state, releases = tmp_path / "state", tmp_path / "releases"
    (releases / "1.0.0" / "bin").mkdir(parents=True)
    (releases / "1.0.0" / "bin" / "backend").write_bytes(b"x" * 10_000)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "big").write_bytes(b"y" * 100_000)
    (releases / "1.0.0" / "uploads").symlink_to(tmp_path / "shared")
    (releases / ".incoming-2.0.0-1").mkdir()
    answer = _request("releases", releases=str(releases), state=str(state), runtime=None)
    assert set(answer["releases"]) == {"1.0.0"}
    one = answer["releases"]["1.0.0"]
    assert 10_000 <= one["size"] < 100_000 and one["files"] == 1, one
    bad = _request("releases", releases=str(releases), protocol_extra=1)
    assert bad["event"] == "error" and bad["code"] == "protocol"


def test_a_record_hold_from_the_planner_round_trips_the_snapshot() -> None:
    host, _ = rolled_back("restart", "1.0.0", BROKEN)
    hold = host.snapshot().hold
    assert hold is not None and hold.origin == BROKEN and hold.by == "alice@laptop"
    assert hold.desired_version == BROKEN and hold.passed and hold.reason == "INC-7"
    raw = {**vars(hold), "passed": list(hold.passed)}
    assert hold_of(json.loads(json.dumps(raw))) == hold
    assert hold_of({"version": "1.0.0"}) is None  # a record that names no state holds nothing


def test_a_held_run_is_its_own_result_in_notifications_and_metrics() -> None:
    from reconciler.engine.metrics import Metrics
    from reconciler.engine.notify import notice
    from reconciler.engine.report import HELD, HostReport, events_of

    host, _ = rolled_back("symlink-swap", "1.0.0", BROKEN)
    hold = host.snapshot().hold
    report = HostReport(
        "choiros", "web1", "ssh://web1", HELD, BROKEN, serving="1.0.0", hold=hold, observed=True
    )
    assert events_of(report) == ["held"]
    item = notice("held", report, commit=None, dirty=False, mode="watch")
    assert item.fields["hold"] == {
        "version": "1.0.0",
        "by": "alice@laptop",
        "at": "t",
        "reason": "INC-7",
        "from": BROKEN,
    }
    assert "held at *1.0.0* by hand (alice@laptop: INC-7)" in item.text
    metrics = Metrics()
    metrics.record(report)
    assert metrics.registry.get_sample_value("reconciler_held", {"host": "web1"}) == 1
    assert (
        metrics.registry.get_sample_value("reconciler_passes_total", {"host": "web1", "result": "held"}) == 1
    )


def test_blue_green_to_a_state_whose_colour_serves_now_restarts_that_colour_in_place() -> None:
    """1.0.0 ran in blue, 2.0.0 in green, 3.0.0 in blue again: going back to 1.0.0 is blue
    restarted with 1.0.0's files (the README says so); green, warm with 2.0.0, is untouched."""
    host = deployed("blue-green", "1.0.0", "2.0.0", "3.0.0")
    green = host.units["choiros-backend-green.service"].invocation
    d = desired("3.0.0", strategy="blue-green")
    target = manual.choose(d, host.snapshot(), "1.0.0").target
    assert target is not None and set(target.gates) == {"choiros-backend-blue.service"}
    p = manual.plan_rollback(d, host.snapshot(), target, REQUEST)
    assert ("restart", "choiros-backend-blue.service") in [
        (a.summary()["action"], a.target) for a in p.actions
    ]
    assert host.run(p) == "ok" and not host.refusals
    assert (
        serving_release(host) == "1.0.0" and host.units["choiros-backend-green.service"].invocation == green
    )
    assert not plan(d, host.snapshot()).actions
