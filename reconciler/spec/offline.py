"""What `reconcile validate --offline` did not look at, so it can say so.

Offline, a file is checked without the secrets and keys of the machines that deploy it (a
CI job on a pull request has neither): `${NAME}` and `from_env:` variables need not be set,
`from_file:` and `from_age:` files must exist but are not read or decrypted, and an artifact
CI builds later may be missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Skipped:
    variables: set[str] = field(default_factory=set)  # environment variables not read
    files: set[str] = field(default_factory=set)  # from_file: not read
    encrypted: set[str] = field(default_factory=set)  # from_age: not decrypted
    artifacts: set[str] = field(default_factory=set)  # not there yet: not checked

    def lines(self) -> list[str]:
        out = []
        if self.variables:
            out.append(f"environment variables not read: {', '.join(sorted(self.variables))}")
        if self.files:
            out.append(f"files not read (from_file): {', '.join(sorted(self.files))}")
        if self.encrypted:
            out.append(f"encrypted files not decrypted (from_age): {', '.join(sorted(self.encrypted))}")
        if self.artifacts:
            out.append(f"artifacts not there to check: {', '.join(sorted(self.artifacts))}")
        return out
