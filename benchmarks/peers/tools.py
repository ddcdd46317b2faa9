"""The command lines, as a user would type them, and how to read each tool's verdict.

Every timed run is a fresh process. Over SSH the tools run here; "local" runs are the same
tools on the host itself against localhost (`target: local`, `-c local`, `@local`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmarks.peers import ansible_side, pyinfra_side
from benchmarks.peers.install import Peer
from benchmarks.peers.paths import HOST_PROJECT, REPO, WORK

Verdict = Literal["unchanged", "changed", "failed", "ran"]

HOST_REPO = "/src"
HOST_OURS_PYTHON = "/opt/reconciler-venv/bin/python"


@dataclass(frozen=True)
class Target:
    """The booted host as the command lines need it."""

    address: str
    key: Path
    known_hosts: Path
    project: Path  # the project folder on this machine
    host_dir: Path  # project/host: per-host inventories
    control_dir: Path  # Ansible's ControlPersist sockets: short (ansible_side.make_control_dir)

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@{self.address}:22"


@dataclass(frozen=True)
class Tool:
    name: str
    argv: Callable[[str], list[str]]  # version -> command line
    verdict: Callable[[int, str], Verdict]  # (rc, output) -> what the tool says it did
    env: dict[str, str] = field(default_factory=dict)
    before: Callable[[], None] | None = None  # untimed, right before each timed run
    cwd: str | None = None
    keep_output: bool = False  # the sample keeps all the run printed (Sample.output)


def child_env(**extra: str) -> dict[str, str]:
    """This machine's environment for a tool, with bytecode caching allowed.

    This workplace exports PYTHONDONTWRITEBYTECODE=1, which would make every run of a tool
    that is not pip-installed (ours, run from the repository) compile its modules from source
    each time. pip-installed tools have their .pyc from install time, so the fair setting is
    bytecode for everyone; ours writes its cache under benchmarks/.work, not into the tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


# --- verdicts ----------------------------------------------------------------------------


def output(result: Mapping[str, Any]) -> str:
    """What a run printed: pyinfra reports on stderr (its log), the others on stdout."""
    return f"{result['stdout']}\n{result['stderr']}"


#: What ours plans on a host whose app a peer converged: it gates the process the peer
#: started (ours trusts only processes with its own gate record) and records the state as
#: good. Neither touches a file, a link, a unit or Caddy.
BOOKKEEPING = frozenset({"health-check", "record-good"})


def ours_plans_only_bookkeeping(rc: int, stdout: str) -> bool:
    """`ours --dry-run --json`: nothing to do, or only BOOKKEEPING (on every host of a fleet)."""
    if rc == 0:
        return True
    try:
        data = json.loads(stdout)
    except ValueError:
        return False
    hosts = data["hosts"].values() if "hosts" in data else [data]
    plans = [h.get("actions", []) for h in hosts]
    return rc == 2 and all(a.get("action") in BOOKKEEPING for actions in plans for a in actions)


def ours_verdict(rc: int, stdout: str) -> Verdict:
    if rc != 0:
        return "failed"
    return "unchanged" if "No changes" in stdout else "changed"


def ansible_verdict(rc: int, stdout: str) -> Verdict:
    recap = ansible_side.recap_changed(stdout)
    if rc != 0 or recap is None or recap[1]:
        return "failed"
    return "unchanged" if recap[0] == 0 else "changed"


def pyinfra_verdict(rc: int, stdout: str) -> Verdict:
    """From the results table's "Grand total" row: operations, success, error, no change
    (every such row, when pyinfra ran once per batch of a rolling deploy)."""
    if rc != 0:
        return "failed"
    totals = [w for w in (line.split() for line in stdout.splitlines()) if w[:2] == ["Grand", "total"]]
    totals = [w for w in totals if len(w) >= 6]
    if not totals or any(w[4] not in ("-", "0") for w in totals):
        return "failed"
    return "unchanged" if all(w[3] in ("-", "0") for w in totals) else "changed"


def exit_verdict(rc: int, _stdout: str) -> Verdict:
    return "ran" if rc == 0 else "failed"


#: Lines that say why a run failed, most telling first: Ansible's task error and its
#: "msg", ours' "error:", pyinfra's and ssh's own words.
_WHY_PATTERNS = [
    re.compile(r"\[ERROR\]: (.+)"),
    re.compile(r'"msg": "(.+?)"(?:,|$)'),
    re.compile(r"^error: (.+)", re.MULTILINE),
    re.compile(r"^(?:--> )?(.*(?:[Ee]rror|[Ff]ailed|refused|denied|not found|too long).*)$", re.MULTILINE),
]


def why_failed(verdict: str, expect: str, rc: int, text: str, limit: int = 240) -> str:
    """One line for a report: what the tool said instead of `expect`, in its own words."""
    if verdict != "failed":
        return f"reported {verdict}, expected {expect}"
    for pattern in _WHY_PATTERNS:
        found = pattern.search(text)
        if found:
            detail = found.group(1).strip()
            break
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no output"
    detail = " ".join(detail.replace("\\n", " ").replace('\\"', '"').split())
    if len(detail) > limit:  # both ends: the cause is often last ("... too long for Unix domain socket")
        detail = detail[: limit // 2 - 3] + " ... " + detail[-(limit // 2 - 2) :]
    return f"exit {rc}: {detail}"


# --- over SSH, from this machine ---------------------------------------------------------


def ours_ssh(t: Target, *, dry_run: bool = False, openssh: str | None = None) -> Tool:
    """Ours with paramiko (the default), or with `--ssh openssh`: openssh="cold" closes the
    master connection (untimed) before each run, "warm" reuses the one a previous run left,
    as the Ansible rows do."""

    def argv(version: str) -> list[str]:
        cmd = [sys.executable, "-m", "reconciler", "--once"]
        if dry_run:
            cmd += ["--dry-run", "--json"]  # the checks read which actions it would take
        if openssh:
            cmd += ["--ssh", "openssh"]
        return [
            *cmd,
            "-f", str(t.project / f"desired-{version}.yaml"),
            "--target", t.ssh_url,
            "-i", str(t.key),
            "--known-hosts", str(t.known_hosts),
        ]  # fmt: skip

    env = ours_env()
    if openssh:
        name = "ours (openssh, warm master)" if openssh == "warm" else "ours (openssh)"
        before = None if openssh == "warm" else (lambda: close_ours_master(t))
        return Tool(name, argv, ours_verdict, env, before=before, cwd=str(t.project))
    return Tool("ours" if not dry_run else "ours --dry-run", argv, ours_verdict, env, cwd=str(t.project))


def ours_env() -> dict[str, str]:
    """Ours runs from the repository: its bytecode and schema-verdict caches under .work."""
    return child_env(
        PYTHONPATH=str(REPO),
        PYTHONPYCACHEPREFIX=str(WORK / "pycache"),
        XDG_CACHE_HOME=str(WORK / "xdg-cache"),
    )


def ours_fleet_verdict(rc: int, stdout: str) -> Verdict:
    """A fleet run ends with "Summary:" and one line per host naming its result; a fleet of one
    host prints as a single host does."""
    if "Summary:" not in stdout:
        return ours_verdict(rc, stdout)
    if rc != 0:
        return "failed"
    results = re.findall(
        r"^  \S+\s+(noop|converged|changes_pending|rolled_back|quarantined|failed|not_reached)\b",
        stdout.split("Summary:", 1)[1],
        re.MULTILINE,
    )
    if not results or set(results) - {"noop", "converged", "changes_pending"}:
        return "failed"
    return "unchanged" if set(results) == {"noop"} else "changed"


def close_ours_master(t: Target) -> None:
    """Stop the master connection `--ssh openssh` keeps for this host, if any."""
    from reconciler.executors.openssh import OpenSSHExecutor
    from reconciler.spec.model import Target as SSHTarget

    OpenSSHExecutor(SSHTarget("ssh", host=t.address, user="root", port=22)).close_master()


def pyinfra_ssh(t: Target, peer: Peer) -> Tool:
    inventory = str(t.host_dir / "inventory.py")

    def argv(version: str) -> list[str]:
        return pyinfra_side.command(peer.bin, str(t.project), version, inventory)

    return Tool("pyinfra", argv, pyinfra_verdict, child_env(), cwd=str(t.project))


def ansible_ssh(t: Target, peer: Peer, *, warm: bool = False) -> Tool:
    """cold: the ControlPersist master is closed (untimed) before each run, so the run opens
    its own connection, as a deploy typed now and then does. warm: the master a previous run
    left behind is reused, as when runs follow each other within ControlPersist's 60 s."""
    inventory = str(t.host_dir / "inventory.ini")

    def argv(version: str) -> list[str]:
        return ansible_side.command(peer.bin, str(t.project), version, inventory, local=False)

    def close_master() -> None:
        close_ansible_master(t)

    env = child_env(ANSIBLE_CONFIG=str(t.host_dir / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    name = "ansible (warm master)" if warm else "ansible"
    return Tool(name, argv, ansible_verdict, env, before=None if warm else close_master, cwd=str(t.project))


def close_ansible_master(t: Target) -> None:
    """Stop the ssh ControlPersist master Ansible left for this host, if any."""
    close_ansible_masters(t.control_dir, [t.address])


def close_ansible_masters(control_dir: Path, addresses: list[str]) -> None:
    for address in addresses:
        subprocess.run(
            ["ssh", "-O", "exit", "-o", f"ControlPath={control_dir}/%C", "-p", "22", f"root@{address}"],
            capture_output=True,
            timeout=30,
            check=False,
        )


def floor_ssh(t: Target) -> Tool:
    script = str(Path(__file__).with_name("floor.py"))

    def argv(_version: str) -> list[str]:
        return [sys.executable, script, t.address, "22", "root", str(t.key), str(t.known_hosts)]

    return Tool("paramiko floor", argv, exit_verdict, child_env())


def openssh_floor(t: Target, *, kex: str | None = None) -> Tool:
    """A reference, not a target: the same connect + auth + `true` with the OpenSSH client (C).
    With its default key exchange (sntrup761x25519, post-quantum hybrid) it is what Ansible's
    transport pays per connection; `kex` picks another (paramiko negotiates curve25519)."""
    extra = ["-o", f"KexAlgorithms={kex}"] if kex else []

    def argv(_version: str) -> list[str]:
        return [
            "ssh", "-i", str(t.key), *extra,
            "-o", f"UserKnownHostsFile={t.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ControlPath=none",
            "-p", "22", f"root@{t.address}", "true",
        ]  # fmt: skip

    name = f"OpenSSH floor ({kex})" if kex else "OpenSSH floor"
    return Tool(name, argv, exit_verdict, child_env())


def write_inventories(t: Target) -> None:
    t.host_dir.mkdir(parents=True, exist_ok=True)
    (t.host_dir / "inventory.ini").write_text(ansible_side.inventory(t.address, t.key, t.known_hosts))
    (t.host_dir / "ansible.cfg").write_text(ansible_side.ansible_cfg(t.control_dir, ssh=True))
    (t.host_dir / "inventory.py").write_text(pyinfra_side.inventory(t.address, t.key, t.known_hosts))


# --- on the host itself ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTool:
    name: str
    argv: Callable[[str], list[str]]
    verdict: Callable[[int, str], Verdict]
    env: dict[str, str] = field(default_factory=dict)


def ours_local() -> LocalTool:
    def argv(version: str) -> list[str]:
        return [
            HOST_OURS_PYTHON,
            "-m",
            "reconciler",
            "--once",
            "-f",
            f"{HOST_PROJECT}/desired-{version}.yaml",
        ]

    # /src is read-only in the host: the bytecode cache goes to /tmp.
    return LocalTool("ours", argv, ours_verdict, {"PYTHONPATH": HOST_REPO, "PYTHONPYCACHEPREFIX": "/tmp/pyc"})


def pyinfra_local(peer: Peer) -> LocalTool:
    def argv(version: str) -> list[str]:
        return pyinfra_side.command(peer.host_bin, HOST_PROJECT, version, "@local")

    return LocalTool("pyinfra", argv, pyinfra_verdict)


def ansible_local(peer: Peer) -> LocalTool:
    def argv(version: str) -> list[str]:
        return ansible_side.command(peer.host_bin, HOST_PROJECT, version, "localhost,", local=True)

    return LocalTool(
        "ansible", argv, ansible_verdict, {"ANSIBLE_CONFIG": f"{HOST_PROJECT}/ansible-local.cfg"}
    )
