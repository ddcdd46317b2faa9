"""The fleet as every tool is given it: N test hosts, one deploy key, one known_hosts file,
and per fleet size the same desired state for ours, Ansible and pyinfra.

The state itself is benchmarks.peers' (project.build: the repository's desired-state.yaml,
and for the peers the bytes our renderer writes); only who is targeted, and how many at once,
is added here. Every tool gets the same parallelism: ours `rollout.concurrency: N`, Ansible
`forks = N`, pyinfra `--parallel N`; and the same rolling deploy: a quarter of the hosts at a
time, each batch through its health gate before the next.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers import ansible_side, project, pyinfra_side, tools
from benchmarks.peers.install import Peer
from benchmarks.peers.paths import REPO, VERSIONS
from reconciler.spec.model import Rollout

if TYPE_CHECKING:
    from tests.testhost import TestHost

WORK = REPO / "benchmarks" / ".work" / "fleet-peers"
RESULTS_MD = REPO / "benchmarks" / "fleet-peers.md"

#: A rolling deploy changes this share of the hosts at a time.
BATCH = "25%"
#: All at once: how the benchmark itself converges and resets the fleet (untimed).
ALL = "100%"


def batch_size(hosts: int, batch: str = BATCH) -> int:
    """Hosts per batch, as ours computes it (Ansible's `serial: 25%` rounds the same way: down,
    at least one)."""
    return Rollout(max_unavailable=batch).batch_size(hosts)


def fleet_desired_text(base: str, hosts: list[tuple[str, str]], batch: str, concurrency: int) -> str:
    """The project's desired-state text (`target: local`) aimed at these (name, ssh URL) hosts."""
    targets = "".join(f"  - {{target: {url}, name: {name}}}\n" for name, url in hosts)
    text, n = re.subn(
        r"^target: local\n", lambda _m: "target:\n" + targets, base, count=1, flags=re.MULTILINE
    )
    if n != 1:
        raise RuntimeError("desired-state.yaml no longer has one `target: local` line")
    return text + f'\nrollout:\n  max_unavailable: "{batch}"\n  concurrency: {concurrency}\n'


@dataclass(frozen=True)
class Fleet:
    hosts: list[TestHost]
    key: Path  # the one deploy key every host accepts
    known_hosts: Path  # every host's key
    root: Path  # the project folder (benchmarks.peers.project)
    control_dir: Path  # Ansible's ControlPersist sockets

    def desired(self, n: int, version: str, batch: str = BATCH) -> Path:
        return self.root / f"fleet-{n}{'' if batch == BATCH else '-all'}-{version}.yaml"

    def folder(self, n: int) -> Path:
        return self.root / "host" / f"fleet-{n}"

    def batches(self, n: int) -> list[list[TestHost]]:
        size = batch_size(n)
        return [self.hosts[i : i + size] for i in range(0, n, size)]

    def write_inputs(self, sizes: list[int]) -> None:
        """Ours' desired-state files, Ansible's and pyinfra's inventories, for every size."""
        template = (REPO / "desired-state.yaml").read_text(encoding="utf-8")
        for n in sizes:
            named = [(h.name, h.ssh_target) for h in self.hosts[:n]]
            for version in VERSIONS:
                base = project.desired_text(version, template)
                for batch in (BATCH, ALL):
                    self.desired(n, version, batch).write_text(fleet_desired_text(base, named, batch, n))
            folder = self.folder(n)
            folder.mkdir(parents=True, exist_ok=True)
            hosts = [(h.name, h.address) for h in self.hosts[:n]]
            (folder / "inventory.ini").write_text(
                ansible_side.fleet_inventory(hosts, self.key, self.known_hosts)
            )
            (folder / "ansible.cfg").write_text(ansible_side.ansible_cfg(self.control_dir, ssh=True, forks=n))
            batches = [[h.address for h in batch] for batch in self.batches(n)]
            (folder / "inventory.py").write_text(
                pyinfra_side.fleet_inventory(batches, self.key, self.known_hosts)
            )
        project.commit(self.root)

    # -- the tools, as a user types them ---------------------------------------------------

    def ours(
        self, n: int, *, dry_run: bool = False, batch: str = BATCH, keep_output: bool = False
    ) -> tools.Tool:
        def argv(version: str) -> list[str]:
            dry = ["--dry-run", "--json"] if dry_run else []
            cmd = [sys.executable, "-m", "reconciler", "--once", *dry]
            return [
                *cmd,
                "-f", str(self.desired(n, version, batch)),
                "-i", str(self.key),
                "--known-hosts", str(self.known_hosts),
            ]  # fmt: skip

        name = "ours --dry-run" if dry_run else "ours"
        return tools.Tool(
            name,
            argv,
            tools.ours_fleet_verdict,
            tools.ours_env(),
            cwd=str(self.root),
            keep_output=keep_output,
        )

    def pyinfra(self, n: int, peer: Peer) -> tools.Tool:
        inventory = str(self.folder(n) / "inventory.py")

        def argv(version: str) -> list[str]:
            return pyinfra_side.command(peer.bin, str(self.root), version, inventory, ("--parallel", str(n)))

        return tools.Tool("pyinfra", argv, tools.pyinfra_verdict, tools.child_env(), cwd=str(self.root))

    def pyinfra_rolling(self, n: int, peer: Peer) -> tools.Tool:
        """pyinfra runs each operation on every host before the next operation, so `--parallel`
        alone restarts every backend in the same step. A rolling deploy is one run per batch
        (`--limit batch_<i>`), the next only when the last succeeded."""
        inventory = str(self.folder(n) / "inventory.py")
        size = batch_size(n)

        def argv(version: str) -> list[str]:
            runs = [
                shlex.join(
                    pyinfra_side.command(
                        peer.bin,
                        str(self.root),
                        version,
                        inventory,
                        ("--parallel", str(size), "--limit", f"batch_{i}"),
                    )
                )
                for i in range(1, len(self.batches(n)) + 1)
            ]
            return ["sh", "-c", " && ".join(runs)]

        return tools.Tool(
            "pyinfra", argv, tools.pyinfra_verdict, tools.child_env(), cwd=str(self.root), keep_output=True
        )

    def ansible(self, n: int, peer: Peer, *, rolling: bool = False) -> tools.Tool:
        """Like the single-host "ansible" row: every run opens its own connections (the masters
        ControlPersist left are closed, untimed, before it)."""
        inventory = str(self.folder(n) / "inventory.ini")
        extra = ("-e", f"batch={BATCH}") if rolling else ()
        addresses = [h.address for h in self.hosts[:n]]

        def argv(version: str) -> list[str]:
            return ansible_side.command(
                peer.bin,
                str(self.root),
                version,
                inventory,
                local=False,
                playbook=ansible_side.FLEET_PLAYBOOK,
                extra=extra,
            )

        def close_masters() -> None:
            tools.close_ansible_masters(self.control_dir, addresses)

        env = tools.child_env(ANSIBLE_CONFIG=str(self.folder(n) / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        return tools.Tool(
            "ansible", argv, tools.ansible_verdict, env, before=close_masters, cwd=str(self.root)
        )

    def close_masters(self) -> None:
        tools.close_ansible_masters(self.control_dir, [h.address for h in self.hosts])
