"""The pure parts of `reconcile logs`, `exec` and `render`: which units a journal is read
for and how its lines print, where a one-off command runs and as whom, the transient unit's
command line, the files a desired state writes, and the command lines' refusals (none of
which contacts a host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.agent.transient import transient_argv
from reconciler.cli.journal_lines import host_json, text_line
from reconciler.engine.logs import DEFAULT_LINES, logs_request, units_for
from reconciler.plan.oneoff import NotRunnable, one_off
from reconciler.plan.planner import plan
from reconciler.plan.preview import empty_host as preview_host
from reconciler.plan.preview import rendered_files
from reconciler.render import envfile
from reconciler.spec.load import load_bytes
from tests.model_host import ModelHost
from tests.test_planner import desired, empty_host

REPO = Path(__file__).resolve().parent.parent


def deployed(*states: object) -> ModelHost:
    host = ModelHost(empty_host())
    for d in states:
        host.run(plan(d, host.snapshot()))  # type: ignore[arg-type]
    return host


# --- logs ------------------------------------------------------------------------------------


def test_logs_reads_every_unit_of_the_app_by_default_and_one_kind_when_asked() -> None:
    d = desired()
    everything = units_for(d, [])
    assert everything == [
        "choiros-backend.service",
        "choiros-backend-blue.service",
        "choiros-backend-green.service",
        "choiros-frontend.service",
        "reconciler-task-choiros-*",
    ]
    assert units_for(d, ["green"]) == ["choiros-backend-green.service"]
    assert units_for(d, ["tasks", "backend", "blue"]) == ["reconciler-task-choiros-*", *everything[:3]]
    request = logs_request(d, [], follow=False, lines=None, since=None, all_fields=False)
    assert request["lines"] == DEFAULT_LINES
    since = logs_request(d, [], follow=True, lines=None, since="10 min ago", all_fields=True)
    assert since["lines"] is None and since["follow"] and since["all_fields"]


def entry(**fields: object) -> str:
    return json.dumps({"__REALTIME_TIMESTAMP": "1714564801000000", **fields})


def test_a_journal_entry_prints_as_a_line_naming_its_unit_and_process() -> None:
    app = text_line(entry(MESSAGE="listening", _SYSTEMD_UNIT="choiros-backend.service", _PID="42"))
    assert app.endswith(" choiros-backend[42]: listening"), app
    assert app[:10].count("-") == 2  # a date first
    about = text_line(
        entry(MESSAGE="Started it.", _SYSTEMD_UNIT="init.scope", UNIT="choiros-backend.service", _PID="1")
    )
    assert about.endswith(" choiros-backend systemd[1]: Started it."), about
    task = text_line(
        entry(
            MESSAGE="migrated",
            _SYSTEMD_UNIT="session-4.scope",
            OBJECT_SYSTEMD_UNIT="reconciler-task-choiros-9-0.service",
            SYSLOG_IDENTIFIER="migrate",
        )
    )
    assert task.endswith(" reconciler-task-choiros-9-0 migrate: migrated"), task
    binary = text_line(entry(MESSAGE=[104, 105, 0xFF], _SYSTEMD_UNIT="x.service", _PID="7"))
    assert binary.endswith("x[7]: hi\ufffd"), binary
    assert text_line("not json") == "not json"


def test_a_fleet_adds_the_host_to_each_json_entry_and_keeps_journalds_fields() -> None:
    raw = entry(MESSAGE="m", _PID="3")
    out = json.loads(host_json(raw, "web2"))
    assert out == {"host": "web2", **json.loads(raw)}


# --- exec ------------------------------------------------------------------------------------


WITH_USER = b"""\
app: choiros
target: local
release:
  version: "2.0.0"
  source: dist/choiros-2.0.0.tar.gz
backend:
  command: bin/backend --port {port}
  port: 8080
  user: svc
env:
  DATABASE_PATH: /var/lib/choiros/choiros.db
"""


def test_exec_runs_from_the_serving_release_with_the_backends_environment_and_user() -> None:
    d = load_bytes(WITH_USER, "desired-state.yaml", base_dir=Path("/src"))
    host = deployed(desired("1.0.0"), desired("2.0.0"))
    command = one_off(d, host.snapshot(), ("bin/report", "--all"))
    assert command.release == "2.0.0"
    assert command.workdir == "/opt/choiros/releases/2.0.0"
    assert command.argv == ("/opt/choiros/releases/2.0.0/bin/report", "--all")  # in the release
    assert command.env_file == "/etc/choiros/backend.env"
    assert command.user == "svc" and command.container == ()
    older = one_off(d, host.snapshot(), ("sqlite3", "db"), "1.0.0")
    assert older.workdir == "/opt/choiros/releases/1.0.0" and older.argv == ("sqlite3", "db")


def test_exec_refuses_a_release_not_on_the_host_and_a_host_that_serves_nothing() -> None:
    host = deployed(desired("1.0.0"))
    with pytest.raises(NotRunnable) as missing:
        one_off(desired("1.0.0"), host.snapshot(), ("true",), "9.9.9")
    assert "release 9.9.9 is not on test" in missing.value.message
    assert "releases on the host: 1.0.0" in missing.value.hint
    with pytest.raises(NotRunnable) as nothing:
        one_off(desired("1.0.0"), empty_host(), ("true",))
    assert "nothing serves choiros" in nothing.value.message and "--release VERSION" in nothing.value.hint


def test_exec_on_blue_green_uses_the_environment_file_of_the_colour_running_the_release() -> None:
    bg = [desired(v, strategy="blue-green") for v in ("1.0.0", "2.0.0")]
    host = deployed(*bg)
    observed = host.snapshot()
    serving = one_off(bg[1], observed, ("true",))
    warm = one_off(bg[1], observed, ("true",), "1.0.0")
    assert serving.release == "2.0.0" and warm.release == "1.0.0"
    assert {serving.env_file, warm.env_file} == {
        "/etc/choiros/backend-blue.env",
        "/etc/choiros/backend-green.env",
    }


def test_exec_in_an_image_release_runs_a_container_of_its_image_attached() -> None:
    d = desired("1.0.0", image=True)
    host = deployed(d)
    plain = one_off(d, host.snapshot(), ("python3", "-c", "print(1)"))
    assert plain.container[:2] == ("/usr/bin/podman", "run")
    assert plain.container[-1] == "localhost/choiros:1.0.0"
    assert "--init" in plain.container and "--tty" not in plain.container
    assert "--env=RECONCILER_RELEASE=1.0.0" in plain.container
    assert plain.argv == ("python3", "-c", "print(1)") and plain.user is None
    attached = one_off(d, host.snapshot(), ("sh",), interactive=True, tty=True)
    assert attached.container[-3:] == ("--interactive", "--tty", "localhost/choiros:1.0.0")


@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=12), min_size=1, max_size=4))
def test_the_transient_unit_passes_every_word_literally(words: list[str]) -> None:
    """systemd expands $NAME in a transient unit's command line; `$$` keeps a `$`."""
    spec = {"workdir": "/w", "env_file": "/e", "release": "1", "user": "u", "container": [], "argv": words}
    argv = transient_argv(spec, "unit", pty=True)
    command = argv[argv.index("--") + 1 :]
    assert [w.replace("$$", "$") for w in command] == words
    assert all("$" not in w.replace("$$", "") for w in command)
    assert "--pty" in argv and "--property=User=u" in argv and not any("RuntimeMaxSec" in w for w in argv)
    in_container = transient_argv(dict(spec, container=["/usr/bin/podman", "run"]), "unit", timeout=5)
    assert "--pipe" in in_container and "--property=RuntimeMaxSec=5" in in_container
    assert not any(w.startswith("--property=User=") for w in in_container)  # the image's user


# --- render ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "paths"),
    [
        (
            desired(env={"DATABASE_PATH": "/var/lib/c.db"}),
            {
                "/etc/systemd/system/choiros-backend.service",
                "/etc/choiros/backend.env",
                "/etc/caddy/Caddyfile",
                "/etc/caddy/apps/choiros.caddy",
            },
        ),
        (
            desired(strategy="blue-green"),
            {
                "/etc/systemd/system/choiros-backend-blue.service",
                "/etc/choiros/backend-blue.env",
                "/etc/caddy/Caddyfile",
                "/etc/caddy/apps/choiros.caddy",
            },
        ),
        (
            desired(mode="dev-server"),
            {
                "/etc/systemd/system/choiros-backend.service",
                "/etc/systemd/system/choiros-frontend.service",
                "/etc/choiros/backend.env",
                "/etc/caddy/Caddyfile",
                "/etc/caddy/apps/choiros.caddy",
            },
        ),
    ],
)
def test_render_gives_the_files_a_first_deploy_writes(d: object, paths: set[str]) -> None:
    files = rendered_files(d, "web1")  # type: ignore[arg-type]
    assert {f.path for f in files} == paths
    host = ModelHost(empty_host(caddyfile=None))
    host.run(plan(d, host.snapshot()))  # type: ignore[arg-type]
    written = host.snapshot()
    for f in files:
        assert written.content(f.path) == f.content, f.path  # no secrets here: nothing masked


def test_render_masks_secrets_and_names_the_runtime_of_an_image() -> None:
    text = (
        b'app: choiros\ntarget: local\nrelease:\n  version: "1.0.0"\n  image: localhost/c:1\n'
        b"backend:\n  command: python3 bin/backend --port {port}\n  port: 8080\n"
        b"env:\n  API_TOKEN: ${TOKEN}\n  PLAIN: visible\n  KEY: {value: hush, secret: true}\n"
    )
    d = load_bytes(text, "d.yaml", base_dir=Path("/src"), environ={"TOKEN": "tok-123"})
    files = rendered_files(d)
    every = "".join(f.content for f in files)
    assert "tok-123" not in every and "hush" not in every
    env = next(f for f in files if f.secret)
    assert "API_TOKEN=(secret)" in env.content and "KEY=(secret)" in env.content
    assert 'PLAIN="visible"' in env.content and env.mode == 0o640
    unit = next(f for f in files if f.path.endswith("choiros-backend.service"))
    assert "/usr/bin/podman run" in unit.content
    docker = load_bytes(text.replace(b"  image:", b"  runtime: docker\n  image:"), "d.yaml",
                        base_dir=Path("/src"), environ={"TOKEN": "t"})  # fmt: skip
    assert "docker run" in next(f.content for f in rendered_files(docker) if f.path.endswith(".service"))
    assert preview_host(docker, "h").runtime == "docker"


def test_masking_an_environment_file_leaves_comments_and_other_values() -> None:
    d = desired(env={"A": "1"})
    text = '# head\nRECONCILER_CONFIG=abc\nA="1"\nS="x"\n'
    secret = (*d.env, type(d.env[0])("S", "x", secret=True))
    assert envfile.masked(text, secret) == '# head\nRECONCILER_CONFIG=abc\nA="1"\nS=(secret)\n'


# --- the command lines' refusals (no host is contacted) ----------------------------------------

FLEET = """\
app: choiros
target:
  - {target: ssh://root@127.0.0.1:9, name: web1}
  - {target: ssh://root@127.0.0.1:9, name: web2}
release:
  version: "1.0.0"
  source: dist/choiros-1.0.0.tar.gz
backend:
  command: bin/backend --port {port}
  port: 8080
env:
  DATABASE_PATH: /var/lib/choiros/choiros.db
  API_TOKEN: ${DEPLOY_API_TOKEN}
"""


def reconcile(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "desired-state.yaml").write_text(FLEET)
    env = dict(os.environ, PYTHONPATH=str(REPO), DEPLOY_API_TOKEN="tok-456")
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_exec_on_a_fleet_asks_for_one_host_before_connecting(tmp_path: Path) -> None:
    run = reconcile(tmp_path, "exec", "--", "true")
    assert run.returncode == 125, run.stderr
    assert "exec runs on one host, and 2 are selected (web1, web2)" in run.stderr
    assert "--limit NAME" in run.stderr and "for h in web1 web2" in run.stderr
    missing = reconcile(tmp_path, "exec", "true")
    assert missing.returncode == 2 and "put the command after --" in missing.stderr


def test_logs_refuses_an_unknown_unit_kind_and_a_negative_count(tmp_path: Path) -> None:
    run = reconcile(tmp_path, "logs", "database")
    assert run.returncode == 2 and "unknown unit kind 'database'" in run.stderr
    assert "backend, frontend, tasks, blue, green" in run.stderr
    negative = reconcile(tmp_path, "logs", "-n", "-3")
    assert negative.returncode == 2 and "expected 0 or more lines" in negative.stderr


def test_render_needs_no_host_and_writes_each_hosts_files_under_a_folder(tmp_path: Path) -> None:
    """The targets are a closed port on loopback: render never connects."""
    printed = reconcile(tmp_path, "render", "--host", "web2")
    assert printed.returncode == 0, printed.stderr
    assert "==> /etc/systemd/system/choiros-backend.service (mode 0644) <==" in printed.stdout
    assert "API_TOKEN=(secret)" in printed.stdout and "tok-456" not in printed.stdout
    out = tmp_path / "out"
    written = reconcile(tmp_path, "render", "--to", str(out))
    assert written.returncode == 0, written.stderr
    env = out / "web1" / "etc" / "choiros" / "backend.env"
    assert env.stat().st_mode & 0o777 == 0o640 and "API_TOKEN=(secret)" in env.read_text()
    assert (out / "web2" / "etc" / "caddy" / "apps" / "choiros.caddy").is_file()
    unknown = reconcile(tmp_path, "render", "--host", "web9")
    assert unknown.returncode == 1 and "no host named 'web9'; hosts: web1, web2" in unknown.stderr


# --- the agent's side of logs, with a stand-in journalctl -------------------------------------


def stand_in_journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """A `journalctl` first on PATH that runs `body` (sh) and notes its pid."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "journalctl"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return tmp_path / "pid"


def test_the_agent_sends_each_line_as_it_comes_and_ends_journalctl_when_the_client_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.agent.journal import logs

    endless = "i=0; while :; do i=$((i+1)); echo '{\"MESSAGE\": \"line '$i'\"}'; sleep 0.02; done"
    pid_file = stand_in_journalctl(tmp_path, monkeypatch, endless)
    request = logs_request(desired(), [], follow=True, lines=0, since=None, all_fields=False)
    lines: list[str] = []
    answer = logs(request, lambda event: lines.append(event["line"]), lambda: len(lines) >= 5)
    assert answer["stopped"] and lines[:5] == [f'{{"MESSAGE": "line {i}"}}' for i in range(1, 6)]
    with pytest.raises(ProcessLookupError):  # ended and reaped, not left running
        os.kill(int(pid_file.read_text()), 0)


def test_the_agent_streams_before_journalctl_ends_and_reports_what_it_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from reconciler.agent.journal import logs
    from reconciler.agent.protocol import AgentError

    script = (
        stand_in_journalctl(tmp_path, monkeypatch, "echo '{}'; echo '{}'; sleep 2").parent
        / "bin"
        / "journalctl"
    )
    request = logs_request(desired(), [], follow=False, lines=None, since=None, all_fields=True)
    t0 = time.monotonic()
    seen_at: list[float] = []
    done = logs(request, lambda event: seen_at.append(time.monotonic() - t0), lambda: False)
    total = time.monotonic() - t0
    assert done["lines"] == 2 and total >= 2
    assert seen_at[0] < total - 1, (seen_at, total)  # sent while journalctl still ran

    script.write_text("#!/bin/sh\necho 'Failed to parse timestamp: lunch' >&2\nexit 1\n")
    with pytest.raises(AgentError) as refused:
        logs(dict(request, since="lunch"), lambda event: None, lambda: False)
    assert refused.value.message == "journalctl failed: Failed to parse timestamp: lunch"
