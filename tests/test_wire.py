"""The wire between controller and agent: one schema (reconciler/agent/protocol.py), checked
from both sides. Every typed action, with every optional field set and unset, must produce
exactly the schema's fields; every request the engine really builds must pass the agent's
own check; and an agent refuses a request of another protocol version before it acts."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from reconciler.agent import protocol
from reconciler.agent.apply import HANDLERS
from reconciler.agent.main import handle
from reconciler.engine import once
from reconciler.errors import HostError
from reconciler.executors.base import Payload
from reconciler.observe.snapshot import GateParams
from reconciler.plan import actions as actions_module
from reconciler.plan import manual
from reconciler.plan.actions import Action, Plan, RecordMaintenance
from reconciler.plan.planner import plan
from tests.model_host import ModelHost
from tests.test_planner import desired, empty_host

ACTION_CLASSES = [
    cls
    for cls in vars(actions_module).values()
    if isinstance(cls, type) and issubclass(cls, Action) and cls is not Action
]
GATE = GateParams("http://127.0.0.1:8080/health", 30.0, 0.25, 2, 1.0, "1.0.0", False)


def _sample(hint: Any, filled: bool) -> Any:
    """A value of a field's type; `filled` picks a value over None for optional fields."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        inner = [a for a in args if a is not type(None)]
        return _sample(inner[0], filled) if filled or type(None) not in args else None
    if hint is str:
        return "x"
    if hint is bool:
        return True
    if hint is int:
        return 1
    if hint is float:
        return 1.5
    if hint is Path:
        return Path("/dist/a.tar.gz")
    if origin is tuple:
        return ("a", "b")
    if origin is typing.Literal:
        return args[0]
    if origin in (dict, typing.Mapping) or str(origin).endswith("Mapping'>"):
        return {"u": GATE} if args[1] is GateParams else {"k": "v"}
    raise AssertionError(f"no sample for {hint!r}")


def instances(cls: type[Action]) -> list[Action]:
    hints = typing.get_type_hints(cls, vars(actions_module))
    out = []
    for filled in (True, False):
        kwargs = {
            f.name: _sample(hints[f.name], filled)
            for f in dataclasses.fields(cls)
            if f.name not in ("phase", "on_failure")
        }
        out.append(cls(**kwargs))
    return out


@pytest.mark.parametrize("cls", ACTION_CLASSES, ids=lambda c: c.__name__)
def test_every_action_speaks_exactly_the_schema(cls: type[Action]) -> None:
    assert cls.kind in protocol.ACTIONS, f"{cls.__name__}: the agent has no schema for {cls.kind!r}"
    schema = set(protocol.ACTIONS[cls.kind])
    for action in instances(cls):
        wire = json.loads(json.dumps(action.wire()))  # as it travels
        if cls.kind == "upload_release":
            wire["size"] = 1  # the engine adds the payload's size when it sends one
        protocol.check_action(wire)
        sent = set(wire) - {"kind", "on_failure"} - {"size"}
        assert sent == schema - {"size"}, (
            f"{cls.__name__} sends {sorted(sent)}, the schema has {sorted(schema)}"
        )


def test_the_agent_handles_every_kind_in_the_schema_and_no_other() -> None:
    assert set(HANDLERS) == set(protocol.ACTIONS)
    assert {cls.kind for cls in ACTION_CLASSES} == set(protocol.ACTIONS)


class Recorder:
    """An executor that checks each request as the agent would, and keeps it."""

    description = "recorder"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def request(
        self, request: dict[str, Any], *, payload: Payload | None = None, on_event: Any = None
    ) -> Any:
        wire = json.loads(json.dumps(request))
        protocol.check_request(wire)
        self.requests.append(wire)
        return {"event": "error", "error": "recorded", "code": "test"}

    def attach(self, request: dict[str, Any]) -> int:
        wire = json.loads(json.dumps(request))
        protocol.check_request(wire)
        self.requests.append(wire)
        return 0

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


TASKS = "  tasks: {before_switch: [bin/migrate], after_switch: [bin/warm-cache --all]}"


def _plans() -> list[tuple[Any, Plan]]:
    """Plans that together use every action kind, rollbacks included."""
    out = []
    host = ModelHost(empty_host())
    data = "data: {sqlite: /var/lib/choiros/choiros.db, restore_on_rollback: true}\n"
    for d in (
        desired("1.0.0", data=data),
        desired("2.0.0", data=data, keep=1),
        desired("1.0.0", data=data, keep=1),
        desired("1.0.0", strategy="blue-green"),
        desired("2.0.0", image=True, keep=1),
        desired("3.0.0", mode="dev-server"),
        desired("4.0.0", keep=1),
        desired("5.0.0", keep=1, data=data + "shared: [uploads]\n", tasks=TASKS),
        desired("6.0.0", image=True, keep=1, frontend_image="localhost/choiros-frontend:1"),
        desired("6.0.0", image=True, keep=1, frontend_image="localhost/choiros-frontend:2"),
        desired("6.0.0", image=True, keep=1, frontend_image="localhost/choiros-frontend:3"),
    ):
        p = plan(d, host.snapshot())
        out.append((d, p))
        host.run(p)
    # A rollback by hand (it records a hold), then a new file, whose run ends the hold.
    last = desired("6.0.0", image=True, keep=1, frontend_image="localhost/choiros-frontend:3")
    choice = manual.choose(last, host.snapshot(), None)
    assert choice.target is not None, choice.error
    back = manual.plan_rollback(
        last, host.snapshot(), choice.target, manual.Request(None, "ops@laptop", "bad")
    )
    out.append((last, back))
    host.run(back)
    moved = desired("7.0.0", image=True, keep=2, frontend_image="localhost/choiros-frontend:3")
    out.append((moved, plan(moved, host.snapshot())))
    return out


def test_every_request_the_engine_builds_passes_the_agents_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.engine import artifact

    monkeypatch.setattr(artifact, "prepare", lambda d: Payload(3, lambda: __import__("io").BytesIO(b"abc")))
    recorder = Recorder()
    kinds = set()
    for d, p in _plans():
        with pytest.raises(HostError):
            once.apply_plan(d, recorder, once.RunOptions(), once.SilentReporter(), p)
        with pytest.raises(HostError):
            once.observe(recorder, d)
        kinds |= {a.kind for a in p.actions} | {a.kind for a in (p.rollback.actions if p.rollback else ())}
    on = RecordMaintenance("asked", on=True, why="db repair", by="ops@laptop")
    with pytest.raises(HostError):
        once.apply_plan(desired(), recorder, once.RunOptions(), once.SilentReporter(), Plan((on,), ""))
    kinds.add(on.kind)
    assert kinds >= set(protocol.ACTIONS) - {"record_quarantine"}, set(protocol.ACTIONS) - kinds
    assert {r["op"] for r in recorder.requests} == {"apply", "observe"}


def test_an_agent_refuses_another_protocol_version_before_acting() -> None:
    answer = handle({"op": "apply", "protocol": protocol.PROTOCOL - 1, "actions": []}, None, lambda e: None)
    assert answer["event"] == "error" and answer["code"] == "protocol"
    assert "different versions of the reconciler" in answer["error"]


@pytest.mark.parametrize(
    "broken",
    [
        {"kind": "write_file", "path": "/x", "content": "", "mode": "0644", "secret": False},
        {"kind": "write_file", "path": "/x", "content": "", "mode": 420, "secret": False, "extra": 1},
        {"kind": "systemctl", "verb": "restart"},
        {"kind": "rm_rf", "path": "/"},
        {"kind": "remove_file", "path": "/x", "on_failure": "shrug"},
    ],
)
def test_a_malformed_action_is_refused_with_what_is_wrong(broken: dict[str, Any]) -> None:
    with pytest.raises(protocol.AgentError) as exc:
        protocol.check_action(broken)
    assert exc.value.code == "protocol"


def test_pause_resume_note_and_releases_requests_pass_the_agents_check() -> None:
    from reconciler.engine import hostrecords

    recorder = Recorder()
    d = desired("1.0.0")
    for reason in ("incident 42", "", None):
        with pytest.raises(HostError):
            hostrecords.set_pause(recorder, d, reason, lock_timeout=5)
    note = {"kind": "notify", "event": "deploy", "webhook": "webhook 1 (h)", "ok": True, "attempts": 1}
    with pytest.raises(HostError):
        hostrecords.add_notes(recorder, d, [note])
    with pytest.raises(HostError):
        hostrecords.release_sizes(recorder, d, "podman")
    assert [r["op"] for r in recorder.requests] == ["pause", "pause", "pause", "note", "releases"]
    assert recorder.requests[2]["pause"] is None  # resume


def test_logs_and_exec_requests_pass_the_agents_check() -> None:
    from reconciler.engine import logs, oneoff
    from reconciler.plan.oneoff import OneOff

    recorder = Recorder()
    d = desired("1.0.0", image=True)
    for follow, lines, since in ((False, None, None), (True, 0, "10 min ago")):
        request = logs.logs_request(d, ["backend"], follow=follow, lines=lines, since=since, all_fields=True)
        with pytest.raises(HostError):
            logs.read(recorder, request, print)
    command = OneOff(
        "1.0.0", ("sqlite3", "db"), "/", "/etc/choiros/backend.env", None, "choiros", ("podman",)
    )
    assert oneoff.run(d, recorder, command, interactive=True, tty=False) == 0
    assert [r["op"] for r in recorder.requests] == ["logs", "logs", "exec"]
    # an exec request sent the way every other one travels is refused: its stdin is the user's
    answer = handle(recorder.requests[-1], None, lambda e: None)
    assert answer["event"] == "error" and "attached" in answer["error"]
