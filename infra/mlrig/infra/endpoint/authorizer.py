"""The endpoints' key check: an API Gateway HTTP API Lambda REQUEST authorizer (payload
format 2.0, simple responses), shipped alone as the authorizer function's code.

It accepts the local deploy's key format: `Authorization: Basic base64(KEY_ID:SECRET)`,
checked against the endpoint's key records in an SSM SecureString parameter (JSON
`{"keys": [{"id": ..., "hash": "{SSHA}..."}]}`, hashes only, written by the CLI). The hash
is nginx's `{SSHA}` (salted SHA-1) so one key record serves both stacks; over a 256-bit
random secret nothing is guessable. Compared in constant time.

Only the standard library and boto3 (in Lambda's Python runtime): no mlrig import.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from typing import Any

PARAMETER_ENV = "MLRIG_KEYS_PARAMETER"
CACHE_SECONDS = 30.0  # a revoked key is refused at most this long (+ API GW's TTL) later
_DUMMY = "{SSHA}" + base64.b64encode(b"\0" * 28).decode()
_cache: dict[str, tuple[float, dict[str, str]]] = {}


def ssha_matches(secret: str, stored: str) -> bool:
    """Does `secret` hash to the stored `{SSHA}` record (constant time)?"""
    if not stored.startswith("{SSHA}"):
        return False
    try:
        raw = base64.b64decode(stored[6:], validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) <= 20:
        return False
    digest, salt = raw[:20], raw[20:]
    # SHA-1 is the {SSHA} scheme the local stack's nginx checks; the secret is 256 random bits.
    mine = hashlib.sha1(secret.encode() + salt, usedforsecurity=True).digest()  # noqa: S324
    return hmac.compare_digest(mine, digest)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(KEY_ID, SECRET) from `Basic base64(KEY_ID:SECRET)`, or None."""
    if not header or len(header) > 1024:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    key_id, sep, secret = decoded.partition(":")
    return (key_id, secret) if sep and key_id and secret else None


def load_keys(parameter: str, client: Any = None) -> dict[str, str]:
    """The endpoint's key hashes by ID, cached for CACHE_SECONDS per warm container."""
    now = time.monotonic()
    cached = _cache.get(parameter)
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    if client is None:
        import boto3

        client = boto3.client("ssm")
    value = client.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    doc = json.loads(value)
    keys = {
        str(k["id"]): str(k["hash"])
        for k in doc.get("keys", [])
        if isinstance(k, dict) and "id" in k and "hash" in k
    }
    _cache[parameter] = (now, keys)
    return keys


def _authorization(event: dict[str, Any]) -> str | None:
    # HTTP APIs lower-case header names; identitySource holds the configured header's value.
    headers = event.get("headers") or {}
    found = {str(k).lower(): v for k, v in headers.items()}.get("authorization")
    if found is None:
        sources = event.get("identitySource") or []
        found = sources[0] if sources else None
    return str(found) if found is not None else None


def decide(event: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """The simple response for one request event."""
    if event.get("version") != "2.0" or event.get("type") != "REQUEST":
        return {"isAuthorized": False}
    creds = parse_basic(_authorization(event))
    if creds is None:
        return {"isAuthorized": False}
    key_id, secret = creds
    stored = keys.get(key_id)
    ok = ssha_matches(secret, stored or _DUMMY)  # same work for an unknown ID
    if not ok or stored is None:
        return {"isAuthorized": False}
    return {"isAuthorized": True, "context": {"keyId": key_id}}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda's entry point. A key store that cannot be read refuses (never lets through)."""
    try:
        keys = load_keys(os.environ[PARAMETER_ENV])
    except Exception as exc:  # noqa: BLE001 - any failure to read keys is a refusal
        print(
            json.dumps(
                {"level": "error", "msg": "key store unreadable", "error": type(exc).__name__}
            )
        )
        return {"isAuthorized": False}
    return decide(event, keys)
