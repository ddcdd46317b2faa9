"""A command on the host attached to this terminal (or these pipes) over one paramiko
channel, as `ssh -t host COMMAND` would run it: `reconcile exec`.

With a terminal the channel gets a pseudo-terminal of the local terminal's size (kept in step
when the window changes) and the local terminal goes raw, so keys such as Ctrl-C reach the
command on the host; without one, stdout and stderr stay apart and stdin's end is passed on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

CHUNK = 1 << 15
CTRL_D = b"\x04"


def terminal_size() -> tuple[int, int]:
    """(columns, rows) of the local terminal, 80x24 when there is none."""
    for fd in (1, 0, 2):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.columns, size.lines
    return 80, 24


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The local terminal in raw mode for the duration (restored however it ends)."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def pump(chan: Any, *, tty: bool, interactive: bool) -> int:
    """Copy stdin to the channel and its output to stdout and stderr until the command ends;
    return its exit status. An interrupt closes the channel: the host stops the command."""
    stdin_fd = sys.stdin.fileno()
    local_tty = tty and interactive and os.isatty(stdin_fd)
    raw = raw_terminal(stdin_fd) if local_tty else contextlib.nullcontext()
    readers = [
        threading.Thread(target=_copy_out, args=(chan.recv, sys.stdout.buffer), daemon=True),
        threading.Thread(target=_copy_out, args=(chan.recv_stderr, sys.stderr.buffer), daemon=True),
    ]
    previous = None
    if tty and threading.current_thread() is threading.main_thread():

        def resized(_signum: int, _frame: Any) -> None:
            with contextlib.suppress(Exception):
                chan.resize_pty(*terminal_size())

        previous = signal.signal(signal.SIGWINCH, resized)
    try:
        with raw:
            for reader in readers:
                reader.start()
            if interactive:
                args = (stdin_fd, chan, tty)
                threading.Thread(target=_copy_in, args=args, daemon=True).start()
            for reader in readers:
                while reader.is_alive():  # a join with a timeout lets Ctrl-C through
                    reader.join(0.2)
            return int(chan.recv_exit_status())
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        chan.close()


def _copy_out(recv: Any, out: Any) -> None:
    with contextlib.suppress(OSError, EOFError, ValueError):
        while True:
            data = recv(CHUNK)
            if not data:
                return
            out.write(data)
            out.flush()


def _copy_in(fd: int, chan: Any, tty: bool) -> None:
    """stdin to the channel; at its end, EOF (or, to a terminal, the Ctrl-D it understands)."""
    with contextlib.suppress(OSError, EOFError, ValueError):
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                if tty:
                    chan.sendall(CTRL_D)
                else:
                    chan.shutdown_write()
                return
            chan.sendall(data)
