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
