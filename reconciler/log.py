"""Structured logs on stderr: a console renderer on a TTY, JSON lines otherwise.

structlog (and what it pulls in) costs tens of milliseconds to import, more than a whole
local no-op run should take. So the module is imported on the first log call at an
enabled level, never on a quiet path.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_state: dict[str, Any] = {"level": logging.INFO, "json": None, "logger": None}


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    """json_lines None: JSON unless stderr is a terminal."""
    _state.update(level=_LEVELS[level], json=json_lines, logger=None)


def _real() -> Any:
    if _state["logger"] is None:
        import structlog

        use_json = _state["json"] if _state["json"] is not None else not sys.stderr.isatty()
        renderer: Any = (
            structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
        )
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_state["level"]),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
        _state["logger"] = structlog.get_logger("reconciler")
    return _state["logger"]


class _Lazy:
    def _emit(self, level: int, name: str, event: str, kw: dict[str, Any]) -> None:
        if level >= _state["level"]:
            getattr(_real(), name)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit(logging.INFO, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit(logging.WARNING, "warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit(logging.ERROR, "error", event, kw)


log = _Lazy()
