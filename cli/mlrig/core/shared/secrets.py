"""Secrets: generated into 0600 files, referenced from StackOutputs, resolved on demand."""

from __future__ import annotations

import json
import os
import secrets as _secrets
from pathlib import Path

from mlrig.contract import SecretRef
from mlrig.errors import CredentialsError

# mlrig owns both stores that check a local stack's passwords, so a lost one is replaced
RESET = "run `mlrig stack up` for its stack: it sets a new secret in the service that checks it"


def ensure_secret_file(path: Path, nbytes: int = 24) -> str:
    """Return the secret in path, generating it (URL-safe, >= 32 chars) on first use."""
    if path.exists():
        return read_secret_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = _secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def read_secret_file(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except PermissionError as exc:
        raise CredentialsError(
            f"secret file {path} is not readable",
            hint="fix its permissions (it should be 0600, owned by you)",
        ) from exc
    except IsADirectoryError as exc:
        raise CredentialsError(
            f"secret file {path} is not readable (it is a directory)",
            hint=f"move it away, then {RESET}",
        ) from exc
    except FileNotFoundError as exc:
        raise CredentialsError(
            f"secret file {path} is missing",
            hint=RESET,
        ) from exc
    if not value:
        raise CredentialsError(
            f"secret file {path} is empty",
            hint=RESET,
        )
    return value


def resolve(ref: SecretRef) -> str:
    """Fetch the secret a SecretRef points to. The value never goes into a message."""
    if ref.source == "file":
        value = read_secret_file(Path(ref.ref))
    elif ref.source == "env":
        value = os.environ.get(ref.ref, "")
        if not value:
            raise CredentialsError(
                f"environment variable {ref.ref} is not set",
                hint=f"export {ref.ref}=... before running mlrig",
            )
    else:
        from mlrig.adapters import aws

        value = aws.get_secret_string(ref.ref)
    if ref.key:
        try:
            value = str(json.loads(value)[ref.key])
        except (ValueError, KeyError, TypeError) as exc:
            raise CredentialsError(f"secret {ref.ref} has no key {ref.key!r}") from exc
    return value
