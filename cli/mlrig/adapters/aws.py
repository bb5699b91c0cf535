"""boto3 behind one door: lazy import, cached sessions, AWS errors turned into mlrig's.

Endpoint overrides (`MLRIG_AWS_ENDPOINT_URL` or the standard `AWS_ENDPOINT_URL*`) are
honoured so private endpoints, proxies and moto's server work with no code changes.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from mlrig.errors import CredentialsError, DependencyMissing, RemoteError


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise DependencyMissing("boto3 is not installed", hint="pip install boto3") from exc
    return boto3


@cache
def session(profile: str | None = None, region: str | None = None) -> Any:
    return _boto3().session.Session(profile_name=profile, region_name=region)


def client(
    service: str,
    *,
    profile: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> Any:
    endpoint = endpoint_url or os.environ.get("MLRIG_AWS_ENDPOINT_URL") or None
    sess = session(profile, region)
    if not (region or sess.region_name):
        raise CredentialsError(
            "no AWS region is configured",
            hint="pass --region or set AWS_REGION / AWS_DEFAULT_REGION",
        )
    return sess.client(service, endpoint_url=endpoint)


def translate(exc: Exception, action: str) -> Exception:
    """Map botocore exceptions to the project's error tree with a fix in the message."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return CredentialsError(
            f"{action}: no AWS credentials found",
            hint="run `aws configure` or set AWS_PROFILE / AWS_ACCESS_KEY_ID",
        )
    if isinstance(exc, bx.NoRegionError):
        return CredentialsError(
            f"{action}: no AWS region is configured", hint="pass --region or set AWS_REGION"
        )
    if isinstance(exc, bx.ProfileNotFound):
        return CredentialsError(f"{action}: {exc}", hint="check ~/.aws/config or AWS_PROFILE")
    if isinstance(exc, bx.EndpointConnectionError):
        return RemoteError(
            f"{action}: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}",
            hint="check the network, the region and any endpoint override",
        )
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        msg = err.get("Message", "")
        if code in {
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "AuthFailure",
            "InvalidAccessKeyId",
        }:
            return CredentialsError(
                f"{action}: AWS rejected the credentials ({code})",
                hint="refresh them (e.g. `aws sso login`) and retry",
            )
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            return CredentialsError(
                f"{action}: access denied ({code}: {msg})",
                hint="ask for the permission named above",
            )
        return RemoteError(f"{action}: {code}: {msg}")
    if isinstance(exc, bx.BotoCoreError):
        return RemoteError(f"{action}: {exc}")
    return exc


def get_secret_string(secret_id: str, *, region: str | None = None) -> str:
    try:
        resp = client("secretsmanager", region=region).get_secret_value(SecretId=secret_id)
    except Exception as exc:
        raise translate(exc, f"reading secret {secret_id}") from exc
    return str(resp["SecretString"])


def caller_identity(
    *, region: str | None = None, endpoint_url: str | None = None
) -> dict[str, str]:
    try:
        resp = client("sts", region=region, endpoint_url=endpoint_url).get_caller_identity()
    except Exception as exc:
        raise translate(exc, "checking AWS credentials") from exc
    return {"account": resp["Account"], "arn": resp["Arn"]}
