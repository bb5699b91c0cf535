"""Who may call the trainer: a bearer token kept with the stack's secrets, or the stack's
MLflow admin credentials over HTTP Basic. Every comparison is constant-time.

The token is generated on first use into `<stack dir>/trainer/token` (0600, in a 0700
folder) and never printed by the service; `mlrig trainer token` prints it for scripts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

from mlrig import paths


def token_path(stack: str) -> Path:
    return paths.stack_dir(stack) / "trainer" / "token"


def ensure_token(stack: str) -> str:
    """The stack's trainer token, generated on first use (the stack must exist)."""
    from mlrig import contract
    from mlrig.core.shared import secrets

    contract.load(stack)  # StackNotFound, before any folder is made for a stack that is not
    return secrets.ensure_secret_file(token_path(stack), nbytes=32)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, repr=False)
class Credentials:
    """What the service accepts; repr/str never show a secret."""

    token: str
    basic_user: str | None = None
    basic_password: str | None = None

    def allows(self, authorization: str | None) -> bool:
        """True when an `Authorization` header carries the token or the basic credentials."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return bool(value) and _same(value, self.token)
        if scheme.lower() != "basic" or not self.basic_user or not self.basic_password:
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        # both compared, always, so the answer's timing does not tell which one was wrong
        ok_user = _same(user, self.basic_user)
        ok_password = _same(password, self.basic_password)
        return bool(sep) and ok_user and ok_password


def load(stack: str) -> Credentials:
    """The token (made on first start) and, when the stack has them, its MLflow admin
    credentials. An unreadable admin secret leaves only the token accepted."""
    from mlrig import contract
    from mlrig.core.shared import secrets
    from mlrig.errors import MlrigError

    token = ensure_token(stack)
    auth = contract.load(stack).mlflow.auth
    if auth is None:
        return Credentials(token)
    try:
        password = secrets.resolve(auth.password)
    except MlrigError:
        return Credentials(token)
    return Credentials(token, auth.username, password)
