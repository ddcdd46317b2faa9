"""The chaos soak (benchmarks/chaos): how it decides that an answer came from a process without
a gate record, what it counts against the goals, and a few iterations per strategy on a real
host with the invariants it can assert there."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import plan
from benchmarks.chaos.analysis import figures, goals
from benchmarks.chaos.check import Verdict
from benchmarks.chaos.disturb import Done
from benchmarks.chaos.gatewatch import GATED, UNCERTAIN, UNGATED, GateHistory, GateWatch, Segment
from benchmarks.chaos.report import RESULTS_HEADING, update_results
from benchmarks.chaos.soak import IterationRecord, RunRecord, StrategyResult
from benchmarks.chaos.traffic import Sample
from tests.conftest import BenchRun

A, B = "a" * 32, "b" * 32


def _history() -> GateHistory:
    # Polls every 0.1 s: A gated from the start; B's record appears between the reads at 1.0
    # and 1.1; A's goes between 2.0 and 2.1; the host reboots (reads fail) from 3.0 to 3.5.
    return GateHistory(
        [
            Segment(frozenset({A}), 0.0, 0.001, 1.0, 1.001),
            Segment(frozenset({A, B}), 1.1, 1.101, 2.0, 2.001),
            Segment(frozenset({B}), 2.1, 2.101, 2.9, 2.901),
            Segment(None, 3.0, 3.001, 3.4, 3.401),
            Segment(frozenset({B}), 3.5, 3.501, 9.0, 9.001),
        ]
    )


def test_an_answer_is_ungated_only_when_every_read_around_it_saw_no_record() -> None:
    h = _history()
    assert h.classify(B, 0.5, 0.52) == UNGATED  # reads before and after saw no record of B
    assert h.classify(B, 0.95, 0.97) == UNGATED  # the read at 1.0, after its answer, saw none either
    assert h.classify(B, 1.02, 1.03) == UNCERTAIN  # between the read without B and the one with it
    assert h.classify(B, 0.95, 1.05) == UNCERTAIN
    assert h.classify(B, 1.2, 1.3) == GATED
    assert h.classify(A, 1.95, 2.05) == UNCERTAIN  # A's record went meanwhile
    assert h.classify(A, 2.2, 2.3) == UNGATED
    assert h.classify(B, 3.2, 3.3) == UNCERTAIN  # the host was rebooting: nothing known
    assert h.classify(B, 4.0, 4.1) == GATED
    assert h.classify(B, 9.5, 9.6) == UNCERTAIN  # no read after it
    assert h.ever_gated() == {A, B}
    assert h.longest_gap() == pytest.approx(0.6, abs=0.01)  # across the reboot


def test_the_watch_keeps_segments_and_reads_once_more_when_stopped() -> None:
    answers = iter([b'{"u": {"invocation": "' + A.encode() + b'"}}', b"{", None, None])
    watch = GateWatch(lambda: next(answers), 0.01)
    watch.poll()
    watch.poll()  # not JSON: a failed read, nothing known
    watch.poll()  # no file: no records
    watch.stop()  # never started: stop still reads once more
    seen = [s.seen for s in watch.history().segments]
    assert seen == [frozenset({A}), None, frozenset()] and watch.failed_polls == 1


def test_the_choices_follow_from_the_seed_and_the_strategy_alone() -> None:
    first = plan.iterations(7, "blue-green", 30, plan.Desired("1.0.0", "good", 0))
    again = plan.iterations(7, "blue-green", 30, plan.Desired("1.0.0", "good", 0))
    other = plan.iterations(7, "restart", 30, plan.Desired("1.0.0", "good", 0))
    assert first == again and first != other
    assert all(len(it.disturbances) <= 2 for it in first)
    assert any(it.desired.failing for it in first) and any(it.disturbances for it in first)
    sections = plan.Desired("1.0.0", "db-dir", 3).sections("restart", "timeout: 6")
    assert plan.BROKEN_DATABASE in sections["env"] and plan.BROKEN_DATABASE in sections["data"]
    assert "restore_on_rollback: false" in sections["data"] and 'CHAOS_SALT: "3"' in sections["env"]


def _result(strategy: str, samples: list[Sample], **extra: object) -> StrategyResult:
    it = IterationRecord(1, plan.Desired("2.1.0-bad", "good", 0), ["reboot before the run"], 1.0, 5.0)
    it.runs = [RunRecord("main", 1.0, 5.0, rc=3, result="rolled_back")]
    it.verdict = Verdict(True, "1.0.0", "choiros-backend-blue.service")
    it.done = [Done("reboot", "reboot before the run", 0.5, 0.9, "up", outage=(0.5, 0.9), booted={B})]
    result = StrategyResult(strategy, 1, iterations=[it], samples=samples, history=_history(), acknowledged=2)
    for key, value in extra.items():
        setattr(result, key, value)
    return result


def _goal(strategy: str, result: StrategyResult, what: str) -> bool | None:
    found = [g for g in goals([figures(result)]) if what in g.what]
    assert len(found) == 1, [g.what for g in goals([figures(result)])]
    return found[0].met


def test_the_goals_count_what_the_deploy_did_and_set_apart_what_a_disturbance_did() -> None:
    fine = [
        Sample("read", 1.2, 1.3, 200, invocation=A, version="1.0.0"),
        Sample("read", 0.6, 0.7, 0, error="ConnectionRefusedError"),  # during the reboot
        Sample("read", 0.5, 0.52, 200, invocation=B, version="1.0.0"),  # booted, not yet gated
    ]
    result = _result("blue-green", fine)
    f = figures(result)
    assert (f.failed, f.failed_counted, f.ungated, f.ungated_reboot) == (1, 0, 1, 1)
    assert _goal("blue-green", result, "no request answered by a process without") is True
    assert _goal("blue-green", result, "no failed request") is True
    assert _goal("blue-green", result, "at least 500") is None  # one iteration asked for

    ungated = [*fine, Sample("read", 2.2, 2.3, 200, invocation=A, version="1.0.0")]
    assert _goal("blue-green", _result("blue-green", ungated), "no request answered by a process") is False
    undecided = [*fine, Sample("read", 1.95, 2.05, 200, invocation=A, version="1.0.0")]
    assert _goal("blue-green", _result("blue-green", undecided), "no request answered by a process") is False
    # Undecided, but by a process the reboot started before any run: the reboot's, not the deploy's.
    rebooted = [*fine, Sample("read", 1.05, 1.06, 200, invocation=B, version="1.0.0")]
    assert figures(_result("blue-green", rebooted)).uncertain_reboot == 1
    assert _goal("blue-green", _result("blue-green", rebooted), "no request answered by a process") is True
    failed = [*fine, Sample("write", 4.0, 4.1, 502)]
    assert _goal("blue-green", _result("blue-green", failed), "no failed request") is False
    # With restart, a new process serving during its own gate is by design: no goal about it.
    assert not [g for g in goals([figures(_result("restart", ungated))]) if "process without" in g.what]

    lost = _result("restart", fine, lost_at_end=[(7, "chaos 1 7")])
    assert _goal("restart", lost, "no acknowledged row lost") is False
    assert _goal("restart", _result("restart", fine), "no acknowledged row lost") is True
    down = _result("restart", fine)
    down.iterations[0].verdict = Verdict(False, "2.1.0-bad", None, ["... without a gate record"])
    assert _goal("restart", down, "gated state serving") is False
    unfinished = _result("restart", fine)
    unfinished.iterations[0].verdict = None
    unfinished.iterations[0].runs = [RunRecord("main", 1.0, 5.0, rc=1)]
    assert _goal("restart", unfinished, "gated state serving") is False


def test_results_md_gets_the_soaks_section_once(tmp_path: Path) -> None:
    report = tmp_path / "chaos.md"
    report.write_text("# Chaos\n\n## Summary\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Per strategy\n\nx\n")
    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\n## Other benchmarks\n\n- [a.md](a.md): a.\n\n### A (from a.md)\n\n| x |\n")
    update_results(results, report)
    update_results(results, report)
    text = results.read_text()
    assert text.count(RESULTS_HEADING) == 1 and text.count("[chaos.md](chaos.md)") == 1
    assert text.endswith(f"{RESULTS_HEADING}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert text.index("- [chaos.md]") < text.index("### A (from a.md)")


@pytest.mark.slow
@pytest.mark.testhost
def test_a_few_iterations_per_strategy_on_a_real_host(small_benchmark: BenchRun) -> None:
    from benchmarks.chaos.__main__ import Options, run

    opts = Options(
        seed=SMOKE_SEED,
        iterations=dict.fromkeys(("blue-green", "restart", "symlink-swap"), 1),
        max_minutes=4,
        out=None,
        results=None,
    )
    outcome, lines = small_benchmark(run, opts)
    said = "\n".join(lines)
    assert not outcome.setup_errors, said
    assert [f.strategy for f in outcome.figures] == ["blue-green", "restart", "symlink-swap"], said
    for f in outcome.figures:
        assert f.iterations == 1 and f.requests > 0 and f.acknowledged > 0, said
        assert f.checks == 1 and not f.not_gated, said  # the completed run left a gated state serving
        assert not f.lost_ids, said
    blue_green = outcome.figures[0]
    assert blue_green.ungated - blue_green.ungated_reboot == 0, said
    assert "blue-green: every completed run ends with a gated state serving" in outcome.report


# A seed whose first iteration per strategy tries a failing state with a disturbance.
SMOKE_SEED = 1
