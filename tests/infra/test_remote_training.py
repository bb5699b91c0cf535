"""What `mlrig retrain --remote` adds to the stack: two roles, a log group and a security
group beside the tracking server's cluster (which already offers Fargate Spot), least
privilege asserted statement by statement and linted by parliament and the house rules."""

from __future__ import annotations

import fnmatch
import json

import pytest

from mlrig.core.access.identities import aws_secret_name
from mlrig.infra import policy as house_policy
from mlrig.infra.config import training_log_group
from tests.helpers import make_plan, parliament_findings, policy_doc, statement

POLICY = "aws:iam/rolePolicy:RolePolicy"
BUCKET_ARN = "arn:aws:s3:::mlrig-plan-20261126abcdef"
LOG_GROUP_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/mlrig/plan/training"
MODELS_ARN = "arn:aws:ecr:us-east-1:123456789012:repository/mlrig-plan/models"
TRAINING_POLICIES = ("training-execution-policy", "training-task-policy", "ci-training-policy")


def actions(st: dict) -> list[str]:  # type: ignore[type-arg]
    return st["Action"] if isinstance(st["Action"], list) else [st["Action"]]


def test_the_log_group_keeps_the_profiles_retention(any_plan) -> None:
    group = any_plan.one("aws:cloudwatch/logGroup:LogGroup", "training-logs").inputs
    assert group["name"] == training_log_group("plan") == "/mlrig/plan/training"
    assert group["retentionInDays"] == {"small": 14, "production": 90}[any_plan.profile]


def test_the_cluster_offers_spot_already(any_plan) -> None:
    capacity = any_plan.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders")
    assert set(capacity.inputs["capacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}


def test_task_role_reads_and_writes_the_dvc_cache_and_results_only(any_plan) -> None:
    doc = policy_doc(any_plan.one(POLICY, "training-task-policy"))
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    assert set(by_sid) == {
        "DvcListPrefix",
        "DvcObjectsInPrefix",
        "ResultsListPrefix",
        "ResultsObjectsInPrefix",
        "WriteLogs",
    }
    assert by_sid["DvcObjectsInPrefix"]["Resource"] == f"{BUCKET_ARN}/dvc/*"
    assert by_sid["ResultsObjectsInPrefix"]["Resource"] == f"{BUCKET_ARN}/mlrig-remote/*"
    assert by_sid["WriteLogs"]["Resource"] == f"{LOG_GROUP_ARN}:*"
    everything = [a for st in doc["Statement"] for a in actions(st)]
    assert not [a for a in everything if not a.startswith(("s3:", "logs:"))]
    assert "s3:DeleteBucket" not in everything and "mlflow-artifacts" not in json.dumps(doc)


def test_execution_role_reads_the_machine_identities_only(any_plan) -> None:
    policy = any_plan.one(POLICY, "training-execution-policy")
    secrets = statement(policy, "ReadMachineIdentities")
    pattern = secrets["Resource"]
    assert pattern == (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlrig/plan/identities/repo-*"
    )
    account = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    # the names access add-machine stores passwords under, with Secrets Manager's suffix
    assert fnmatch.fnmatch(account + aws_secret_name("plan", "repo-churn") + "-AbCdEf", pattern)
    admin = any_plan.one("aws:secretsmanager/secret:Secret", "mlflow-admin-password")
    assert not fnmatch.fnmatch(account + admin.name + "-AbCdEf", pattern)
    assert not fnmatch.fnmatch(account + "mlrig/other/identities/repo-x-AbCdEf", pattern)
    assert statement(policy, "PullTrainerImage")["Resource"] == MODELS_ARN
    assert statement(policy, "WriteLogs")["Resource"] == f"{LOG_GROUP_ARN}:*"


def test_nothing_reaches_a_training_task_and_it_reaches_https_only(any_plan) -> None:
    sg = any_plan.one("aws:ec2/securityGroup:SecurityGroup", "training-sg").inputs
    assert sg.get("ingress", []) == []
    (egress,) = sg["egress"]
    assert (egress["protocol"], egress["fromPort"], egress["toPort"]) == ("tcp", 443, 443)


def test_ci_runs_watches_and_stops_training_tasks_on_its_cluster_only(any_plan) -> None:
    policy = any_plan.one(POLICY, "ci-training-policy")
    cluster = any_plan.outputs["remote_training"]["cluster_arn"]
    families = "arn:aws:ecs:us-east-1:123456789012:task-definition/mlrig-plan-train-*:*"
    assert statement(policy, "RegisterTrainingTasks")["Resource"] == families
    run = statement(policy, "RunTrainingTasks")
    assert run["Resource"] == families
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": cluster}}
    watch = statement(policy, "WatchTrainingTasks")
    assert watch["Resource"] == "arn:aws:ecs:us-east-1:123456789012:task/mlflow-cluster/*"
    assert statement(policy, "ListTrainingTasks")["Condition"] == run["Condition"]
    passing = statement(policy, "PassTrainingRoles")
    assert sorted(passing["Resource"]) == [
        "arn:aws:iam::123456789012:role/training-execution-role",
        "arn:aws:iam::123456789012:role/training-task-role",
    ]
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == (
        "ecs-tasks.amazonaws.com"
    )
    assert statement(policy, "ResultsObjectsInPrefix")["Resource"] == (
        f"{BUCKET_ARN}/mlrig-remote/*"
    )


def test_the_cli_finds_everything_in_the_outputs(any_plan) -> None:
    out = any_plan.outputs["remote_training"]
    private = any_plan.profile == "production"
    assert out["assign_public_ip"] is not private
    kind = "private" if private else "public"
    assert out["subnet_ids"] == [f"network-{kind}-0-id", f"network-{kind}-1-id"]
    assert out["security_group_id"] == "training-sg-id"
    assert out["log_group"] == "/mlrig/plan/training"
    assert out["task_role_arn"].endswith(":role/training-task-role")
    assert out["execution_role_arn"].endswith(":role/training-execution-role")


def test_the_outputs_are_published_for_ci_without_a_secret(any_plan) -> None:
    parameter = any_plan.one("aws:ssm/parameter:Parameter", "training-outputs").inputs
    assert (parameter["name"], parameter["type"]) == ("/mlrig/plan/remote-training", "String")
    assert json.loads(parameter["insecureValue"]) == any_plan.outputs["remote_training"]
    read = statement(any_plan.one(POLICY, "ci-training-policy"), "ReadTrainingOutputs")
    assert read["Resource"] == (
        "arn:aws:ssm:us-east-1:123456789012:parameter/mlrig/plan/remote-training"
    )


# Accepted findings, each with its reason. ECS's agent needs a registry token to pull the
# image (AWS's own AmazonECSTaskExecutionRolePolicy grants the same): the community auditor
# flags every action that returns a credential. CI passes the two training roles (named, to
# ECS only: iam:PassRole is a permissions-management action to the auditor). ListTasks has
# no resource that applies to Fargate: "*" with the ecs:cluster condition (parliament does
# not read conditions; the house rules check it is there).
ACCEPTED = {
    ("training-execution-policy", "CREDENTIALS_EXPOSURE: "),
    ("ci-training-policy", "PERMISSIONS_MANAGEMENT_ACTIONS: "),
    ("ci-training-policy", "RESOURCE_STAR: ['ecs:ListTasks']"),
}


@pytest.mark.parametrize("name", TRAINING_POLICIES)
def test_every_training_policy_is_clean_for_parliament(name: str) -> None:
    res = make_plan("small").one(POLICY, name)
    found = {(res.name, f) for f in parliament_findings(res.inputs["policy"])}
    assert found - ACCEPTED == set()


def test_the_house_rules_catch_an_unconditioned_list_tasks() -> None:
    plan = make_plan("small")
    assert house_policy.violations(plan.resources) == []
    res = plan.one(POLICY, "ci-training-policy")
    doc = policy_doc(res)
    for st in doc["Statement"]:
        st.pop("Condition", None) if st["Sid"] == "ListTrainingTasks" else None
    broken = type(res)(res.type, res.name, {**res.inputs, "policy": json.dumps(doc)})
    assert house_policy.scoped_iam([broken]) == [
        "ci-training-policy: Resource '*' for ['ecs:ListTasks']"
    ]


def test_stack_up_records_the_export_as_the_contracts_compute(any_plan) -> None:
    """What `stack up --aws` writes to outputs.json (schema 2) from the program's exports."""
    from mlrig.contract import AwsCompute
    from mlrig.core.stack.aws.stack import to_stack_outputs

    outputs = to_stack_outputs("plan", any_plan.outputs)
    assert outputs.compute == AwsCompute(**any_plan.outputs["remote_training"])
    phase_one = {k: v for k, v in any_plan.outputs.items() if k != "remote_training"}
    assert to_stack_outputs("plan", phase_one).compute is None
