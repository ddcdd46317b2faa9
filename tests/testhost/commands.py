"""Running commands on this machine with error messages worth reading."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.testhost.errors import TesthostError


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv, capture output; raise TesthostError with the output when check and rc != 0.

    The command gets its own process group, and the whole group is killed if we
    time out or are interrupted: debootstrap, for one, leaves dpkg and chroot
    children behind that would otherwise keep writing into a build being deleted.
    """
    args = [str(a) for a in argv]
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise TesthostError(f"command not found: {args[0]}") from exc
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise TesthostError(f"timed out after {timeout:g}s: {' '.join(args)}") from exc
        raise
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check and result.returncode != 0:
        raise TesthostError(
            f"command failed (rc={result.returncode}): {' '.join(args)}\n"
            f"{tail((result.stdout + result.stderr).decode(errors='replace'))}"
        )
    return result


def tail(text: str, lines: int = 40) -> str:
    """Last `lines` lines of text: enough context for an error message, no more."""
    # A console log comes through a pty: \r\n (and \r\r\n) line ends, which
    # splitlines() would turn into extra blank lines.
    text = text.replace("\r", "").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = 40) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
