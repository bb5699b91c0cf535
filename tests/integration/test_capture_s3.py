"""Capture on AWS: the serving image's Lambda handler, driven by API Gateway HTTP API 2.0
events, writes its sampled records to `s3://BUCKET/captures/ENDPOINT/yyyy/mm/dd/hh/` with the
image's own SigV4-signed PUT (no boto3), against moto's standalone server started with
authentication on (INITIAL_NO_AUTH_ACTION_COUNT): moto recomputes each request's signature
from the IAM access key it issued, so a wrong secret is refused (SignatureDoesNotMatch), and
checks the key's user policy, so a PUT outside `captures/ENDPOINT/` is refused (AccessDenied).

What this proves: the signing (path-style URL, payload hash, session-less keys) is accepted
by an S3 implementation that verifies it; the objects hold the agreed record format, one
object per hour folder; the handler writes the buffer after the invocation that makes it due
and not before; a refused PUT counts errors and the predictions still answer 200. What it
does not prove: virtual-hosted URLs against real S3, a session token (Lambda's role
credentials; signed the same way, its header is covered by tests/unit/test_capture_s3put.py
against botocore's signer), the function role's policy as AWS evaluates it, Lambda's freeze.
About 6 s on the shared 2-CPU machine, most of it moto's start.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.shared.capture import CaptureRecord
from tests.helpers import http_api_event, load_serving_module, serving_model_dir, wait_for_http

pytestmark = pytest.mark.integration

serve = load_serving_module("mlrig_serve_capture_s3")
_writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in docker/
aws_lambda = importlib.import_module("mlrig_serve_capture_s3.aws_lambda")
s3put = importlib.import_module("mlrig_serve_capture_s3.s3put")
sys.dont_write_bytecode = _writes

BUCKET, ENDPOINT = "mlrig-team-data", "churn"
PREFIX = f"captures/{ENDPOINT}"
IDENTITY = {
    "MLRIG_ENDPOINT": ENDPOINT,
    "MLRIG_MODEL_NAME": "churn",
    "MLRIG_MODEL_VERSION": "7",
    "MLRIG_IMAGE_DIGEST": "sha256:" + "7" * 64,
    "MLRIG_RUN_ID": "0123456789abcdef0123456789abcdef",
}
# the function role's capture statement (infra/mlrig/infra/endpoint/policies.py's shape)
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
        }
    ],
}


READ_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@pytest.fixture(scope="module")
def moto_auth() -> Iterator[dict[str, str]]:
    """moto with authentication on after the set-up's seven calls; yields the endpoint, the
    access key of a user holding only POLICY (the function) and one that may read (the
    test's checks)."""
    import boto3

    exe = Path(sys.executable).with_name("moto_server")
    from mlrig.core.stack.local.stack import free_port

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"}
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", status=None, timeout=30, what="moto server")
        setup = {
            "endpoint_url": url,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        keys = {}
        for user, policy in (("fn", POLICY), ("reader", READ_ALL)):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        yield {
            "url": url,
            "id": keys["fn"]["AccessKeyId"],
            "secret": keys["fn"]["SecretAccessKey"],
            "reader_id": keys["reader"]["AccessKeyId"],
            "reader_secret": keys["reader"]["SecretAccessKey"],
        }
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def function_env(moto_auth: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment Lambda gives the function (its role's keys, region) and deploy's."""
    env = {
        "AWS_ACCESS_KEY_ID": moto_auth["id"],
        "AWS_SECRET_ACCESS_KEY": moto_auth["secret"],
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_auth["url"],
        "MLRIG_CAPTURE_PERCENT": "100",
        "MLRIG_CAPTURE_DIR": f"s3://{BUCKET}/{PREFIX}",
        "MLRIG_CAPTURE_FLUSH_SECONDS": "60",
        **IDENTITY,
    }
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _objects(moto_auth: dict[str, str]) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_auth["url"],
        region_name="us-east-1",
        aws_access_key_id=moto_auth["reader_id"],
        aws_secret_access_key=moto_auth["reader_secret"],
    )
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def _handler(tmp_path: Path, clock: list[float]) -> tuple[Any, Any]:
    tmp_path.mkdir(exist_ok=True)
    model = serve.Model(str(serving_model_dir(tmp_path, ["a", "b"])))
    capture = serve.Capture(serve.Settings.from_env(), clock=lambda: clock[0])
    return aws_lambda.make_handler(model, serve.Limits(max_body_bytes=4096), capture), capture


def _invoke(handler: Any, n: int) -> int:
    body = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]] * n}})
    event = http_api_event(
        "POST", f"/endpoints/{ENDPOINT}/invocations", body.encode(), content_type="application/json"
    )
    answer: dict[str, Any] = handler(event, None)
    raw = answer["body"]
    text = base64.b64decode(raw) if answer["isBase64Encoded"] else raw.encode()
    assert json.loads(text) == {"predictions": [0] * n}
    return int(answer["statusCode"])


T0 = 1796646600.0  # 2026-12-07T12:30:00Z


def test_the_handler_puts_due_batches_signed_into_the_endpoints_prefix(
    function_env: dict[str, str], moto_auth: dict[str, str], tmp_path: Path
) -> None:
    clock = [T0]
    handler, capture = _handler(tmp_path, clock)
    before = set(_objects(moto_auth))
    assert _invoke(handler, 1) == 200
    assert _invoke(handler, 2) == 200
    # not due yet (the oldest record is 0 s old, the buffer far from half full): queued
    assert capture.stats()["queued"] == 2 and set(_objects(moto_auth)) == before
    clock[0] = T0 + 3600 - 1  # 13:29:59: the third record falls in the next hour
    assert _invoke(handler, 3) == 200
    stats = capture.stats()
    assert (stats["queued"], stats["written"], stats["errors"], stats["files"]) == (0, 3, 0, 2)

    new = {k: v for k, v in _objects(moto_auth).items() if k not in before}
    writer = capture.writer_id
    assert sorted(new) == [
        f"{PREFIX}/2026/12/07/12/{writer}-000001.jsonl",
        f"{PREFIX}/2026/12/07/13/{writer}-000002.jsonl",
    ]
    lines = [line for body in new.values() for line in body.decode().splitlines()]
    records = [CaptureRecord.model_validate_json(line) for line in lines]
    assert [
        len(json.loads(r.captureData.endpointInput.data)["dataframe_split"]["data"])
        for r in records
    ] == [1, 2, 3]
    assert {(r.mlrig.endpoint, r.mlrig.model, r.mlrig.version) for r in records} == {
        (ENDPOINT, "churn", "7")
    }


def test_a_refused_put_counts_errors_and_the_prediction_still_answers(
    function_env: dict[str, str],
    moto_auth: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [T0]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_auth["secret"] + "x")  # a wrong signature
    monkeypatch.setenv("MLRIG_CAPTURE_QUEUE_RECORDS", "2")  # one record: half full, due
    handler, capture = _handler(tmp_path / "a", clock)
    clock[0] += 1
    assert _invoke(handler, 1) == 200
    stats = capture.stats()
    assert (stats["written"], stats["errors"]) == (0, 1)
    assert "403 SignatureDoesNotMatch" in stats["last_error"]

    # the right key outside the endpoint's prefix: the role's policy refuses it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_auth["secret"])
    monkeypatch.setenv("MLRIG_CAPTURE_DIR", f"s3://{BUCKET}/captures/other")
    handler, capture = _handler(tmp_path / "b", clock)
    clock[0] += 1
    assert _invoke(handler, 1) == 200
    stats = capture.stats()
    assert (stats["written"], stats["errors"]) == (0, 1)
    assert "403 AccessDenied" in stats["last_error"]
    assert not any(k.startswith("captures/other/") for k in _objects(moto_auth))


def test_monitor_reads_an_aws_stacks_window_from_the_bucket(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the function writes (the image's writer, here on the session's moto) is what
    monitor's window reads on an AWS stack: the hours of the window copied from the bucket,
    keys the writer never makes skipped. Not covered: the drift run itself on AWS (its
    MLflow and DVC parts are the local stack's, tested in test_monitor.py)."""
    import boto3

    from mlrig.core.monitor import _captures, monitor
    from tests.helpers import aws_outputs

    bucket = "bucket"  # aws_outputs' DVC remote is s3://bucket/dvc
    s3 = boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env)
    settings = serve.Settings.from_env(
        {"MLRIG_CAPTURE_PERCENT": "100", "MLRIG_CAPTURE_DIR": f"s3://{bucket}/{PREFIX}", **IDENTITY}
    )
    clock = [T0]
    writer = serve.Capture(settings, clock=lambda: clock[0])
    body = b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}'
    for at in (T0, T0 + 60, T0 - 2 * 3600):  # two in the window's hour, one before it
        clock[0] = at
        assert writer.offer(
            serve.capture.new_inference_id(),
            body,
            "application/json",
            b'{"predictions": [0]}',
            "application/json",
        )
    writer.write_batch(writer._take())
    assert writer.stats()["written"] == 3
    for junk in ("captures/churn/2026/13/07/12/x.jsonl", "captures/Bad/2026/12/07/12/x.jsonl"):
        s3.put_object(Bucket=bucket, Key=junk, Body=b"{}\n")

    outputs = aws_outputs("team", endpoint=aws_env).model_copy(update={"region": "us-east-1"})
    since = datetime.fromtimestamp(T0 - 600, UTC)
    until = datetime.fromtimestamp(T0 + 600, UTC)
    root = monitor._captures_root(outputs, since, until, tmp_path / "scratch")
    window = _captures.read(root / ENDPOINT, since, until)
    assert (window.records, window.files, window.bad_records) == (2, 1, 0)
    assert dict(window.versions) == {("churn", "7"): 2}
    assert window.frame().to_dict("list") == {"a": [1.0, 1.0], "b": [2.0, 2.0]}
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == [ENDPOINT]
