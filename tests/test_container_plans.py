"""Containers in the pure core: the runtime a plan renders for, credentials that reach the
wire and nothing else, a frontend image whose bump restarts nothing, and the checks of the
desired state that go with them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from reconciler.agent.transient import own_state_folder, transient_argv
from reconciler.errors import InvalidDesiredState
from reconciler.observe.snapshot import Observed, UserState
from reconciler.plan.actions import LoadImage, MakeShared, Plan, PullFrontend, RunTask, Systemctl, WriteFile
from reconciler.plan.oneoff import NotRunnable, one_off
from reconciler.plan.planner import plan
from reconciler.render import units
from reconciler.spec.load import load_bytes
from reconciler.spec.model import DesiredState
from tests.model_host import ModelHost
from tests.test_planner import desired, empty_host

DIGEST = "sha256:" + "ab" * 32
SECRET = "hunter2-pull-token"


def pulled(extra: str = "", frontend: str = "mode: static") -> DesiredState:
    text = f"""
app: choiros
target: local
release:
  version: "1.0.0"
  image: registry.example:5000/choiros/backend:1.0.0
  digest: {DIGEST}
registry_auth:
  username: ${{REG_USER}}
  password: {{from_env: REG_PASSWORD}}
frontend:
  {frontend.replace(chr(10), chr(10) + "  ")}
backend:
  command: python3 bin/backend --port 8080
  port: 8080
{extra}"""
    return load_bytes(
        text.encode(), "desired-state.yaml", base_dir=Path("/src"),
        environ={"REG_USER": "deployer", "REG_PASSWORD": SECRET},
    )  # fmt: skip


def test_a_host_with_docker_gets_a_docker_unit_and_docker_pulls() -> None:
    host = replace(empty_host(), runtime="docker")
    p = plan(desired(image=True), host)
    load = next(a for a in p.actions if isinstance(a, LoadImage))
    assert load.runtime == "docker"
    unit = next(a for a in p.actions if getattr(a, "path", "").endswith("choiros-backend.service"))
    text = unit.content  # type: ignore[attr-defined]
    assert "ExecStart=/usr/bin/docker run" in text and "Type=exec" in text and "podman" not in text
    assert "Environment=RECONCILER_RELEASE=1.0.0" in text, "the docker client must carry the release itself"
    after = ModelHost(host).apply_plan(p)
    assert not plan(desired(image=True), after).changed


def test_no_runtime_on_the_host_is_a_blocker_before_anything_changes() -> None:
    host = replace(empty_host(), runtime_error="neither podman nor docker is installed on the host")
    p = plan(desired(image=True), host)
    assert not p.actions and p.blockers == ("neither podman nor docker is installed on the host",)


def test_credentials_reach_the_wire_and_nothing_that_is_shown() -> None:
    p = plan(pulled(), empty_host())
    load = next(a for a in p.actions if isinstance(a, LoadImage))
    assert load.wire()["auth"] == {"username": "deployer", "password": SECRET}
    shown = repr(p) + repr(load) + str(p.summaries()) + str(p.rollback)
    assert SECRET not in shown and "deployer" not in shown
    assert "with registry credentials (${REG_USER}, ${REG_PASSWORD}, secret)" in load.reason
    assert load.digest == DIGEST and load.source is None


def test_a_bump_of_the_frontend_image_alone_restarts_nothing() -> None:
    fe1 = "mode: static\nimage: registry.example:5000/choiros/frontend:1"
    fe2 = "mode: static\nimage: registry.example:5000/choiros/frontend:2"
    host = ModelHost(empty_host())
    host.run(plan(pulled(frontend=fe1), host.snapshot()))
    p = plan(pulled(frontend=fe2), host.snapshot())
    assert [a.summary()["action"] for a in p.actions] == [
        "frontend-image",
        "validate+write",
        "reload",
        "record-good",
    ]
    assert not any(isinstance(a, Systemctl) for a in p.actions)
    pull = next(a for a in p.actions if isinstance(a, PullFrontend))
    assert pull.dest == "/opt/choiros/frontends/registry.example_5000_choiros_frontend_2"
    assert host.run(p) == "ok"
    back = plan(pulled(frontend=fe1), host.snapshot())  # its folder is still there: nothing pulled
    assert not any(isinstance(a, PullFrontend) for a in back.actions)


def test_a_dev_server_of_its_own_image_names_no_release() -> None:
    dev = "mode: dev-server\nimage: registry.example:5000/choiros/frontend:1\n"
    dev += "dev_command: python3 bin/frontend-dev --port 3000\ndev_port: 3000"
    p = plan(pulled(frontend=dev), empty_host())
    unit = next(a for a in p.actions if getattr(a, "path", "").endswith("choiros-frontend.service"))
    text = unit.content  # type: ignore[attr-defined]
    assert "registry.example:5000/choiros/frontend:1" in text and units.RELEASE_VAR not in text


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ("frontend:\n  image: x/frontend:1\n", "frontend.image", "give the backend's release.image too"),
        ("registry_auth: {username: a, password: b}\n", "registry_auth", "only means something for an image"),
    ],
)
def test_container_fields_that_mean_nothing_here_are_refused(extra: str, field: str, says: str) -> None:
    text = f"""
app: choiros
target: local
release: {{version: "1.0.0", source: dist/x.tar.gz}}
backend: {{command: bin/backend, port: 8080}}
{extra}"""
    with pytest.raises(InvalidDesiredState) as exc:
        load_bytes(text.encode(), "desired-state.yaml", base_dir=Path("/src"))
    assert any(p.field == field and says in str(p) for p in exc.value.problems), exc.value.problems


def with_user(d: DesiredState, user: str = "choiros") -> DesiredState:
    return replace(d, backend=replace(d.backend, user=user))


def host_with(runtime: str = "podman", uid: int = 998, gid: int = 997) -> Observed:
    users = MappingProxyType({"choiros": UserState(uid, has_group=True, gid=gid)})
    return replace(empty_host(), runtime=runtime, users=users)


def unit_text(p: Plan, name: str = "choiros-backend.service") -> str:
    unit = next(a for a in p.actions if isinstance(a, WriteFile) and a.path.endswith(name))
    return unit.content


def exec_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Exec")]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_an_image_with_backend_user_runs_as_its_uid_and_gid_and_the_state_folder_is_theirs(
    runtime: str,
) -> None:
    """The container runs as the account's numbers (the image has no such name); the unit names
    the user so systemd hands it /var/lib/<app> as for a release folder, while the runtime's own
    commands keep root's privileges and HOME."""
    d = with_user(desired(image=True, runtime=runtime))
    p = plan(d, host_with(runtime))
    assert not p.blockers
    text = unit_text(p)
    assert "--user=998:997" in text and "User=choiros" in text and "StateDirectory=choiros" in text
    assert "Environment=HOME=/root" in text
    assert all(line.split("=", 1)[1].lstrip("-").startswith("+") for line in exec_lines(text)), text
    assert f"ExecStart=+/usr/bin/{runtime} run" in text
    env = next(a for a in p.actions if isinstance(a, WriteFile) and a.path == "/etc/choiros/backend.env")
    assert (env.mode, env.group) == (0o640, "choiros"), "the environment file as for a release folder"
    after = ModelHost(host_with(runtime)).apply_plan(p)
    assert not plan(d, after).changed
    root = unit_text(plan(desired(image=True, runtime=runtime), host_with(runtime)))
    assert "--user" not in root and "User=" not in root and "+/usr/bin" not in root, "without it: as before"


def test_a_user_recreated_with_other_ids_rewrites_and_restarts_the_container() -> None:
    d = with_user(desired(image=True))
    after = ModelHost(host_with()).apply_plan(plan(d, host_with()))
    moved = replace(after, users=host_with(uid=1001, gid=1001).users)
    again = plan(d, moved)
    assert "--user=1001:1001" in unit_text(again)
    assert ("restart", "choiros-backend.service") in [
        (a.summary()["action"], a.target) for a in again.actions
    ]


def test_an_image_with_a_user_the_host_lacks_or_did_not_describe_is_a_blocker() -> None:
    d = with_user(desired(image=True))
    for users in ({"choiros": None}, {}):
        p = plan(d, replace(empty_host(), users=MappingProxyType(users)))
        assert not p.actions and len(p.blockers) == 1, p.blockers
        assert "backend.user 'choiros' does not exist on the host" in p.blockers[0]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_a_release_task_in_a_container_runs_as_the_user_with_the_hosts_runtime(runtime: str) -> None:
    tasks = "  tasks: {before_switch: [python3 bin/migrate]}"
    d = with_user(desired(image=True, runtime=runtime, tasks=tasks))
    task = next(a for a in plan(d, host_with(runtime)).actions if isinstance(a, RunTask))
    assert task.container[0] == f"/usr/bin/{runtime}" and "--user=998:997" in task.container
    assert "--volume=/var/lib/choiros:/var/lib/choiros" in task.container
    assert task.user == "choiros" and task.state_directory == "choiros"
    # Its transient unit has no User= (the runtime runs as root): a StateDirectory= there would
    # hand the folder to root, so the agent makes it for the user before starting the task.
    wire = task.wire()
    assert own_state_folder(wire) == "/var/lib/choiros"
    assert not any(w.startswith("--property=StateDirectory") for w in transient_argv(wire, "unit"))
    root = next(
        a for a in plan(desired(image=True, tasks=tasks), host_with()).actions if isinstance(a, RunTask)
    )
    assert not any(w.startswith("--user") for w in root.container)
    assert own_state_folder(root.wire()) is None
    assert "--property=StateDirectory=choiros" in transient_argv(root.wire(), "unit")


def test_exec_in_an_image_runs_as_the_user_and_needs_the_account() -> None:
    d = with_user(desired(image=True))
    host = ModelHost(host_with())
    host.run(plan(d, host.snapshot()))
    command = one_off(d, host.snapshot(), ("python3", "-c", "print(1)"))
    assert "--user=998:997" in command.container and command.user == "choiros"
    assert own_state_folder(dict(command.wire())) == "/var/lib/choiros"
    gone = replace(host.snapshot(), users=MappingProxyType({"choiros": None}))
    with pytest.raises(NotRunnable) as exc:
        one_off(d, gone, ("true",))
    assert "backend.user 'choiros' does not exist" in exc.value.message and "useradd" in exc.value.hint


def test_backend_user_with_an_image_is_accepted() -> None:
    text = """app: choiros
target: local
release: {version: "1.0.0", image: registry.example:5000/choiros:1}
backend:
  command: bin/backend
  port: 8080
  user: choiros
"""
    d = load_bytes(text.encode(), "desired-state.yaml", base_dir=Path("/src"))
    assert d.backend.user == "choiros" and d.release.image == "registry.example:5000/choiros:1"


def test_a_pulled_image_is_pulled_again_when_the_host_has_the_tag_as_another_digest() -> None:
    d = pulled()
    host = ModelHost(empty_host())
    assert host.run(plan(d, host.snapshot())) == "ok"
    assert not plan(d, host.snapshot()).changed
    other = replace(host.snapshot(), images=frozenset({d.release.image or ""}))  # the tag, not the pin
    again = plan(d, other)
    assert [a.summary()["action"] for a in again.actions][:1] == ["load-image"]


def test_an_images_shared_folders_are_made_for_the_user_before_its_containers_bind_them() -> None:
    """Podman refuses to bind a folder that does not exist (and Docker would make it root's):
    the plan makes the missing ones first, the backend user's, and leaves existing ones alone."""
    d = replace(with_user(desired(image=True)), shared=("uploads", "cache"))
    p = plan(d, host_with())
    make = [a for a in p.actions if isinstance(a, MakeShared)]
    assert len(make) == 1 and make[0].paths == ("uploads", "cache") and make[0].owner == "choiros"
    assert make[0].shared == "/opt/choiros/shared" and "the image's containers bind them" in make[0].reason
    text = unit_text(p)
    assert "--volume=/opt/choiros/shared/uploads:/app/uploads" in text
    first = [a.summary()["action"] for a in p.actions]
    assert first.index("make-shared") < first.index("start"), first
    after = ModelHost(host_with()).apply_plan(p)
    assert not plan(d, after).changed
    links = dict(after.links)
    links["/opt/choiros/shared/cache"] = None  # removed by hand: made again, alone
    again = plan(d, replace(after, links=MappingProxyType(links)))
    assert [(type(a), a.paths) for a in again.actions if isinstance(a, MakeShared)] == [
        (MakeShared, ("cache",))
    ]
    assert not any(isinstance(a, MakeShared) for a in plan(desired(image=True), host_with()).actions)
