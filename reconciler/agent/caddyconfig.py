"""What Caddy runs, asked of Caddy: the configuration it has loaded, from its admin API.

Safety decisions (which units Caddy sends traffic to, whether a fragment is loaded) are made
from these facts, never from the reconciler's own notes about what it loaded: another app's
reload, a Caddy restart, a reboot or an admin may have loaded something else since.

Two facts are read from the loaded JSON:

- the upstream ports: every `reverse_proxy` dial to this host's loopback. The app's units
  listen on ports no other app claims, so a port names a unit;
- the fragment marks: each app's fragment carries `vars reconciler_fragment_<app> <digest>`,
  the digest of the fragment's own text, which Caddy keeps in its configuration. So "Caddy
  runs the fragment on disk" is a comparison of the loaded mark with the file's digest.

Pure functions and one HTTP GET; the controller's planner and the tests' model host use the
same functions, so they cannot disagree with the agent about what a configuration routes to.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

MARK = "reconciler_fragment_"
_MARK_LINE = re.compile(r"^\s*vars " + MARK + r"\S+ \S+\s*$")
DEFAULT_ADMIN = "localhost:2019"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def fragment_digest(text: str) -> str:
    """The digest a fragment's mark carries: of its text without the mark line itself, so
    an edit by hand that keeps an old mark is still seen as another configuration."""
    body = "".join(ln for ln in text.splitlines(keepends=True) if not _MARK_LINE.match(ln))
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def fragment_upstreams(text: str | None) -> list[int]:
    """The loopback ports a fragment's reverse proxies name, read from its text (the form the
    reconciler writes: `reverse_proxy 127.0.0.1:PORT`)."""
    found = re.findall(r"^\s*reverse_proxy\s+(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)", text or "", re.M)
    return sorted({int(port) for port in found})


def runs(seen: Any, app: str, text: str | None, ports: Any) -> bool:
    """Caddy (as `loaded` saw it) runs this fragment of the app: its mark, and, among the
    app's ports, exactly the upstreams the fragment names. The mark alone could be stale: an
    edit by hand that changed an upstream and kept the mark line, loaded by someone else."""
    if not seen.get("answered"):
        return False
    marks = seen.get("marks") or {}
    if text is None:
        return app not in marks
    mine = {int(p) for p in ports}
    routed = {int(p) for p in seen.get("upstreams") or ()} & mine
    return marks.get(app) == fragment_digest(text) and routed == set(fragment_upstreams(text)) & mine


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def upstream_ports(config: Any) -> list[int]:
    """Loopback ports the configuration's reverse proxies send traffic to."""
    ports = set()
    for node in _walk(config):
        if node.get("handler") != "reverse_proxy":
            continue
        for upstream in node.get("upstreams") or ():
            dial = str(upstream.get("dial", "")) if isinstance(upstream, dict) else ""
            host, _, port = dial.rpartition(":")
            if host in _LOOPBACK and port.isdigit():
                ports.add(int(port))
    return sorted(ports)


def fragment_marks(config: Any) -> dict[str, str]:
    """app -> the digest of its fragment, as loaded."""
    marks = {}
    for node in _walk(config):
        if node.get("handler") == "vars":
            for key, value in node.items():
                if key.startswith(MARK):
                    marks[key[len(MARK) :]] = str(value)
    return marks


def admin_address(main_caddyfile: str | None) -> str | None:
    """The admin endpoint the main Caddyfile's global options name (None: `admin off`)."""
    lines = [ln.strip() for ln in (main_caddyfile or "").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or lines[0] != "{":
        return DEFAULT_ADMIN
    depth = 0
    for line in lines:
        if depth == 1 and (line == "admin" or line.startswith(("admin ", "admin\t"))):
            words = line.split()
            if len(words) == 1:
                return DEFAULT_ADMIN
            return None if words[1] == "off" else words[1]
        depth += line.count("{") - line.count("}")
        if depth == 0:
            break
    return DEFAULT_ADMIN


def fetch(address: str, timeout: float = 2.0) -> Any:
    """GET /config/ from the admin endpoint (host:port, or unix//path)."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: str) -> None:
            super().__init__("localhost", timeout=timeout)
            self.path = path

        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(self.path)

    if address.startswith("unix/"):
        conn: http.client.HTTPConnection = UnixConnection(address[len("unix/") :])
        host = "localhost"
    else:
        host = address.split("/", 1)[0]
        name, _, port = host.rpartition(":")
        conn = http.client.HTTPConnection(name or "localhost", int(port or 2019), timeout=timeout)
    try:
        # Caddy checks the Host header of admin requests against the address it listens on.
        conn.request("GET", "/config/", headers={"Host": host})
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise OSError(f"HTTP {answer.status}: {body[:200].decode('utf-8', 'replace')}")
        return json.loads(body.decode("utf-8") or "null")
    finally:
        conn.close()


def loaded(main_caddyfile: str | None, active: bool) -> dict[str, Any]:
    """What Caddy runs, as the observation reports it."""
    if not active:
        return {"answered": False, "upstreams": [], "marks": {}, "error": None}
    address = admin_address(main_caddyfile)
    if address is None:
        error = "its admin API is switched off (`admin off` in the main Caddyfile)"
        return {"answered": False, "upstreams": [], "marks": {}, "error": error}
    import time

    for attempt in range(3):
        try:
            config = fetch(address)
        except (OSError, ValueError) as exc:
            if attempt == 2:
                error = f"its admin API at {address} did not answer ({exc})"
                return {"answered": False, "upstreams": [], "marks": {}, "error": error}
            time.sleep(0.2)
        else:
            return {
                "answered": True,
                "upstreams": upstream_ports(config),
                "marks": fragment_marks(config),
                "error": None,
            }
    raise AssertionError("unreachable")  # pragma: no cover
