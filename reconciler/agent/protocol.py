"""What the controller and the agent say to each other: one wire schema for every request and
action, the protocol version, the agent's error type and the types every module shares.

The controller's typed actions (reconciler/plan/actions.py) must produce exactly the fields
listed here; tests/test_wire.py round-trips every action class through `check_action`, so a
field added, renamed or dropped on either side fails there. The agent checks every request
against this schema before it takes the lock, so a request it does not understand changes
nothing on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Json = dict[str, Any]
Emit = Callable[[Json], None]

PROTOCOL = 3
ENV_PREFIX = "RECONCILER_"
CHUNK = 1 << 16


class AgentError(Exception):
    """An action failed; `detail` carries what the host said (journal lines, caddy output)."""

    def __init__(self, message: str, detail: str = "", code: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code


# --- the schema ---------------------------------------------------------------------------
# A field's type: str, int, num (int or float), bool, list, dict; "?" after it: may be null
# or absent. Every action also carries `kind` and may carry `on_failure`.

ON_FAILURE = ("report", "rollback", "quarantine", "stop")

ACTIONS: dict[str, dict[str, str]] = {
    "upload_release": {"version": "str", "releases": "str", "sha256": "str?", "size": "int"},
    "load_image": {
        "version": "str",
        "image": "str",
        "releases": "str",
        "state": "str",
        "sha256": "str?",
        "digest": "str?",
        "image_root": "str",
        "static_dir": "str?",
        "size": "int?",
        "runtime": "str",
        "auth": "dict?",
    },
    "pull_frontend": {
        "image": "str",
        "runtime": "str",
        "pull": "bool",
        "digest": "str?",
        "dest": "str?",
        "image_root": "str",
        "static_dir": "str",
        "auth": "dict?",
    },
    "prune_frontend": {"path": "str", "runtime": "str"},
    "write_file": {
        "path": "str",
        "content": "str",
        "mode": "int",
        "owner": "str?",
        "group": "str?",
        "secret": "bool",
        "backup": "bool",
    },
    "remove_file": {"path": "str", "backup": "bool"},
    "link_shared": {"release": "str", "shared": "str", "paths": "list", "owner": "str?"},
    "run_task": {
        "when": "str",
        "index": "int",
        "config": "str",
        "argv": "list",
        "workdir": "str",
        "env_file": "str",
        "release": "str",
        "app": "str",
        "timeout": "num",
        "user": "str?",
        "container": "list",
        "database": "str?",
        "snapshot": "str?",
        "state_directory": "str?",
    },
    "daemon_reload": {"unless_clean": "list"},
    "set_symlink": {"path": "str", "target": "str"},
    "systemctl": {"verb": "str", "unit": "str", "unless_runs": "dict?"},
    "check_health": {
        "url": "str",
        "unit": "str?",
        "timeout": "num",
        "interval": "num",
        "passes": "int",
        "stable": "num",
        "expect_version": "str?",
        "version_at": "dict?",
        "any_status": "bool",
        "unless_gated": "bool",
        "idle": "bool",
        "quarantine": "dict?",
    },
    "write_caddyfile": {
        "path": "str",
        "content": "str?",
        "main": "str",
        "ports": "dict",
        "backup": "bool",
    },
    "load_caddy": {
        "path": "str",
        "unit": "str",
        "fragment": "str",
        "app": "str",
        "ports": "dict",
        "unless_loaded": "bool",
    },
    "record_quarantine": {"key": "str", "version": "str", "why": "str", "clear": "bool"},
    "record_maintenance": {"on": "bool", "why": "str", "by": "str"},
    # `reconcile rollback`'s hold: {version, config, by, reason, origin, ...}; null ends it.
    "record_hold": {"hold": "dict?"},
    "record_good": {
        "config": "str",
        "version": "str",
        "image": "str?",
        "strategy": "str",
        "files": "list",
        "links": "list",
        "gates": "dict",
        "caddyfile": "str",
    },
    "prune_release": {
        "version": "str",
        "releases": "str",
        "state": "str",
        "image": "str?",
        "runtime": "str?",
    },
    "snapshot_database": {"database": "str", "snapshot": "str"},
    "restore_database": {"database": "str", "snapshot": "str", "units": "list", "only_if_taken": "bool"},
}

REQUESTS: dict[str, dict[str, str]] = {
    "observe": {"observe": "dict"},
    "history": {"state": "str", "limit": "int?"},
    "apply": {
        "observe": "dict",
        "expect": "str?",
        "actions": "list",
        "rollback": "dict?",
        "lock_timeout": "num",
        "holder": "dict",
        "journal": "dict?",
        "record": "bool?",
        "fault": "dict?",
        "force": "bool?",
    },
    # pause: {by, reason} pauses, null resumes; under the host lock.
    "pause": {"state": "str", "pause": "dict?", "holder": "dict", "lock_timeout": "num"},
    # Records appended to the host's history (notification outcomes), under the host lock.
    "note": {"state": "str", "records": "list", "lock_timeout": "num"},
    # Read-only: every release folder's size on disk, file count and times (`reconcile releases`).
    "releases": {"releases": "str", "state": "str", "runtime": "str?"},
    # `reconcile logs`: journalctl on these units, streamed as {"event": "log", "line"} events.
    "logs": {"units": "list", "follow": "bool", "lines": "int?", "since": "str?", "all_fields": "bool"},
    # `reconcile exec`: run attached to the caller's stdio (agent/attach.py), not as a request
    # on stdin; run_task's fields say how the process runs, `who` is recorded in the history.
    "exec": {
        "state": "str",
        "app": "str",
        "release": "str",
        "argv": "list",
        "workdir": "str",
        "env_file": "str",
        "user": "str?",
        "state_directory": "str?",
        "container": "list",
        "interactive": "bool",
        "tty": "bool",
        "who": "str",
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "num": (int, float),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


def _check_fields(what: str, data: Json, fields: dict[str, str], extra: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(fields) - set(extra))
    if unknown:
        raise AgentError(f"{what}: unknown field(s) {', '.join(unknown)}", code="protocol")
    for name, spec in fields.items():
        optional = spec.endswith("?")
        value = data.get(name)
        if value is None:
            if not optional:
                raise AgentError(f"{what}: missing field {name!r}", code="protocol")
            continue
        types = _TYPES[spec.rstrip("?")]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise AgentError(f"{what}: field {name!r} must be {spec.rstrip('?')}", code="protocol")


def check_action(action: Json) -> None:
    kind = action.get("kind")
    if kind not in ACTIONS:
        raise AgentError(f"unknown action {kind!r}", code="protocol")
    if action.get("on_failure", "report") not in ON_FAILURE:
        raise AgentError(f"{kind}: on_failure must be one of {', '.join(ON_FAILURE)}", code="protocol")
    _check_fields(str(kind), action, ACTIONS[str(kind)], ("kind", "on_failure"))


def check_request(request: Json) -> None:
    """Refuse, before anything happens, a request this agent does not speak."""
    version = request.get("protocol")
    if version != PROTOCOL:
        raise AgentError(
            f"the request speaks protocol {version!r}, this host agent speaks {PROTOCOL}: "
            "the controller and the agent come from different versions of the reconciler",
            code="protocol",
        )
    op = request.get("op")
    if op not in REQUESTS:
        raise AgentError(f"unknown request {op!r}", code="protocol")
    _check_fields(f"{op} request", request, REQUESTS[str(op)], ("op", "protocol", "payload_size"))
    if op == "apply":
        for action in request["actions"]:
            check_action(action)
        for action in (request.get("rollback") or {}).get("actions", []):
            check_action(action)
