"""The canary's auto-abort reads real CloudWatch alarm states (moto's standalone server; no
client patched): an alarm in ALARM aborts at once, a healthy canary is left alone, an alarm
that does not exist is one clear error. What the abort then does (re-point the alias through
the endpoint's Pulumi stack) needs the Pulumi CLI and is the mocks' subject
(tests/infra/test_endpoint.py::test_a_rollback_re_points_the_alias_to_an_older_version,
tests/unit/test_deploy_aws.py::test_abort_keeps_the_stable_version). A few seconds after
moto is up (the session shares it)."""

from __future__ import annotations

import pytest

from mlrig.core.deploy import aws as aws_deploy
from mlrig.errors import DependencyMissing

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ALARMS = ["mlrig-team-ep-churn-errors", "mlrig-team-ep-churn-p99"]


@pytest.fixture
def alarms(aws_env: str) -> list[str]:
    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    for name, metric in zip(ALARMS, ["Errors", "Duration"], strict=True):
        cw.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/Lambda",
            MetricName=metric,
            Dimensions=[
                {"Name": "FunctionName", "Value": "mlrig-team-ep-churn"},
                {"Name": "Resource", "Value": "mlrig-team-ep-churn:live"},
                {"Name": "ExecutedVersion", "Value": "2"},
            ],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=5,
            ComparisonOperator="GreaterThanThreshold",
        )
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="test: healthy")
    return ALARMS


def test_an_alarm_in_alarm_aborts_the_canary(alarms: list[str]) -> None:
    import boto3

    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName=alarms[1], StateValue="ALARM", StateReason="test: p99 over the limit"
    )
    aborted: list[str] = []
    tripped = aws_deploy.bake(alarms, REGION, 10, on_alarm=aborted.append, sleep=_no_sleep)
    assert tripped == alarms[1] and aborted == [alarms[1]]


def test_a_healthy_canary_is_left_alone(alarms: list[str]) -> None:
    aborted: list[str] = []
    ticks = iter(range(0, 10_000, 30))  # a clock that passes 30 s per look
    tripped = aws_deploy.bake(
        alarms,
        REGION,
        2,
        on_alarm=aborted.append,
        clock=lambda: float(next(ticks)),
        sleep=_no_sleep,
    )
    assert tripped is None and aborted == []


def test_missing_alarms_are_one_clear_error(aws_env: str) -> None:
    with pytest.raises(DependencyMissing, match="do not exist"):
        aws_deploy.canary_verdict(["mlrig-team-ep-gone-errors"], REGION)


def _no_sleep(_seconds: float) -> None:
    return None
