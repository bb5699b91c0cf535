"""boto3 behind one door: lazy import, cached sessions, AWS errors turned into mlrig's.

Endpoint overrides (`MLRIG_AWS_ENDPOINT_URL` or the standard `AWS_ENDPOINT_URL*`) are
honoured so private endpoints, proxies and moto's server work with no code changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


def find_secret_string(secret_id: str, *, region: str | None = None) -> str | None:
    """The secret's value, or None when no such secret exists."""
    sm = client("secretsmanager", region=region)
    try:
        return str(sm.get_secret_value(SecretId=secret_id)["SecretString"])
    except sm.exceptions.ResourceNotFoundException:
        return None
    except Exception as exc:
        raise translate(exc, f"reading secret {secret_id}") from exc


def put_secret_string(
    name: str, value: str, *, description: str = "", region: str | None = None
) -> str:
    """Store a new value in the secret `name`, creating it if needed; returns its ARN."""
    sm = client("secretsmanager", region=region)
    try:
        try:
            return str(sm.put_secret_value(SecretId=name, SecretString=value)["ARN"])
        except sm.exceptions.ResourceNotFoundException:
            made = sm.create_secret(Name=name, SecretString=value, Description=description)
            return str(made["ARN"])
    except Exception as exc:
        raise translate(exc, f"writing secret {name}") from exc


def caller_identity(
    *, region: str | None = None, endpoint_url: str | None = None
) -> dict[str, str]:
    try:
        resp = client("sts", region=region, endpoint_url=endpoint_url).get_caller_identity()
    except Exception as exc:
        raise translate(exc, "checking AWS credentials") from exc
    return {"account": resp["Account"], "arn": resp["Arn"]}


# --- one S3 API at a given endpoint (moto, MinIO, or S3 itself), with explicit credentials ---


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    region: str
    credentials: Mapping[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]


def _s3(endpoint: S3Endpoint) -> Any:
    creds = endpoint.credentials
    sess = _boto3().session.Session(
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        region_name=endpoint.region,
    )
    return sess.client("s3", endpoint_url=endpoint.url)


def create_bucket(endpoint: S3Endpoint, bucket: str) -> None:
    try:
        _s3(endpoint).create_bucket(Bucket=bucket)
    except Exception as exc:
        raise translate(exc, f"creating bucket {bucket}") from exc


def delete_bucket(endpoint: S3Endpoint, bucket: str) -> None:
    """Delete every object of the bucket, then the bucket."""
    s3 = _s3(endpoint)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    except Exception as exc:
        raise translate(exc, f"deleting bucket {bucket}") from exc


def list_keys(endpoint: S3Endpoint, bucket: str, prefix: str) -> list[str]:
    """Keys under prefix (the first page, up to 1000: enough to find what a test wrote)."""
    try:
        listed = _s3(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    except Exception as exc:
        raise translate(exc, f"listing s3://{bucket}/{prefix}") from exc
    return [str(o["Key"]) for o in listed.get("Contents", [])]


def s3_keys(
    bucket: str, prefix: str, *, region: str | None = None, endpoint_url: str | None = None
) -> list[str]:
    """Every key under prefix (all pages), with the ambient credentials."""
    s3 = client("s3", region=region, endpoint_url=endpoint_url)
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [str(o["Key"]) for o in page.get("Contents", [])]
    except Exception as exc:
        raise translate(exc, f"listing s3://{bucket}/{prefix}") from exc
    return keys


def s3_download(bucket: str, key: str, dest: str, *, region: str | None = None) -> None:
    try:
        client("s3", region=region).download_file(bucket, key, dest)
    except Exception as exc:
        raise translate(exc, f"reading s3://{bucket}/{key}") from exc


def _s3_client(region: str | None, endpoint_url: str | None) -> Any:
    return client("s3", region=region, endpoint_url=endpoint_url)


def _no_such_key(exc: Exception) -> bool:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) in (
        "404",
        "NoSuchKey",
        "NotFound",
    )


def s3_put_file(
    bucket: str, key: str, src: str, *, region: str | None, endpoint_url: str | None = None
) -> None:
    try:
        _s3_client(region, endpoint_url).upload_file(src, bucket, key)
    except Exception as exc:
        raise translate(exc, f"writing s3://{bucket}/{key}") from exc


def s3_put_bytes(
    bucket: str, key: str, body: bytes, *, region: str | None, endpoint_url: str | None = None
) -> None:
    try:
        _s3_client(region, endpoint_url).put_object(Bucket=bucket, Key=key, Body=body)
    except Exception as exc:
        raise translate(exc, f"writing s3://{bucket}/{key}") from exc


def s3_get_file(
    bucket: str, key: str, dest: str, *, region: str | None, endpoint_url: str | None = None
) -> bool:
    """The object downloaded to dest; False when there is none."""
    s3 = _s3_client(region, endpoint_url)
    try:
        s3.download_file(bucket, key, dest)
    except Exception as exc:
        if _no_such_key(exc):
            return False
        raise translate(exc, f"reading s3://{bucket}/{key}") from exc
    return True


def s3_get_bytes(
    bucket: str,
    key: str,
    *,
    limit: int,
    region: str | None,
    endpoint_url: str | None = None,
) -> bytes | None:
    """The object's bytes (at most `limit`: a larger one is a RemoteError), None when absent."""
    s3 = _s3_client(region, endpoint_url)
    try:
        got = s3.get_object(Bucket=bucket, Key=key)
        if int(got.get("ContentLength") or 0) > limit:
            raise RemoteError(f"s3://{bucket}/{key} is larger than {limit} bytes")
        return bytes(got["Body"].read(limit + 1))[: limit + 1]
    except RemoteError:
        raise
    except Exception as exc:
        if _no_such_key(exc):
            return None
        raise translate(exc, f"reading s3://{bucket}/{key}") from exc


def s3_delete_prefix(
    bucket: str, prefix: str, *, region: str | None, endpoint_url: str | None = None
) -> None:
    """Every object under prefix (which ends in '/') deleted."""
    s3 = _s3_client(region, endpoint_url)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    except Exception as exc:
        raise translate(exc, f"deleting s3://{bucket}/{prefix}") from exc


# -- endpoints: key hashes in SSM, images by digest in ECR, alarm states ------------------------
def find_parameter(name: str, *, region: str | None = None) -> str | None:
    """A SecureString parameter's decrypted value, or None when it does not exist."""
    ssm = client("ssm", region=region)
    try:
        return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None
    except Exception as exc:
        raise translate(exc, f"reading parameter {name}") from exc


def put_secure_parameter(
    name: str, value: str, *, description: str = "", region: str | None = None
) -> None:
    """Write `value` as a standard-tier SecureString (AWS-managed aws/ssm key), overwriting."""
    try:
        client("ssm", region=region).put_parameter(
            Name=name,
            Value=value,
            Type="SecureString",
            Tier="Standard",
            Overwrite=True,
            Description=description,
        )
    except Exception as exc:
        raise translate(exc, f"writing parameter {name}") from exc


def delete_parameter(name: str, *, region: str | None = None) -> None:
    ssm = client("ssm", region=region)
    try:
        ssm.delete_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        return
    except Exception as exc:
        raise translate(exc, f"deleting parameter {name}") from exc


def _ecr_digest(
    repository: str, image: dict[str, str], what: str, region: str | None, endpoint: str | None
) -> str | None:
    ecr = client("ecr", region=region, endpoint_url=endpoint)
    try:
        found = ecr.describe_images(repositoryName=repository, imageIds=[image])
    except (ecr.exceptions.ImageNotFoundException, ecr.exceptions.RepositoryNotFoundException):
        return None
    except Exception as exc:
        raise translate(exc, f"looking up {what}") from exc
    details = found.get("imageDetails", [])
    return str(details[0]["imageDigest"]) if details else None


def ecr_image_digest(repository: str, digest: str, *, region: str | None = None) -> str | None:
    """The digest ECR reports for `repository@digest`, or None when it holds no such image."""
    return _ecr_digest(repository, {"imageDigest": digest}, f"{repository}@{digest}", region, None)


def ecr_tag_digest(
    repository: str, tag: str, *, region: str | None, endpoint_url: str | None = None
) -> str | None:
    """The digest ECR holds under `repository:tag`, or None when it holds no such tag."""
    return _ecr_digest(repository, {"imageTag": tag}, f"{repository}:{tag}", region, endpoint_url)


def alarm_states(names: list[str], *, region: str | None = None) -> dict[str, str]:
    """CloudWatch alarm name -> state (OK, ALARM, INSUFFICIENT_DATA) for those that exist."""
    try:
        found = client("cloudwatch", region=region).describe_alarms(AlarmNames=names)
    except Exception as exc:
        raise translate(exc, "reading the endpoint's alarms") from exc
    return {a["AlarmName"]: a["StateValue"] for a in found.get("MetricAlarms", [])}


@dataclass(frozen=True)
class EcsRollout:
    """An ECS service's PRIMARY deployment: what it runs and how its rollout went."""

    task_definition: str
    rollout_state: str  # IN_PROGRESS, COMPLETED or FAILED (with the circuit breaker on)


def ecs_primary_deployment(
    cluster: str, service: str, *, region: str | None = None
) -> EcsRollout | None:
    """The service's PRIMARY deployment, or None when ECS has no such service."""
    try:
        found = client("ecs", region=region).describe_services(cluster=cluster, services=[service])
    except Exception as exc:
        raise translate(exc, f"reading ECS service {service}") from exc
    for svc in found.get("services", []):
        for deployment in svc.get("deployments", []):
            if deployment.get("status") == "PRIMARY":
                return EcsRollout(
                    str(deployment.get("taskDefinition", "")),
                    str(deployment.get("rolloutState", "")),
                )
    return None


# -- CloudWatch Logs ------------------------------------------------------------------------------
class LogGroupNotFound(RemoteError):
    """The log group does not exist (never created, or deleted)."""


def log_events(
    group: str,
    *,
    start_ms: int,
    end_ms: int,
    region: str | None = None,
    pattern: str = "",
) -> Iterator[dict[str, Any]]:
    """The raw events of `group` with start_ms <= timestamp <= end_ms (FilterLogEvents, every
    page, as AWS returns them), matching `pattern` when given. LogGroupNotFound when the group
    does not exist."""
    logs = client("logs", region=region)
    request: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "endTime": end_ms}
    if pattern:
        request["filterPattern"] = pattern
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**request):
            yield from page.get("events", [])
    except logs.exceptions.ResourceNotFoundException:
        raise LogGroupNotFound(f"log group {group} does not exist") from None
    except Exception as exc:
        raise translate(exc, f"reading log group {group}") from exc
