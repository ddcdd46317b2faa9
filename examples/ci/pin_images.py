#!/usr/bin/env python3
"""Pin pushed images in a desired-state file, keeping its comments and layout:

    pin_images.py FILE VERSION backend=REPO:TAG@DIGEST frontend=REPO:TAG@DIGEST

rewrites release.version and the `image:` and `digest:` lines of the `release:` section
(backend) and of the `frontend:` section (frontend). Those lines must be there already."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTIONS = {"backend": "release", "frontend": "frontend"}


def pin(text: str, version: str, pins: dict[str, str]) -> str:
    lines = text.splitlines(keepends=True)
    section = ""
    seen: set[tuple[str, str]] = set()
    for i, line in enumerate(lines):
        top = re.match(r"^([a-z_]+):", line)
        if top:
            section = top.group(1)
            continue
        field = re.match(r"^(\s+)(version|image|digest):", line)
        if not field:
            continue
        indent, key = field.groups()
        part = next((p for p, s in SECTIONS.items() if s == section and p in pins), None)
        if section == "release" and key == "version":
            lines[i] = f'{indent}version: "{version}"\n'
        elif part is not None and key in ("image", "digest"):
            ref, _, digest = pins[part].partition("@")
            lines[i] = f"{indent}{key}: {ref if key == 'image' else digest}\n"
            seen.add((part, key))
    missing = {(p, k) for p in pins for k in ("image", "digest")} - seen
    if missing:
        raise SystemExit(f"no {', '.join(f'{SECTIONS[p]}.{k}' for p, k in sorted(missing))} line to pin")
    return "".join(lines)


def main(argv: list[str]) -> int:
    path, version, *specs = argv
    pins = dict(spec.split("=", 1) for spec in specs)
    target = Path(path)
    target.write_text(pin(target.read_text(), version, pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
