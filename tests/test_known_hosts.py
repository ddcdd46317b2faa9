"""The known_hosts reader: parsing, host patterns, hashed names and markers as OpenSSH reads
them (checked against `ssh-keygen -F` itself), and the one-line append under a lock."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.executors import known_hosts as kh


def blob(key_type: str, seed: int) -> bytes:
    """A public key blob of `key_type` (the type string, then filler that differs per seed)."""
    name = key_type.encode()
    return len(name).to_bytes(4, "big") + name + (32).to_bytes(4, "big") + bytes([seed]) * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ED = "ssh-ed25519"
K1, K2, K3, CA = blob(ED, 1), blob(ED, 2), blob(ED, 3), blob(ED, 9)


def line(hosts: str, key: bytes, marker: str = "", key_type: str = ED) -> str:
    return f"{marker + ' ' if marker else ''}{hosts} {key_type} {b64(key)}"


# --- parsing -------------------------------------------------------------------------------


def test_parse_keeps_usable_lines_with_their_numbers_and_markers() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "   # an indented comment",
            line("web1,10.0.0.1", K1) + " root@web1",
            line("*", K2, "@revoked"),
            "\t" + line("*.example.com", CA, "@cert-authority"),
            line("bad", K1, "@frobnicate"),  # unknown marker: skipped
            "truncated ssh-ed25519",  # no key: skipped
            "web2 ssh-ed25519 not*base64",  # broken base64: skipped
            f"web3 ssh-rsa {b64(K1)}",  # the blob says ed25519: skipped
            line("web4", K3).replace(" ", "\t"),
        ]
    )
    entries = kh.parse(text, "kh")
    assert [(e.line, e.marker, e.hosts) for e in entries] == [
        (4, None, "web1,10.0.0.1"),
        (5, "revoked", "*"),
        (6, "cert-authority", "*.example.com"),
        (11, None, "web4"),
    ]
    assert entries[0].where == "kh:4" and entries[0].blob == K1


def test_parse_never_raises_on_garbage() -> None:
    garbage = "\x00\xff @ @@ |1| |1|x|y ssh-ed25519\n@revoked\n@cert-authority *\n" + "a " * 1000
    assert kh.parse(garbage) == []


# --- host patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        ("web1", "web1", True),
        ("WEB1", "web1", True),
        ("web1", "web10", False),
        ("web?", "web1", True),
        ("web?", "web10", False),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com,!bad.example.com", "bad.example.com", False),
        ("!bad.example.com,*.example.com", "good.example.com", True),
        ("!bad.example.com", "good.example.com", False),  # a negation alone matches nothing
        ("[web1]:2222", "[web1]:2222", True),
        ("[web1]:2222", "web1", False),
        ("web1", "[web1]:2222", False),
        ("[10.0.0.*]:2222", "[10.0.0.7]:2222", True),
        ("[10.0.0.*]:2222", "[10.0.0.7]:22", False),
        ("10.0.0.[12]", "10.0.0.1", False),  # no character classes: [ ] are literal
    ],
)
def test_host_patterns(patterns: str, name: str, matches: bool) -> None:
    assert kh.match_hosts(patterns, name) is matches


def test_lookup_name_uses_brackets_off_port_22_and_lower_case() -> None:
    assert kh.lookup_name("Web1", 22) == "web1"
    assert kh.lookup_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_hashed_names_match_what_ssh_keygen_writes(tmp_path: Path) -> None:
    names = ["web1", "10.231.3.2", "[10.231.3.2]:2222"]
    plain = tmp_path / "known_hosts"
    plain.write_text("".join(line(n, K1) + "\n" for n in names))
    subprocess.run(["ssh-keygen", "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed = kh.parse(plain.read_text(), str(plain))
    assert len(hashed) == 3 and all(e.hosts.startswith("|1|") for e in hashed)
    for entry, name in zip(hashed, names, strict=True):
        assert entry.matches(name)
        assert not entry.matches(name + "x")
    ours = kh.hash_name("web1", os.urandom(20))
    assert kh.parse(line(ours, K1))[0].matches("web1")


def test_matching_agrees_with_ssh_keygen(tmp_path: Path) -> None:
    """For every pattern list and name, our answer is OpenSSH's (`ssh-keygen -F` looks a
    name up with the same matcher ssh uses)."""
    patterns = [
        "web1",
        "web?,db*",
        "*.example.com,!bad.example.com",
        "[10.0.0.*]:2222",
        "10.0.0.1,[10.0.0.1]:2200",
        "!*.internal,*",
    ]
    names = [
        "web1",
        "web12",
        "dbx",
        "a.example.com",
        "bad.example.com",
        "[10.0.0.9]:2222",
        "10.0.0.1",
        "[10.0.0.1]:2200",
        "x.internal",
        "anything",
    ]
    for number, pattern in enumerate(patterns):
        path = tmp_path / f"kh{number}"
        path.write_text(line(pattern, K1) + "\n")
        for name in names:
            found = subprocess.run(
                ["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, check=False
            )
            assert kh.match_hosts(pattern, name) is (found.returncode == 0), (pattern, name)


# --- verdicts ---------------------------------------------------------------------------------


def test_check_ok_changed_new() -> None:
    entries = kh.parse("\n".join([line("web1", K1), line("web1", K2), line("db1", K3)]))
    assert kh.check(entries, "web1", K2).status == kh.OK
    changed = kh.check(entries, "web1", K3)
    assert changed.status == kh.CHANGED and changed.entry is not None and changed.entry.line == 1
    assert kh.check(entries, "web2", K1).status == kh.NEW


def test_a_revoked_key_is_refused_even_when_listed() -> None:
    entries = kh.parse("\n".join([line("web1", K1), line("*", K1, "@revoked"), line("db1", K2)]))
    verdict = kh.check(entries, "web1", K1)
    assert verdict.status == kh.REVOKED_KEY and verdict.entry is not None and verdict.entry.line == 2
    # as in OpenSSH, a revocation applies to the hosts its line names
    scoped = kh.parse("\n".join([line("web1", K1), line("db*", K1, "@revoked")]))
    assert kh.check(scoped, "web1", K1).status == kh.OK
    assert kh.check(scoped, "db1", K1).status == kh.REVOKED_KEY


def test_cert_authorities_are_reported_not_trusted_as_keys() -> None:
    entries = kh.parse(line("*.example.com", CA, "@cert-authority"))
    verdict = kh.check(entries, "web.example.com", CA)
    assert verdict.status == kh.NEW and [e.line for e in verdict.authorities] == [1]
    assert kh.check(entries, "web.other.org", CA).authorities == ()


def test_key_types_known_for_a_host_first_seen_first() -> None:
    rsa = blob("ssh-rsa", 4)
    entries = kh.parse(
        "\n".join([line("web1", rsa, key_type="ssh-rsa"), line("*", K2, "@revoked"), line("web*", K1)])
    )
    assert kh.key_types(entries, "web1") == ["ssh-rsa", ED]
    assert kh.key_types(entries, "db1") == []


def test_fingerprint_is_openssh_s(tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "k.pub").read_text().split()
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert kh.fingerprint(base64.b64decode(pub[1])) == printed


# --- append -------------------------------------------------------------------------------------

ORIGINAL = "\n".join(
    [
        "# fleet keys, kept by hand",
        line("web1", K1) + " web1 comment",
        line("*", K3, "@revoked"),
        line("*.example.com", CA, "@cert-authority"),
        line(kh.hash_name("db1", b"s" * 20), K2),
        "",
        "# the end, without a newline",
    ]
)


def test_append_adds_one_line_and_keeps_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(ORIGINAL)
    verdict = kh.append(str(path), "[10.0.0.5]:2222", ED, K2)
    assert verdict.status == kh.NEW
    text = path.read_text()
    assert text == ORIGINAL + "\n" + line("[10.0.0.5]:2222", K2) + "\n"
    # read again: the host is known now, and a second append adds nothing
    assert kh.check(kh.parse(text), "[10.0.0.5]:2222", K2).status == kh.OK
    assert kh.append(str(path), "[10.0.0.5]:2222", ED, K2).status == kh.OK
    assert path.read_text() == text


def test_append_refuses_what_another_run_decided_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("web9", K1) + "\n" + line("*", K3, "@revoked") + "\n")
    before = path.read_text()
    assert kh.append(str(path), "web9", ED, K2).status == kh.CHANGED
    assert kh.append(str(path), "web8", ED, K3).status == kh.REVOKED_KEY
    assert path.read_text() == before


def test_append_creates_the_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / ".ssh" / "known_hosts"
    assert kh.append(str(path), "web1", ED, K1).status == kh.NEW
    assert path.read_text() == line("web1", K1) + "\n"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_concurrent_appends_never_lose_or_duplicate_a_line(tmp_path: Path) -> None:
    """32 threads, each host asked for by two of them, plus two processes: the file ends with
    the original bytes and exactly one line per host."""
    path = tmp_path / "known_hosts"
    path.write_text(ORIGINAL + "\n")
    hosts = [f"[10.0.{i}.2]:22{i:02d}" for i in range(16)]
    start = threading.Barrier(32)

    def accept(name: str) -> None:
        start.wait()
        kh.append(str(path), name, ED, blob(ED, 100 + hosts.index(name)))

    threads = [threading.Thread(target=accept, args=(name,)) for name in hosts * 2]
    script = (
        "import sys; from reconciler.executors import known_hosts as kh; from tests.test_known_hosts import blob;"
        "[kh.append(sys.argv[1], f'proc{i}', 'ssh-ed25519', blob('ssh-ed25519', 200 + i)) for i in range(20)]"
    )
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], env=env, cwd=repo) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(60) == 0 for p in procs)
    text = path.read_text()
    assert text.startswith(ORIGINAL + "\n")
    added = text[len(ORIGINAL) + 1 :].splitlines()
    assert sorted(added) == sorted(
        [line(h, blob(ED, 100 + i)) for i, h in enumerate(hosts)]
        + [line(f"proc{i}", blob(ED, 200 + i)) for i in range(20)]
    )
