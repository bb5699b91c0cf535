"""One S3 PutObject, signed with AWS Signature Version 4 by the standard library (no boto3 in
the image): what the capture writer uses under Lambda, with the function's own credentials
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, as Lambda sets
them for its execution role).

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
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import NamedTuple

ALGORITHM = "AWS4-HMAC-SHA256"


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
    creds = creds or Credentials.from_env()
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
