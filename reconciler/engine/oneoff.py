"""`reconcile exec`: observe the host, decide where the command runs (plan/oneoff.py), then
run it attached to this terminal. Two round trips: the observation, and the command itself;
the host records it in its history when it ends."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.agent.protocol import PROTOCOL
from reconciler.engine.hostrecords import who
from reconciler.engine.once import observe
from reconciler.errors import HostError
from reconciler.executors.base import Executor
from reconciler.plan.oneoff import NotRunnable, OneOff, one_off
from reconciler.spec.model import DesiredState


def prepare(
    desired: DesiredState,
    executor: Executor,
    argv: Sequence[str],
    release: str | None,
    *,
    interactive: bool,
    tty: bool,
) -> OneOff:
    observed = observe(executor, desired)
    try:
        return one_off(desired, observed, tuple(argv), release, interactive=interactive, tty=tty)
    except NotRunnable as exc:
        raise HostError(exc.message, hint=exc.hint) from None


def run(desired: DesiredState, executor: Executor, command: OneOff, *, interactive: bool, tty: bool) -> int:
    """The command's exit status (130 when it was interrupted)."""
    request = {
        "op": "exec",
        "protocol": PROTOCOL,
        "state": desired.layout.state,
        "app": desired.app,
        **command.wire(),
        "interactive": interactive,
        "tty": tty,
        "who": who(),
    }
    return executor.attach(request)
