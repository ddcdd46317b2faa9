"""`reconcile render` against what a deploy then really writes: every file it renders is on
the host after `--once`, byte for byte (the environment file with its secret masked the same
way), with the same mode, and the deploy wrote no unit, environment or Caddy file it did not
render."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from reconciler.render.envfile import masked
from reconciler.spec.model import EnvVar
from tests.deploying import Project, serves
from tests.operating import SUDO_USER, make_sudo_user, run

pytestmark = pytest.mark.testhost

USER = "choiros-svc"
TOKEN = "tok-render-7f3a"  # noqa: S105 - a test's secret
ENV = "DATABASE_PATH: /var/lib/choiros/choiros.db\nAPI_TOKEN: ${DEPLOY_API_TOKEN}"
WRITTEN = "ls -d /etc/systemd/system/choiros-*.service /etc/choiros/* /etc/caddy/Caddyfile /etc/caddy/apps/*"


@pytest.mark.parametrize(("strategy", "login"), [("symlink-swap", "root"), ("blue-green", "sudo")])
def test_render_is_what_a_first_deploy_writes(
    project: Project, tmp_path: Path, strategy: str, login: str
) -> None:
    host = project.host
    make_sudo_user(host)
    host.exec(["bash", "-c", f"id -u {USER} || useradd --system --user-group --no-create-home {USER}"])
    user = f"\nuser: {USER}" if strategy == "symlink-swap" else ""
    project.write(
        "1.0.0", strategy=strategy, env=ENV, backend=f"command: bin/backend --port {{port}}\nport: 8080{user}"
    )
    out = tmp_path / "rendered"
    cli = [sys.executable, "-m", "reconciler", "render", "--file", str(project.root / "desired-state.yaml")]
    rendered = run([*cli, "--to", str(out)], env={"DEPLOY_API_TOKEN": TOKEN})
    assert rendered.rc == 0, rendered.stderr
    files = {"/" + str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file()}

    target = ("--target", f"ssh://{SUDO_USER}@{host.address}:{host.ssh_port}") if login == "sudo" else ()
    deploy = project.once(*target, env={"DEPLOY_API_TOKEN": TOKEN})
    assert deploy.rc == 0, deploy.stdout + deploy.stderr
    assert serves(host) == "1.0.0"

    on_host = set(host.exec(["bash", "-c", WRITTEN]).stdout.split())
    assert set(files) == on_host, (sorted(files), sorted(on_host))
    for path, local in files.items():
        text = (host.read(path) or b"").decode()
        if path.endswith(".env"):
            assert TOKEN in text and TOKEN not in local.read_text()
            text = masked(text, [EnvVar("API_TOKEN", "", secret=True)])
        assert local.read_text() == text, path
        mode = int(host.exec(["stat", "-c", "%a", path]).stdout, 8)
        assert stat.S_IMODE(local.stat().st_mode) == mode, path
    print(
        f"\n{strategy}: {len(files)} rendered files equal what the deploy wrote: {', '.join(sorted(files))}"
    )
