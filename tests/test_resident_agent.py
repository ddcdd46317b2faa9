"""The resident agent (watch mode): one exec on the held connection serves request after
request, over both SSH transports; it goes away with the connection, comes back once when it
died, and a no-op pass costs a round trip, not a python3 start and a compile."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.agent.protocol import PROTOCOL
from reconciler.executors.openssh import OpenSSHExecutor
from reconciler.executors.ssh import SSHExecutor
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

OBSERVE = {
    "op": "observe",
    "protocol": PROTOCOL,
    "observe": {"state": "/var/lib/reconciler/x", "releases": "/opt/x/releases", "units": ["caddy.service"]},
}


def _executor(host: TestHost, transport: str, resident: bool) -> Any:
    options = SSHOptions(
        identity=(str(host.key_path),),
        known_hosts=str(host.known_hosts),
        transport=transport,
        resident=resident,
    )
    target = Target("ssh", host=host.address, user="root", port=22)
    return OpenSSHExecutor(target, options) if transport == "openssh" else SSHExecutor(target, options)


def _agents(host: TestHost) -> list[str]:
    out = host.exec(["pgrep", "-f", "hostagent.session"], check=False).stdout
    return out.split()


@pytest.fixture(params=["paramiko", "openssh"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)


def test_one_resident_agent_serves_every_request_and_leaves_with_the_connection(
    testhost: TestHost, transport: str
) -> None:
    executor = _executor(testhost, transport, resident=True)
    try:
        answers = [executor.request(OBSERVE) for _ in range(10)]
        assert all(
            a["event"] == "result" and a["snapshot"]["units"]["caddy.service"]["active"] == "active"
            for a in answers
        )
        running = _agents(testhost)
        assert len(running) == 1, running
        testhost.exec(["kill", "-9", running[0]])  # it died: the next read starts another
        assert executor.request(OBSERVE)["event"] == "result"
        assert len(_agents(testhost)) == 1 and _agents(testhost) != running
    finally:
        executor.close()
    deadline = time.monotonic() + 5
    while _agents(testhost) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _agents(testhost) == [], "the agent outlived its connection"


def test_a_resident_pass_costs_a_round_trip(testhost: TestHost) -> None:
    """The figure the watch benchmark reports, measured here too: a no-op observation over the
    held paramiko connection, resident against one exec per request."""
    times: dict[bool, list[float]] = {}
    for resident in (False, True):
        executor = _executor(testhost, "paramiko", resident)
        try:
            executor.request(OBSERVE)  # connect (and start the resident agent) first
            samples = []
            for _ in range(15):
                t0 = time.perf_counter()
                executor.request(OBSERVE)
                samples.append((time.perf_counter() - t0) * 1000)
            times[resident] = samples
        finally:
            executor.close()
    one_shot, resident_ms = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"\nno-op observation over a held connection: one exec each {one_shot:.1f} ms, resident {resident_ms:.1f} ms"
    )
    assert resident_ms < one_shot / 2
