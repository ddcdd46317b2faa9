"""The health gate: consecutive good answers from one process, spanning a stable window."""

from __future__ import annotations

import time

from . import records
from . import version as versions
from .context import Context
from .fsops import decode, run
from .protocol import ENV_PREFIX, AgentError, Json
from .systemd import journal_tail, unit_state


def http_get(url: str, timeout: float) -> tuple[int, list[tuple[str, str]], bytes]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), list(resp.headers.items()), resp.read(65536)
    except urllib.error.HTTPError as exc:
        return int(exc.code), list(exc.headers.items()), exc.read(65536)


def _invocation(unit: str | None) -> str:
    return unit_state(unit)["invocation"] if unit else ""


def do_check_health(ctx: Context, a: Json) -> Json:
    """Pass after `passes` consecutive good answers spanning `stable` seconds from one process,
    then record on the host which process passed (its invocation) with what it runs.

    The same-process rule catches a release that answers at first and then crashes: systemd
    restarts it under a new invocation, which breaks the streak. The record is what later
    runs (and Caddy switches) trust: a process without one has not been gated.
    """
    unit = a.get("unit")
    if a["unless_gated"] and unit and records.gate_of(ctx.state_dir, unit)[0] is not None:
        return {"skipped": f"the process {unit} runs passed its gate already"}
    result = _wait_healthy(a)
    if unit:
        record_pass(ctx, unit, result.pop("invocation"))
    return result


def record_pass(ctx: Context, unit: str, invocation: str) -> None:
    state = unit_state(unit)
    if state["invocation"] != invocation:
        raise AgentError(f"{unit} was restarted by systemd right after passing (it crashed)", code="health")
    environ = state["environ"]
    records.record_gate(
        ctx.state_dir,
        unit,
        {
            "invocation": invocation,
            "release": environ.get(ENV_PREFIX + "RELEASE"),
            "config": environ.get(ENV_PREFIX + "CONFIG"),
            "unit_hash": environ.get(ENV_PREFIX + "UNIT_HASH"),
        },
    )


def _wait_healthy(a: Json) -> Json:
    url, unit = a["url"], a.get("unit")
    deadline = time.monotonic() + float(a["timeout"])
    need, interval = int(a["passes"]), float(a["interval"])
    stable = float(a.get("stable") or 0)
    version: str = a.get("expect_version") or ""
    at = a.get("version_at")
    streak = probes = 0
    streak_since, streak_of = 0.0, ""
    last = "no answer yet"
    unnamed = False  # the last answer was good but for naming the version
    while True:
        probes += 1
        try:
            status, headers, body = http_get(url, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            good = status < 500 if a.get("any_status") else status == 200
            unnamed = bool(good and version and not versions.names_version(body, headers, version, at))
            if unnamed:
                good = False
                why = versions.miss(body, headers, version, at)
                last = f"HTTP {status} but {why}: {decode(body)[:200]}"
            elif not good:
                last = f"HTTP {status}: {decode(body)[:200]}"
        except OSError as exc:  # URLError is an OSError
            good = unnamed = False
            last = f"no HTTP answer ({getattr(exc, 'reason', exc)})"
        if good:
            if streak == 0:
                streak_since, streak_of = time.monotonic(), _invocation(unit)
            streak += 1
        else:
            streak = 0
        if streak >= need and time.monotonic() - streak_since >= stable:
            if _invocation(unit) == streak_of:
                return {"probes": probes, "invocation": streak_of}
            streak = 0  # restarted by systemd in between: that is not healthy
            last = f"{unit} was restarted by systemd while answering (it crashed)"
        if unit and probes % 4 == 0:
            active = decode(run(["systemctl", "is-active", "--", unit], timeout=10).stdout)
            if active == "failed":
                raise AgentError(
                    f"{unit} failed while waiting for health at {url}", journal_tail(unit), code="health"
                )
        if time.monotonic() + interval > deadline:
            detail = f"last answer: {last}"
            if unit:
                detail += "\n" + journal_tail(unit)
            if unnamed:
                # Healthy by every other measure: the controller says how to name the place.
                raise AgentError(
                    f"{url} answered but never named version {version} within {a['timeout']}s "
                    f"({probes} probes)",
                    detail,
                    code="version",
                )
            raise AgentError(
                f"{url} was not healthy within {a['timeout']}s ({probes} probes)", detail, code="health"
            )
        time.sleep(interval)
