"""Runs inside a test host (copied there, run by its python3; standard library only).

`python3 agent_probe.py N SPEC.json`: N times, a fresh python3 loads the host agent
the way the SSH bootstrap does (decompress, compile, exec) and calls observe() once, as every
request's process does. Prints a JSON list of [process wall ms, load ms, observe ms].
The agent's modules are the repository's, mounted read-only at /src in every test host.
"""

import json
import os
import subprocess
import sys
import time
import zlib
from typing import Any

AGENT = "/src/reconciler/agent"


def child(blob_len: int) -> None:
    blob = sys.stdin.buffer.read(blob_len)
    spec = json.loads(sys.stdin.buffer.read())
    t0 = time.perf_counter()
    sources = json.loads(zlib.decompress(blob))
    namespace: dict[str, Any] = {"__name__": "boot"}
    exec(sources["boot"], namespace)  # as the bootstrap does: load the modules from memory
    namespace["install"](sources["modules"])
    from hostagent.observe import observe  # type: ignore[import-not-found]

    t1 = time.perf_counter()
    observe(spec)
    t2 = time.perf_counter()
    print(json.dumps([(t1 - t0) * 1000, (t2 - t1) * 1000]))


def parent(samples: int, spec_path: str) -> None:
    modules = {}
    for name in sorted(os.listdir(AGENT)):
        if name.endswith(".py"):
            with open(os.path.join(AGENT, name), encoding="utf-8") as fh:
                modules[name[:-3]] = fh.read()
    boot = modules.pop("boot")
    blob = zlib.compress(json.dumps({"boot": boot, "modules": modules}).encode(), 9)
    with open(spec_path, "rb") as fh:
        spec = fh.read()
    rows = []
    for _ in range(samples):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "child", str(len(blob))],
            input=blob + spec,
            capture_output=True,
            check=True,
        ).stdout
        rows.append([(time.perf_counter() - t0) * 1000, *json.loads(out)])
    print(json.dumps(rows))


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(int(sys.argv[2]))
    else:
        parent(int(sys.argv[1]), sys.argv[2])
