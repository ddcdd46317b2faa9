"""Pick the executor for a target. SSH support (paramiko) is imported only when needed."""

from __future__ import annotations

from reconciler.executors.base import Executor
from reconciler.executors.local import LocalExecutor
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target


def executor_for(target: Target, ssh_options: SSHOptions | None = None) -> Executor:
    if target.kind == "local":
        return LocalExecutor()
    from reconciler.executors.ssh import SSHExecutor

    return SSHExecutor(target, ssh_options)
