"""Container images: loaded from an archive sent along, imported from a root file system, or
pulled from a registry (pinned, with credentials used for that pull only), by Podman or
Docker; and static frontends copied out of an image with the checks of a release."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from . import runtime as runtimes
from .contents import check_tree, settle_modes
from .context import Context
from .fsops import atomic_write, fsync_dir, makedirs, now
from .protocol import AgentError, Json
from .releases import receive_to_file

ORIGIN = ".image"  # in a frontend folder, beside the static folder Caddy serves: its image


def is_image_archive(path: str) -> bool:
    """docker-archive and oci-archive are loaded; anything else is a root filesystem to import."""
    import tarfile

    with tarfile.open(path) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()[:64]}
    return "manifest.json" in names or "oci-layout" in names


def put_image(ctx: Context, a: Json) -> None:
    image, runtime = a["image"], a["runtime"]
    if not a.get("size"):
        runtimes.pull(runtime, image, a.get("digest"), a.get("auth"))
        return
    makedirs(a["releases"])
    tmp = os.path.join(a["releases"], f".incoming-{a['version']}-{os.getpid()}.image")
    try:
        digest = receive_to_file(ctx, int(a["size"]), tmp)
        if a.get("sha256") and digest != a["sha256"]:
            raise AgentError(f"image archive arrived with sha256 {digest}, expected {a['sha256']}")
        if is_image_archive(tmp):
            runtimes.load_archive(runtime, tmp, image)
        else:
            runtimes.import_rootfs(runtime, tmp, image, a["image_root"])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def copy_static(
    runtime: str, image: str, inner: str, dest: str, static_dir: str | None, origin: str | None = None
) -> None:
    """`dest` made complete from `image`'s `inner` folder (at `static_dir` inside it), then
    renamed into place. `podman cp` and `docker cp` keep the image's links, fifos and modes
    (setuid, 0777) as they are; Caddy serves this folder, so it gets the checks of an
    uploaded release before it becomes visible."""
    parent = os.path.dirname(dest)
    staging = os.path.join(parent, f".incoming-{os.path.basename(dest)}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.mkdir(staging, 0o755)
    try:
        if static_dir:
            makedirs(os.path.dirname(os.path.join(staging, static_dir)))
            runtimes.copy_out(runtime, image, inner, os.path.join(staging, static_dir))
        check_tree(staging)
        settle_modes(staging)
        if origin is not None:
            atomic_write(os.path.join(staging, ORIGIN), json.dumps({"image": origin}).encode(), 0o644)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(parent)


def do_load_image(ctx: Context, a: Json) -> Json:
    """The image into the runtime's storage, and its static frontend out into releases/<version>."""
    releases, version, image = a["releases"], a["version"], a["image"]
    put_image(ctx, a)  # first: a pull the registry refuses leaves the host as it was
    makedirs(releases)
    dest = os.path.join(releases, version)
    if not os.path.isdir(dest):
        inner = f"{a['image_root'].rstrip('/')}/{a['static_dir']}" if a.get("static_dir") else ""
        copy_static(a["runtime"], image, inner, dest, a.get("static_dir"))
    meta = {
        "version": version,
        "image": image,
        "sha256": a.get("sha256") or a.get("digest"),
        "uploaded": now(),
    }
    atomic_write(os.path.join(ctx.state_dir, "releases", f"{version}.json"), json.dumps(meta).encode(), 0o644)
    fsync_dir(releases)
    return {}


def do_pull_frontend(ctx: Context, a: Json) -> Json:
    """The frontend's own image (pulled unless it is on the host already), and for a static
    frontend its files copied out into frontends/<name>."""
    image, runtime = a["image"], a["runtime"]
    if a.get("pull"):
        runtimes.pull(runtime, image, a.get("digest"), a.get("auth"))
    dest = a.get("dest")
    if dest and not os.path.isdir(dest):
        makedirs(os.path.dirname(dest))
        inner = f"{a['image_root'].rstrip('/')}/{a['static_dir']}"
        copy_static(runtime, image, inner, dest, a["static_dir"], origin=image)
        os.utime(dest)  # its age, for pruning: when it arrived, not when the image was built
    return {}


def do_prune_frontend(ctx: Context, a: Json) -> Json:
    path = a["path"]
    parent = os.path.dirname(path)
    image = _origin(path)
    if os.path.isdir(path):
        trash = os.path.join(parent, f".trash-{os.path.basename(path)}-{os.getpid()}")
        os.rename(path, trash)  # gone from view at once, deleted out of sight
        fsync_dir(parent)
        shutil.rmtree(trash, ignore_errors=True)
    others = {_origin(os.path.join(parent, n)) for n in os.listdir(parent) if not n.startswith(".")}
    if image and image not in others:
        runtimes.remove_image(a["runtime"], image)
    return {}


def _origin(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, ORIGIN), encoding="utf-8") as fh:
            return str(json.load(fh)["image"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
