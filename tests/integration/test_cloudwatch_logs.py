"""`mlrig deploy logs` and `mlrig access log` on an AWS stack read CloudWatch Logs through
boto3 against moto's standalone server (no client patched): log groups, streams and events
made the way Lambda, the awslogs driver and the tracking server make them, read back
through the CLI. What this proves: the group names the endpoint program creates, the
pagination, the newest-first tail, the merge by time, that credentials a line carries never
reach the output, `--since`, `--json` and the one-line failures. What it does not: AWS's own
ordering of pages, IAM (logs:FilterLogEvents) and CloudWatch's filter pattern engine beyond
the one quoted term used. A few seconds once moto is up (the session shares it)."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.access import audit as mlrig_audit
from mlrig.infra.config import server_log_group
from mlrig.infra.endpoint.config import function_log_group, warm_log_group
from mlrig.main import app
from mlrig.tracking import audit as tracking_audit
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration

REGION = "us-east-1"
KEY = "k0badc0de:" + "Zx9_" * 11
BASIC = "Basic " + "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
runner = CliRunner()


@pytest.fixture
def stack(aws_env: str, mlrig_home: Path) -> str:
    """An AWS stack (its own name: moto's state is the session's) with nothing deployed."""
    name = "t" + uuid.uuid4().hex[:8]
    contract.save(aws_outputs(name).model_copy(update={"region": REGION}))
    return name


def _logs() -> Any:
    import boto3

    return boto3.client("logs", region_name=REGION)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _put(group: str, stream: str, events: list[tuple[datetime, str]]) -> None:
    logs = _logs()
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    for start in range(0, len(events), 10_000):  # PutLogEvents takes 10,000 at most
        batch = sorted(events[start : start + 10_000])
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": _ms(at), "message": text} for at, text in batch],
        )


def _lambda_stream(version: str) -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"


def _invoke(*argv: str) -> Any:
    result = runner.invoke(app, list(argv))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_deploy_logs_merges_the_function_and_warm_groups_newest_last(stack: str) -> None:
    now = datetime.now(UTC)
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    fn, warm = function_log_group(stack, "churn"), warm_log_group(stack, "churn")
    v3, v4, task = _lambda_stream("3"), _lambda_stream("4"), uuid.uuid4().hex
    _put(
        fn,
        v3,
        [
            (ago(3000), "START RequestId: 00 Version: 3\n"),  # before --since 30m
            (ago(900), "START RequestId: 11 Version: 3\n"),
            (ago(899), f"mlrig-serve: refused headers {{'authorization': '{BASIC}'}}\n"),
            (ago(898), "REPORT RequestId: 11\tDuration: 12.31 ms\tBilled Duration: 13 ms\n"),
        ],
    )
    _put(
        fn,
        v4,
        [
            (ago(30), "START RequestId: 22 Version: 4\n"),
            (
                ago(29),
                f"Traceback (most recent call last):\n  key={KEY}\nValueError: \x1b[31mboom\n",
            ),
        ],
    )
    _put(
        warm,
        f"churn/model/{task}",
        [(ago(600), 'INFO: 10.0.1.5:4242 - "POST /invocations HTTP/1.1" 200 OK')],
    )

    result = _invoke("deploy", "logs", "churn", "--stack", stack, "--since", "30m", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["source"], r["line"]) for r in rows] == [
        ("lambda:3", "START RequestId: 11 Version: 3"),
        ("lambda:3", "mlrig-serve: refused headers {'authorization': '[redacted]'}"),
        ("lambda:3", "REPORT RequestId: 11\tDuration: 12.31 ms\tBilled Duration: 13 ms"),
        (f"warm:{task[:8]}", 'INFO: 10.0.1.5:4242 - "POST /invocations HTTP/1.1" 200 OK'),
        ("lambda:4", "START RequestId: 22 Version: 4"),
        ("lambda:4", "Traceback (most recent call last):"),
        ("lambda:4", "  key=k0badc0de:[redacted]"),
        ("lambda:4", "ValueError: boom"),
    ]
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    assert times == sorted(times)
    assert [r["stream"] for r in rows] == [v3] * 3 + [f"churn/model/{task}"] + [v4] * 4

    tail = _invoke("deploy", "logs", "churn", "--stack", stack, "--since", "1h", "--tail", "2")
    assert tail.exit_code == 0, tail.output
    assert [line.split(None, 2)[1:] for line in tail.output.splitlines()] == [
        ["lambda:4", "  key=k0badc0de:[redacted]".strip()],
        ["lambda:4", "ValueError: boom"],
    ]
    for out in (result.output, tail.output):
        assert KEY.split(":")[1] not in out and "QWxhZGRp" not in out and "\x1b" not in out


def test_deploy_logs_pages_through_a_busy_minute(stack: str) -> None:
    """More events than one FilterLogEvents page holds (10,000): the newest are on the last."""
    now = datetime.now(UTC)
    events = [(now - timedelta(milliseconds=5 * i), f"line {i}") for i in range(10_050)]
    _put(function_log_group(stack, "busy"), _lambda_stream("1"), events)
    result = _invoke("deploy", "logs", "busy", "--stack", stack, "--tail", "3", "--json")
    assert result.exit_code == 0, result.output
    assert [r["line"] for r in json.loads(result.output)] == ["line 2", "line 1", "line 0"]


def test_deploy_logs_of_an_endpoint_without_log_groups_is_one_line(stack: str) -> None:
    result = _invoke("deploy", "logs", "gone", "--stack", stack)
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) <= 2
    assert f"endpoint 'gone' of stack '{stack}' has no log group in {REGION}" in text
    assert function_log_group(stack, "gone") in text and "mlrig deploy list" in text


def test_without_credentials_each_read_is_one_line(
    stack: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlrig.adapters import aws

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws.session.cache_clear()
    for argv in (["deploy", "logs", "churn"], ["access", "log"]):
        result = _invoke(*argv, "--stack", stack)
        assert result.exit_code != 0
        assert len(result.output.strip().splitlines()) <= 2, result.output
        assert "no AWS credentials found" in result.output
    aws.session.cache_clear()


def _audit(at: datetime, **fields: Any) -> str:
    doc = {
        "event": tracking_audit.EVENT,
        "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "auth": "basic",
        "method": "POST",
        "source": "10.0.1.9",
        **fields,
    }
    return json.dumps(doc)


def test_access_log_reads_the_servers_group_with_mlrigs_own_lines(stack: str) -> None:
    now = datetime.now(UTC)
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    stream = f"mlflow/mlflow/{uuid.uuid4().hex}"
    _put(
        server_log_group(stack),
        stream,
        [
            (
                ago(7200),
                _audit(ago(7200), user="ann", path="/api/2.0/mlflow/runs/create", status=200),
            ),
            (ago(600), 'INFO:     10.0.1.9:5000 - "GET /health HTTP/1.1" 200 OK'),
            (
                ago(500),
                _audit(
                    ago(500),
                    user="repo-churn",
                    path="/api/2.0/mlflow/model-versions/create",
                    object={"model": "churn"},
                    status=200,
                ),
            ),
            (ago(400), '{"event": "mlrig.audit", "ts": "broken'),  # a damaged line: skipped
            (
                ago(100),
                _audit(
                    ago(100),
                    user="mallory",
                    path="/api/2.0/mlflow/runs/create",
                    status=401,
                    reason="bad password",
                ),
            ),
        ],
    )
    # the endpoint change this machine made (deploy on AWS writes it here, as locally)
    mlrig_audit.record(stack, "promote", "/endpoints/churn", {"endpoint": "churn", "version": "4"})

    result = _invoke("access", "log", "--stack", stack, "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["user"], r["method"], r["path"], r["status"]) for r in rows] == [
        ("repo-churn", "POST", "/api/2.0/mlflow/model-versions/create", 200),
        ("mallory", "POST", "/api/2.0/mlflow/runs/create", 401),
        (rows[2]["user"], "PROMOTE", "/endpoints/churn", None),
    ]
    assert rows[0]["object"] == {"model": "churn"} and rows[1]["reason"] == "bad password"
    assert rows[2]["auth"] == "local"

    everything = _invoke("access", "log", "--stack", stack)
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert len(lines) == 4 and " ann (basic) POST /api/2.0/mlflow/runs/create" in lines[0]
    assert lines[2].endswith("-> 401")


def test_access_log_without_the_servers_group_is_one_line(stack: str) -> None:
    result = _invoke("access", "log", "--stack", stack, "--since", "1d")
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) <= 2, result.output
    text = " ".join(result.output.split())
    assert f"stack '{stack}' has no tracking server log group {server_log_group(stack)}" in text
