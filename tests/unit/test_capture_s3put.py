"""The serving image's stdlib SigV4 signer (`mlrig_serve.s3put`) against botocore's own S3
signer on the same request, time and credentials: the same canonical request and signature,
a session token (Lambda's role credentials) included. moto's verification of real PUTs is in
tests/integration/test_capture_s3.py."""

from __future__ import annotations

import datetime
import hashlib
import importlib
import sys
from typing import Any

import pytest

from tests.helpers import load_serving_module

load_serving_module("mlrig_serve_s3put")
_writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in docker/
s3put = importlib.import_module("mlrig_serve_s3put.s3put")
sys.dont_write_bytecode = _writes

NOW = datetime.datetime(2026, 12, 7, 12, 34, 56, tzinfo=datetime.UTC)


def botocore_headers(url: str, body: bytes, creds: Any) -> dict[str, str]:
    from unittest import mock

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="PUT",
        url=url,
        data=body,
        headers={
            "content-type": "application/jsonl",
            "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    signer = S3SigV4Auth(
        Credentials(creds.access_key, creds.secret_key, creds.token), "s3", creds.region
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        signer.add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE//session+token/="])
@pytest.mark.parametrize(
    "url",
    [
        "https://mlrig-team-data.s3.eu-west-1.amazonaws.com/captures/churn/2026/12/07/12/ab-000001.jsonl",
        "http://127.0.0.1:5000/mlrig-team-data/captures/churn/2026/12/07/12/ab%20c-000001.jsonl",
    ],
)
def test_the_signature_is_botocores(token: str | None, url: str) -> None:
    creds = s3put.Credentials("AKIAEXAMPLE", "secret/with+chars", token, "eu-west-1")
    body = b'{"a": 1}\n'
    ours = s3put.sign(
        "PUT",
        url,
        {"content-type": "application/jsonl"},
        hashlib.sha256(body).hexdigest(),
        creds,
        NOW,
    )
    theirs = botocore_headers(url, body, creds)
    assert ours["authorization"] == theirs["authorization"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token") == token


def test_credentials_come_from_the_functions_environment() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA1",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "t",
        "AWS_REGION": "eu-west-1",
    }
    assert s3put.Credentials.from_env(env) == ("AKIA1", "s", "t", "eu-west-1")
    with pytest.raises(RuntimeError, match="AWS_SECRET_ACCESS_KEY"):
        s3put.Credentials.from_env({"AWS_ACCESS_KEY_ID": "AKIA1"})
    assert s3put.object_url("b", "captures/x y.jsonl", "eu-west-1", {}) == (
        "https://b.s3.eu-west-1.amazonaws.com/captures/x%20y.jsonl"
    )
    assert (
        s3put.object_url("b", "k", "r", {"AWS_ENDPOINT_URL_S3": "http://h:1/"}) == "http://h:1/b/k"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.169.254/latest/creds"},
            "over http must name a loopback or the container credentials host",
        ),
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://example.com/creds"},
            "over http must name a loopback or the container credentials host",
        ),
        ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "file:///etc/passwd"}, "not an http(s) URL"),
        ({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "@evil/x"}, "is not a path"),
        (
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/c",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "a\r\nX-Injected: 1",
            },
            "holds a line break",
        ),
    ],
)
def test_container_credentials_go_only_where_the_sdks_send_them(
    env: dict[str, str], message: str
) -> None:
    """The task's token is never sent over plain http to a host that is not local (the SDKs'
    rule), nor a header it could break out of; each refusal is one line, before any request."""
    provider = s3put.ContainerCredentials(env)
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        provider.get()
    assert provider.fetches == 0


def test_without_a_container_endpoint_the_environments_keys_are_used() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    assert s3put.credentials(env) == s3put.Credentials("AKIA1", "s", None, "eu-west-1")
    assert s3put.ContainerCredentials.configured(
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}
    )
    assert not s3put.ContainerCredentials.configured(env)
