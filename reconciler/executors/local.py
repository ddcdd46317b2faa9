"""Runs the host agent in this process: `target: local`. Never imports paramiko."""

from __future__ import annotations

import threading
from typing import Any

from reconciler.agent.main import handle
from reconciler.executors.base import Event, OnEvent, Payload


class LocalExecutor:
    description = "local"

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def request(
        self,
        request: dict[str, Any],
        *,
        payload: Payload | None = None,
        on_event: OnEvent | None = None,
    ) -> Event:
        emit = on_event or (lambda _e: None)
        if payload is None:
            return handle(request, None, emit, self._cancel.is_set)
        with payload.open() as stream:
            return handle(request, stream, emit, self._cancel.is_set)

    def attach(self, request: dict[str, Any]) -> int:
        """In this process: the command gets this terminal (systemd-run --pty gives it a
        terminal of its own, joined to this one) or these pipes."""
        from reconciler.agent.attach import run
        from reconciler.agent.protocol import AgentError
        from reconciler.errors import HostError

        try:
            return run(request)
        except AgentError as exc:
            raise HostError(exc.message, hint=exc.detail or None) from None

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        pass
