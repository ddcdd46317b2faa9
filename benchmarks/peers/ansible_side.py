"""The desired state as an Ansible playbook, tuned as a careful user would tune it.

Tuning: no fact gathering, pipelining, one persistent SSH master per host (ControlMaster
/ ControlPersist in ssh_args, without Ansible's default -C: compression only costs CPU on
a LAN), the Python interpreter named so no discovery runs, a pinned known_hosts and the
host's key in the inventory, no become (we connect as root).

Semantics mirror ours: unpack the release when its folder is missing; point `previous` at
what `current` named before when `current` moves; write the unit and EnvironmentFile (0640);
a changed unit, env file or `current` restarts the backend, then the same health gate as ours
runs (health_gate.py) before the Caddyfile (validated by `caddy validate`) is written and
Caddy reloads with the command our agent uses, recording what it loaded like our agent does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

PLAYBOOK = "playbook.yml"

#: A Unix socket's path holds at most 107 bytes (sun_path is 108 with its NUL). ssh names a
#: master's socket ControlPath = DIR/%C (40 hex digits) and, while the master starts, binds
#: DIR/%C plus a 17-character random suffix first ("unix_listener: path ... too long for Unix
#: domain socket" when that does not fit). Under a checkout's own folder the room depends on
#: where the repository was cloned, so the sockets live in a short folder of their own.
SUN_PATH_MAX = 107
CONTROL_NAME_LEN = 40 + 17


def check_control_dir(directory: Path | str) -> None:
    """Raise when ssh could not create its master socket in `directory`."""
    longest = len(str(directory).encode()) + 1 + CONTROL_NAME_LEN
    if longest > SUN_PATH_MAX:
        raise RuntimeError(
            f"ssh ControlPath folder {directory} is too long for a Unix socket: its sockets need "
            f"{longest} bytes, a socket path holds {SUN_PATH_MAX}"
        )


def make_control_dir() -> Path:
    """A private, short folder for the ControlPersist sockets of one benchmark run."""
    directory = Path(tempfile.mkdtemp(prefix="bench-cp-", dir="/tmp"))
    check_control_dir(directory)
    return directory


PLAYBOOK_TEXT = """\
# The same desired state as desired-<version>.yaml; vars come from -e @state-<version>.json.
- name: choiros
  hosts: all
  gather_facts: false
  tasks:
    - name: Look at the release folder
      ansible.builtin.stat:
        path: "{{ release_dir }}"
        get_checksum: false
        get_mime: false
        get_attributes: false
      register: release

    - name: Unpack release {{ version }}
      when: not release.stat.exists
      block:
        - name: Release folder
          ansible.builtin.file:
            path: "{{ release_dir }}"
            state: directory
            mode: "0755"
        - name: Release contents
          ansible.builtin.unarchive:
            src: "{{ tarball }}"
            dest: "{{ release_dir }}"

    - name: Look at current
      ansible.builtin.stat:
        path: "{{ current }}"
        get_checksum: false
        get_mime: false
        get_attributes: false
      register: cur

    - name: Keep the release before for rollback
      ansible.builtin.file:
        path: "{{ previous }}"
        src: "{{ cur.stat.lnk_target }}"
        state: link
        force: true
      when: cur.stat.islnk | default(false) and cur.stat.lnk_target != release_link

    - name: Switch current
      ansible.builtin.file:
        path: "{{ current }}"
        src: "{{ release_link }}"
        state: link
        force: true
      notify: backend changed

    - name: Backend unit file
      ansible.builtin.copy:
        src: "files/{{ unit_name }}-{{ version }}"
        dest: "{{ unit_path }}"
        mode: "0644"
      notify: [unit changed, backend changed]

    - name: Backend EnvironmentFile
      ansible.builtin.copy:
        src: "files/backend-{{ version }}.env"
        dest: "{{ env_path }}"
        mode: "0640"
      notify: backend changed

    - name: Backend enabled and running
      ansible.builtin.systemd_service:
        name: "{{ unit_name }}"
        enabled: true
        state: started

    - name: Restart and gate the backend before Caddy moves on
      ansible.builtin.meta: flush_handlers

    - name: The app's Caddy site
      ansible.builtin.copy:
        src: "files/{{ app }}-{{ version }}.caddy"
        dest: "{{ fragment }}"
        mode: "0644"
        validate: caddy validate --adapter caddyfile --config %s
      notify: caddy changed

    - name: Main Caddyfile, importing the apps' sites
      ansible.builtin.copy:
        src: files/Caddyfile
        dest: "{{ caddyfile }}"
        mode: "0644"
        validate: caddy validate --adapter caddyfile --config %s
      notify: caddy changed

  handlers:
    - name: Reload systemd
      ansible.builtin.systemd_service:
        daemon_reload: true
      listen: unit changed

    - name: Restart the backend
      ansible.builtin.systemd_service:
        name: "{{ unit_name }}"
        state: restarted
      listen: backend changed

    - name: Wait until the backend is healthy
      ansible.builtin.script:
        cmd: "health_gate.py {{ health_args | map('quote') | join(' ') }}"
      listen: backend changed

    - name: Reload Caddy
      ansible.builtin.command:
        argv: [caddy, reload, --config, "{{ caddyfile }}", --adapter, caddyfile, --force]
      listen: caddy changed
"""


def ansible_cfg(control_path_dir: Path | str, *, ssh: bool, forks: int = 5) -> str:
    if ssh:
        check_control_dir(control_path_dir)
    lines = [
        "[defaults]",
        "gathering = explicit",
        "interpreter_python = /usr/bin/python3",
        "host_key_checking = True",
        "retry_files_enabled = False",
        f"forks = {forks}",
        "",
        "[ssh_connection]",
        "pipelining = True",
    ]
    if ssh:
        lines += [
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s",
            f"control_path_dir = {control_path_dir}",
            "control_path = %(directory)s/%%C",
        ]
    return "\n".join(lines) + "\n"


def inventory(address: str, key: Path, known_hosts: Path) -> str:
    return fleet_inventory([("testhost", address)], key, known_hosts)


def fleet_inventory(hosts: list[tuple[str, str]], key: Path, known_hosts: Path) -> str:
    """(name, address) per host, in rollout order: `serial` takes its batches in this order."""
    common = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    return "[web]\n" + "".join(
        f"{name} ansible_host={address} ansible_port=22 ansible_user=root "
        f"ansible_ssh_private_key_file={key} ansible_ssh_common_args='{common}'\n"
        for name, address in hosts
    )


#: The same play for a fleet: `-e batch=25%` rolls it out a quarter of the hosts at a time
#: (each batch runs the whole play, handlers and health gate included, before the next);
#: without it every host is in one batch.
FLEET_PLAYBOOK = "playbook-fleet.yml"


def fleet_playbook_text() -> str:
    head = "  hosts: all\n"
    if PLAYBOOK_TEXT.count(head) != 1:
        raise RuntimeError("the playbook no longer has one `hosts: all` line")
    return PLAYBOOK_TEXT.replace(head, head + "  serial: \"{{ batch | default('100%') }}\"\n")


def write(root: Path, states: dict[str, dict[str, str]]) -> None:
    """The playbook and the files it copies: the exact bytes our renderer produced."""
    files = root / "files"
    files.mkdir(exist_ok=True)
    (root / PLAYBOOK).write_text(PLAYBOOK_TEXT)
    (root / FLEET_PLAYBOOK).write_text(fleet_playbook_text())
    (root / "ansible-local.cfg").write_text(ansible_cfg("", ssh=False))
    for version, state in states.items():
        # The unit and the environment file name the release and configuration they carry
        # (ours tells a process it gated by them), so each version has its own.
        (files / f"{state['unit_name']}-{version}").write_text(state["unit_text"])
        (files / f"backend-{version}.env").write_text(state["env_text"])
        (files / "Caddyfile").write_text(state["caddy_main_text"])
        (files / f"{state['app']}-{version}.caddy").write_text(state["fragment_text"])


def command(
    venv_bin: str,
    project: str,
    version: str,
    inventory_arg: str,
    *,
    local: bool,
    playbook: str = PLAYBOOK,
    extra: tuple[str, ...] = (),
) -> list[str]:
    argv = [f"{venv_bin}/ansible-playbook", "-i", inventory_arg, "-e", f"@{project}/state-{version}.json"]
    if local:
        argv += ["-c", "local"]
    return [*argv, *extra, f"{project}/{playbook}"]


def recap_changed(stdout: str) -> tuple[int, int] | None:
    """(changed, failed+unreachable) from PLAY RECAP, summed over its hosts, or None when there
    is no recap."""
    found = False
    changed = bad = 0
    for line in stdout.splitlines():
        if " : ok=" in line:
            fields = dict(part.split("=", 1) for part in line.split(":", 1)[1].split() if "=" in part)
            bad += int(fields.get("failed", 0)) + int(fields.get("unreachable", 0))
            changed += int(fields.get("changed", 0))
            found = True
    return (changed, bad) if found else None
