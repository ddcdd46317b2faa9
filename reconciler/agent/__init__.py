"""The part of the reconciler that runs on the host. Standard library only, Python 3.9 or
newer (it runs on the host's own python3), importing nothing else of the project.

Over SSH its modules travel as source on stdin of a single `python3 -c` exec (see
`boot.py` and `reconciler/executors/bootstrap.py`), followed by one JSON request line and an
optional payload (a release archive); it answers with JSON lines on stdout. (`exec` is the
exception: the caller's stdin is the command's, so it travels as an argument; attach.py.) So a whole
observation is one round trip, and a whole apply (lock, actions, history, the observation
that verifies it) is one more. For `target: local` the same modules are imported in-process.

Nothing here builds a shell command: every program runs from an argv list, and file contents
are written as bytes. The request is data, interpreted by the handlers.

    protocol   the protocol version, AgentError, shared types
    fsops      atomic writes and links, argv-only subprocesses, tolerant readers
    systemd    unit properties, what a running process uses, systemctl verbs
    systemd_bus  unit properties from systemd's bus socket, without a systemctl process
    observe    the read-only snapshot and its fingerprint
    lock       the host lock
    releases   release archives received safely, old releases pruned
    contents   a release folder on disk: links resolved on the real tree, modes settled
    images     container images (podman)
    health     health gates
    caddy      validated Caddyfile writes, reloads
    database   SQLite snapshots and restores
    files      plain file, link and systemctl actions
    transient  a command run as the backend runs (a transient unit): release tasks, `exec`
    tasks      release tasks (migrations), their output into the journal
    journal    `reconcile logs`: journalctl streamed back line by line
    attach     `reconcile exec`: one command attached to the caller's terminal, recorded
    apply      lock, re-check, run the actions, record
    main       entry points: handle() in-process, main() over SSH
    boot       loads these modules from the sources sent along (remote only)
"""
