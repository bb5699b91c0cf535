"""The AWS endpoints' key check: the authorizer function's code driven by API Gateway HTTP
API REQUEST-authorizer events (payload format 2.0, simple responses, shaped as AWS's
developer guide documents them), reading the key hashes the CLI keeps in an SSM SecureString
on moto's standalone server (no client is patched: boto3 reaches moto by its endpoint URL).

What this proves: the key format (`Authorization: Basic base64(KEY_ID:SECRET)`) the local
deploy issues is accepted; wrong, unknown, revoked, malformed or missing keys are refused;
the CLI's key verbs (create, list, revoke) write what the authorizer reads; an unreadable
key store refuses (fails closed). What it does not prove: IAM evaluation (that the role may
read the parameter: see tests/infra/test_endpoint_iam.py for the documents), API Gateway's
caching of verdicts (60 s TTL per Authorization value), KMS decryption under the aws/ssm key,
the Lambda runtime and its cold start. About 13 s on the shared 2-CPU machine, most of it
moto's start.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from mlrig import contract
from mlrig.core.deploy import _aws_keys, _keys
from mlrig.core.deploy import aws as aws_deploy
from mlrig.infra.endpoint import authorizer
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration

STACK, ENDPOINT = "team", "churn"
PARAMETER = "/mlrig/team/endpoints/churn/keys"
# The documented 2.0 REQUEST payload; the authorizer's identity source is the header.
EVENT: dict[str, Any] = {
    "version": "2.0",
    "type": "REQUEST",
    "routeArn": "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/$default/POST"
    "/endpoints/churn/invocations",
    "identitySource": [],
    "routeKey": "ANY /endpoints/churn/{proxy+}",
    "rawPath": "/endpoints/churn/invocations",
    "rawQueryString": "",
    "headers": {"content-type": "application/json", "user-agent": "curl/8.5.0"},
    "requestContext": {
        "accountId": "123456789012",
        "apiId": "a1b2c3d4e5",
        "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "a1b2c3d4e5",
        "http": {
            "method": "POST",
            "path": "/endpoints/churn/invocations",
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.7",
            "userAgent": "curl/8.5.0",
        },
        "requestId": "Jk2lTg1VIAMEbWg=",
        "routeKey": "ANY /endpoints/churn/{proxy+}",
        "stage": "$default",
        "time": "07/Dec/2026:12:30:00 +0000",
        "timeEpoch": 1796646600000,
    },
    "pathParameters": {"proxy": "invocations"},
    "stageVariables": {},
}


def event(authorization: str | None) -> dict[str, Any]:
    ev = copy.deepcopy(EVENT)
    if authorization is not None:
        ev["headers"]["authorization"] = authorization
        ev["identitySource"] = [authorization]
    return ev


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode()).decode()


def decide(authorization: str | None) -> dict[str, Any]:
    authorizer._cache.clear()  # a fresh container: what a revocation looks like after 30 s
    return authorizer.handler(event(authorization))


@pytest.fixture
def stack(aws_env: str, mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    contract.save(aws_outputs(STACK, endpoint=None).model_copy(update={"region": "us-east-1"}))
    monkeypatch.setenv(authorizer.PARAMETER_ENV, PARAMETER)
    _aws_keys.delete(STACK, ENDPOINT, "us-east-1")  # moto's server is shared by the session
    return STACK


def test_keys_from_the_cli_open_the_endpoint_until_revoked(stack: str) -> None:
    first, first_key = _keys.new_key()  # what deploy stores for a new endpoint
    _aws_keys.write(stack, ENDPOINT, "us-east-1", [first])
    second_key = aws_deploy.create_key(ENDPOINT, stack=stack)

    assert decide(basic(first_key)) == {"isAuthorized": True, "context": {"keyId": first.id}}
    second_id = second_key.split(":", 1)[0]
    assert decide(basic(second_key))["context"] == {"keyId": second_id}
    assert [k["id"] for k in aws_deploy.list_keys(ENDPOINT, stack=stack)] == [first.id, second_id]

    aws_deploy.revoke_key(ENDPOINT, first.id, stack=stack)
    assert decide(basic(first_key)) == {"isAuthorized": False}
    assert decide(basic(second_key))["isAuthorized"] is True
    # only hashes are stored: no secret is in the parameter
    import boto3

    stored = boto3.client("ssm").get_parameter(Name=PARAMETER, WithDecryption=True)
    assert second_key.split(":", 1)[1] not in stored["Parameter"]["Value"]
    assert boto3.client("ssm").get_parameter(Name=PARAMETER)["Parameter"]["Type"] == "SecureString"


@pytest.mark.parametrize(
    "authorization",
    [
        None,  # no header at all
        "",
        "Bearer abc",
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "WRONG_SECRET",  # the right ID, another secret
        "UNKNOWN_ID",  # a well-formed key that was never issued
    ],
)
def test_anything_but_a_valid_key_is_refused(stack: str, authorization: str | None) -> None:
    record, key = _keys.new_key()
    _aws_keys.write(stack, ENDPOINT, "us-east-1", [record])
    key_id, secret = key.split(":", 1)
    if authorization == "WRONG_SECRET":
        authorization = basic(f"{key_id}:{secret[::-1]}")
    elif authorization == "UNKNOWN_ID":
        authorization = basic(f"k00000000:{secret}")
    assert decide(authorization) == {"isAuthorized": False}


def test_an_unreadable_key_store_refuses(stack: str) -> None:
    record, key = _keys.new_key()
    assert decide(basic(key)) == {"isAuthorized": False}  # no parameter yet
    import boto3

    boto3.client("ssm").put_parameter(
        Name=PARAMETER, Value="not json", Type="SecureString", Overwrite=True
    )
    assert decide(basic(key)) == {"isAuthorized": False}
    with pytest.raises(Exception, match="not an mlrig key document"):
        aws_deploy.list_keys(ENDPOINT, stack=stack)


def test_the_key_verbs_refuse_an_endpoint_without_keys(stack: str) -> None:
    with pytest.raises(Exception, match="no keyed endpoint 'churn'"):
        aws_deploy.create_key(ENDPOINT, stack=stack)
    with pytest.raises(Exception, match="has no key 'k1'"):
        aws_deploy.revoke_key(ENDPOINT, "k1", stack=stack)


def test_a_failed_first_deploy_leaves_no_key_behind(stack: str) -> None:
    """deploy writes a new endpoint's first key before `pulumi up`; when the update fails it
    destroys what the update made and deletes the key (here the stand-in stack's destroy
    fails too, as it would with AWS unreachable: the key is deleted all the same)."""

    class UnreachableStack:
        name = "team.churn"

        def destroy(self, **_kwargs: Any) -> None:
            raise RuntimeError("AWS is unreachable")

    record, _key = _keys.new_key()
    _aws_keys.write(stack, ENDPOINT, "us-east-1", [record])
    said: list[str] = []
    outputs = contract.load(stack)
    aws_deploy._undo_first_deploy(UnreachableStack(), outputs, ENDPOINT, True, said.append)
    assert _aws_keys.read(stack, ENDPOINT, "us-east-1") is None
    assert said == ["the first deploy of churn failed: removing what it made"]
