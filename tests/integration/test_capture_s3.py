"""Capture on AWS: the serving image's Lambda handler, driven by API Gateway HTTP API 2.0
events, and a warm (Fargate) task's writer thread write their sampled records to
`s3://BUCKET/captures/ENDPOINT/yyyy/mm/dd/hh/` with the image's own SigV4-signed PUT (no
boto3), against moto's standalone server started with authentication on
(INITIAL_NO_AUTH_ACTION_COUNT): moto recomputes each request's signature from the IAM access
key it issued, so a wrong secret is refused (SignatureDoesNotMatch), and checks the key's
policy, so a PUT outside `captures/ENDPOINT/` is refused (AccessDenied). The warm task's
credentials come from a loopback stand-in for ECS's container credentials endpoint serving
moto's STS AssumeRole answer for a role holding only that policy (temporary keys and a
session token, as ECS serves a task role's).

What this proves: the signing (path-style URL, payload hash, with and without a session
token) is accepted by an S3 implementation that verifies it; the objects hold the agreed
record format, one object per hour folder; the handler writes the buffer after the
invocation that makes it due and not before; a refused PUT counts errors and the predictions
still answer 200; the warm writer's timer flushes with the task role's credentials, fetched
once, cached, fetched again inside the refresh window and kept while a refresh fails until
they expire. What it does not prove: virtual-hosted URLs against real S3, the roles' policies
as AWS evaluates them, Lambda's freeze (tests/integration/test_serving_lambda.py drives the
extension against a Runtime API stand-in), ECS's real endpoint and its rotation schedule.
About 8 s on the shared 2-CPU machine, most of it moto's start.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
def moto_auth() -> Iterator[dict[str, Any]]:
    """moto with authentication on after the set-up's seven calls; yields the endpoint, the
    access key of a user holding only POLICY (the function) and one that may read (the
    test's checks)."""
    import boto3

    exe = Path(sys.executable).with_name("moto_server")
    from mlrig.core.stack.local.stack import free_port

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "10"}
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
        # the warm task's role, as ECS hands its credentials out: temporary, with a token
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = iam.create_role(RoleName="task", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName="task", PolicyName="p", PolicyDocument=json.dumps(POLICY))
        task = boto3.client("sts", **setup).assume_role(
            RoleArn=role["Role"]["Arn"], RoleSessionName="ecs-task", DurationSeconds=3600
        )["Credentials"]
        yield {
            "task": {
                "AccessKeyId": task["AccessKeyId"],
                "SecretAccessKey": task["SecretAccessKey"],
                "Token": task["SessionToken"],
            },
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


class CredentialsEndpoint:
    """ECS's container credentials endpoint on loopback: GET of `path` answers the task role's
    credentials expiring at `expires` (or `status` when not 200); records each request's path
    and Authorization header."""

    def __init__(self, creds: dict[str, str], path: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.creds, self.path = creds, path
        self.expires = datetime.now(UTC) + timedelta(hours=1)
        self.status = 200
        self.requests: list[tuple[str, str | None]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                endpoint.requests.append((self.path, self.headers.get("Authorization")))
                status = endpoint.status if self.path == endpoint.path else 404
                doc = {
                    **endpoint.creds,
                    "RoleArn": "arn:aws:iam::123456789012:role/task",
                    "Expiration": endpoint.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                body = json.dumps(doc).encode() if status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def warm_env(moto_auth: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A warm task's environment: no keys in it, only ECS's relative credentials URI (its host
    the stand-in, through the documented test-only ContainerCredentials.base)."""
    endpoint = CredentialsEndpoint(moto_auth["task"], "/v2/credentials/7f1c-task")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", endpoint.path)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_auth["url"])
    monkeypatch.setattr(s3put.ContainerCredentials, "base", endpoint.url)
    monkeypatch.setattr(s3put, "_container", {})  # this process' cache starts empty
    yield endpoint
    endpoint.close()


def test_a_warm_tasks_writer_thread_puts_with_the_task_roles_credentials(
    warm_env: Any, moto_auth: dict[str, Any]
) -> None:
    from mlrig.wait import wait_until

    before = set(_objects(moto_auth))
    settings = serve.Settings.from_env(
        {
            "MLRIG_CAPTURE_PERCENT": "100",
            "MLRIG_CAPTURE_DIR": f"s3://{BUCKET}/{PREFIX}",
            "MLRIG_CAPTURE_FLUSH_SECONDS": "0.2",  # the timer, not the buffer, flushes
            **IDENTITY,
        }
    )
    writer = serve.Capture(settings).start()
    try:
        for n in range(3):
            assert writer.offer(
                serve.capture.new_inference_id(),
                json.dumps({"dataframe_split": {"columns": ["a"], "data": [[float(n)]]}}).encode(),
                "application/json",
                b'{"predictions": [0]}',
                "application/json",
            )
        wait_until(lambda: writer.stats()["written"] == 3, timeout=30, what="3 records written")
    finally:
        assert writer.close()
    stats = writer.stats()
    assert (stats["errors"], stats["last_error"]) == (0, None)
    new = {k: v for k, v in _objects(moto_auth).items() if k not in before}
    assert new and all(k.startswith(f"{PREFIX}/") for k in new)
    lines = [line for body in new.values() for line in body.decode().splitlines()]
    assert len([CaptureRecord.model_validate_json(line) for line in lines]) == 3
    # one fetch for every PUT of the hour: the credentials are cached, not asked per PUT
    assert warm_env.requests == [(warm_env.path, None)]


def test_container_credentials_are_fetched_again_before_they_expire(
    moto_auth: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full-URI form with its token file (re-read on every fetch), the refresh window, and
    a failing endpoint: the fetched credentials serve until they expire, then one line."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_auth["url"])
    endpoint = CredentialsEndpoint(moto_auth["task"], "/creds")
    token = tmp_path / "token"
    token.write_text("secret-token-1\n")
    now = [datetime.now(UTC)]
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{endpoint.url}/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token),
        "AWS_REGION": "us-east-1",
    }
    provider = s3put.ContainerCredentials(env, clock=lambda: now[0])
    try:
        first = provider.get()
        assert provider.get() is first and provider.fetches == 1
        s3put.put_object(BUCKET, f"{PREFIX}/2026/12/07/12/t-000001.jsonl", b"{}\n", creds=first)

        token.write_text("secret-token-2")
        now[0] = endpoint.expires - s3put.REFRESH_BEFORE + timedelta(seconds=1)
        assert provider.get() == first and provider.fetches == 2  # inside the window: fetched
        assert [auth for _path, auth in endpoint.requests] == ["secret-token-1", "secret-token-2"]

        endpoint.status = 503
        now[0] += timedelta(minutes=1)
        assert provider.get() == first  # a failed refresh: still valid, still used
        now[0] = endpoint.expires + timedelta(seconds=1)
        with pytest.raises(RuntimeError) as refused:
            provider.get()
        assert str(refused.value) == "container credentials endpoint: HTTP 503"
        assert first.secret_key not in str(refused.value)
    finally:
        endpoint.close()
