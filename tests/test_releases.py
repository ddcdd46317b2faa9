"""Release artifacts on a real host: interrupted uploads, hostile archives and link chains,
pruning."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.deploying import REPO, WATCHED_PATHS, Project, serves

pytestmark = pytest.mark.testhost


def releases_on(project: Project) -> list[str]:
    out = project.host.exec(["ls", "-A", "/opt/choiros/releases"], check=False).stdout.split()
    return sorted(out)


def test_interrupted_upload_leaves_no_partial_release_and_the_next_run_completes_it(
    project: Project, tmp_path: Path
) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    big, _ = build.build("2.0.0", tmp_path, fmt="dir")  # a folder release, as CI may leave it
    (big / "assets.bin").write_bytes(os.urandom(40 * 1024 * 1024))  # incompressible: a slow upload
    project.artifacts["2.0.0-big"] = big
    body = project.render("2.0.0").replace(str(project.artifacts["2.0.0"]), str(big))
    project.write(body=body)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "reconciler", "--once", "-f", str(project.root / "desired-state.yaml")]
    cmd += ["-i", str(host.key_path), "--known-hosts", str(host.known_hosts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "upload" in line and "%" in line and not line.strip().startswith("upload 100%"):
            proc.send_signal(signal.SIGKILL)  # mid-upload
            break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert "2.0.0" not in releases_on(project), "a partial release became visible"
    assert serves(host) == "1.0.0"
    run = project.once()
    assert run.rc == 0, run.stdout
    assert ("upload", "/opt/choiros/releases/2.0.0") in run.actions()
    assert serves(host) == "2.0.0"
    size = host.exec(["stat", "-c", "%s", "/opt/choiros/releases/2.0.0/assets.bin"]).stdout.strip()
    assert size == str(40 * 1024 * 1024)
    assert [r for r in releases_on(project) if r.startswith(".")] == [], "staging left behind"


def hostile_tarball(path: Path, good: Path) -> None:
    """A real release plus one member that would escape the release folder."""
    with tarfile.open(good) as src, tarfile.open(path, "w:gz") as out:
        for member in src.getmembers():
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        evil = tarfile.TarInfo("../../../etc/cron.d/evil")
        data = b"* * * * * root touch /tmp/pwned\n"
        evil.size = len(data)
        out.addfile(evil, io.BytesIO(data))


def test_hostile_tarball_is_refused_with_nothing_written(project: Project, tmp_path: Path) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    bad = tmp_path / "choiros-6.6.6.tar.gz"
    hostile_tarball(bad, project.artifacts["2.0.0"])
    project.artifacts["6.6.6"] = bad
    before = host.tree_state([*WATCHED_PATHS, "/etc/cron.d"])
    project.write("6.6.6")
    run = project.reconcile("--once")
    assert run.rc == 1
    assert "release.source" in run.stderr and "../../../etc/cron.d/evil" in run.stderr
    assert host.tree_state([*WATCHED_PATHS, "/etc/cron.d"]) == before


N = 24  # more `..` than the release folder is deep: the chains reach `/`


def chain_release(out: Path, fmt: str, flip: bool = False) -> Path:
    """Release 6.6.6 whose static site holds `d -> .` and `passwd -> d/d/.../../../etc/passwd`:
    each link read alone stays inside, together they name the host's /etc/passwd. With
    `flip`, the chain's link comes first in the archive, before the `.` link it uses."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    folder, _ = build.build("6.6.6", out, fmt="dir")
    (folder / "frontend" / "dist" / "passwd").symlink_to("d/" * N + "../" * N + "etc/passwd")
    (folder / "frontend" / "dist" / "d").symlink_to(".")
    if fmt == "dir":
        return folder
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    if flip:
        names.remove("frontend/dist/d")
        names.append("frontend/dist/d")
    archive = out / "choiros-6.6.6.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            tar.add(folder / name, arcname=name, recursive=False)
    return archive


@pytest.mark.parametrize("fmt", ["tar.gz", "dir"])
def test_link_chain_is_refused_before_anything_is_sent(project: Project, tmp_path: Path, fmt: str) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    project.artifacts["6.6.6"] = chain_release(tmp_path, fmt)
    before = host.tree_state(WATCHED_PATHS)
    project.write("6.6.6")
    run = project.reconcile("--once")
    assert run.rc == 1, run.stdout
    assert "release.source" in run.stderr and "frontend/dist/passwd" in run.stderr, run.stderr
    assert host.tree_state(WATCHED_PATHS) == before
    assert "root:x:0:0" not in host.http("/passwd", timeout=5).text
    assert serves(host) == "1.0.0"


AGENT_UPLOAD = """
import sys
from reconciler.agent.context import Context
from reconciler.agent.protocol import AgentError
from reconciler.agent.releases import do_upload_release
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as payload:
    ctx = Context({"observe": {"state": "/var/lib/reconciler/choiros"}}, payload, print)
    try:
        do_upload_release(ctx, {"releases": "/opt/choiros/releases", "version": "6.6.6", "size": size})
    except AgentError as exc:
        print(exc.code, exc.message)
"""


def test_the_host_agent_refuses_a_link_chain_on_the_hosts_own_python(
    project: Project, tmp_path: Path
) -> None:
    """The agent alone, on the test host's Debian Python 3.11.2 (no PEP 706 filter there),
    given an archive the controller never checked: refused before it is renamed into place."""
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    archive = chain_release(tmp_path, "tar.gz", flip=True)
    (host.share / archive.name).write_bytes(archive.read_bytes())
    cmd = ["python3", "-c", AGENT_UPLOAD, f"/share/{archive.name}", str(archive.stat().st_size)]
    out = host.exec(cmd, env={"PYTHONPATH": "/src"}).stdout
    assert "hostile refusing release: 'frontend/dist/passwd'" in out, out
    assert releases_on(project) == ["1.0.0"], "a release or its staging was left"
    assert host.exec(["ls", "/var/lib/reconciler/choiros/releases"]).stdout.split() == ["1.0.0.json"]


def test_pruning_keeps_exactly_what_it_should_across_deploys_and_rollbacks(project: Project) -> None:
    def deploy(version: str) -> list[str]:
        body = project.render(version).replace("  source:", "  keep: 2\n  source:")
        project.write(body=body)
        run = project.once()
        assert run.rc == 0, run.stdout
        assert serves(project.host) == version
        return releases_on(project)

    assert deploy("1.0.0") == ["1.0.0"]
    assert deploy("2.0.0") == ["1.0.0", "2.0.0"]
    assert deploy("3.0.0") == ["2.0.0", "3.0.0"]  # 1.0.0 pruned; 2.0.0 is previous
    assert deploy("2.0.0") == ["2.0.0", "3.0.0"]  # rollback: nothing uploaded, nothing pruned
    assert deploy("1.0.0") == ["1.0.0", "2.0.0"]  # re-upload 1.0.0; 3.0.0 is oldest unused
    link = project.host.exec(["readlink", "/opt/choiros/previous"]).stdout.strip()
    assert link == "releases/2.0.0"
    assert project.once("--dry-run").rc == 0
