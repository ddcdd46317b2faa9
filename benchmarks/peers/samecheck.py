"""The "same state" check: converged by ours, every tool must see nothing to do.

With the host (or every host of a fleet) converged by ours at FROM_VERSION, each peer runs
for real (not --check), over SSH and on the host, and must report no change; after each,
ours --dry-run must still plan nothing, every managed file must be byte-for-byte what it was
(type, mode, content, link target) and the backend must still be the same process (no
restart). A row that is not ok says why; the benchmarks time no tool that failed here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks.peers import hosttime
from benchmarks.peers.paths import FROM_VERSION
from benchmarks.peers.phases import run_in_host
from benchmarks.peers.tools import LocalTool, Tool, output, why_failed

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
    detail: str = ""  # when the tool did not report "unchanged": why, in its own words

    @property
    def ok(self) -> bool:
        return self.verdict == "unchanged" and self.ours_after == 0 and self.files_same and self.same_process

    @property
    def why(self) -> str:
        reasons = []
        if self.verdict != "unchanged":
            reasons.append(self.detail or f"reported {self.verdict}, expected unchanged")
        if self.ours_after != 0:
            reasons.append(f"ours --dry-run exit {self.ours_after} after it")
        if not self.files_same:
            reasons.append("managed files changed")
        if not self.same_process:
            reasons.append("the backend restarted")
        return "; ".join(reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "why": self.why}


def run(
    hosts: Sequence[TestHost],
    dry_run: Tool,
    ssh_tools: list[Tool],
    local_tools: list[LocalTool],
    main_pid: Callable[[], object],
    say: Callable[[str], None],
) -> list[Row]:
    """`hosts`: what the tools act on (local tools run on the first); `main_pid`: the backend's
    MainPID, or one per host for a fleet."""

    def ours_plans_nothing() -> int:
        result = hosttime.run_timed(dry_run.argv(FROM_VERSION), env=dry_run.env, cwd=dry_run.cwd, timeout=300)
        return int(result["rc"])

    def files() -> list[object]:
        return [host.tree_state(MANAGED_PATHS) for host in hosts]

    def detail(verdict: str, result: dict[str, Any]) -> str:
        if verdict == "unchanged":
            return ""
        return why_failed(verdict, "unchanged", result["rc"], output(result))

    rows: list[Row] = []
    before = files()
    pid = main_pid()
    rows.append(
        Row("ssh", "ours --dry-run", "unchanged" if ours_plans_nothing() == 0 else "changed", 0, True, True)
    )
    for tool in ssh_tools:
        result = hosttime.run_timed(tool.argv(FROM_VERSION), env=tool.env, cwd=tool.cwd, timeout=600)
        verdict = tool.verdict(result["rc"], output(result))
        rows.append(
            Row(
                "ssh",
                tool.name,
                verdict,
                ours_plans_nothing(),
                files() == before,
                main_pid() == pid,
                detail(verdict, result),
            )
        )
    for local in local_tools:
        result = run_in_host(hosts[0], local, FROM_VERSION)
        verdict = local.verdict(result["rc"], output(result))
        rows.append(
            Row(
                "local",
                local.name,
                verdict,
                ours_plans_nothing(),
                files() == before,
                main_pid() == pid,
                detail(verdict, result),
            )
        )
    for row in rows:
        say(
            f"  same-state {row.where:5} {row.tool:22} reports {row.verdict:9} ours --dry-run exit "
            f"{row.ours_after}  files {'same' if row.files_same else 'DIFFER'}  "
            f"backend {'same process' if row.same_process else 'RESTARTED'}  "
            + ("ok" if row.ok else f"NOT OK: {row.why}")
        )
    return rows


T = TypeVar("T", Tool, LocalTool)


def left_out(rows: list[Row], where: str, phase: str, tools: list[T]) -> tuple[list[T], list[dict[str, str]]]:
    """The tools still worth timing, and those that failed the check (`where`: ssh | local) as
    report.Results.excluded entries. A failed tool takes its variants with it ("ansible" also
    leaves out "ansible (warm master)"): timing a run that cannot succeed measures nothing."""
    failed = {row.tool: row.why for row in rows if row.where == where and not row.ok}
    kept, excluded = [], []
    for tool in tools:
        why = next(
            (w for name, w in failed.items() if tool.name == name or tool.name.startswith(name + " (")), None
        )
        if why is None:
            kept.append(tool)
        else:
            excluded.append({"phase": phase, "tool": tool.name, "why": f"same-state check: {why}"})
    return kept, excluded
