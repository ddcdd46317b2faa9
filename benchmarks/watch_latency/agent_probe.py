"""Runs inside a test host (copied there, run by its python3; standard library only).

`python3 agent_probe.py N SPEC.json`: N times, a fresh python3 loads the host agent
the way the SSH bootstrap does (decompress, compile, exec) and calls observe() once, as every
request's process does. Prints a JSON list of [process wall ms, load ms, observe ms].
The agent file is the repository's, mounted read-only at /src in every test host.
"""

import json
import subprocess
import sys
import time
import zlib
from typing import Any

AGENT = "/src/reconciler/agent/hostagent.py"


def child(blob_len: int) -> None:
    blob = sys.stdin.buffer.read(blob_len)
    spec = json.loads(sys.stdin.buffer.read())
    t0 = time.perf_counter()
    namespace: dict[str, Any] = {"__name__": "agent"}  # not "__main__": load, do not run main()
    exec(compile(zlib.decompress(blob), "agent", "exec"), namespace)
    t1 = time.perf_counter()
    namespace["observe"](spec)
    t2 = time.perf_counter()
    print(json.dumps([(t1 - t0) * 1000, (t2 - t1) * 1000]))


def parent(samples: int, spec_path: str) -> None:
    with open(AGENT, "rb") as fh:
        blob = zlib.compress(fh.read(), 9)
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
