"""Pick the executor for a target, importing only what that target needs: the host agent for
`local` (it runs in this process), paramiko for SSH (never on the local path)."""

from __future__ import annotations

from reconciler.executors.base import Executor
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target


def executor_for(target: Target, ssh_options: SSHOptions | None = None) -> Executor:
    if target.kind == "local":
        from reconciler.executors.local import LocalExecutor

        return LocalExecutor()
    if ssh_options is not None and ssh_options.transport == "openssh":
        from reconciler.executors.openssh import OpenSSHExecutor

        return OpenSSHExecutor(target, ssh_options)
    from reconciler.executors.ssh import SSHExecutor

    return SSHExecutor(target, ssh_options)
