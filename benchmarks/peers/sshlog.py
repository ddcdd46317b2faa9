"""Counting what each run did over SSH, from the host's own sshd log (not estimated).

For the benchmark sshd runs with `LogLevel DEBUG1` (a drop-in, first match wins in sshd, so
10-...); every run is bracketed by a journal cursor, and the sshd lines after it are counted:

    Connection from ...                                    a TCP connection
    Accepted publickey for ...                             an authentication
    server_input_channel_open: ctype session               a session channel
    server_input_channel_req: channel N request exec       an exec on it
    server_input_channel_req: channel N request subsystem  an SFTP (or other) subsystem

Ansible with ControlPersist multiplexes its sessions over one connection: sessions and
connections are counted separately for that reason. The harness's own commands reach the
host through nsenter, not SSH, so they never show up here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.testhost import TestHost

DROP_IN = "/etc/ssh/sshd_config.d/10-bench-loglevel.conf"

PATTERNS = {
    "connections": re.compile(r"^Connection from \S+ port \d+ on "),
    "auths": re.compile(r"^Accepted publickey for "),
    "sessions": re.compile(r"server_input_channel_open: ctype session "),
    "execs": re.compile(r"server_input_channel_req: channel \d+ request exec "),
    "subsystems": re.compile(r"server_input_channel_req: channel \d+ request subsystem "),
}


@dataclass(frozen=True)
class Channels:
    connections: int = 0
    auths: int = 0
    sessions: int = 0
    execs: int = 0
    subsystems: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def total(counts: Iterable[Channels]) -> Channels:
    """Several hosts' counts added up (a fleet run)."""
    sums = dict.fromkeys(PATTERNS, 0)
    for c in counts:
        for key, value in c.as_dict().items():
            sums[key] += value
    return Channels(**sums)


def count(lines: list[str]) -> Channels:
    totals = dict.fromkeys(PATTERNS, 0)
    for line in lines:
        for key, pattern in PATTERNS.items():
            if pattern.search(line):
                totals[key] += 1
    return Channels(**totals)


def enable_debug(host: TestHost) -> None:
    host.exec(["sh", "-c", f"printf 'LogLevel DEBUG1\\n' > {DROP_IN} && sshd -t && systemctl reload ssh"])


def disable_debug(host: TestHost) -> None:
    host.exec(["sh", "-c", f"rm -f {DROP_IN} && systemctl reload ssh"], check=False)


def cursor(host: TestHost) -> str:
    result = host.exec(["journalctl", "-n", "0", "--show-cursor", "-o", "cat"])
    for line in result.stdout.splitlines():
        if line.startswith("-- cursor: "):
            return line.removeprefix("-- cursor: ").strip()
    raise RuntimeError("journalctl printed no cursor")


def since(host: TestHost, after: str) -> Channels:
    """Counts of sshd lines after the cursor (take a fresh cursor right before each timed run).

    `journalctl --sync` first: it returns only once journald stored everything sent before,
    so lines sshd logged during the run cannot arrive after the count.
    """
    script = 'journalctl --sync && journalctl --no-pager -o cat --after-cursor="$1" SYSLOG_IDENTIFIER=sshd'
    result = host.exec(["sh", "-c", script, "sh", after], timeout=60)
    return count(result.stdout.splitlines())
