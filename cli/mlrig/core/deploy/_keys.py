"""Endpoint keys: a 256-bit random secret per key, stored only as a salted SHA-1 in nginx's
`{SSHA}` htpasswd scheme. A fast hash is sound for a random 256-bit secret (nothing to
guess), and nginx checks it on every request in microseconds; a password hash (bcrypt,
~80 ms) would be paid by every request."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime

from mlrig.core.deploy.state import Key


def ssha(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(8)
    # SHA-1 is what nginx's {SSHA} scheme is; over a 256-bit random secret it is sound
    digest = hashlib.sha1(secret.encode() + salt, usedforsecurity=True).digest()  # noqa: S324
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def verify(secret: str, stored: str) -> bool:
    raw = base64.b64decode(stored.removeprefix("{SSHA}"))
    return secrets.compare_digest(ssha(secret, raw[20:]), stored)


def new_key() -> tuple[Key, str]:
    """A key record (hash only) and the secret to show once: `ID:SECRET`."""
    key_id = "k" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return Key(id=key_id, hash=ssha(secret), created_at=datetime.now(UTC)), f"{key_id}:{secret}"


def htpasswd(keys: list[Key]) -> str:
    return "".join(f"{k.id}:{k.hash}\n" for k in keys)
