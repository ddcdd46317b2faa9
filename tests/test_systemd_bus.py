"""The agent reads unit properties from systemd's bus socket instead of `systemctl show`.

On the test host (a real systemd as PID 1) both are read for units in every state the agent
meets, and must agree property by property: the bus is a fast path, so it may never say
anything systemctl would not. Without a host: the object path escaping against systemd's
own rule, the reply types, and every way the bus can fail, each ending in BusUnavailable so
that the agent falls back to systemctl.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.agent import systemd_bus
from reconciler.agent.systemd_bus import BusUnavailable, escape, variant_text
from tests.testhost import TestHost

# --- without a host ----------------------------------------------------------------------


def test_object_paths_are_escaped_as_systemd_escapes_them() -> None:
    # Expected values: `busctl tree org.freedesktop.systemd1` on a Debian host.
    assert escape("choiros-backend.service") == "choiros_2dbackend_2eservice"
    assert escape("getty@tty1.service") == "getty_40tty1_2eservice"
    assert escape("1app.service") == "_31app_2eservice", "a leading digit is escaped"
    assert escape("a_b.service") == "a_5fb_2eservice"
    assert escape("é.service") == "_c3_a9_2eservice", "each UTF-8 byte"
    assert escape("") == "_"


def _variant(kind: str, value: bytes | int) -> bytes:
    body = bytearray([len(kind)]) + kind.encode() + b"\0"
    body += b"\0" * (-len(body) % 4)
    if isinstance(value, bytes):
        return bytes(body + struct.pack("<I", len(value)) + value + (b"\0" if kind == "s" else b""))
    return bytes(body + struct.pack("<I", value))


def test_reply_values_read_as_systemctl_prints_them() -> None:
    assert variant_text(_variant("s", b"active")) == "active"
    assert variant_text(_variant("b", 1)) == "yes"
    assert variant_text(_variant("b", 0)) == "no"
    assert variant_text(_variant("u", 4242)) == "4242"
    assert variant_text(_variant("ay", bytes(range(16)))) == bytes(range(16)).hex()
    assert variant_text(_variant("ay", b"")) == ""
    with pytest.raises(BusUnavailable, match="unexpected type"):
        variant_text(_variant("t", 1) + b"\0" * 8)
    with pytest.raises(BusUnavailable, match="unreadable"):
        variant_text(_variant("s", b"active")[:5])


def _reply(kind: int, reply_to: int, body: bytes) -> bytes:
    fields = bytearray([5]) + b"\x01u\0" + struct.pack("<I", reply_to)
    if body:
        fields += b"\0" * (-len(fields) % 8) + bytes([8]) + b"\x01g\0" + b"\x01v\0"
    head = bytearray(
        b"l" + bytes([kind, 0, 1]) + struct.pack("<III", len(body), 1000 + reply_to, len(fields))
    )
    head += fields
    head += b"\0" * (-len(head) % 8)
    return bytes(head + body)


@pytest.fixture
def fake_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """A socket where systemd's would be, answering as the test says: `auth` is its answer to
    AUTH, `answer(serial)` the bytes sent back for each call, in the order the calls came."""
    path = str(tmp_path / "private")
    monkeypatch.setattr(systemd_bus, "PRIVATE_SOCKET", path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    threads: list[threading.Thread] = []

    def serve(auth: bytes, answer: Callable[[int], bytes], calls: int) -> None:
        def run() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while b"\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(auth)
                if not auth.startswith(b"OK"):
                    return
                pending = b""
                while pending.count(b"l\x01\x00\x01") < calls:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                conn.sendall(b"".join(answer(serial) for serial in range(1, calls + 1)))
                conn.recv(1)  # until the client closes

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield serve
    server.close()
    for thread in threads:
        thread.join(5)


PROPS = (("Unit", "ActiveState"), ("Service", "MainPID"))


def test_answers_in_any_order_are_matched_to_their_calls(fake_bus: Callable[..., None]) -> None:
    values = {
        1: _variant("s", b"active"),
        2: _variant("u", 7),
        3: _variant("s", b"failed"),
        4: _variant("u", 0),
    }
    signal = _reply(4, 99, b"")  # not an answer to any call: skipped
    fake_bus(b"OK 1234\r\n", lambda serial: signal + _reply(2, 5 - serial, values[5 - serial]), 4)
    shown = systemd_bus.show(["a.service", "b.service"], PROPS, timeout=5)
    assert shown == {
        "a.service": {"ActiveState": "active", "MainPID": "7"},
        "b.service": {"ActiveState": "failed", "MainPID": "0"},
    }


@pytest.mark.parametrize(
    ("auth", "answer", "why"),
    [
        (b"REJECTED EXTERNAL\r\n", None, "authentication refused"),
        (b"OK 1\r\n", lambda s: _reply(3, s, b""), "an error reply"),
        (b"OK 1\r\n", lambda s: b"B" + _reply(2, s, _variant("s", b"x"))[1:], "big-endian"),
        (b"OK 1\r\n", lambda s: b"l\x02\x00\x01" + struct.pack("<III", 1 << 30, 1, 0), "too large"),
        (b"OK 1\r\n", lambda s: _reply(2, s, _variant("t", 1) + b"\0" * 8), "unexpected type"),
    ],
)
def test_every_way_the_bus_fails_is_bus_unavailable(
    fake_bus: Callable[..., None], auth: bytes, answer: Callable[[int], bytes] | None, why: str
) -> None:
    fake_bus(auth, answer or (lambda s: b""), 2)
    with pytest.raises(BusUnavailable, match=why):
        systemd_bus.show(["a.service"], PROPS, timeout=5)


def test_no_socket_or_a_silent_one_is_bus_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd_bus, "PRIVATE_SOCKET", str(tmp_path / "none"))
    with pytest.raises(BusUnavailable):
        systemd_bus.show(["a.service"], PROPS, timeout=1)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent"))
    silent.listen(1)
    monkeypatch.setattr(systemd_bus, "PRIVATE_SOCKET", str(tmp_path / "silent"))
    try:
        with pytest.raises(BusUnavailable, match="timed out"):
            systemd_bus.show(["a.service"], PROPS, timeout=0.3)
    finally:
        silent.close()


# --- on the test host ----------------------------------------------------------------------

UNITS = {
    "probe-stopped.service": "[Service]\nExecStart=/bin/sleep 600\n",
    "probe-running.service": "[Service]\nExecStart=/bin/sleep 600\n[Install]\nWantedBy=multi-user.target\n",
    "probe-failed.service": "[Service]\nExecStart=/bin/false\n",
    "probe-loop.service": (
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=0.1\n"
    ),
    "probe@.service": "[Service]\nExecStart=/bin/sleep 600\n",
}

# Runs on the host with its own python3: the agent's two readers, side by side.
COMPARE = """
import json, sys
sys.path.insert(0, "/src")
from reconciler.agent import systemd, systemd_bus
units = json.loads(sys.argv[1])
bus = systemd_bus.show(units, systemd.UNIT_PROPS)
text = systemd.systemctl_show_text(units)
print(json.dumps({"bus": bus, "text": text, "facts": systemd.systemctl_show(units)}))
"""


@pytest.mark.testhost
def test_the_bus_and_systemctl_agree_on_every_unit_state(testhost: TestHost) -> None:
    for name, text in UNITS.items():
        testhost.write(f"/etc/systemd/system/{name}", text.encode())
    testhost.exec("systemctl daemon-reload")
    testhost.exec("systemctl enable --now probe-running.service")
    testhost.exec("systemctl start probe@7.service")
    testhost.exec("systemctl start probe-failed.service probe-loop.service", check=False)
    testhost.exec("sleep 1")
    # Edited on disk, not reloaded: NeedDaemonReload=yes.
    testhost.write(
        "/etc/systemd/system/probe-running.service", (UNITS["probe-running.service"] + "#\n").encode()
    )
    units = [
        "caddy.service",
        "probe-running.service",
        "probe-stopped.service",
        "probe-failed.service",
        "probe@7.service",
        "no-such-unit.service",
        "probe-loop.service",
    ]
    try:
        out = testhost.exec(["python3", "-c", COMPARE, json.dumps(units)]).stdout
    finally:
        testhost.exec(
            "systemctl disable --now probe-running.service probe@7.service probe-loop.service", check=False
        )
        testhost.exec("systemctl reset-failed", check=False)
    shown = json.loads(out)
    bus, text = shown["bus"], shown["text"]
    steady = units[:-1]  # probe-loop restarts between the two reads; compared below
    for unit in steady:
        assert bus[unit] == text[unit], unit
    for prop in ("LoadState", "FragmentPath", "UnitFileState", "NeedDaemonReload"):
        assert bus["probe-loop.service"][prop] == text["probe-loop.service"][prop], prop
    # The states are the ones meant, so the comparison covered them.
    assert bus["probe-running.service"]["NeedDaemonReload"] == "yes"
    assert bus["probe-running.service"]["UnitFileState"] == "enabled"
    assert int(bus["probe-running.service"]["MainPID"]) > 0
    assert len(bus["probe-running.service"]["InvocationID"]) == 32
    assert bus["probe-stopped.service"]["ActiveState"] == "inactive"
    assert bus["probe-failed.service"]["ActiveState"] == "failed"
    assert bus["probe@7.service"]["SubState"] == "running"
    assert bus["no-such-unit.service"]["LoadState"] == "not-found"
    assert int(bus["probe-loop.service"]["NRestarts"]) > 0
    facts = shown["facts"]["probe-running.service"]
    assert facts["main_pid"] == int(bus["probe-running.service"]["MainPID"])
    assert facts["need_daemon_reload"] is True and facts["active"] == "active"


@pytest.mark.testhost
def test_the_agent_falls_back_to_systemctl_when_the_bus_is_not_there(testhost: TestHost) -> None:
    script = """
import json, sys
sys.path.insert(0, "/src")
from reconciler.agent import systemd, systemd_bus
systemd_bus.PRIVATE_SOCKET = "/nonexistent"
print(json.dumps(systemd.systemctl_show(["caddy.service", "no-such-unit.service"])))
"""
    facts = json.loads(testhost.exec(["python3", "-c", script]).stdout)
    assert facts["caddy.service"]["active"] == "active" and facts["caddy.service"]["main_pid"] > 0
    assert facts["no-such-unit.service"]["load"] == "not-found"
