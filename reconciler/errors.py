"""The exception tree. Every error the reconciler raises on purpose is a ReconcilerError.

ReconcilerError                 exit 1 unless stated
├── InvalidDesiredState         the file is wrong; nothing was touched
├── TargetError                 the host could not be reached or trusted
│   ├── HostKeyError            unknown or changed host key
│   └── AuthError               the host refused our credentials
├── HostError                   the host is in a state we refuse to act on
├── LockHeld                    another run holds the host's lock
├── PlanStale                   the host changed after the plan was made
├── ApplyError                  an action failed; earlier actions stayed applied
│   └── HealthCheckFailed       a started release did not become healthy
├── RolledBack                  exit 3: a release failed and the last good one serves again
├── Quarantined                 exit 3: the desired release failed before and is not retried
├── Paused                      exit 4: someone paused the reconciler on the host
├── Held                        exit 4: `reconcile rollback` holds the host at an earlier state
├── RollbackRefused             `reconcile rollback` has nothing (or not that) to go back to
└── NotConverged                apply finished but the host still differs
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1
    # The engine's Outcome when the host was observed before the error: what was planned and
    # the host as last seen, so a report can still say what the host serves.
    outcome: object = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


ERROR = "error"
WARNING = "warning"  # a setting that does nothing, or a check --offline could not make


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with the desired-state file, located as precisely as we can: what is
    wrong (`message`) and, when there is one, what to do about it (`hint`). A problem about
    a field that is missing or defaulted is located at the mapping that should hold it."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    field: str  # dotted path such as "release.version", "" for the whole document
    message: str
    hint: str = ""
    severity: str = ERROR  # ERROR refuses the file; WARNING is reported and the file is used

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}:{field} {self.message}{hint}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "hint": self.hint or None,
            "severity": self.severity,
        }


class InvalidDesiredState(ReconcilerError):
    """The desired state cannot be used. Raised before any connection is opened."""

    def __init__(self, problems: list[InputProblem]) -> None:
        self.problems = problems
        self.warnings: list[InputProblem] = []  # found along with the problems; not counted
        count = len(problems)
        lines = [str(p) for p in problems]
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"{count} {noun} in the desired state; nothing was changed:\n  " + "\n  ".join(lines)
        )


class TargetError(ReconcilerError):
    """The target host could not be reached or used."""


class HostKeyError(TargetError):
    """The host's key is unknown or differs from known_hosts."""


class AuthError(TargetError):
    """The host refused authentication."""


class HostError(ReconcilerError):
    """The host is in a state the reconciler refuses to change on its own."""


class LockHeld(ReconcilerError):
    """Another run holds the host lock."""

    def __init__(self, holder: dict[str, object] | None, waited: float) -> None:
        self.holder = holder or {}
        who = ", ".join(f"{k}={v}" for k, v in self.holder.items()) or "unknown holder"
        super().__init__(
            f"another reconcile run holds the lock on this host ({who}); waited {waited:.0f}s",
            hint="wait for it to finish, or pass --lock-timeout SECONDS to wait longer",
        )


class PlanStale(ReconcilerError):
    """The host no longer looks like it did when the plan was made."""


class ApplyError(ReconcilerError):
    """An action failed. Actions before it stayed applied; later ones did not run."""

    def __init__(
        self,
        message: str,
        *,
        action_index: int | None = None,
        detail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message + (f"\n{detail}" if detail else ""), hint=hint)
        self.action_index = action_index
        self.detail = detail
        self.after: object = None  # the host as observed right after the failure, when known


class HealthCheckFailed(ApplyError):
    """A started release did not pass its health check in time."""


class RolledBack(ReconcilerError):
    """The desired state failed; the host went back to its last good state, which passed its
    health gate and serves again (the agent does this on the host, under the apply's lock)."""

    exit_code = 3
    rolled_back_to: str | None = None  # the release of the good state that serves again
    detail: str = ""
    after: object = None  # the host as observed right after the rollback


class Quarantined(ReconcilerError):
    """The desired release failed before and is not retried without being asked to."""

    exit_code = 3


class Paused(ReconcilerError):
    """The host is paused (`reconcile pause`): nothing was changed. `--once --force` overrides."""

    exit_code = 4


class Held(ReconcilerError):
    """`reconcile rollback` holds the host at a recorded good state: runs keep it there (drift
    of that state corrected) while the desired file names what it named then."""

    exit_code = 4


class RollbackRefused(ReconcilerError):
    """`reconcile rollback` found nothing to go back to, or not the release named: nothing
    was changed."""


class NotConverged(ReconcilerError):
    """After applying, planning again still finds differences."""
