"""The app's routes, its single-page frontend, websockets and version-naming health gates,
through the real Caddy (Debian's 2.6.2) on a test host, with the example app as built by
examples/app/build.py."""

from __future__ import annotations

import gzip
import json
import re
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from reconciler.spec import paths
from tests.deploying import Project, serves, unit_pid

pytestmark = pytest.mark.testhost

BLUE, GREEN = "choiros-backend-blue.service", "choiros-backend-green.service"
ROUTES = "backend_paths: [/api/*, /ws]\nprivate_paths: [/metrics, /api/internal/*]"
SPA = "mode: static\nspa: true"


def live(project: Project) -> ClientConnection:
    """A websocket to the app through Caddy, as a browser on the site opens one."""
    return connect(f"ws://{project.host.address}/ws", open_timeout=5, close_timeout=2)


def closed_with(ws: ClientConnection, within: float = 30) -> tuple[int | None, str]:
    """Wait for the socket to be closed; the close code and reason the client received
    (None: the connection ended without a close frame)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=within)
    frame = closed.value.rcvd
    return (frame.code, frame.reason) if frame is not None else (None, "")


def journal(project: Project, unit: str) -> str:
    return project.host.exec(["journalctl", "-u", unit, "--no-pager", "-o", "cat"]).stdout


def test_routes_spa_fallback_caching_and_precompressed_files(project: Project) -> None:
    host = project.host
    project.write("1.0.0", proxy=ROUTES, frontend=SPA)
    assert project.once().rc == 0
    assert serves(host) == "1.0.0"

    # Which paths reach the backend is what the patterns say (reconciler/spec/paths.py).
    backend = ["/health", "/api/*", "/ws"]
    for path in ["/ws", "/ws/", "/wsx", "/WS", "/api", "/api/", "/api/version", "/health", "/settings"]:
        answer = host.http(path)
        reached = answer.headers.get("X-Choiros-Version") == "1.0.0"
        assert reached == any(paths.matches(p, path) for p in backend), (path, answer.status)
    assert host.http("/ws").status == 400, "a plain GET of the websocket path reaches the backend"
    for private in ["/metrics", "/api/internal/users"]:
        hidden = host.http(private)
        assert hidden.status == 404 and hidden.text == "" and "X-Choiros-Version" not in hidden.headers

    # A client-side route reloads as the app; the page is revalidated on every use.
    index = host.http("/")
    for deep in ["/settings", "/settings/live"]:
        page = host.http(deep)
        assert page.status == 200 and page.text == index.text and "choiros 1.0.0" in page.text
        assert page.headers["Cache-Control"] == "no-cache"
    assert index.headers["Cache-Control"] == "no-cache"

    # Fingerprinted assets: a year, immutable; a missing one is a 404, never the page.
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.text)
    assert len(assets) == 2, index.text
    for asset in assets:
        plain = host.http(asset)
        assert plain.status == 200 and plain.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        packed = host.http(asset, headers={"Accept-Encoding": "gzip"})
        assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
        on_host = host.read(f"/opt/choiros/releases/1.0.0/frontend/dist{asset}.gz")
        assert packed.body == on_host, "the release's own .gz is served, not one made on the fly"
        assert gzip.decompress(packed.body) == plain.body
    missing = host.http("/assets/app-0000000000.js")
    assert missing.status == 404 and "Cache-Control" not in missing.headers


def test_spa_off_answers_404_for_a_client_route(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    assert project.host.http("/settings").status == 404
    assert project.host.http("/").headers["Cache-Control"] == "no-cache"


def test_websocket_through_caddy_across_a_blue_green_switch(project: Project) -> None:
    host = project.host
    project.write("1.0.0", strategy="blue-green", proxy=ROUTES, frontend=SPA)
    assert project.once().rc == 0
    with live(project) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"hello": "choiros", "version": "1.0.0"}
        ws.send("before")
        assert json.loads(ws.recv(timeout=5)) == {"version": "1.0.0", "echo": "before"}
        blue_pid = unit_pid(host, BLUE)

        project.write("2.0.0", strategy="blue-green", proxy=ROUTES, frontend=SPA)
        switch = project.once()
        assert switch.rc == 0, switch.stderr
        # Caddy 2.6 closes every proxied websocket when its configuration is reloaded, and
        # the switch is a reload: the client is told "going away" by Caddy itself.
        code, reason = closed_with(ws)
        print(f"blue-green switch: the open socket was closed with {code} {reason!r}")
        assert code == 1001
    # The old colour stays warm: Caddy ended its side of the socket too, nothing else. Caddy
    # 2.6.2 sends that close frame unmasked, which RFC 6455 makes a protocol error for the
    # backend (a Rust backend on tungstenite refuses it the same way).
    assert unit_pid(host, BLUE) == blue_pid
    assert "websocket from 127.0.0.1 closed: 1002 unmasked close frame" in journal(project, BLUE)
    # Reconnecting reaches the new release.
    with live(project) as again:
        assert json.loads(again.recv(timeout=5))["version"] == "2.0.0"
        ws_pid = unit_pid(host, GREEN)
        # Any later reload closes it again: a switch back, here.
        project.write("1.0.0", strategy="blue-green", proxy=ROUTES, frontend=SPA)
        assert project.once().rc == 0
        assert closed_with(again)[0] == 1001
    assert unit_pid(host, GREEN) == ws_pid
    with live(project) as back:
        assert json.loads(back.recv(timeout=5))["version"] == "1.0.0"


def test_websocket_across_a_symlink_swap_restart(project: Project) -> None:
    project.write("1.0.0", proxy=ROUTES, frontend=SPA)
    assert project.once().rc == 0
    with live(project) as ws:
        assert json.loads(ws.recv(timeout=5))["version"] == "1.0.0"
        project.write("2.0.0", proxy=ROUTES, frontend=SPA)
        started = time.monotonic()
        assert project.once().rc == 0
        code, reason = closed_with(ws)
        print(
            f"symlink-swap: closed with {code} {reason!r} ({time.monotonic() - started:.1f} s into the run)"
        )
        assert (code, reason) == (1001, "server shutting down"), "the backend said goodbye before it stopped"
    with live(project) as again:
        assert json.loads(again.recv(timeout=5))["version"] == "2.0.0"


# --- health gates that find the version where the app puts it ---------------------------------

DATASETTE_GATE = "command: bin/backend --port {port}\nport: 8080\nhealth: /-/versions.json"
SHORT = "timeout: 3\ninterval: 0.1\nstable: 0.3"


def test_a_datasette_shaped_answer_passes_the_default_gate(project: Project) -> None:
    # /-/versions.json answers {"choiros": {"version": "1.0.0"}, "python": {...}, ...}.
    project.write("1.0.0", backend=DATASETTE_GATE)
    run = project.once()
    assert run.rc == 0, run.stdout + run.stderr
    assert serves(project.host) == "1.0.0"
    project.write("2.0.0", backend=DATASETTE_GATE, health="version_at: {json: choiros.version}")
    assert project.once().rc == 0 and serves(project.host) == "2.0.0"


def test_a_first_deploy_whose_answers_never_name_the_version_says_how_to_name_it(project: Project) -> None:
    project.write("1.0.0", backend=DATASETTE_GATE, health=f"{SHORT}\nversion_at: {{json: python.version}}")
    run = project.reconcile("--once")
    said = run.stdout + run.stderr
    print(said)
    assert run.rc == 1, said
    assert "answered but never named version 1.0.0" in said
    assert "its python.version is" in said
    assert "health.expect_version: false" in said and "health.version_at" in said
    assert "nothing to roll back to" in said and "rolling back" not in said
    # Naming the right place is a new configuration: deployed without --retry-quarantined.
    project.write("1.0.0", backend=DATASETTE_GATE, health=f"{SHORT}\nversion_at: {{json: choiros.version}}")
    fixed = project.once()
    assert fixed.rc == 0, fixed.stdout + fixed.stderr
