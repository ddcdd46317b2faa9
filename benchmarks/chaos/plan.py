"""What each iteration does, chosen at random from a seed: the desired state and the
disturbances. Pure: the same seed and strategy give the same choices, whatever the host did."""

from __future__ import annotations

import random
from dataclasses import dataclass

GOOD_RELEASES = ("1.0.0", "2.0.0", "3.0.0")
# The example app's releases that fail in known ways (tests/deploying.py build_artifacts).
FAILING_RELEASES = {
    "2.1.0-bad": "a release whose health path answers 500 (its API answers 200)",
    "2.2.0-crash": "a release that exits 1 s after it starts listening",
}
CONFIGS = {
    "good": "the app's configuration",
    "db-dir": "DATABASE_PATH in a folder that cannot be made (/proc): the backend exits at start",
    "bad-flag": "backend.command with an option the backend refuses: it exits at start",
}
DATABASE = "/var/lib/choiros/choiros.db"
BROKEN_DATABASE = "/proc/choiros-typo/choiros.db"

DISTURBANCES = {
    "kill-controller": "SIGKILL of `reconcile --once` at a random moment",
    "kill-agent": "SIGKILL of the agent on the host after or during a random action (fault points)",
    "caddy-restart": "`systemctl restart caddy`",
    "caddy-reload": "`caddy reload` of the files on disk, by hand",
    "other-app": "a deploy of the second app on the same host, which reloads Caddy",
    "reboot": "`systemctl reboot` of the host",
    "edit-fragment": "the app's Caddy fragment pointed at another port by hand",
    "edit-unit": "a unit file's Description= edited by hand",
    "edit-env": "the environment file edited by hand",
}
# How often each kind is picked (relative weights).
WEIGHTS = {
    "kill-controller": 3,
    "kill-agent": 3,
    "caddy-restart": 2,
    "caddy-reload": 2,
    "other-app": 2,
    "reboot": 1,
    "edit-fragment": 2,
    "edit-unit": 1,
    "edit-env": 1,
}
# Disturbances happen at most this long after the run started (most runs take 2-12 s).
LATEST = 9.0


@dataclass(frozen=True)
class Desired:
    version: str
    config: str  # a key of CONFIGS
    salt: int  # part of the env: a new salt is a new configuration (a failing one is tried anew)

    @property
    def failing(self) -> bool:
        return self.version in FAILING_RELEASES or self.config != "good"

    @property
    def label(self) -> str:
        return f"{self.version} {self.config} #{self.salt}"

    def sections(self, strategy: str, health: str) -> dict[str, str]:
        """The desired-state.yaml sections (tests/deploying.py Project.write)."""
        database = BROKEN_DATABASE if self.config == "db-dir" else DATABASE
        command = "bin/backend --port {port}"
        if self.config == "bad-flag":
            command += " --chaos-unknown-option"
        return {
            "strategy": strategy,
            "health": health,
            "backend": f"command: {command}\nport: 8080",
            "env": (
                f"DATABASE_PATH: {database}\nCORS_ALLOW_ORIGINS: https://choir.example\n"
                f'CHAOS_SALT: "{self.salt}"'
            ),
            "data": f"sqlite: {database}\nrestore_on_rollback: false",
        }


@dataclass(frozen=True)
class Disturbance:
    kind: str  # a key of DISTURBANCES
    at: float | None  # seconds after the run started; None: before it (drift found by the run)
    arg: str = ""  # kill-agent: "after:N" or "during:N:S"; the edits: which variant

    @property
    def label(self) -> str:
        when = "before the run" if self.at is None else f"at +{self.at:.1f} s"
        return f"{self.kind}{' ' + self.arg if self.arg else ''} {when}"


@dataclass(frozen=True)
class Iteration:
    index: int
    desired: Desired
    disturbances: tuple[Disturbance, ...]


def rng_for(seed: int, strategy: str) -> random.Random:
    """One stream of choices per strategy: a strategy's iterations are the same whichever
    others run, and in whatever order."""
    return random.Random(f"{seed}/{strategy}")


def choose_desired(rng: random.Random, previous: Desired) -> Desired:
    roll = rng.random()
    if roll < 0.64:
        version, config = rng.choice(GOOD_RELEASES), "good"
    elif roll < 0.84:
        version, config = rng.choice(sorted(FAILING_RELEASES)), "good"
    else:
        version, config = rng.choice(GOOD_RELEASES), rng.choice(["db-dir", "bad-flag"])
    # Mostly the same configuration as before; sometimes a new one, so a configuration that
    # failed (and is quarantined) is not the only one of its kind ever tried.
    salt = previous.salt + 1 if rng.random() < 0.35 else previous.salt
    return Desired(version, config, salt)


def choose_disturbance(rng: random.Random, kind: str) -> Disturbance:
    if kind == "kill-controller":
        return Disturbance(kind, round(rng.uniform(0.3, LATEST), 2))
    if kind == "kill-agent":
        action = rng.randint(1, 14)
        if rng.random() < 0.5:
            return Disturbance(kind, None, f"after:{action}")
        return Disturbance(kind, None, f"during:{action}:{rng.uniform(0.05, 2.5):.2f}")
    at = None if rng.random() < 0.3 else round(rng.uniform(0.0, LATEST), 2)
    if kind == "edit-fragment":
        return Disturbance(kind, at, rng.choice(["reload", "disk-only"]))
    if kind == "edit-unit":
        return Disturbance(kind, at, rng.choice(["daemon-reload", "disk-only"]))
    return Disturbance(kind, at)


def choose(rng: random.Random, index: int, previous: Desired) -> Iteration:
    desired = choose_desired(rng, previous)
    count = rng.choices([0, 1, 2], weights=[25, 45, 30])[0]
    kinds = sorted(WEIGHTS)
    picked: list[str] = []
    while len(picked) < count:
        kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if kind not in picked:
            picked.append(kind)
    return Iteration(index, desired, tuple(choose_disturbance(rng, k) for k in picked))


def iterations(seed: int, strategy: str, count: int, start: Desired) -> list[Iteration]:
    rng = rng_for(seed, strategy)
    out: list[Iteration] = []
    previous = start
    for index in range(1, count + 1):
        it = choose(rng, index, previous)
        out.append(it)
        previous = it.desired
    return out
