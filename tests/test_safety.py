"""Safety, as properties over a model host that fails: for any sequence of desired states,
failing releases, failing configurations, crash loops and runs killed at any step,

- Caddy is pointed only at a process with a matching gate record (blue-green: at every
  Caddy load; restart and symlink-swap restart in place, so: whenever a run has ended);
- no healthy configuration is ever quarantined;
- once a good state was ever recorded, every run that completes (its plan done, or rolled
  back) leaves a gated, healthy state serving, and a run that failed or was interrupted (its
  client gone) leaves one serving if there was one before;
- blue-green never restarts the colour Caddy routes to;
- the planner never asks the agent for something it refuses (Caddy to an ungated process,
  a good state with an ungated process).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from reconciler.plan import config
from reconciler.plan.planner import plan
from reconciler.render import units
from reconciler.spec.model import DesiredState
from tests.model_host import ModelHost, Process
from tests.test_planner import desired, empty_host

BAD_RELEASE = "3.0.0"  # fails its health gate
CRASHY_RELEASE = "4.0.0"  # passes its gate, then crashes when time passes
VERSIONS = ["1.0.0", "2.0.0", BAD_RELEASE, CRASHY_RELEASE]
MODES = ["ok", "broken"]  # MODE=broken: a configuration that makes any release fail its gate


def healthy(p: Process) -> bool:
    return p.release != BAD_RELEASE and p.env.get("MODE") != "broken"


def crashy(p: Process) -> bool:
    return p.release == CRASHY_RELEASE


@dataclass(frozen=True)
class Step:
    version: str
    mode: str
    kill_at: int | None  # the agent dies before this step of the apply
    fail_at: int | None  # this action fails for a reason of the host's (not a gate)
    cancel_at: int | None  # the client goes away before this action (SIGKILL, a cut link)
    tick: bool  # time passes after the run (crash loops show)
    frontend: str = "1"  # the frontend image's tag, when the frontend has its own image


points = st.one_of(st.none(), st.integers(0, 14))
steps = st.builds(
    Step,
    st.sampled_from(VERSIONS),
    st.sampled_from(MODES),
    points,
    points,
    points,
    st.booleans(),
    st.sampled_from(["1", "2", "3"]),
)


def state(strategy: str, image: str, idle: str, step: Step) -> DesiredState:
    """image: "" (a release folder), "image" (the release's image serves the frontend too) or
    "frontend" (the frontend has its own image, whose tag changes from step to step)."""
    return desired(
        step.version,
        strategy=strategy,
        image=bool(image),
        idle=idle,
        env={"DATABASE_PATH": "/var/lib/choiros/choiros.db", "MODE": step.mode},
        keep=2,
        frontend_image=f"localhost/choiros-frontend:{step.frontend}" if image == "frontend" else None,
    )


def is_healthy(d: DesiredState) -> bool:
    return d.release.version != BAD_RELEASE and {v.name: v.value for v in d.env}.get("MODE") != "broken"


@settings(max_examples=1000, deadline=None)
@example(  # found by this property: a fragment written, Caddy killed before loading it, then a failure
    "blue-green",
    "",
    "warm",
    [
        Step("2.0.0", "ok", None, None, None, False),
        Step("1.0.0", "ok", None, None, None, False),
        Step("1.0.0", "broken", None, None, None, False),
        Step("2.0.0", "ok", 7, None, None, False),
        Step("2.0.0", "broken", None, None, None, False),
    ],
)
@given(
    st.sampled_from(["restart", "symlink-swap", "blue-green"]),
    st.sampled_from(["", "image", "frontend"]),
    st.sampled_from(["warm", "stop"]),
    st.lists(steps, min_size=1, max_size=7),
)
def test_safety_under_failures_and_interruptions(
    strategy: str, image: str, idle: str, run: list[Step]
) -> None:
    host = ModelHost(empty_host(), healthy=healthy, crashy=crashy)
    health_of: dict[str, bool] = {}
    ever_good = False
    for number, step in enumerate(run):
        d = state(strategy, image, idle, step)
        health_of[config.fingerprint(d)] = is_healthy(d)
        p = plan(d, host.snapshot())
        assert not p.blockers, p.blockers
        live = {u: host.units[u].invocation for u in host.routed_units() if host.gated(u)}
        was_safe = bool(host.routed_units()) and all(host.gated(u) for u in host.routed_units())
        result = host.run(p, kill_at=step.kill_at, fail_at=step.fail_at, cancel_at=step.cancel_at)
        event(f"run {result}" + (" (quarantined)" if p.quarantined else ""))
        where = f"step {number} ({step}) ended {result}"
        assert not host.refusals, f"{where}: the agent refused {host.refusals}"
        if strategy == "blue-green":
            assert not host.caddy_violations, f"{where}: {host.caddy_violations}"
            for unit, invocation in live.items():  # the live colour is never restarted
                now = host.units[unit]
                assert not now.is_active or now.invocation == invocation, f"{where}: {unit} was restarted"
        for key, entry in host.quarantine.items():
            assert health_of.get(key) is False, f"{where}: healthy {entry.version} ({key}) was quarantined"
        ever_good = ever_good or bool(host.good)
        if result in ("ok", "rolled_back") and ever_good or result in ("failed", "cancelled") and was_safe:
            serving = host.routed_units()
            assert serving, f"{where}: nothing serves"
            for unit in serving:
                assert host.gated(unit), f"{where}: {unit} serves without a gate record"
                assert healthy(host.process(unit)), f"{where}: {unit} serves an unhealthy process"
        if (
            result == "ok"
            and step.fail_at is None
            and p.quarantined is None
            and is_healthy(d)
            and step.version != CRASHY_RELEASE
        ):
            again = plan(d, host.snapshot())
            assert not again.actions, f"{where}: not converged: {[a.summary() for a in again.actions]}"
        if step.tick:
            host.tick()


def test_a_failing_env_change_quarantines_that_configuration_only() -> None:
    """The healthy release underneath is never quarantined, and restoring the file is simply
    the earlier configuration again: it converges with no flag."""
    host = ModelHost(empty_host(), healthy=healthy)
    good = desired("1.0.0", env={"MODE": "ok"})
    broken = desired("1.0.0", env={"MODE": "broken"})
    assert host.run(plan(good, host.snapshot())) == "ok"
    p = plan(broken, host.snapshot())
    assert host.run(p) == "rolled_back"
    assert list(host.quarantine) == [config.fingerprint(broken)]
    assert host.process("choiros-backend.service").env["MODE"] == "ok", "the old environment is back"
    assert host.gated("choiros-backend.service")
    assert plan(broken, host.snapshot()).quarantined is not None
    again = plan(good, host.snapshot())
    assert not again.actions and again.quarantined is None


def test_killed_mid_gate_the_next_run_gates_and_rolls_back() -> None:
    """The agent died between the restart and the gate: the next run finds a process with no
    gate record and gates it; it fails, so the agent rolls back to the recorded good state."""
    host = ModelHost(empty_host(), healthy=healthy)
    assert host.run(plan(desired("1.0.0"), host.snapshot())) == "ok"
    p = plan(desired(BAD_RELEASE), host.snapshot())
    gate = next(i for i, a in enumerate(p.actions) if a.summary()["action"] == "health-check")
    assert host.run(p, kill_at=gate) == "killed"
    backend = host.units["choiros-backend.service"]
    assert backend.environ[units.RELEASE_VAR] == BAD_RELEASE and not host.gated(backend.name)
    nxt = plan(desired(BAD_RELEASE), host.snapshot())
    assert [a.summary()["action"] for a in nxt.actions] == [
        "health-check",
        "validate+write",
        "reload",
        "record-good",
    ]
    assert "no passed health gate" in nxt.actions[0].reason
    assert host.run(nxt) == "rolled_back"
    assert host.units["choiros-backend.service"].environ[units.RELEASE_VAR] == "1.0.0"
    assert host.gated("choiros-backend.service")
