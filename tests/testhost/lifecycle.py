"""Making sure every host is torn down, however the process ends.

Hosts register here while alive. stop_all() runs at interpreter exit (atexit)
and on SIGINT/SIGTERM. The signal handlers are installed while at least one
host (or boot_many) is alive and the previous handlers are put back afterwards;
after stopping all hosts the handler hands the signal on to the previous
handler, so Ctrl-C still raises KeyboardInterrupt and SIGTERM still ends the
process.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol


class Stoppable(Protocol):
    name: str

    def begin_stop(self) -> None: ...

    def stop(self) -> None: ...


_lock = threading.RLock()
_hosts: dict[str, Stoppable] = {}
#: Depth of teardowns running in the main thread, and signals that arrived meanwhile.
_critical = [0]
_pending: list[int] = []
_holds = [0]  # a list, so the functions below can update it without `global`
_previous: dict[int, Any] = {}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> None:
    if _previous or not _in_main_thread():
        return  # already installed; signal.signal() only works in the main thread
    for sig in _SIGNALS:
        # A signal the process ignores (e.g. SIGINT of a background job started
        # by a non-interactive shell) stays ignored: taking it over would tear
        # the hosts down under a process that goes on running.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            _previous[sig] = signal.signal(sig, _on_signal)


def _restore() -> None:
    if not _previous or not _in_main_thread():
        return
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


def hold() -> None:
    """Keep the signal handlers installed until the matching release()."""
    with _lock:
        _holds[0] += 1
        _install()


def release() -> None:
    with _lock:
        _holds[0] = max(0, _holds[0] - 1)
        if _holds[0] == 0:
            _restore()


def register(host: Stoppable) -> None:
    with _lock:
        _hosts[host.name] = host
    hold()


def unregister(host: Stoppable) -> None:
    with _lock:
        if _hosts.get(host.name) is not host:
            return
        del _hosts[host.name]
    release()


def live_hosts() -> list[Stoppable]:
    with _lock:
        return list(_hosts.values())


def stop_many(hosts: list[Stoppable]) -> None:
    """Signal every host first so they halt in parallel, then wait for each.

    Every host is stopped even if one fails; the first error is raised at the end.
    """
    for host in hosts:
        host.begin_stop()
    first_error: BaseException | None = None
    for host in hosts:
        try:
            host.stop()
        except Exception as exc:  # keep tearing down the others
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


def stop_all() -> None:
    """Stop every host this process booted (atexit, signal handlers, tests)."""
    stop_many(live_hosts())


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Defer SIGINT/SIGTERM handling until the block is done.

    Used around a teardown: a KeyboardInterrupt raised in the middle of one would
    leave its mounts, cgroups and state dir behind. The deferred signal is then
    handled as usual (stop all hosts, hand on to the previous handler).
    """
    if not _in_main_thread():  # handlers only ever run in the main thread
        yield
        return
    _critical[0] += 1
    try:
        yield
    finally:
        _critical[0] -= 1
        if _critical[0] == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            _on_signal(signum, None)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _critical[0] > 0:
        _pending.append(signum)
        return
    previous = _previous.get(signum, signal.SIG_DFL)
    try:
        stop_all()
    finally:
        with _lock:
            _restore()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


atexit.register(stop_all)
