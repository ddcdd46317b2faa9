"""The host agent's file operations, run against local temp folders: atomic writes and links,
the release archive checks member by member (link chains: test_release_contents.py), the lock."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from reconciler.agent import lock, observe
from reconciler.agent.fsops import atomic_symlink, atomic_write
from reconciler.agent.lock import HostLock
from reconciler.agent.protocol import AgentError
from reconciler.agent.releases import extract_release, unpack_release


def tarball(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            if m.isfile():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


HOSTILE = {
    "absolute": [member("/etc/passwd")],
    "dotdot": [member("../../etc/cron.d/x")],
    "dotdot-inside": [member("bin/../../x")],
    "device": [member("dev", tarfile.CHRTYPE)],
    "fifo": [member("pipe", tarfile.FIFOTYPE)],
    "hardlink": [member("bin"), member("passwd", tarfile.LNKTYPE, "/etc/passwd")],
    "symlink-absolute": [member("etc", tarfile.SYMTYPE, "/etc")],
    "symlink-escape": [member("up", tarfile.SYMTYPE, "../..")],
    "symlink-deep-escape": [member("a/b/up", tarfile.SYMTYPE, "../../../x")],
    "write-through-symlink": [member("here", tarfile.SYMTYPE, "."), member("here/x")],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused_during_extraction(name: str, tmp_path: Path) -> None:
    raw = tarball(*HOSTILE[name])
    dest = tmp_path / "release"
    with pytest.raises(AgentError, match="refusing release archive"):
        extract_release(io.BytesIO(raw), str(dest))
    outside = [p for p in tmp_path.rglob("*") if not str(p).startswith(str(dest))]
    assert outside == []


def test_safe_archive_with_inner_symlink_extracts(tmp_path: Path) -> None:
    raw = tarball(
        member("bin", tarfile.DIRTYPE), member("bin/app"), member("current-bin", tarfile.SYMTYPE, "bin")
    )
    files, _ = unpack_release(io.BytesIO(raw), str(tmp_path / "r"), "1.0.0")
    assert files == 1 and (tmp_path / "r" / "current-bin" / "app").read_bytes() == b"x"


def test_atomic_write_sets_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "f.env"
    old = os.umask(0o077)
    try:
        atomic_write(str(path), b"A=1\n", 0o640)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"A=1\n" and (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["f.env"]


def test_atomic_write_never_follows_a_planted_temp_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "f"
    (tmp_path / f".f.tmp-{os.getpid()}").symlink_to(victim)
    with pytest.raises(OSError):
        atomic_write(str(path), b"new", 0o644)
    assert victim.read_text() == "keep"


def test_atomic_symlink_replaces_link_and_refuses_directories(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir()
    link = tmp_path / "current"
    atomic_symlink(str(link), "releases/1")
    atomic_symlink(str(link), "releases/2")
    assert os.readlink(link) == "releases/2"
    (tmp_path / "previous").mkdir()
    with pytest.raises(AgentError, match="real directory"):
        atomic_symlink(str(tmp_path / "previous"), "releases/1")


def test_lock_names_its_holder_and_times_out(tmp_path: Path) -> None:
    events: list[dict[str, object]] = []
    with HostLock(str(tmp_path), {"user": "alice@ci"}, 0, events.append):
        state = lock.lock_state(str(tmp_path))
        assert state["held"] and state["holder"]["user"] == "alice@ci"
        t0 = time.monotonic()
        with (
            pytest.raises(AgentError) as caught,
            HostLock(str(tmp_path), {"user": "bob"}, 0.5, events.append),
        ):
            pass
        assert caught.value.code == "locked" and 0.4 < time.monotonic() - t0 < 2
        assert json.loads(caught.value.detail)["user"] == "alice@ci"
        assert events and events[0]["event"] == "lock_wait"
    assert lock.lock_state(str(tmp_path)) == {"held": False}


def test_lock_of_a_killed_holder_is_recovered(tmp_path: Path) -> None:
    code = (
        "import sys,time; sys.path.insert(0, sys.argv[2]);"
        "from reconciler.agent.lock import HostLock;"
        "l = HostLock(sys.argv[1], {'user': 'doomed'}, 0, print); l.__enter__();"
        "print('held', flush=True); time.sleep(60)"
    )
    repo = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), repo], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert lock.lock_state(str(tmp_path))["held"]
        proc.kill()
        proc.wait(5)
        with HostLock(str(tmp_path), {"user": "next"}, 0, lambda e: None):
            pass
    finally:
        proc.kill()


def test_observe_reads_files_links_and_releases(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1.0.0").mkdir(parents=True)
    (tmp_path / "releases" / ".incoming-2.0.0-1").mkdir()
    (tmp_path / "current").symlink_to("releases/1.0.0")
    (tmp_path / "f").write_text("hello")
    snap = observe.observe(
        {
            "state": str(tmp_path / "state"),
            "releases": str(tmp_path / "releases"),
            "files": [str(tmp_path / "f"), str(tmp_path / "missing")],
            "links": [str(tmp_path / "current"), str(tmp_path / "previous")],
            "units": [],
            "commands": ["sh"],
            "users": ["root", "no-such-user"],
        }
    )
    assert list(snap["releases"]) == ["1.0.0"], "an unfinished upload must be invisible"
    assert snap["links"][str(tmp_path / "current")]["target"] == "releases/1.0.0"
    assert snap["links"][str(tmp_path / "previous")] is None
    assert snap["files"][str(tmp_path / "f")]["content"] == "hello"
    assert snap["files"][str(tmp_path / "missing")] is None
    assert snap["users"] == {"root": {"uid": 0, "gid": 0, "group": True}, "no-such-user": None}
    assert not (tmp_path / "state").exists(), "observation must not write"


def test_fingerprint_ignores_the_lock() -> None:
    snap = {"files": {"a": 1}, "lock": {"held": False}, "host": {"hostname": "h"}}
    held = dict(snap, lock={"held": True, "holder": {"pid": 1}})
    assert observe.fingerprint(snap) == observe.fingerprint(held)
    assert observe.fingerprint(snap) != observe.fingerprint(dict(snap, files={"a": 2}))


# --- error paths: any failure is an answer and a history record, never a traceback -------------


def _apply_locally(tmp_path: Path, actions: list[dict[str, object]]) -> dict[str, object]:
    from reconciler.agent.main import handle
    from reconciler.agent.protocol import PROTOCOL

    spec = {"state": str(tmp_path / "state"), "releases": str(tmp_path / "releases")}
    request = {
        "op": "apply",
        "protocol": PROTOCOL,
        "observe": spec,
        "actions": actions,
        "lock_timeout": 0,
        "holder": {},
        "journal": {"kind": "deploy"},
    }
    return handle(request, None, lambda e: None)


def test_an_unexpected_exception_in_an_action_is_a_recorded_failure(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not an SQLite database" * 100)
    answer = _apply_locally(
        tmp_path,
        [{"kind": "snapshot_database", "database": str(broken), "snapshot": str(tmp_path / "s/1.sqlite")}],
    )
    assert answer["event"] == "result" and answer["ok"] is False
    failure = answer["failure"]
    assert (
        isinstance(failure, dict) and failure["code"] == "exception" and "DatabaseError" in failure["error"]
    )
    assert "raised in the host agent at" in failure["detail"]
    history = (tmp_path / "state" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["result"] == "failed"
    assert "after" in answer, "the host is observed again after a failure"


def test_a_missing_group_is_a_clear_failure(tmp_path: Path) -> None:
    answer = _apply_locally(
        tmp_path,
        [
            {
                "kind": "write_file",
                "path": str(tmp_path / "f"),
                "content": "x",
                "mode": 0o640,
                "group": "no-such-group-x",
                "secret": True,
                "backup": False,
            }
        ],
    )
    failure = answer["failure"]
    assert isinstance(failure, dict) and "no-such-group-x" in failure["error"], failure


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("quarantine.json", b'{"abc": {"version": "1.0', "not valid JSON"),
        ("gates.json", b"[]", "holds a list, not a dict"),
        ("good.json", b"{", "not valid JSON"),
        ("releases/1.0.0.json", b"\xff\xfe", "not valid JSON"),
    ],
)
def test_a_corrupt_state_file_is_named_with_what_to_do(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    state = tmp_path / "state"
    (state / "releases").mkdir(parents=True)
    (tmp_path / "releases" / "1.0.0").mkdir(parents=True)
    (state / name).write_bytes(content)
    snap = observe.observe({"state": str(state), "releases": str(tmp_path / "releases")})
    errors = snap["state"]["errors"]
    assert len(errors) == 1 and str(state / name) in errors[0] and says in errors[0]
    assert "Move it away and run again" in errors[0]


def test_a_state_folder_is_made_and_handed_over_as_systemd_does(tmp_path: Path) -> None:
    """For a container run as backend.user, whose transient unit cannot have systemd do it:
    made 0755 for the user, the whole tree handed over when the folder is not theirs (a
    database a root container wrote), links not followed, and nothing done when it is."""
    import pwd

    from reconciler.agent.fsops import state_folder

    nobody = pwd.getpwnam("nobody")
    ids = (nobody.pw_uid, nobody.pw_gid)
    folder = tmp_path / "app"
    state_folder(str(folder), "nobody")
    assert (folder.stat().st_uid, folder.stat().st_gid, folder.stat().st_mode & 0o7777) == (*ids, 0o755)

    outside = tmp_path / "outside"
    outside.write_text("not the app's")
    os.chown(folder, 0, 0)
    folder.chmod(0o700)
    (folder / "app.db").write_text("rows")
    (folder / "sub").mkdir()
    (folder / "sub" / "wal").write_text("x")
    (folder / "link").symlink_to(outside)
    state_folder(str(folder), "nobody")
    for path in (folder, folder / "app.db", folder / "sub", folder / "sub" / "wal"):
        assert (path.stat().st_uid, path.stat().st_gid) == ids, path
    assert (os.lstat(folder / "link").st_uid, os.lstat(folder / "link").st_gid) == ids
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0), "a link was followed"
    assert folder.stat().st_mode & 0o7777 == 0o755

    os.chown(folder / "app.db", 0, 0)  # the folder is theirs: systemd's test says done
    state_folder(str(folder), "nobody")
    assert (folder / "app.db").stat().st_uid == 0
    state_folder(str(folder), None)  # no backend.user: root's again, as a unit without User=
    assert (folder / "sub" / "wal").stat().st_uid == 0 and folder.stat().st_uid == 0
