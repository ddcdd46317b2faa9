"""`--format markdown`: the plan as a pull request comment. The diff of every file written,
secret values masked on both sides (shown as changed, never printed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.cli.markdown import masked_env, once_markdown
from reconciler.engine.once import Outcome
from reconciler.plan.planner import plan
from reconciler.spec.load import load_bytes
from reconciler.spec.model import DesiredState
from tests.model_host import ModelHost
from tests.test_planner import empty_host


def desired(version: str, token: str, cors: str) -> DesiredState:
    text = f"""
app: choiros
target: local
release:
  version: "{version}"
  source: dist/choiros-{version}.tar.gz
backend:
  command: bin/backend --port 8080
  port: 8080
env:
  CORS_ALLOW_ORIGINS: {cors}
  API_TOKEN: ${{DEPLOY_API_TOKEN}}
"""
    return load_bytes(
        text.encode(), "desired-state.yaml", base_dir=Path("/src"), environ={"DEPLOY_API_TOKEN": token}
    )


def test_a_bump_shows_actions_reasons_and_diffs_with_secrets_masked() -> None:
    before = desired("1.0.0", "old-token-111", "https://a.example")
    host = ModelHost(empty_host()).apply_plan(plan(before, empty_host()))
    after = desired("2.0.0", "new-token-222", "https://b.example")
    p = plan(after, host)
    text = once_markdown(after, Outcome(p, host), "changes_pending", dry_run=True)
    print(text)
    assert text.startswith("## choiros 2.0.0 on test: changes pending")
    assert "serving 1.0.0" in text
    assert f"**{len(p.actions)} actions** would run:" in text
    assert "| 1 | `+ upload` | `/opt/choiros/releases/2.0.0` | release 2.0.0 is not on the host |" in text
    assert "```diff" in text and "--- /etc/choiros/backend.env (on the host)" in text
    assert '+CORS_ALLOW_ORIGINS="https://b.example"' in text
    assert "-CORS_ALLOW_ORIGINS=(value on the host not shown)" in text
    assert "-API_TOKEN=(secret)" in text and "+API_TOKEN=(secret, changed)" in text
    assert "old-token-111" not in text and "new-token-222" not in text
    assert "https://a.example" not in text, "an old value is shown only where git shows it too"
    assert "releases/2.0.0/frontend/dist" in text  # the Caddyfile's diff


def test_an_unchanged_secret_makes_no_diff_line_and_no_changes_says_so() -> None:
    d = desired("1.0.0", "tok", "https://a.example")
    host = ModelHost(empty_host()).apply_plan(plan(d, empty_host()))
    text = once_markdown(d, Outcome(plan(d, host), host), "noop", dry_run=True)
    assert "No changes: the host matches the desired state." in text
    content = host.content("/etc/choiros/backend.env")
    assert content is not None
    old, new = masked_env(content, content.replace('"https://a.example"', '"https://c.example"'), d)
    assert old is not None and "API_TOKEN=(secret)" in old and "API_TOKEN=(secret)" in new


def test_a_paused_host_and_a_refusal_are_said_plainly() -> None:
    from reconciler.observe.snapshot import Pause

    d = desired("1.0.0", "tok", "https://a.example")
    host = replace(empty_host(), paused=Pause("alice@laptop", "2030-01-01T00:00:00Z", "incident 42"))
    text = once_markdown(d, Outcome(plan(d, host), host), "changes_pending", dry_run=True)
    assert "> **Paused**: the host is paused by alice@laptop since 2030-01-01T00:00:00Z: incident 42" in text
    refused = once_markdown(d, None, "invalid", dry_run=True, error="1 problem in the desired state")
    assert "the desired state is invalid" in refused and "```\n1 problem in the desired state\n```" in refused
