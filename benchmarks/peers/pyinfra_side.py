"""The desired state as a pyinfra deploy, written as a careful user would write it.

pyinfra has no unarchive, no validate-before-write and no handlers: the deploy uploads and
unpacks the tarball only when the release folder is missing (a Directory fact), and uses
`_if=` (pyinfra 3) on the restart, the health gate, the Caddy reload and the loaded-config
record, so those run only when what they depend on changed. Caddy itself refuses an invalid
Caddyfile on reload and keeps the old one, which is the closest pyinfra gets to validating.
"""

from __future__ import annotations

from pathlib import Path

DEPLOY = "deploy.py"

DEPLOY_TEXT = '''\
"""The same desired state as desired-<version>.yaml: pyinfra INVENTORY deploy.py --data version=V"""

import json
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import Directory, Link
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

HERE = Path(__file__).resolve().parent
S = json.loads((HERE / f"state-{host.data.version}.json").read_text())

if not host.get_fact(Directory, path=S["release_dir"]):
    upload = f"/tmp/{S['app']}-{S['version']}.tar.gz"
    files.put(name="Upload the release", src=str(HERE / S["tarball"]), dest=upload)
    files.directory(name="Release folder", path=S["release_dir"], mode="755")
    server.shell(
        name="Unpack the release",
        commands=[f"tar -xzf {upload} -C {S['release_dir']} && rm -f {upload}"],
    )

current = host.get_fact(Link, path=S["current"])
if current and current["link_target"] != S["release_link"]:
    files.link(
        name="Keep the release before for rollback", path=S["previous"], target=current["link_target"]
    )
switch = files.link(name="Switch current", path=S["current"], target=S["release_link"])
unit = files.put(
    name="Backend unit file",
    src=str(HERE / "files" / f"{S['unit_name']}-{S['version']}"),
    dest=S["unit_path"],
    mode="644",
)
env = files.put(
    name="Backend EnvironmentFile",
    src=str(HERE / "files" / f"backend-{S['version']}.env"),
    dest=S["env_path"],
    mode="640",
)
systemd.daemon_reload(name="Reload systemd", _if=unit.did_change)
systemd.service(name="Backend enabled and running", service=S["unit_name"], running=True, enabled=True)
backend_changed = any_changed(switch, unit, env)
systemd.service(
    name="Restart the backend", service=S["unit_name"], running=True, restarted=True, _if=backend_changed
)
server.script(
    name="Wait until the backend is healthy",
    src=str(HERE / "health_gate.py"),
    args=S["health_args"],
    _if=backend_changed,
)
site = files.put(
    name="The app's Caddy site",
    src=str(HERE / "files" / f"{S['app']}-{S['version']}.caddy"),
    dest=S["fragment"],
    mode="644",
)
main = files.put(
    name="Main Caddyfile, importing the apps' sites",
    src=str(HERE / "files" / "Caddyfile"),
    dest=S["caddyfile"],
    mode="644",
)
caddy_changed = any_changed(site, main)
server.shell(
    name="Reload Caddy",
    commands=[f"caddy reload --config {S['caddyfile']} --adapter caddyfile --force"],
    _if=caddy_changed,
)
'''


def _data(key: Path, known_hosts: Path) -> dict[str, object]:
    return {
        "ssh_user": "root",
        "ssh_port": 22,
        "ssh_key": str(key),
        "ssh_known_hosts_file": str(known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
    }


def inventory(address: str, key: Path, known_hosts: Path) -> str:
    return f"hosts = [({address!r}, {_data(key, known_hosts)!r})]\n"


def fleet_inventory(batches: list[list[str]], key: Path, known_hosts: Path) -> str:
    """One group per rollout batch (batch_1, batch_2, ...): pyinfra has no batches of its own, so
    a rolling deploy runs it once per group, `--limit batch_<i>`, one after the other."""
    data = _data(key, known_hosts)
    return "".join(
        f"batch_{i} = {[(address, data) for address in batch]!r}\n" for i, batch in enumerate(batches, 1)
    )


def write(root: Path) -> None:
    (root / DEPLOY).write_text(DEPLOY_TEXT)


def command(
    venv_bin: str, project: str, version: str, inventory_arg: str, extra: tuple[str, ...] = ()
) -> list[str]:
    # -y: run without the interactive confirmation, as in CI (it still reports "No changes").
    deploy = f"{project}/{DEPLOY}"
    return [f"{venv_bin}/pyinfra", "-y", *extra, inventory_arg, deploy, "--data", f"version={version}"]


def reported_no_change(stdout: str) -> bool:
    return "No changes" in stdout
