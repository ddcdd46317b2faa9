"""What the controller and the agent say to each other: the protocol version, the agent's
error type and the small types every agent module shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PROTOCOL = 1


Json = dict[str, Any]


Emit = Callable[[Json], None]


ENV_PREFIX = "RECONCILER_"


CHUNK = 1 << 16


class AgentError(Exception):
    """An action failed; `detail` carries what the host said (journal lines, caddy output)."""

    def __init__(self, message: str, detail: str = "", code: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code
