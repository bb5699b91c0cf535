"""The AWS compute backend against moto's standalone server: the requests it sends are the
ones botocore validates and moto's ECS, ECR and CloudWatch Logs models accept and answer.

What moto proves: every request's shape (RegisterTaskDefinition with `secrets` as valueFrom,
RunTask on a capacity provider with awsvpc, overrides and tags, ListTasks/DescribeTasks/
StopTask, GetLogEvents with its forward token), the family reuse, the one-per-project
check and stopping from outside. What it does not: IAM (no policy is enforced), the secret
actually injected by ECS, the awslogs driver writing the stream (the test writes it), and
the stop codes of an OOM kill or a Spot interruption (those are read from recorded task
shapes in tests/unit/test_compute_aws.py)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlrig.contract import AwsCompute, Registry, StackOutputs
from mlrig.core.compute import aws as compute_aws
from mlrig.core.compute.spec import SecretRef, TaskSpec
from mlrig.errors import ConfigError, Conflict, UsageError
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"
REPO = "mlrig-team/models"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlrig/team/identities/repo-churn-AbCdEf"


def _transition(moto: str, times: int | None) -> None:
    """ECS tasks in moto advance RUNNING -> ... -> STOPPED one step per DescribeTasks by
    default; `times` describes per step instead (None: back to the default)."""
    path = "unset-transition" if times is None else "set-transition"
    body: dict[str, Any] = {"model_name": "ecs::task"}
    if times is not None:
        body["transition"] = {"progression": "manual", "times": times}
    import requests

    resp = requests.post(f"{moto}/moto-api/state-manager/{path}", data=json.dumps(body), timeout=10)
    resp.raise_for_status()


@pytest.fixture
def stack(aws_env: str) -> Iterator[dict[str, Any]]:
    """A cluster, network, log group and trainer image of an AWS stack, in moto."""
    import boto3

    def client(name: str) -> Any:
        return boto3.client(name, region_name=REGION, endpoint_url=aws_env)

    ec2, ecs, ecr, logs = client("ec2"), client("ecs"), client("ecr"), client("logs")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"]
        for i in (1, 2)
    ]
    group = ec2.create_security_group(GroupName=f"t-{vpc}", Description="t", VpcId=vpc)
    cluster = ecs.create_cluster(
        clusterName=f"mlflow-cluster-{uuid.uuid4().hex[:8]}",
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
    )["cluster"]["clusterArn"]
    log_group = f"/mlrig/team/training-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=log_group)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=REPO)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + uuid.uuid4().hex * 2, "size": 2},
            "layers": [],
        }
    )
    pushed = ecr.put_image(repositoryName=REPO, imageManifest=manifest, imageTag=uuid.uuid4().hex)
    digest = pushed["image"]["imageId"]["imageDigest"]
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPO}"
    outputs: StackOutputs = aws_outputs("team", endpoint=None).model_copy(
        update={
            "region": REGION,
            "registry": Registry(kind="ecr", url=registry),
            "compute": AwsCompute(
                cluster_arn=cluster,
                subnet_ids=subnets,
                security_group_id=group["GroupId"],
                assign_public_ip=True,
                task_role_arn=f"arn:aws:iam::{ACCOUNT}:role/training-task-role",
                execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/training-execution-role",
                log_group=log_group,
            ),
        }
    )
    _transition(aws_env, 10**6)  # tasks stay RUNNING unless a test says otherwise
    try:
        yield {
            "outputs": outputs,
            "backend": compute_aws.AwsBackend(outputs, poll_s=0, sleep=lambda _s: None),
            "image": f"{registry}@{digest}",
            "ecs": ecs,
            "logs": logs,
            "moto": aws_env,
        }
    finally:
        _transition(aws_env, None)


def spec(stack: dict[str, Any], **changes: Any) -> TaskSpec:
    base: dict[str, Any] = {
        "project": "churn",
        "image": stack["image"],
        "command": ("mlrig-train", "--sha", "0" * 40),
        "environment": {"MLRIG_SHA": "0" * 40},
        "secrets": (SecretRef(name="MLFLOW_TRACKING_PASSWORD", source=SECRET),),
        "cpu": 1024,
        "memory_mib": 4096,
        "spot": True,
        "labels": {"mlrig.sha": "0" * 40},
    }
    return TaskSpec(**{**base, **changes})


def test_submit_registers_once_and_runs_the_task_as_specified(stack: dict[str, Any]) -> None:
    backend, ecs = stack["backend"], stack["ecs"]
    handle = backend.submit(spec(stack))
    assert handle.backend == "aws" and handle.project == "churn"
    task = ecs.describe_tasks(
        cluster=stack["outputs"].compute.cluster_arn, tasks=[handle.id], include=["TAGS"]
    )["tasks"][0]
    assert task["capacityProviderName"] == "FARGATE_SPOT"
    assert {"key": "mlrig.project", "value": "churn"} in task["tags"]
    assert {"key": "mlrig.sha", "value": "0" * 40} in task["tags"]
    (override,) = task["overrides"]["containerOverrides"]
    assert override["command"] == ["mlrig-train", "--sha", "0" * 40]
    assert override["environment"] == [{"name": "MLRIG_SHA", "value": "0" * 40}]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    td = definition["taskDefinition"]
    assert td["family"].startswith("mlrig-team-train-churn-")
    assert (td["cpu"], td["memory"], td["networkMode"]) == ("1024", "4096", "awsvpc")
    assert td["executionRoleArn"].endswith("role/training-execution-role")
    assert td["taskRoleArn"].endswith("role/training-task-role")
    (container,) = td["containerDefinitions"]
    assert container["secrets"] == [{"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": SECRET}]
    assert not container.get("environment")  # plain values only as the run's overrides
    assert container["logConfiguration"]["options"]["awslogs-group"] == (
        stack["outputs"].compute.log_group
    )
    backend.stop(handle, "test over")
    assert backend.status(handle).state in ("running", "stopped")  # STOPPING counts as running
    _transition(stack["moto"], None)
    states = [backend.status(handle).state for _ in range(6)]  # moto: a step per read
    assert states[-1] == "stopped", states
    # the same project, digest and size again: the same family, no second revision
    again = backend.submit(spec(stack, environment={"MLRIG_SHA": "1" * 40}))
    families = ecs.list_task_definitions(familyPrefix=td["family"])
    assert len(families["taskDefinitionArns"]) == 1
    assert again.id != handle.id


def test_lines_follow_the_stream_until_the_task_stops(stack: dict[str, Any]) -> None:
    backend, logs = stack["backend"], stack["logs"]
    handle = backend.submit(spec(stack, spot=False))
    stream = f"train/trainer/{compute_aws.task_id(handle)}"
    group = stack["outputs"].compute.log_group
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    events = [f"stage {i}" for i in range(30)] + ["login password=hunter2 ok", "\x1b[31mred"]
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(events)],
    )
    _transition(stack["moto"], None)  # the task now runs to its end as lines() polls
    got = list(backend.lines(handle))
    assert got[:30] == [f"stage {i}" for i in range(30)]
    assert got[30:] == ["login password=[redacted] ok", "red"]
    status = backend.status(handle)
    assert status.state == "stopped"


def test_a_second_retrain_of_the_project_is_refused_while_one_runs(
    stack: dict[str, Any],
) -> None:
    backend = stack["backend"]
    first = backend.submit(spec(stack))
    with pytest.raises(Conflict) as info:
        backend.submit(spec(stack))
    line = info.value.one_line()
    assert f"already running (task {compute_aws.task_id(first)})" in line
    assert f"mlrig retrain --remote --attach {compute_aws.task_id(first)}" in line
    other = backend.submit(spec(stack, project="fraud"))  # another project is not held up
    assert other.project == "fraud"
    running = {t["taskArn"] for t in backend.running("churn")}
    assert running == {first.id}


def test_the_later_of_two_racing_submits_stops_itself(stack: dict[str, Any]) -> None:
    backend = stack["backend"]
    first = backend.submit(spec(stack))
    # a second submitter that passed the check at the same moment: its task runs too
    racing = spec(stack)
    family = backend.task_definition(racing)["family"]
    import boto3

    late = backend._run(
        boto3.client("ecs", region_name=REGION, endpoint_url=stack["moto"]), racing, family
    )
    handle = compute_aws.TaskHandle(backend="aws", id=late["taskArn"], project="churn")
    # each submitter checks again after its RunTask: the same order (created, then ARN: moto
    # records no creation time), so exactly one of them stops its task
    lost = []
    for mine in (first, handle):
        try:
            backend._lose_races(mine)
        except Conflict as exc:
            assert "already running" in exc.one_line()
            lost.append(mine.id)
    survivors = [t["taskArn"] for t in backend.running("churn")]
    assert len(lost) == 1 and len(survivors) == 1
    assert {*lost, *survivors} == {first.id, handle.id}


def test_a_task_stopped_from_outside_says_so(stack: dict[str, Any]) -> None:
    backend, ecs = stack["backend"], stack["ecs"]
    handle = backend.submit(spec(stack))
    ecs.stop_task(cluster=stack["outputs"].compute.cluster_arn, task=handle.id, reason="ops")
    status = backend.status(handle)
    assert status.state == "stopped"
    assert status.reason == "stopped from outside (ops)"
    again = backend.submit(spec(stack))
    backend.stop(again, "Ctrl-C, the user said stop")
    assert backend.status(again).reason == "stopped by mlrig: Ctrl-C, the user said stop"


def test_bad_input_is_one_line_before_any_task(stack: dict[str, Any]) -> None:
    backend, image = stack["backend"], stack["image"]
    cases = [
        (spec(stack, cpu=3072), "Fargate has no task of 3 vCPU"),
        (spec(stack, memory_mib=1000), "a 1 vCPU Fargate task takes 2048-8192 MiB"),
        (spec(stack, image=image.split("@")[0] + ":latest"), "is not pinned by digest"),
        (spec(stack, image=image[:-8] + "00000000"), "is not in 123456789012.dkr.ecr"),
        (
            spec(stack, image="ghcr.io/acme/trainer@sha256:" + "1" * 64),
            "is not in stack 'team''s repository",
        ),
        (
            spec(stack, secrets=(SecretRef(name="X", source="mlrig/team/mlflow-admin"),)),
            "not a machine identity's secret of stack 'team'",
        ),
        (
            spec(stack, environment={"MLFLOW_TRACKING_PASSWORD": "x"}),
            "is both a secret and a plain value",
        ),
        (spec(stack, labels={"aws:x": "y"}), "cannot be an ECS tag"),
    ]
    for bad, message in cases:
        with pytest.raises(UsageError) as info:
            backend.submit(bad)
        assert message in info.value.one_line(), (message, info.value.one_line())
    assert backend.running("churn") == []
    with pytest.raises(UsageError, match="is not a training task of stack 'team'"):
        backend.handle("arn:aws:ecs:us-east-1:123456789012:task/other/" + "a" * 32, "churn")


def test_ci_finds_the_compute_outputs_in_the_stacks_parameter(stack: dict[str, Any]) -> None:
    """CI's outputs.json has no compute: the backend reads the parameter the stack writes."""
    import boto3

    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=stack["moto"])
    compute = stack["outputs"].compute
    ci = stack["outputs"].model_copy(update={"name": "ci-team", "compute": None})
    with pytest.raises(ConfigError) as info:
        compute_aws.AwsBackend(ci)
    assert "no /mlrig/ci-team/remote-training" in info.value.one_line()
    assert "mlrig stack up --aws --stack ci-team" in info.value.one_line()
    name = "/mlrig/ci-team/remote-training"
    ssm.put_parameter(Name=name, Type="String", Value=compute.model_dump_json(), Overwrite=True)
    assert compute_aws.AwsBackend(ci).compute == compute
    broken = compute.model_dump() | {"assign_public_ip": "perhaps"}
    ssm.put_parameter(Name=name, Type="String", Value=json.dumps(broken), Overwrite=True)
    with pytest.raises(ConfigError, match="is invalid at assign_public_ip"):
        compute_aws.AwsBackend(ci)
    ssm.delete_parameter(Name=name)
