"""Tests for the example app "choiros" (examples/app).

Real builds and real processes, loopback traffic only.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

APP_DIR = Path(__file__).resolve().parents[1] / "examples" / "app"
VERSION = "1.4.2"
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- helpers


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("choiros_build_under_test", APP_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        time.sleep(0.02)
    raise AssertionError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.headers, data)
    finally:
        conn.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_PATH", "CORS_ALLOW_ORIGINS", "NOTIFY_SOCKET", "INVOCATION_ID"}
    }
    env.update(extra)
    return env


Launcher = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """Start processes (stderr to a file); everything still running is killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def _launch(
        argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"proc-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            env=env if env is not None else clean_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        return proc

    yield _launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


# --------------------------------------------------------------------------- builds


@pytest.fixture(scope="module")
def build_mod() -> ModuleType:
    return _load_build_module()


@pytest.fixture(scope="module")
def releases(build_mod: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directory releases of VERSION: "ok" plus one per fault."""
    out = tmp_path_factory.mktemp("releases")
    built: dict[str, Path] = {}
    path, _ = build_mod.build(VERSION, out / "ok", fmt="dir")
    built["ok"] = path
    for fault in ("health-500", "crash", "slow-start"):
        path, _ = build_mod.build(VERSION, out / fault, fmt="dir", fault=fault)
        built[fault] = path
    return built


def test_tarball_is_deterministic_safe_and_complete(build_mod: ModuleType, tmp_path: Path) -> None:
    path_a, sha_a = build_mod.build(VERSION, tmp_path / "a")
    path_b, sha_b = build_mod.build(VERSION, tmp_path / "b")
    assert path_a == tmp_path / "a" / f"choiros-{VERSION}.tar.gz"
    assert sha_a == sha_b == hashlib.sha256(path_a.read_bytes()).hexdigest()
    assert path_a.read_bytes() == path_b.read_bytes()

    dir_path, sha_dir = build_mod.build(VERSION, tmp_path / "d", fmt="dir")
    assert dir_path == tmp_path / "d" / f"choiros-{VERSION}"
    assert sha_dir == sha_a  # the reported sha256 is that of the canonical tarball

    _, sha_other = build_mod.build("1.4.3", tmp_path / "a")
    assert sha_other != sha_a

    raw = path_a.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0

    with tarfile.open(path_a, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    for m in members:
        assert m.isfile() or m.isdir(), m.name
        assert not m.name.startswith(("/", "./")) and ".." not in m.name.split("/"), m.name
        assert m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
        assert m.mtime == 0
        expected_mode = 0o755 if m.isdir() or m.name.startswith("bin/") else 0o644
        assert m.mode == expected_mode, (m.name, oct(m.mode))
    for required in (
        "VERSION",
        "bin/backend",
        "bin/frontend-dev",
        "backend/choiros_backend.py",
        "frontend/choiros_frontend_dev.py",
        "frontend/src/index.html",
        "frontend/src/app.js",
        "frontend/src/style.css",
        "frontend/dist/index.html",
        "frontend/dist/index.html.gz",
    ):
        assert required in names
    assets = [
        n for n in names if re.fullmatch(r"frontend/dist/assets/(app|style)-[0-9a-f]{10}\.(js|css)(\.gz)?", n)
    ]
    assert len(assets) == 4, names
    assert "FAULT" not in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    with tarfile.open(path_a, "r:gz") as tar:
        version_file = tar.extractfile("VERSION")
        assert version_file is not None
        assert version_file.read() == f"{VERSION}\n".encode()

    # The directory release holds exactly the tarball's content.
    on_disk = sorted(p.relative_to(dir_path).as_posix() for p in dir_path.rglob("*") if p.is_file())
    assert on_disk == sorted(m.name for m in members if m.isfile())
    assert os.access(dir_path / "bin" / "backend", os.X_OK)


def test_source_date_epoch_sets_member_mtime(
    build_mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    path, _ = build_mod.build(VERSION, tmp_path)
    with tarfile.open(path, "r:gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    with gzip.open(path) as gz:
        gz.read(1)
    assert path.read_bytes()[4:8] == b"\0\0\0\0"


def test_fault_file_is_baked_in(releases: dict[str, Path]) -> None:
    assert not (releases["ok"] / "FAULT").exists()
    for fault in ("health-500", "crash", "slow-start"):
        assert (releases[fault] / "FAULT").read_text().strip() == fault


def test_cli_prints_path_and_sha_and_rejects_bad_versions(tmp_path: Path) -> None:
    build_py = str(APP_DIR / "build.py")
    done = subprocess.run(
        [sys.executable, build_py, "2.0.0-rc.1+b7", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.fullmatch(r"(\S+) sha256=([0-9a-f]{64})\n", done.stdout)
    assert match, done.stdout
    artifact = Path(match.group(1))
    assert artifact == tmp_path / "choiros-2.0.0-rc.1+b7.tar.gz"
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == match.group(2)

    for bad in ("../evil", "-1", "a b", "", "x" * 65, "1.0/2", ".hidden"):
        done = subprocess.run(
            [sys.executable, build_py, bad, "--out", str(tmp_path / "bad")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2, (bad, done.stderr)
    assert not (tmp_path / "bad").exists()


def test_build_function_rejects_bad_input(build_mod: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_mod.build("../evil", tmp_path)
    with pytest.raises(ValueError):
        build_mod.build(VERSION, tmp_path, fmt="zip")
    with pytest.raises(ValueError):
        build_mod.build(VERSION, tmp_path, fault="explode")


def test_dist_index_contains_version(releases: dict[str, Path]) -> None:
    dist = releases["ok"] / "frontend" / "dist"
    page = (dist / "index.html").read_text()
    assert f"choiros {VERSION}" in page
    assert "{{" not in page and "dev server" not in page
    # the sources stay templates for the dev server
    assert "{{CHOIROS_VERSION}}" in (releases["ok"] / "frontend" / "src" / "index.html").read_text()


def test_dist_assets_are_fingerprinted_and_precompressed(
    build_mod: ModuleType, releases: dict[str, Path]
) -> None:
    dist = releases["ok"] / "frontend" / "dist"
    page = (dist / "index.html").read_text()
    linked = re.findall(r'(?:src|href)="/(assets/[^"]+)"', page)
    assert sorted(Path(p).suffix for p in linked) == [".css", ".js"], page
    for rel in linked:
        data = (dist / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest()[:10] in rel, "the name changes with the content"
        assert gzip.decompress((dist / f"{rel}.gz").read_bytes()) == data
    script = next(dist / p for p in linked if p.endswith(".js"))
    assert '"/api/version"' in script.read_text() and '"/ws"' in script.read_text()
    assert gzip.decompress((dist / "index.html.gz").read_bytes()).decode() == page
    # Another release of the same sources links the same assets: browsers keep their copy.
    other = build_mod.frontend_dist(build_mod.collect_sources(), "9.9.9")
    assert {p for p in other if "/assets/" in p} == {
        f"frontend/dist/{p}{gz}" for p in linked for gz in ("", ".gz")
    }


# --------------------------------------------------------------------------- backend


def start_backend(
    launch: Launcher,
    release: Path,
    db: Path,
    *,
    cors: str | None = None,
    wait: bool = True,
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    extra = {"DATABASE_PATH": str(db)}
    if cors is not None:
        extra["CORS_ALLOW_ORIGINS"] = cors
    proc = launch(
        [str(release / "bin" / "backend"), "--port", str(port)], env=clean_env(**extra), cwd=release
    )
    if wait:
        wait_listening(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 3.0) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def test_backend_health_version_and_notes(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    # Run through a "current" symlink, like /opt/choiros/current/bin/backend.
    current = tmp_path / "current"
    current.symlink_to(releases["ok"], target_is_directory=True)
    db = tmp_path / "state" / "nested" / "choiros.db"  # parent dirs do not exist yet
    proc, port = start_backend(launch, current, db)

    health = request(port, "GET", "/health")
    assert health.status == 200
    assert health.headers["Content-Type"].startswith("application/json")
    assert int(health.headers["Content-Length"]) == len(health.body)
    assert health.json() == {"status": "ok", "version": VERSION}
    assert request(port, "GET", "/api/version").json() == {"version": VERSION}

    assert request(port, "GET", "/api/notes").json() == []
    created = request(
        port,
        "POST",
        "/api/notes",
        body=json.dumps({"text": "hello — wörld"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert created.status == 201
    note = created.json()
    assert note["text"] == "hello — wörld" and isinstance(note["id"], int) and note["created_at"]
    assert int(created.headers["Content-Length"]) == len(created.body)
    request(port, "POST", "/api/notes", body=b'{"text": "second"}')
    listed = request(port, "GET", "/api/notes")
    assert listed.status == 200
    assert [n["text"] for n in listed.json()] == ["hello — wörld", "second"]
    assert listed.json()[0] == note

    assert db.is_file()
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 2

    bad_json = request(port, "POST", "/api/notes", body=b"{not json")
    assert bad_json.status == 400 and "error" in bad_json.json()
    assert request(port, "POST", "/api/notes", body=b'{"text": ""}').status == 400
    missing = request(port, "GET", "/api/nope")
    assert missing.status == 404 and missing.json() == {"error": "not found"}
    assert request(port, "DELETE", "/api/notes").status == 405

    assert stop(proc) == 0
    # Notes survive a restart: they live in SQLite at DATABASE_PATH.
    proc, port = start_backend(launch, current, db)
    assert len(request(port, "GET", "/api/notes").json()) == 2
    assert stop(proc, signal.SIGINT) == 0


def test_backend_through_symlinked_entrypoint(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    link = tmp_path / "choiros-backend"
    link.symlink_to(releases["ok"] / "bin" / "backend")
    port = free_port()
    proc = launch(
        [str(link), "--port", str(port), "--host", LOOPBACK],
        env=clean_env(DATABASE_PATH=str(tmp_path / "db.sqlite")),
        cwd=tmp_path,  # neither the release nor its parent
    )
    wait_listening(port, proc)
    assert request(port, "GET", "/health").json()["version"] == VERSION
    assert stop(proc) == 0
    assert not list(releases["ok"].rglob("__pycache__"))  # the release stays untouched


def test_backend_says_which_process_answered(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    """systemd gives each start of a unit its own $INVOCATION_ID: every answer names it, so a
    client (the chaos benchmark) can tell which start of a release answered."""
    invocation = "0123456789abcdef0123456789abcdef"
    port = free_port()
    env = clean_env(DATABASE_PATH=str(tmp_path / "db.sqlite"), INVOCATION_ID=invocation)
    proc = launch([str(releases["ok"] / "bin" / "backend"), "--port", str(port)], env=env)
    wait_listening(port, proc)
    for method, path, body in (("GET", "/api/version", None), ("POST", "/api/notes", b'{"text": "x"}')):
        answer = request(port, method, path, body=body)
        assert answer.status in (200, 201)
        assert answer.headers["X-Choiros-Invocation"] == invocation
        assert answer.headers["X-Choiros-Version"] == VERSION
    assert request(port, "GET", "/missing").headers["X-Choiros-Invocation"] == invocation
    assert stop(proc) == 0

    # Not under systemd: no invocation to name, and no header.
    proc, port = start_backend(launch, releases["ok"], tmp_path / "db2.sqlite")
    answer = request(port, "GET", "/api/version")
    assert answer.headers["X-Choiros-Version"] == VERSION and "X-Choiros-Invocation" not in answer.headers
    assert stop(proc) == 0


def test_backend_cors(launch: Launcher, releases: dict[str, Path], tmp_path: Path) -> None:
    allowed = "https://app.example.test"
    proc, port = start_backend(
        launch, releases["ok"], tmp_path / "db.sqlite", cors=f"{allowed}, http://localhost:3000"
    )
    ok = request(port, "GET", "/api/version", headers={"Origin": allowed})
    assert ok.headers["Access-Control-Allow-Origin"] == allowed
    assert "Origin" in ok.headers.get_all("Vary", [])
    other = request(port, "GET", "/api/version", headers={"Origin": "https://evil.example.test"})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
    plain = request(port, "GET", "/api/version")
    assert "Access-Control-Allow-Origin" not in plain.headers

    preflight_headers = {
        "Origin": allowed,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    preflight = request(port, "OPTIONS", "/api/notes", headers=preflight_headers)
    assert preflight.status == 204 and preflight.body == b""
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    denied = request(
        port,
        "OPTIONS",
        "/api/notes",
        headers={**preflight_headers, "Origin": "https://evil.example.test"},
    )
    assert denied.status != 204 and "Access-Control-Allow-Origin" not in denied.headers
    assert stop(proc) == 0

    proc, port = start_backend(launch, releases["ok"], tmp_path / "db.sqlite", cors="*")
    anyone = request(port, "GET", "/api/notes", headers={"Origin": "https://x.example.test"})
    assert anyone.headers["Access-Control-Allow-Origin"] == "https://x.example.test"
    assert stop(proc) == 0


def test_backend_refuses_to_start_without_database_path(releases: dict[str, Path], tmp_path: Path) -> None:
    done = subprocess.run(
        [str(releases["ok"] / "bin" / "backend"), "--port", str(free_port())],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 2
    assert "DATABASE_PATH" in done.stderr


def test_backend_sigterm_finishes_inflight_request(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    proc, port = start_backend(launch, releases["ok"], tmp_path / "db.sqlite")
    body = b'{"text": "in flight"}'
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        time.sleep(0.2)  # the handler is now blocked reading the body
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "exited before the in-flight request finished"
        assert not is_listening(port), "still accepting new connections after SIGTERM"
        sock.sendall(body[5:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.0 201")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["text"] == "in flight"
    assert proc.wait(timeout=3) == 0
    assert time.monotonic() - started < 3


def test_backend_websocket_echoes_with_its_version(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    # An independent client (the websockets library) checks the example's own RFC 6455 code.
    proc, port = start_backend(launch, releases["ok"], tmp_path / "db.sqlite")
    with connect(f"ws://{LOOPBACK}:{port}/ws", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"hello": "choiros", "version": VERSION}
        ws.send("hello — wörld")
        assert json.loads(ws.recv(timeout=5)) == {"version": VERSION, "echo": "hello — wörld"}
        big = "x" * 65_536  # the largest message it takes; frames with the 64-bit length
        ws.send(big)
        assert json.loads(ws.recv(timeout=5))["echo"] == big
        ws.send(["frag", "mented"])  # one message in several frames
        assert json.loads(ws.recv(timeout=5))["echo"] == "fragmented"
        ws.ping(b"p").wait(timeout=5)
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"
        ws.send("y" * 70_000)  # over the backend's 64 KiB
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    plain = request(port, "GET", "/ws")
    assert plain.status == 400 and "websocket upgrade" in plain.json()["error"]
    assert stop(proc) == 0


def test_backend_sigterm_closes_websockets_going_away(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    proc, port = start_backend(launch, releases["ok"], tmp_path / "db.sqlite")
    with connect(f"ws://{LOOPBACK}:{port}/ws") as one, connect(f"ws://{LOOPBACK}:{port}/ws") as two:
        one.recv(timeout=5)
        two.recv(timeout=5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for ws in (one, two):
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2, "open websockets held the shutdown"


def test_backend_answers_versions_in_datasettes_shape(
    launch: Launcher, releases: dict[str, Path], tmp_path: Path
) -> None:
    proc, port = start_backend(launch, releases["ok"], tmp_path / "db.sqlite")
    answer = request(port, "GET", "/-/versions.json").json()
    assert answer["choiros"] == {"version": VERSION} and "version" in answer["python"]
    assert "version" not in answer, "the version is nested, as Datasette nests it"
    assert stop(proc) == 0


def test_fault_health_500(launch: Launcher, releases: dict[str, Path], tmp_path: Path) -> None:
    proc, port = start_backend(launch, releases["health-500"], tmp_path / "db.sqlite")
    health = request(port, "GET", "/health")
    assert health.status == 500
    assert health.json()["status"] == "failing" and health.json()["version"] == VERSION
    assert request(port, "GET", "/api/version").json() == {"version": VERSION}
    assert request(port, "POST", "/api/notes", body=b'{"text": "x"}').status == 201
    assert stop(proc) == 0


def test_fault_crash(launch: Launcher, releases: dict[str, Path], tmp_path: Path) -> None:
    started = time.monotonic()
    proc, _ = start_backend(launch, releases["crash"], tmp_path / "db.sqlite", wait=False)
    assert proc.wait(timeout=3) == 1
    assert time.monotonic() - started >= 0.9


def test_fault_slow_start(launch: Launcher, releases: dict[str, Path], tmp_path: Path) -> None:
    started = time.monotonic()
    proc, port = start_backend(launch, releases["slow-start"], tmp_path / "db.sqlite", wait=False)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    assert not is_listening(port)
    assert proc.poll() is None
    wait_listening(port, proc, timeout=5.0 - (time.monotonic() - started))
    assert time.monotonic() - started >= 2.5
    assert request(port, "GET", "/health").json() == {"status": "ok", "version": VERSION}
    assert stop(proc) == 0


# --------------------------------------------------------------------------- frontend dev server


def test_frontend_dev_server(launch: Launcher, build_mod: ModuleType, tmp_path: Path) -> None:
    release, _ = build_mod.build(VERSION, tmp_path / "out", fmt="dir")  # own copy: edited below
    port = free_port()
    proc = launch(
        [str(release / "bin" / "frontend-dev"), "--port", str(port), "--host", LOOPBACK],
        cwd=tmp_path,
    )
    wait_listening(port, proc)

    page = request(port, "GET", "/")
    assert page.status == 200
    assert page.headers["X-Dev-Server"] == "1"
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert f"choiros {VERSION}" in html and "dev server" in html and "{{" not in html

    health = request(port, "GET", "/__dev/health")
    assert health.status == 200 and health.headers["X-Dev-Server"] == "1"

    script = request(port, "GET", "/app.js")
    assert script.status == 200 and b"/api/notes" in script.body
    assert request(port, "GET", "/../VERSION").status == 404
    assert request(port, "GET", "/%2e%2e/VERSION").status == 404
    assert request(port, "GET", "/missing.css").status == 404
    deep = request(port, "GET", "/settings")  # a client-side route: the app's page
    assert deep.status == 200 and f"choiros {VERSION}" in deep.body.decode()

    # Live: an edit to frontend/src shows up on the next request.
    index = release / "frontend" / "src" / "index.html"
    index.write_text(index.read_text().replace("<h2>Notes</h2>", "<h2>choiros live edit</h2>"))
    edited = request(port, "GET", "/index.html").body.decode()
    assert "choiros live edit" in edited and f"choiros {VERSION}" in edited

    assert stop(proc) == 0
