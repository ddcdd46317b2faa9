"""Container images: podman load, import or pull, and the static frontend copied out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from .contents import check_tree, settle_modes
from .context import Context
from .fsops import atomic_write, decode, fsync_dir, makedirs, now, run
from .protocol import AgentError, Json
from .releases import receive_to_file


def podman(*args: str, timeout: float = 600) -> str:
    proc = run(["podman", *args], timeout=timeout)
    if proc.returncode != 0:
        raise AgentError(f"podman {args[0]} failed", decode(proc.stderr)[-800:], code="podman")
    return decode(proc.stdout)


def is_image_archive(path: str) -> bool:
    """docker-archive and oci-archive are loaded; anything else is a root filesystem to import."""
    import tarfile

    with tarfile.open(path) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()[:64]}
    return "manifest.json" in names or "oci-layout" in names


def put_image(ctx: Context, a: Json) -> None:
    image = a["image"]
    if not a.get("size"):
        ref = f"{image.rsplit(':', 1)[0]}@{a['digest']}" if a.get("digest") else image
        podman("pull", "--quiet", ref)
        if ref != image:
            podman("tag", ref, image)
        return
    tmp = os.path.join(a["releases"], f".incoming-{a['version']}-{os.getpid()}.image")
    try:
        digest = receive_to_file(ctx, int(a["size"]), tmp)
        if a.get("sha256") and digest != a["sha256"]:
            raise AgentError(f"image archive arrived with sha256 {digest}, expected {a['sha256']}")
        if is_image_archive(tmp):
            out = podman("load", "--quiet", "-i", tmp)  # "Loaded image: NAME" (or "image(s)")
            loaded = out.splitlines()[-1].split(": ", 1)[-1].strip() if out else ""
            if loaded and loaded != image:
                podman("tag", loaded, image)
        else:
            podman("import", "--quiet", "--change", f"WORKDIR={a['image_root']}", tmp, image)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def do_load_image(ctx: Context, a: Json) -> Json:
    """The image into podman's storage, and its static frontend out into releases/<version>."""
    releases, version, image = a["releases"], a["version"], a["image"]
    makedirs(releases)
    put_image(ctx, a)
    dest = os.path.join(releases, version)
    meta_path = os.path.join(ctx.state_dir, "releases", f"{version}.json")
    if not os.path.isdir(dest):
        staging = os.path.join(releases, f".incoming-{version}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o755)
        try:
            if a.get("static_dir"):
                name = f"reconciler-extract-{os.getpid()}"
                podman("create", "--name", name, image, "true", timeout=120)
                try:
                    inner = f"{a['image_root'].rstrip('/')}/{a['static_dir']}"
                    makedirs(os.path.dirname(os.path.join(staging, a["static_dir"])))
                    podman("cp", f"{name}:{inner}", os.path.join(staging, a["static_dir"]), timeout=300)
                finally:
                    run(["podman", "rm", "-f", name], timeout=60)
            # podman cp keeps the image's links, fifos and modes (setuid, 0777) as they are;
            # Caddy serves this folder, so it gets the checks of an uploaded release.
            check_tree(staging)
            settle_modes(staging)
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    meta = {
        "version": version,
        "image": image,
        "sha256": a.get("sha256") or a.get("digest"),
        "uploaded": now(),
    }
    atomic_write(meta_path, json.dumps(meta).encode(), 0o644)
    fsync_dir(releases)
    return {}
