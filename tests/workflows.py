"""Run the `run:` steps of the GitHub Actions workflows in examples/ci here, as a runner would.

The script and its environment come from the workflow file itself: the `env:` of the workflow,
the job and the step, with each `${{ ... }}` taken from the contexts a test gives (`secrets`,
`vars`, `github`, `steps`, `needs`). An expression the test does not give, or one that is more
than a name (an operator, a function), fails the test: a workflow that starts to pass
something new, or stops passing something, fails the test that runs it, not a deploy.

Steps that are actions (`uses:`) are GitHub's; a test stands in for them (the checkout is the
folder the test made, `pip install .` is this checkout's environment, whose `reconcile` and
`python3` come first on PATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploying import REPO

CI = REPO / "examples" / "ci"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


def load(name: str) -> dict[Any, Any]:
    """A workflow of examples/ci by file name. YAML 1.1 reads the key `on` as True: put it back."""
    data = yaml.safe_load((CI / name).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Step:
    workflow: str
    job: str
    name: str
    run: str
    env: dict[str, str]  # workflow, job and step env, the later winning, expressions unresolved
    fields: dict[str, Any]  # the step as written (`if:`, `id:`, `with:`, ...)


def step(workflow: str, job: str, name: str) -> Step:
    """The step called `name` in `job`; it must be a `run:` step."""
    data = load(workflow)
    steps = data["jobs"][job]["steps"]
    (found,) = [s for s in steps if s.get("name") == name]
    assert "run" in found and "shell" not in found, f"{workflow}: {name!r} is not a plain run: step"
    env = {**data.get("env", {}), **data["jobs"][job].get("env", {}), **found.get("env", {})}
    return Step(workflow, job, name, found["run"], {k: str(v) for k, v in env.items()}, found)


def resolve(value: str, contexts: Mapping[str, Any]) -> str:
    """`value` with each `${{ a.b.c }}` replaced from `contexts` (nested mappings)."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if not NAME.match(expression):
            raise ValueError(f"the test runs no expression like ${{{{ {expression} }}}}")
        found: Any = contexts
        for part in expression.split("."):
            if not isinstance(found, Mapping) or part not in found:
                raise KeyError(f"the workflow needs ${{{{ {expression} }}}}, which the test does not give")
            found = found[part]
        return str(found)

    return EXPRESSION.sub(one, value)


def tools_path(extra: Path | None = None) -> str:
    """PATH as after the workflow's `pip install .`: this checkout's `reconcile` and `python3`
    first (and `extra`, a test's stand-ins, before them)."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "reconcile").exists(), f"no reconcile in {venv_bin}: run .ci/setup"
    first = [str(extra)] if extra else []
    return os.pathsep.join([*first, str(venv_bin), os.environ["PATH"]])


@dataclass
class Ran:
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]  # what the step wrote to $GITHUB_OUTPUT
    env: dict[str, str]  # the step's environment as resolved (without the runner's own)


def run(
    found: Step,
    contexts: Mapping[str, Any],
    *,
    workspace: Path,
    runner_temp: Path,
    path: str | None = None,
    timeout: float = 300,
) -> Ran:
    """Run the step's script with `bash -e` (a runner's default shell for `run:`) in
    `workspace`, with the variables a runner sets and the step's resolved `env:`."""
    github = contexts.get("github", {})
    step_env = {k: resolve(v, contexts) for k, v in found.env.items()}
    runner_temp.mkdir(parents=True, exist_ok=True)
    output = runner_temp / "github_output"
    output.write_text("")
    script = runner_temp / "step.sh"
    script.write_text(found.run)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))},
        "PATH": path or tools_path(),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(runner_temp / "step_summary"),
        "GITHUB_SHA": str(github.get("sha", "")),
        "GITHUB_REPOSITORY": str(github.get("repository", "")),
        "GITHUB_REF_NAME": str(github.get("ref_name", "main")),
        "RUNNER_TEMP": str(runner_temp),
        **step_env,
    }
    for name in ("PYTHONPATH", "RECONCILE", "BUILD", "DESIRED_STATE"):
        if name not in step_env:
            env.pop(name, None)  # only what the workflow sets
    proc = subprocess.run(
        ["bash", "-e", str(script)],
        cwd=workspace, env=env, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return Ran(proc.returncode, proc.stdout, proc.stderr, outputs, step_env)


def path_filter(pattern: str) -> re.Pattern[str]:
    """A `paths:` pattern of a workflow trigger as a regular expression: `**` crosses folders,
    `*` and `?` do not (the patterns these workflows use; GitHub's cheat sheet has more)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def triggers(workflow: str, event: str, path: str) -> bool:
    """Whether a change to `path` starts `workflow` on `event` (by its `paths:`)."""
    on = load(workflow)["on"]
    patterns = on[event].get("paths") if on.get(event) else None
    return patterns is None or any(path_filter(p).match(path) for p in patterns)
