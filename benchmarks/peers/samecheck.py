"""The "same state" check: converged by ours, every tool must see nothing to do.

With the host converged by ours at FROM_VERSION, each peer runs for real (not --check),
over SSH and on the host, and must report no change; after each, ours --dry-run must
still plan nothing, every managed file must be byte-for-byte what it was (type, mode,
content, link target) and the backend must still be the same process (no restart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.peers import hosttime
from benchmarks.peers.paths import FROM_VERSION
from benchmarks.peers.phases import run_in_host
from benchmarks.peers.tools import LocalTool, Tool, output

if TYPE_CHECKING:
    from tests.testhost import TestHost

#: What the three tools manage (the app's own data under /var/lib/choiros is not state).
MANAGED_PATHS = ["/opt/choiros", "/etc/systemd/system", "/etc/caddy", "/etc/choiros", "/var/lib/reconciler"]


@dataclass(frozen=True)
class Row:
    where: str  # ssh | local
    tool: str
    verdict: str  # what the tool itself reported
    ours_after: int  # exit code of ours --dry-run right after (0: nothing to do)
    files_same: bool
    same_process: bool

    @property
    def ok(self) -> bool:
        return self.verdict == "unchanged" and self.ours_after == 0 and self.files_same and self.same_process

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def run(
    host: TestHost,
    dry_run: Tool,
    ssh_tools: list[Tool],
    local_tools: list[LocalTool],
    main_pid: Callable[[], int],
    say: Callable[[str], None],
) -> list[Row]:
    def ours_plans_nothing() -> int:
        result = hosttime.run_timed(dry_run.argv(FROM_VERSION), env=dry_run.env, cwd=dry_run.cwd, timeout=120)
        return int(result["rc"])

    rows: list[Row] = []
    before = host.tree_state(MANAGED_PATHS)
    pid = main_pid()
    rows.append(
        Row("ssh", "ours --dry-run", "unchanged" if ours_plans_nothing() == 0 else "changed", 0, True, True)
    )
    for tool in ssh_tools:
        result = hosttime.run_timed(tool.argv(FROM_VERSION), env=tool.env, cwd=tool.cwd, timeout=300)
        verdict = tool.verdict(result["rc"], output(result))
        rows.append(
            Row(
                "ssh",
                tool.name,
                verdict,
                ours_plans_nothing(),
                host.tree_state(MANAGED_PATHS) == before,
                main_pid() == pid,
            )
        )
    for local in local_tools:
        result = run_in_host(host, local, FROM_VERSION)
        verdict = local.verdict(result["rc"], output(result))
        rows.append(
            Row(
                "local",
                local.name,
                verdict,
                ours_plans_nothing(),
                host.tree_state(MANAGED_PATHS) == before,
                main_pid() == pid,
            )
        )
    for row in rows:
        say(
            f"  same-state {row.where:5} {row.tool:22} reports {row.verdict:9} ours --dry-run exit "
            f"{row.ours_after}  files {'same' if row.files_same else 'DIFFER'}  "
            f"backend {'same process' if row.same_process else 'RESTARTED'}  {'ok' if row.ok else 'NOT OK'}"
        )
    return rows
