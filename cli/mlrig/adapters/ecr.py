"""Amazon ECR: registry credentials from `get_authorization_token`, cached until near expiry.

The token lives in a 0600 file under MLRIG_HOME (never in ~/.docker/config.json) and is
refreshed when less than REFRESH_MARGIN of its 12 h life is left. The data-plane endpoint
can be overridden (private endpoints, proxies, tests against a local registry).
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlrig import paths
from mlrig.adapters import aws
from mlrig.contract import atomic_write
from mlrig.errors import RemoteError, UsageError

REFRESH_MARGIN = timedelta(minutes=15)
ENDPOINT_ENV = "MLRIG_ECR_REGISTRY_ENDPOINT"
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)"
    r"\.amazonaws\.com(\.cn)?$"
)


@dataclass(frozen=True)
class EcrAuth:
    username: str
    password: str
    proxy_endpoint: str
    expires_at: datetime

    def fresh(self, now: datetime | None = None) -> bool:
        return self.expires_at - (now or datetime.now(UTC)) > REFRESH_MARGIN


def parse_host(host: str) -> tuple[str, str]:
    """(account, region) of an ECR registry host name."""
    match = _ECR_HOST.match(host)
    if not match:
        raise UsageError(
            f"{host!r} is not an ECR registry host",
            hint="expected ACCOUNT.dkr.ecr.REGION.amazonaws.com",
        )
    return match["account"], match["region"]


def decode_token(token: str) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(token).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteError("ECR returned an authorization token that is not base64") from exc
    if not user or not password:
        raise RemoteError("ECR returned an authorization token without user and password")
    return user, password


def cache_path(host: str) -> Path:
    return paths.home() / "cache" / "ecr" / f"{host}.json"


def _read_cache(host: str) -> EcrAuth | None:
    path = cache_path(host)
    try:
        raw = json.loads(path.read_text())
        return EcrAuth(
            raw["username"],
            raw["password"],
            raw["proxy_endpoint"],
            datetime.fromisoformat(raw["expires_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or corrupt: fetch a new token


def _write_cache(host: str, auth: EcrAuth) -> None:
    path = cache_path(host)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write(
        path,
        json.dumps(
            {
                "username": auth.username,
                "password": auth.password,
                "proxy_endpoint": auth.proxy_endpoint,
                "expires_at": auth.expires_at.isoformat(),
            }
        ),
        mode=0o600,
    )


def forget(host: str) -> None:
    cache_path(host).unlink(missing_ok=True)


def authorization(
    host: str, *, endpoint_url: str | None = None, now: datetime | None = None
) -> EcrAuth:
    """Registry credentials for an ECR host: from the cache while fresh, else from AWS."""
    cached = _read_cache(host)
    if cached and cached.fresh(now):
        return cached
    account, region = parse_host(host)
    try:
        resp = aws.client("ecr", region=region, endpoint_url=endpoint_url).get_authorization_token(
            registryIds=[account]
        )
    except Exception as exc:
        raise aws.translate(exc, "getting an ECR authorization token") from exc
    data = (resp.get("authorizationData") or [None])[0]
    if not data:
        raise RemoteError("ECR returned no authorization data")
    user, password = decode_token(data["authorizationToken"])
    expires = data.get("expiresAt") or datetime.now(UTC) + timedelta(hours=12)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    auth = EcrAuth(user, password, str(data.get("proxyEndpoint", f"https://{host}")), expires)
    if auth.fresh(now):  # a token that looks stale (clock skew, emulators) is used, not kept
        _write_cache(host, auth)
    return auth


def data_plane(host: str, override: str | None = None) -> str:
    """The host:port images are pushed to: the ECR host unless an endpoint override is set."""
    target = override or os.environ.get(ENDPOINT_ENV) or host
    return target.removeprefix("https://").removeprefix("http://").rstrip("/")
