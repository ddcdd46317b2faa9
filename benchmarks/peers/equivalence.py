"""How the same desired state is written for each tool, and where a peer needed help to match."""

TEXT = """\
All three converge the same state: `/opt/choiros/releases/<v>` unpacked from the example app's
tarball (`examples/app/build.py`), `current` and `previous` symlinks (relative,
`releases/<v>`), `/etc/systemd/system/choiros-backend.service` (enabled, running),
`/etc/choiros/backend.env` (mode 0640), the app's Caddy site `/etc/caddy/apps/choiros.caddy`
and the main `/etc/caddy/Caddyfile` that imports it, reloaded when either changes. The unit
file, EnvironmentFile and Caddy files are not re-typed for the peers: the benchmark
renders them with our own code (`reconciler.plan.strategies.single_slot.SingleSlot`,
`reconciler.plan.config.env_text` on the `DesiredState` that `reconciler.spec.load.load` makes
of the very desired-state file ours runs) and the peers copy those bytes. Generated inputs are
in `benchmarks/.work/peers/project/` (`playbook.yml`, `deploy.py`, `state-<v>.json`, `files/`).

- **ours**: the repository's `desired-state.yaml` with only `release.version` and
  `release.source` changed (symlink-swap, static frontend, default health gate: 2 passes
  spanning 1 s), `--target ssh://root@HOST:22 -i KEY --known-hosts KH`, or `target: local` on
  the host. The project folder is a git repository, as the README's workflow has it.
- **Ansible** (`ansible-playbook -i inventory.ini -e @state-<v>.json playbook.yml`): no fact
  gathering, `pipelining = True`, `ssh_args = -o ControlMaster=auto -o ControlPersist=60s`
  (Ansible's default minus `-C`), `interpreter_python = /usr/bin/python3` (no discovery), the
  host's key and a pinned known_hosts (`StrictHostKeyChecking=yes`) in the inventory, no
  become. `stat` + `block` unpacks a missing release (`file` + `unarchive`); `stat` of
  `current` decides `previous`; `file state=link` for both links; `copy` for the four files
  (the Caddy ones with `validate: caddy validate ...`); `systemd_service` enabled + started;
  handlers: daemon-reload, restart, the health gate, Caddy reload, flushed before the
  Caddyfile task so Caddy moves only after the backend passed its gate, as ours does.
  **ansible** closes its ControlPersist master (untimed, `ssh -O exit`) before every run, so
  each run opens its own connection, like a deploy typed now and then; **ansible (warm
  master)** runs right after it and reuses the master, Ansible's best case.
- **pyinfra** (`pyinfra -y inventory.py deploy.py --data version=<v>`): the inventory names
  the key, the known_hosts file, `ssh_strict_host_key_checking: yes`, no agent, no key search.
  A `Directory` fact guards upload + unpack (`files.put`, `files.directory`, `tar -xzf`); a
  `Link` fact decides `previous`; `files.link`, `files.put` (modes 644/640), `systemd.service`
  (running, enabled); `_if=` (pyinfra 3) guards daemon-reload, restart, gate, Caddy reload.
  `-y` skips the interactive confirmation, as in CI; pyinfra still reports "No changes"
  per operation and in its results table.

What a peer cannot express the same way, and how it was made equivalent:

- **Restart decisions.** Ours restarts the backend when the *running process* differs (its
  `/proc/<pid>/cwd`, or the unit/env hashes it inherited). The peers cannot see that; they
  restart when `current`, the unit file or the EnvironmentFile changed in this run (handlers
  / `_if=`). In every scenario benchmarked here both rules restart exactly when ours does.
- **Health gate.** Ours polls `/health` until 2 consecutive 200s naming the version span 1 s
  from one MainPID. Both peers run `health_gate.py` (written next to the playbook), which
  implements the same rule, uploaded and run by Ansible's `script` and pyinfra's
  `server.script` only after a restart.
- **What Caddy loaded.** Ours asks Caddy's admin API what it runs (the upstreams, and the
  mark each fragment carries) and reloads when that is not the fragment on disk. The peers
  cannot see it; they reload when they changed a Caddy file, with the same command ours uses
  (`caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile --force`).
- **Ours' own records.** Ours trusts a running process only when its gate record on the host
  names it, and keeps the last good states for rollback. The peers keep neither, so after a
  peer's change run ours plans exactly two bookkeeping actions and nothing else: a
  `health-check` of the process the peer started (no restart) and `record-good`. The change
  check accepts those two and nothing more.
- **Atomicity is not equal**: ours writes files and links as a temporary plus a rename
  (and fsync); Ansible's `copy` and `file state=link force=yes` also rename a temporary into
  place; pyinfra (connected as root) writes files in place over SFTP and replaces a link by
  `rm -f` + `ln -s`, so for a moment there is a half-written file or no `current`. pyinfra
  has no validate-before-write; Caddy refusing a bad config on reload is its only check.
- **Less is checked by the peers.** Ours' single observation also covers Caddy's unit state,
  the frontend and blue/green units (must be absent), the host lock, quarantine and release
  pruning; the peers check only the items listed above. This makes the peers' no-op cheaper
  than a full equivalent would be, not dearer.
- **Floors.** "paramiko floor" is `benchmarks/peers/floor.py`: a fresh Python process that
  imports paramiko, connects with TCP_NODELAY, checks the host key, authenticates with the key
  and runs `true` on one exec channel. "OpenSSH floor" is `ssh -i KEY ... root@HOST true`
  with the same key and known_hosts and no ControlMaster: what Ansible's transport pays per
  connection (its default key exchange is sntrup761x25519; the "(curve25519-sha256)" row
  forces the exchange paramiko negotiates). All are references, not tools.
- **Bytecode.** This workplace exports `PYTHONDONTWRITEBYTECODE=1`. pip-installed tools (the
  peers, paramiko) have their .pyc from install time, ours runs from the repository, so the
  benchmark drops that variable for every tool and gives ours a `PYTHONPYCACHEPREFIX` under
  `benchmarks/.work/`: everyone runs from bytecode, as after `pip install`. Inside the host,
  ours runs from the read-only `/src` with `PYTHONPYCACHEPREFIX=/tmp/pyc`.
- The release records ours writes in `/var/lib/reconciler/choiros/releases/` (artifact
  sha256, upload time) have no peer equivalent; both releases were uploaded by ours before
  timing, so no timed run uploads anything.

Reading the SSH counts:

- **ours**: one session for a no-op (the observation), two for a change run (observe, then
  one apply request in which the agent switches links, restarts, gates, writes and reloads
  Caddy, records history and observes again).
- **pyinfra**: one exec per fact and per command, on one connection: the 14 of a no-op are
  mostly `File` + `Sha1File` per `files.put`, `Link`, `Directory`, `SystemdStatus`,
  `SystemdEnabled`; file contents go over SFTP.
- **Ansible**: 19 execs for a no-op with 7 tasks (seen with `-vvv`): 10 pipelined module
  runs (`copy` runs `stat`, then `file` when the checksum matches) plus, for each of the
  three `copy` tasks, `echo ~root`, a `mkdir` of a remote tmp folder and its `rm -rf`, even
  though nothing is transferred. With a warm master they are multiplexed on the existing
  connection (0 new TCP connections, 0 auths).
"""
