"""What every executor offers: send one request to the host agent, stream its events back.

An executor is the only way the reconciler reaches a host. Observation is one request; an
apply is one more. Executors know transport, nothing about plans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

Event = dict[str, Any]
OnEvent = Callable[[Event], None]


@dataclass(frozen=True)
class Payload:
    """Bytes that follow the request: a release archive, opened only when it is sent."""

    size: int
    open: Callable[[], IO[bytes]]
    label: str = ""


class Executor(Protocol):
    description: str

    def request(
        self,
        request: dict[str, Any],
        *,
        payload: Payload | None = None,
        on_event: OnEvent | None = None,
    ) -> Event:
        """Run one agent request; return its final event ({"event": "result"|"error", ...})."""
        ...

    def cancel(self) -> None:
        """Ask a running apply to stop at the next action boundary."""
        ...

    def attach(self, request: dict[str, Any]) -> int:
        """Run an attached request (`exec`, agent/attach.py): the command on the host gets this
        process's stdin, stdout and stderr (a terminal on the host when request["tty"]), and
        its exit status is returned. Interrupted, the host stops the command."""
        ...

    def close(self) -> None: ...
