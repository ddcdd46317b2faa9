"""After a completed run: does the site serve a gated state? And are the rows the app
acknowledged still in its database?

"Serving a gated state" is checked three ways that must agree: what the reconciler says
(`reconcile status --json`: the release, and the unit Caddy routes to, as Caddy reported it),
the real answer through Caddy (which process answered, X-Choiros-Invocation, and which
release), and the host's own facts (systemd's InvocationID of that unit, and its gate record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from benchmarks.chaos.disturb import app_units, gate_records, invocations
from benchmarks.chaos.plan import DATABASE
from tests.deploying import Project
from tests.testhost import TestHost

ANSWERS = 3


@dataclass
class Verdict:
    ok: bool
    serving: str | None = None  # the release that answered
    unit: str | None = None  # the unit whose process answered
    problems: list[str] = field(default_factory=list)
    seen: str = ""  # what was observed, for the report


def serving_gated(project: Project, host: TestHost, rc: int, desired_version: str) -> Verdict:
    problems: list[str] = []
    status_run = project.reconcile("status", "--json", timeout=120)
    try:
        status = json.loads(status_run.stdout)
    except ValueError:
        status = {}
        problems.append(f"status --json failed (exit {status_run.rc}): {status_run.stderr.strip()[-200:]}")
    answers = []
    for _ in range(ANSWERS):
        try:
            answer = host.http("/api/version", timeout=10)
            answers.append(
                (
                    answer.status,
                    answer.headers.get("X-Choiros-Invocation", ""),
                    answer.headers.get("X-Choiros-Version", ""),
                )
            )
        except OSError as exc:
            answers.append((0, "", f"{type(exc).__name__}"))
    try:
        page = host.http("/", timeout=10)
        page_ok = page.status == 200 and any(f"choiros {v}" in page.text for _, _, v in answers if v)
    except OSError:
        page_ok = False
    gates = gate_records(host)
    states = invocations(host, app_units(host))
    by_invocation = {inv: unit for unit, (active, inv) in states.items() if active == "active" and inv}

    statuses = {a[0] for a in answers}
    served = {(inv, version) for _, inv, version in answers}
    seen = f"status: {status.get('serving')} via {status.get('serving_unit')}; answers: " + ", ".join(
        f"{s} {inv[:8] or '-'} {v or '-'}" for s, inv, v in answers
    )
    if statuses != {200}:
        problems.append(f"the site did not answer 200 to every request: {sorted(statuses)}")
    if len(served) != 1:
        problems.append(f"answers from more than one process or release: {sorted(served)}")
    invocation, version = next(iter(served)) if served else ("", "")
    unit = by_invocation.get(invocation)
    record = gates.get(unit or "") or {}
    if not invocation:
        problems.append("the answer named no process")
    elif unit is None:
        problems.append(f"the process that answered ({invocation[:8]}) is no active unit's")
    elif record.get("invocation") != invocation:
        problems.append(
            f"{unit} answered (process {invocation[:8]}) without a gate record: the record is of "
            f"{str(record.get('invocation', 'none'))[:8]}"
        )
    elif record.get("release") != version:
        problems.append(f"{unit}'s gate record is for release {record.get('release')}, it answers {version}")
    if status and status.get("serving") != version:
        problems.append(f"status says it serves {status.get('serving')}, the site answers {version}")
    if status and unit and status.get("serving_unit") != unit:
        problems.append(f"status says Caddy routes to {status.get('serving_unit')}, {unit} answered")
    if not page_ok:
        problems.append("the frontend's page does not name the release the backend answers with")
    if rc == 0 and version != desired_version:
        problems.append(f"the run said converged, but {version} answers, not {desired_version}")
    return Verdict(not problems, version or None, unit, problems, seen)


ROWS_SCRIPT = """
import json, sqlite3, sys
ids = json.load(sys.stdin)
found = {}
conn = sqlite3.connect(sys.argv[1], timeout=30)
for i in range(0, len(ids), 500):
    chunk = ids[i:i + 500]
    marks = ",".join("?" * len(chunk))
    for row_id, text in conn.execute("SELECT id, text FROM notes WHERE id IN (" + marks + ")", chunk):
        found[row_id] = text
count = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
print(json.dumps({"found": found, "count": count}))
"""


def rows_missing(host: TestHost, acknowledged: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], int]:
    """The acknowledged rows (id, text) that are not in the database as written, and how many
    rows it holds."""
    ids = [row_id for row_id, _ in acknowledged]
    result = host.exec(["python3", "-c", ROWS_SCRIPT, DATABASE], input=json.dumps(ids).encode(), timeout=120)
    data = json.loads(result.stdout)
    found = {int(k): v for k, v in data["found"].items()}
    return [(i, t) for i, t in acknowledged if found.get(i) != t], int(data["count"])
