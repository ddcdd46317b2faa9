"""Secrets committed to git, encrypted with age: `{from_age: secrets/prod.env.age}` in `env`.

The file is decrypted in memory on the machine running reconcile, with the identity (an
`age-keygen` secret key) found first in: $RECONCILER_AGE_IDENTITY (the key itself, e.g. a CI
secret), the file named by $RECONCILER_AGE_IDENTITY_FILE, or the file
$XDG_CONFIG_HOME/reconciler/age.key (~/.config/reconciler/age.key when XDG_CONFIG_HOME is
unset), where the README's `age-keygen -o` puts it. Nothing decrypted is ever written to disk
here: the values travel like `from_file` values, secret, to the host's EnvironmentFile only.
`key: NAME` picks one variable out of a decrypted dotenv file (NAME=value lines); without it
the whole decrypted text is the value.

The age library (pyrage: Python bindings to rage, a Rust implementation of age) is imported
only when a desired state names an encrypted file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.spec.said import Said

IDENTITY_VAR = "RECONCILER_AGE_IDENTITY"
IDENTITY_FILE_VAR = "RECONCILER_AGE_IDENTITY_FILE"
MAX_FILE = 1 << 20  # an encrypted env file, not a data set
_HEADERS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")
_NOT_AGE = "encrypt it with `age -r RECIPIENT` (`age-keygen -y KEYFILE` prints the recipient)"


def default_identity_file(environ: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME/reconciler/age.key, or ~/.config/reconciler/age.key: where the README's
    `age-keygen -o` line puts the key."""
    config = environ.get("XDG_CONFIG_HOME", "")
    if not config or not config.startswith("/"):  # the XDG spec ignores a relative value
        home = environ.get("HOME") or str(Path.home())
        config = f"{home}/.config"
    return Path(config) / "reconciler" / "age.key"


def check_without_key(path: Path) -> Said | None:
    """What --offline checks of an encrypted file: it is there and it is age's format (its
    header is not secret); it is not decrypted."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        return Said(
            f"cannot read {path}: {exc.strerror}", "commit the encrypted file beside the desired state"
        )
    if not head.startswith(_HEADERS):
        return Said(f"{path} is not an age-encrypted file", _NOT_AGE)
    return None


class AgeFiles:
    """Decrypts each file once per load; every failure is a sentence for an InputProblem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.plaintexts: dict[Path, tuple[str | None, Said | None]] = {}
        # (identities, where they came from) or ([], what is wrong with finding them)
        self.identities: tuple[list[object], str | Said] | None = None

    def value(self, path: Path, key: str | None) -> tuple[str | None, Said | None]:
        """(value, None) or (None, why)."""
        text, why = self.decrypt(path)
        if text is None:
            return None, why
        if key is None:
            return text.removesuffix("\n"), None
        values = parse_dotenv(text)
        if key not in values:
            names = ", ".join(sorted(values)) or "none"
            return None, Said(
                f"{path} has no variable {key} once decrypted (it has: {names})",
                "add it to the encrypted file, or name one it has in `key:`",
            )
        return values[key], None

    def decrypt(self, path: Path) -> tuple[str | None, Said | None]:
        if path not in self.plaintexts:
            self.plaintexts[path] = self._decrypt(path)
        return self.plaintexts[path]

    def _decrypt(self, path: Path) -> tuple[str | None, Said | None]:
        try:
            data = path.read_bytes()[: MAX_FILE + 1]
        except OSError as exc:
            return None, Said(
                f"cannot read {path}: {exc.strerror}", "commit the encrypted file beside the desired state"
            )
        if len(data) > MAX_FILE:
            return None, Said(
                f"{path} is larger than {MAX_FILE} bytes",
                "an encrypted env file (NAME=value lines) is expected",
            )
        if not data.startswith(_HEADERS):
            return None, Said(f"{path} is not an age-encrypted file", _NOT_AGE)
        identities, where = self._identities()
        if isinstance(where, Said):
            return None, Said(f"{path} is age-encrypted, but {where.message}", where.hint)
        import pyrage

        try:
            plain = pyrage.decrypt(data, identities)
        except pyrage.DecryptError as exc:
            if "no matching keys" in str(exc).lower():
                return None, Said(
                    f"{path} was not encrypted for the identity in {where}: wrong key",
                    "encrypt it again to that key's recipient (`age-keygen -y KEYFILE` prints it)",
                )
            return None, Said(
                f"{path} cannot be decrypted with the identity in {where}: damaged or tampered with ({exc})",
                "encrypt the file again and commit it",
            )
        try:
            return plain.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, Said(f"{path} decrypts to something that is not UTF-8 text", "encrypt a text file")

    def _identities(self) -> tuple[list[object], str | Said]:
        if self.identities is None:
            self.identities = self._load_identities()
        return self.identities

    def _load_identities(self) -> tuple[list[object], str | Said]:
        """The first of $RECONCILER_AGE_IDENTITY, $RECONCILER_AGE_IDENTITY_FILE and the default
        key file that is there; one that is set but unusable is an error, not skipped."""
        default = default_identity_file(self.environ)
        if self.environ.get(IDENTITY_VAR):
            text, where = self.environ[IDENTITY_VAR], f"${IDENTITY_VAR}"
        elif self.environ.get(IDENTITY_FILE_VAR) or default.exists():
            name = self.environ.get(IDENTITY_FILE_VAR) or str(default)
            where = f"${IDENTITY_FILE_VAR} ({name})" if self.environ.get(IDENTITY_FILE_VAR) else name
            try:
                text = Path(name).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                return [], Said(
                    f"the identity file {where} cannot be read: {getattr(exc, 'strerror', None) or exc}",
                    "make it a readable text file holding the age secret key",
                )
        else:
            return [], Said(
                "no identity to decrypt it with",
                f"looked in ${IDENTITY_VAR} (the secret key), ${IDENTITY_FILE_VAR} (a file holding it) "
                f"and {default}, in that order: put the key in one of them "
                f"(age-keygen -o {default})",
            )
        from pyrage import IdentityError, x25519

        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        identities: list[object] = []
        for number, key in enumerate(keys, 1):
            try:
                identities.append(x25519.Identity.from_str(key))
            except IdentityError:
                # Never quote the line: it may be a secret key with a typo.
                return [], Said(
                    f"line {number} of the identity in {where} is not an age secret key",
                    "an identity is what age-keygen writes: AGE-SECRET-KEY-1... lines and # comments",
                )
        if not identities:
            return [], Said(
                f"the identity in {where} holds no age secret key",
                "an identity is what age-keygen writes: AGE-SECRET-KEY-1... lines and # comments",
            )
        return identities, where


def parse_dotenv(text: str) -> dict[str, str]:
    """NAME=value lines, as dotenv files and `sops` write them: `#` comments, optional
    `export `, values optionally in single or double quotes (taken literally)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out
