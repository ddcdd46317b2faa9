"""What the numbers were measured on: this machine, the test host, and every tool's version."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers.install import DISTRIBUTIONS, Peer, version_of

if TYPE_CHECKING:
    from tests.testhost import TestHost


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def this_machine(peers: list[Peer]) -> dict[str, str]:
    info = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{_mem_gib():.1f} GiB",
        "kernel": platform.release(),
        "Python (ours, floor)": platform.python_version(),
        "paramiko (ours, floor)": version_of(sys.executable, "paramiko"),
        "OpenSSH client (Ansible)": _first_line(["ssh", "-V"]),
    }
    for peer in peers:
        dist = DISTRIBUTIONS[peer.name]
        python = str(peer.venv / "bin" / "python")
        info[dist] = version_of(python, dist)
        info[f"Python ({peer.name})"] = _first_line([python, "-V"]).removeprefix("Python ")
        if peer.name == "pyinfra":
            info["paramiko (pyinfra)"] = version_of(python, "paramiko")
    return info


def test_host(host: TestHost) -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        result = host.exec(cmd, check=False)
        return (
            (result.stdout or result.stderr).strip().splitlines()[0]
            if (result.stdout or result.stderr)
            else "?"
        )

    return {
        "OS": out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "systemd": out(["systemctl", "--version"]),
        "OpenSSH server": out(["sh", "-c", "dpkg-query -W -f '${Version}' openssh-server"]),
        "Caddy": out(["caddy", "version"]),
        "python3": out(["python3", "-V"]),
    }


def _first_line(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "?"
