"""Notifications to real HTTP receivers on the loopback: what a receiver gets (JSON or a
Slack-compatible body, with the secret header), retries with backoff on a 500, and that a
receiver that hangs or fails delays nothing: send() returns at once and each webhook has its
own worker. Runs with real hosts are in tests/test_operations.py."""

from __future__ import annotations

import time

from reconciler.engine.notify import Notifier, notice
from reconciler.engine.report import HostReport
from reconciler.spec.model import Webhook
from tests.receivers import receivers

REPORT = HostReport(
    app="choiros",
    host="web1",
    target="ssh://root@web1",
    result="rolled_back",
    version="2.1.0",
    serving="1.0.0",
    previous="1.0.0",
    rolled_back_to="1.0.0",
    actions=({"action": "restart", "target": "choiros-backend.service", "reason": "runs 1.0.0"},),
    applied=True,
    error="action 5/9 (health-check http://127.0.0.1:8080/health) failed: answered 500",
    observed=True,
)


def hook(url: str, label: str = "webhook 1 (127.0.0.1)", **kw: object) -> Webhook:
    return Webhook(url=url, label=label, **kw)  # type: ignore[arg-type]


def test_json_and_slack_bodies_with_the_secret_header() -> None:
    with receivers("ok", "ok") as (plain, slack):
        notifier = Notifier(
            (
                hook(plain.url, header=("Authorization", "Bearer s3cret")),
                hook(slack.url, format="slack", events=frozenset({"rollback"})),
            )
        )
        notifier.send(notice("rollback", REPORT, commit="0123456789abcdef", dirty=False, mode="once"))
        notifier.send(notice("deploy", REPORT, commit=None, dirty=False, mode="once"))
        (first, second) = plain.wait_for(2)
        (only,) = slack.wait_for(1)
        notifier.wait(2)
    body = first["body"]
    assert body["event"] == "rollback" and second["body"]["event"] == "deploy"
    assert {
        k: body[k] for k in ("app", "host", "version", "serving", "previous", "rolled_back_to", "commit")
    } == {
        "app": "choiros",
        "host": "web1",
        "version": "2.1.0",
        "serving": "1.0.0",
        "previous": "1.0.0",
        "rolled_back_to": "1.0.0",
        "commit": "0123456789abcdef",
    }
    assert body["actions"][0]["action"] == "restart" and "answered 500" in body["error"]
    assert first["headers"]["Authorization"] == "Bearer s3cret"
    assert set(only["body"]) == {"text"}, "a Slack-compatible body is {text: ...}"
    assert (
        "*choiros 2.1.0* failed on *web1*" in only["body"]["text"]
        and "`0123456789ab`" in only["body"]["text"]
    )
    assert [d.ok for d in notifier.take()] == [True, True, True]


def test_a_hanging_or_failing_receiver_delays_nothing_and_is_recorded() -> None:
    with receivers("ok", "hang", "fail") as (good, hanging, failing):
        notifier = Notifier(
            (
                hook(good.url, "good"),
                hook(hanging.url, "hanging", timeout=1.0, retries=0),
                hook(failing.url, "failing", timeout=1.0, retries=2),
            )
        )
        t0 = time.monotonic()
        notifier.send(notice("rollback", REPORT, commit=None, dirty=False, mode="once"))
        sent = time.monotonic() - t0
        good.wait_for(1)
        delivered = good.posts[0]["t"] - t0
        notifier.wait(10)
        waited = time.monotonic() - t0
    print(
        f"\nsend() {sent * 1000:.1f} ms; the good receiver had it after {delivered * 1000:.0f} ms; "
        f"{failing.hits} attempts at the failing one, all settled after {waited:.1f} s"
    )
    assert sent < 0.05 and delivered < 1.0, "a hanging receiver must not hold up the others"
    outcomes = {d.webhook: d for d in notifier.take()}
    assert outcomes["good"].ok
    assert not outcomes["hanging"].ok and "timed out" in (outcomes["hanging"].error or "")
    failed = outcomes["failing"]
    assert not failed.ok and failed.attempts == 3 and failed.status == 500 and failing.hits == 3


def test_wait_is_bounded_and_leaves_the_rest_as_not_delivered() -> None:
    with receivers("hang") as (hanging,):
        notifier = Notifier((hook(hanging.url, timeout=30.0, retries=0),))
        notifier.send(notice("failure", REPORT, commit=None, dirty=False, mode="once"))
        notifier.send(notice("failure", REPORT, commit=None, dirty=False, mode="once"))
        t0 = time.monotonic()
        notifier.wait(0.5)
        assert time.monotonic() - t0 < 1.0
        outcomes = notifier.take()
    assert len(outcomes) == 2 and not any(d.ok for d in outcomes)
    assert all(d.error == "still being delivered when reconcile exited" for d in outcomes)
