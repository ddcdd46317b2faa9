"""What the release folders weigh (`reconcile releases`): read only, no lock taken.

Sizes are what the folders hold on disk (blocks, as `du` counts them), each hard-linked file
once, links not followed: a shared folder linked into every release is counted in none of
them. An image release's image is weighed by its runtime.
"""

from __future__ import annotations

import contextlib
import os

from .fsops import read_json
from .protocol import Json, check_request


def folder_size(path: str) -> tuple[int, int]:
    """(bytes on disk, files) below `path`, without following links."""
    seen: set[tuple[int, int]] = set()
    size = files = 0
    for root, dirs, names in os.walk(path):
        for name in [*dirs, *names]:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # gone while walking (a prune in progress)
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += st.st_blocks * 512
            files += name in names
    with contextlib.suppress(OSError):
        size += os.lstat(path).st_blocks * 512
    return size, files


def image_size(runtime: str, image: str) -> int | None:
    from .fsops import decode, run

    proc = run([runtime, "image", "inspect", "--format", "{{.Size}}", image], timeout=60)
    text = decode(proc.stdout).strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else None


def releases(request: Json) -> Json:
    check_request(request)
    folder, state = request["releases"], request["state"]
    runtime = request.get("runtime")
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        names = []
    out: Json = {}
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        size, files = folder_size(path)
        meta = read_json(os.path.join(state, "releases", f"{name}.json"))
        image = meta.get("image") if isinstance(meta, dict) else None
        out[name] = {
            "size": size,
            "files": files,
            "mtime": os.lstat(path).st_mtime,
            "image_size": image_size(runtime, image) if runtime and isinstance(image, str) else None,
        }
    return {"event": "result", "ok": True, "releases": out}
