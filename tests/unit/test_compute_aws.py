"""A stopped Fargate task's status in one line, from DescribeTasks shapes AWS documents
(moto produces none of these stop codes: tests/integration/test_compute_aws.py says so)."""

from __future__ import annotations

from typing import Any

import pytest

from mlrig.core.compute.aws import task_status


def stopped(container: dict[str, Any], **task: Any) -> dict[str, Any]:
    return {"lastStatus": "STOPPED", "memory": "4096", "containers": [container], **task}


@pytest.mark.parametrize(
    ("task", "exit_code", "reason"),
    [
        (
            stopped(
                {
                    "name": "trainer",
                    "exitCode": 137,
                    "reason": "OutOfMemoryError: Container killed due to memory usage",
                },
                stopCode="EssentialContainerExited",
                stoppedReason="Essential container in task exited",
            ),
            137,
            "OOM-killed (memory limit 4096 MiB)",
        ),
        (
            stopped(
                {"name": "trainer"},
                stopCode="SpotInterruption",
                stoppedReason="Your Spot Task was interrupted.",
            ),
            None,
            "Fargate Spot took its capacity back: run it again, or without --spot",
        ),
        (
            stopped(
                {"name": "trainer"},
                stopCode="TaskFailedToStart",
                stoppedReason="ResourceInitializationError: unable to pull secrets",
            ),
            None,
            "did not start: ResourceInitializationError: unable to pull secrets",
        ),
        (
            stopped(
                {"name": "trainer", "exitCode": 143},
                stopCode="UserInitiated",
                stoppedReason="Task stopped by user",
            ),
            143,
            "stopped from outside (Task stopped by user)",
        ),
        (
            stopped(
                {"name": "trainer", "exitCode": 143},
                stopCode="UserInitiated",
                stoppedReason="mlrig: Ctrl-C",
            ),
            143,
            "stopped by mlrig: Ctrl-C",
        ),
        (
            stopped({"name": "trainer", "exitCode": 2}, stopCode="EssentialContainerExited"),
            2,
            "exited with code 2",
        ),
        (stopped({"name": "trainer", "exitCode": 0}, stopCode="EssentialContainerExited"), 0, None),
    ],
    ids=["oom", "spot", "failed-to-start", "outside", "mlrig", "exit-2", "success"],
)
def test_a_stopped_task_in_one_line(task: dict, exit_code: int | None, reason: str | None) -> None:
    status = task_status(task)
    assert (status.state, status.exit_code, status.reason) == ("stopped", exit_code, reason)


@pytest.mark.parametrize(
    ("last", "state"),
    [("PROVISIONING", "pending"), ("PENDING", "pending"), ("RUNNING", "running")]
    + [(s, "running") for s in ("DEACTIVATING", "STOPPING", "DEPROVISIONING")],
)
def test_states_before_stopped(last: str, state: str) -> None:
    assert task_status({"lastStatus": last}).state == state


def test_a_reason_never_carries_a_credential_or_an_escape() -> None:
    task = stopped(
        {"name": "trainer"},
        stopCode="TaskFailedToStart",
        stoppedReason="\x1b[31mCannotPullContainerError: token=abcdef123456",
    )
    assert task_status(task).reason == "did not start: CannotPullContainerError: token=[redacted]"


def test_the_network_gone_while_following_says_how_to_reattach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import EndpointConnectionError

    from mlrig.core.compute import aws as compute_aws
    from mlrig.errors import RemoteError

    class Gone:
        def describe_tasks(self, **_: Any) -> dict[str, Any]:
            return {"tasks": [{"lastStatus": "RUNNING"}]}

        def get_log_events(self, **_: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://logs.eu-west-1.amazonaws.com/")

    monkeypatch.setattr(compute_aws, "_client", lambda service, region: Gone())
    cluster = "arn:aws:ecs:eu-west-1:123456789012:cluster/mlflow-cluster-1"
    backend = _backend(cluster)
    handle = backend.handle("0123456789abcdef0123456789abcdef", "churn")
    assert handle.id == (
        "arn:aws:ecs:eu-west-1:123456789012:task/mlflow-cluster-1/0123456789abcdef0123456789abcdef"
    )
    with pytest.raises(RemoteError) as info:
        list(backend.lines(handle))
    line = info.value.one_line()
    assert "cannot reach https://logs.eu-west-1.amazonaws.com/" in line
    assert "mlrig retrain --remote --attach 0123456789abcdef0123456789abcdef" in line


def test_a_task_ecs_has_forgotten_has_stopped_and_its_result_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI job that attaches a week after the task ended: ECS lists it no more (MISSING),
    which for a task of this cluster means it stopped; its exit code is unknown."""
    from mlrig.core.compute import aws as compute_aws

    class Forgot:
        def describe_tasks(self, **kw: Any) -> dict[str, Any]:
            return {"tasks": [], "failures": [{"arn": kw["tasks"][0], "reason": "MISSING"}]}

    monkeypatch.setattr(compute_aws, "_client", lambda service, region: Forgot())
    backend = _backend("arn:aws:ecs:eu-west-1:123456789012:cluster/c1")
    handle = backend.handle("0123456789abcdef0123456789abcdef", "churn")
    status = backend.status(handle)
    assert (status.state, status.exit_code, status.reason) == (
        "stopped",
        None,
        compute_aws.FORGOTTEN,
    )
    from mlrig.errors import UsageError

    with pytest.raises(UsageError, match="not a training task"):  # another cluster's: refused
        backend.status(handle.model_copy(update={"id": handle.id.replace("/c1/", "/c2/")}))


def _backend(cluster_arn: str) -> Any:
    """The AWS backend of a stack `team` whose cluster is cluster_arn (nothing behind it)."""
    from mlrig.contract import AwsCompute
    from mlrig.core.compute import aws as compute_aws
    from tests.helpers import aws_outputs

    outputs = aws_outputs("team").model_copy(
        update={
            "compute": AwsCompute(
                cluster_arn=cluster_arn,
                subnet_ids=["subnet-1"],
                security_group_id="sg-1",
                assign_public_ip=False,
                task_role_arn="arn:aws:iam::123456789012:role/t",
                execution_role_arn="arn:aws:iam::123456789012:role/e",
                log_group="/mlrig/team/training",
            )
        }
    )
    return compute_aws.AwsBackend(outputs, sleep=lambda _s: None)
