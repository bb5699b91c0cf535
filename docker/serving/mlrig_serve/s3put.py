"""One S3 PutObject, signed with AWS Signature Version 4 by the standard library (no boto3 in
the image): what the capture writer uses on AWS, with the model's own role credentials. Under
Lambda they are in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION, as Lambda sets them for its execution role). In a warm
(Fargate) task they come from ECS's container credentials endpoint, as the SDKs fetch them:
`http://169.254.170.2` + AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, or
AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to a loopback or ECS/EKS link-local host
only) with the Authorization header from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or
AWS_CONTAINER_AUTHORIZATION_TOKEN; fetched again REFRESH_BEFORE their Expiration (ECS
rotates them), and while a refresh fails the fetched ones serve until they expire. Tests
point the relative URI at a stand-in by setting `ContainerCredentials.base` (no variable
lets a deployed image send its token elsewhere).

The request: `PUT https://BUCKET.s3.REGION.amazonaws.com/KEY` (virtual-hosted style), or
path style `ENDPOINT/BUCKET/KEY` when AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL names another
endpoint (the SDKs' own variables), with the payload's SHA-256 signed (x-amz-content-sha256)
so S3 checks the body too. Signing follows AWS's SigV4 documentation for S3: canonical
request, string to sign over the date/region/s3/aws4_request scope, HMAC key chain.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

ALGORITHM = "AWS4-HMAC-SHA256"
ECS_CREDENTIALS = "http://169.254.170.2"
REFRESH_BEFORE = datetime.timedelta(minutes=15)  # the SDKs' advisory refresh window
# hosts an http:// FULL_URI may name (the SDKs' list): loopback, ECS's and EKS's endpoints
_LINK_LOCAL = {"169.254.170.2", "169.254.170.23", "fd00:ec2::23"}


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None
    region: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Credentials:
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(k)]
        if missing:
            raise RuntimeError(f"no AWS credentials in the environment ({', '.join(missing)})")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN") or None,
            region,
        )


class ContainerCredentials:
    """The task role's credentials from ECS's container credentials endpoint, cached until
    REFRESH_BEFORE their expiry. `get()` raises RuntimeError with one line (never a secret)."""

    base = ECS_CREDENTIALS  # tests only: a loopback stand-in for the relative URI's host

    def __init__(
        self, env: dict[str, str], clock: Callable[[], datetime.datetime] | None = None
    ) -> None:
        self._env = env
        self._now = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._lock = threading.Lock()
        self._cached: tuple[Credentials, datetime.datetime] | None = None
        self.fetches = 0

    @staticmethod
    def configured(env: dict[str, str]) -> bool:
        return bool(
            env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        )

    def _request(self) -> urllib.request.Request:
        env = self._env
        relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        if relative:
            if not relative.startswith("/"):
                raise RuntimeError("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is not a path")
            return urllib.request.Request(self.base + relative)  # noqa: S310 - ECS's host
        url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuntimeError("AWS_CONTAINER_CREDENTIALS_FULL_URI is not an http(s) URL")
        if parts.scheme == "http" and not _allowed_http_host(parts.hostname):
            raise RuntimeError(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI over http must name a loopback or the "
                "container credentials host"
            )
        token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
        token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as fh:  # re-read: EKS rotates it
                    token = fh.read().strip()
            except OSError as exc:
                raise RuntimeError(f"container credentials token file: {exc.strerror}") from None
        if any(c in token for c in "\r\n"):
            raise RuntimeError("the container credentials token holds a line break")
        headers = {"Authorization": token} if token else {}
        return urllib.request.Request(url, headers=headers)  # noqa: S310 - checked above

    def _fetch(self) -> tuple[Credentials, datetime.datetime]:
        request = self._request()
        self.fetches += 1
        try:
            with urllib.request.urlopen(request, timeout=2.0) as resp:  # noqa: S310 - checked above
                doc = json.loads(resp.read(65536))
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"container credentials endpoint: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"container credentials endpoint: {type(exc).__name__}") from None
        fields = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in fields):
            raise RuntimeError("container credentials endpoint: not a credentials document")
        try:
            expires = datetime.datetime.fromisoformat(doc["Expiration"].replace("Z", "+00:00"))
        except ValueError:
            raise RuntimeError("container credentials endpoint: Expiration is no time") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.UTC)
        region = self._env.get("AWS_REGION") or self._env.get("AWS_DEFAULT_REGION") or "us-east-1"
        creds = Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"], region)
        return creds, expires

    def get(self) -> Credentials:
        with self._lock:
            now = self._now()
            if self._cached is not None and now < self._cached[1] - REFRESH_BEFORE:
                return self._cached[0]
            try:
                self._cached = self._fetch()
            except RuntimeError:
                if self._cached is not None and now < self._cached[1]:
                    return self._cached[0]  # still valid: try again on the next PUT
                raise
            return self._cached[0]


def _allowed_http_host(host: str) -> bool:
    if host == "localhost" or host in _LINK_LOCAL:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_container: dict[str, ContainerCredentials] = {}


def credentials(env: dict[str, str] | None = None) -> Credentials:
    """The role's credentials: ECS's endpoint when the task has one (one cache per process),
    else the environment's."""
    env = dict(os.environ if env is None else env)
    if ContainerCredentials.configured(env):
        provider = _container.get("task")
        if provider is None:
            provider = _container["task"] = ContainerCredentials(env)
        return provider.get()
    return Credentials.from_env(env)


class PutError(Exception):
    """S3 refused or could not be reached (the message names the status and S3's code)."""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _quote(path: str) -> str:
    """A URI path as S3's canonical request wants it: each byte but unreserved ones and '/'
    percent-encoded, once."""
    return urllib.parse.quote(path, safe="/-_.~")


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    payload_sha256: str,
    creds: Credentials,
    now: datetime.datetime,
) -> dict[str, str]:
    """The headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256, the
    session token when there is one, and Authorization."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    signed |= {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    if creds.token:
        signed["x-amz-security-token"] = creds.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",  # as sent: `object_url` encoded the key once (S3: once only)
            "",  # no query string
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{creds.region}/s3/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = _hmac(("AWS4" + creds.secret_key).encode("utf-8"), day)
    for part in (creds.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out = {n: signed[n] for n in names}
    out["authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def object_url(bucket: str, key: str, region: str, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ if env is None else env)
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{_quote(key)}"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{_quote(key)}"


def put_object(
    bucket: str,
    key: str,
    body: bytes,
    *,
    content_type: str = "application/jsonl",
    creds: Credentials | None = None,
    timeout: float = 10.0,
) -> None:
    """PUT the object; PutError when S3 does not answer 200."""
    creds = creds or credentials()
    url = object_url(bucket, key, creds.region)
    digest = hashlib.sha256(body).hexdigest()
    headers = sign(
        "PUT",
        url,
        {"content-type": content_type},
        digest,
        creds,
        datetime.datetime.now(datetime.UTC),
    )
    request = urllib.request.Request(url, data=body, method="PUT", headers=headers)  # noqa: S310 - https or the configured endpoint
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(2048).decode("utf-8", "replace")
        code = detail.split("<Code>", 1)[-1].split("</Code>", 1)[0] if "<Code>" in detail else ""
        raise PutError(f"S3 PUT {bucket}/{key}: HTTP {exc.code} {code}".rstrip()) from None
    except OSError as exc:
        raise PutError(f"S3 PUT {bucket}/{key}: {exc}") from None
