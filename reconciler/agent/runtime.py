"""The container runtime on the host, Podman or Docker: which one, and the few commands the
reconciler needs of it, spelled for each.

A desired state may name its runtime; otherwise the host's decides: Podman when it is
installed (as before Docker was supported, so a host that gains Docker keeps running what it
ran), else Docker.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

from .fsops import decode, run
from .protocol import AgentError, Json

RUNTIMES = ("podman", "docker")


def resolve(wanted: str | None) -> tuple[str | None, str | None]:
    """(runtime, why there is none) for a request's "auto", "podman" or "docker"."""
    if not wanted:
        return None, None
    if wanted == "auto":
        for name in RUNTIMES:
            if shutil.which(name):
                return name, None
        return None, (
            "release.image needs a container runtime, and neither podman nor docker is installed "
            "on the host: install one (`apt-get install podman` or `apt-get install docker.io`)"
        )
    if shutil.which(wanted):
        return wanted, None
    return None, f"release.runtime is {wanted}, but {wanted} is not installed on the host"


def cli(runtime: str, *args: str, timeout: float = 600, config: list[str] | None = None) -> str:
    """Run `runtime args...`; an AgentError with what it said when it fails. `config` is put
    before the subcommand (docker --config DIR)."""
    argv = [runtime, *(config or []), *args]
    proc = run(argv, timeout=timeout)
    if proc.returncode != 0:
        raise AgentError(f"{runtime} {args[0]} failed", decode(proc.stderr)[-800:], code=runtime)
    return decode(proc.stdout)


def list_images(runtime: str | None) -> list[str]:
    """Images present, as repo:tag, and repo:tag@digest for those that came from a registry
    (the digest is what a pinned release is checked against)."""
    if runtime is None:
        return []
    proc = run([runtime, "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"], timeout=60)
    if proc.returncode != 0:
        return []
    out: set[str] = set()
    for line in decode(proc.stdout).splitlines():
        name, _, digest = line.partition(" ")
        if not name or "<none>" in name:
            continue
        out.add(name)
        if digest.startswith("sha256:"):
            out.add(f"{name}@{digest}")
    return sorted(out)


def split_ref(image: str) -> tuple[str, str]:
    """repo and tag of `registry:port/name:tag` (a ':' after the last '/' starts the tag)."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def registry_of(repo: str) -> str:
    """The registry host a repository lives on (docker.io when its name does not say)."""
    first = repo.split("/", 1)[0]
    if "/" in repo and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


@contextlib.contextmanager
def credentials(runtime: str, registry: str, auth: Json | None) -> Iterator[dict[str, list[str]]]:
    """Arguments that make one pull use `auth`: an auth file in a fresh 0700 folder on /run
    (a tmpfs: never on disk), removed as soon as the pull is over. Only the file's path
    appears on a command line, never the user or the password."""
    if not auth:
        yield {"global": [], "pull": []}
        return
    parent = "/run" if os.path.isdir("/run") else None
    folder = tempfile.mkdtemp(prefix="reconciler-pull-", dir=parent)  # 0700
    try:
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        path = os.path.join(folder, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": {registry: {"auth": token}}}, fh)
        if runtime == "docker":
            yield {"global": ["--config", folder], "pull": []}
        else:
            yield {"global": [], "pull": ["--authfile", path]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pull(runtime: str, image: str, digest: str | None, auth: Json | None) -> None:
    """Pull `image` (by `digest` when pinned, after the registry confirmed that its tag
    names that digest) and tag it as `image`."""
    from .registry import check_pin

    repo, _tag = split_ref(image)
    ref = f"{repo}@{digest}" if digest else image
    if digest:
        check_pin(image, digest, auth)
    with credentials(runtime, registry_of(repo), auth) as extra:
        argv = [*extra["global"], "pull", "--quiet", *extra["pull"], ref]
        try:
            cli(runtime, *argv)
        except AgentError as exc:
            if "unauthorized" not in exc.detail.lower():
                raise
            # A registry token that expires in the middle of a pull is not asked for again by
            # Podman or Docker: the pull fails "unauthorized". A new pull starts with a new token.
            cli(runtime, *argv)
    if ref != image:
        cli(runtime, "tag", ref, image)


def load_archive(runtime: str, path: str, image: str) -> None:
    """An image archive (docker-archive or oci-archive), tagged as `image`."""
    out = cli(runtime, "load", "--quiet", "-i", path)  # "Loaded image: NAME" (or "... ID: sha256:")
    loaded = out.splitlines()[-1].split(": ", 1)[-1].strip() if out else ""
    if loaded and loaded != image:
        cli(runtime, "tag", loaded, image)


def import_rootfs(runtime: str, path: str, image: str, workdir: str) -> None:
    """A root file system tar as an image, with its working directory set."""
    if runtime == "docker":  # Dockerfile syntax, and no --quiet
        cli(runtime, "import", "--change", f"WORKDIR {workdir}", path, image)
    else:
        cli(runtime, "import", "--quiet", "--change", f"WORKDIR={workdir}", path, image)


def copy_out(runtime: str, image: str, inner: str, dest: str) -> None:
    """Copy `inner` out of `image` to `dest` (a created container is never started)."""
    name = f"reconciler-extract-{os.getpid()}"
    cli(runtime, "create", "--name", name, image, "true", timeout=120)
    try:
        cli(runtime, "cp", f"{name}:{inner}", dest, timeout=300)
    finally:
        run([runtime, "rm", "-f", name], timeout=60)


def remove_image(runtime: str | None, image: str) -> None:
    """Remove an image; refused (and left) while a container uses it, which is fine."""
    if runtime and shutil.which(runtime):
        run([runtime, "rmi", image], timeout=120)
