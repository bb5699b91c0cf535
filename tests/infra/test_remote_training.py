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
from tests.helpers import iam_allows, make_plan, parliament_findings, policy_doc, statement

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
    assert watch["Action"] == "ecs:DescribeTasks"
    stop = statement(policy, "StopTrainingTasks")
    assert (stop["Action"], stop["Resource"]) == ("ecs:StopTask", watch["Resource"])
    assert stop["Condition"] == {
        **run["Condition"],
        "StringLike": {"aws:ResourceTag/mlrig.project": "*"},
    }
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


# -- what CI calls, as the CI role (ci-policy + ci-training-policy) --------------------------
ACCOUNT = "arn:aws:ecs:us-east-1:123456789012"
TASK_HEX = "0123456789abcdef0123456789abcdef"
TRAINING_DEF = f"{ACCOUNT}:task-definition/mlrig-plan-train-churn-0123456789ab:1"
TRAINING_TASK = f"{ACCOUNT}:task/mlflow-cluster/{TASK_HEX}"
STORE = f"{BUCKET_ARN}/mlrig-remote/churn"
ROLES = "arn:aws:iam::123456789012:role"
TO_ECS = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
TAGGED = {"aws:ResourceTag/mlrig.project": "churn"}


def _ci(plan) -> list[dict]:  # type: ignore[type-arg]
    return [policy_doc(plan.one(POLICY, name)) for name in ("ci-policy", "ci-training-policy")]


def _calls(cluster: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every AWS call `mlrig retrain --remote` makes as CI's role (submit, follow, attach,
    apply), and those of the generated workflow's own steps (the ci-pending object, the
    task records' listing, DescribeTasks by the task's ARN): action, resource, context."""
    on = {"ecs:cluster": cluster}
    return [
        (
            "ssm:GetParameter",
            f"{ACCOUNT.replace(':ecs:', ':ssm:')}:parameter/mlrig/plan/remote-training",
            {},
        ),
        ("ecr:GetAuthorizationToken", "*", {}),
        *[
            (f"ecr:{verb}", MODELS_ARN, {})
            for verb in (
                "DescribeImages",  # the trainer image's reuse check (by tag, then digest)
                "BatchCheckLayerAvailability",
                "InitiateLayerUpload",
                "UploadLayerPart",
                "CompleteLayerUpload",
                "PutImage",
            )
        ],
        ("ecs:ListTasks", "*", on),
        ("ecs:DescribeTasks", TRAINING_TASK, on),
        ("ecs:RegisterTaskDefinition", TRAINING_DEF, {}),
        ("ecs:TagResource", TRAINING_DEF, {"ecs:CreateAction": "RegisterTaskDefinition"}),
        ("iam:PassRole", f"{ROLES}/training-task-role", TO_ECS),
        ("iam:PassRole", f"{ROLES}/training-execution-role", TO_ECS),
        ("ecs:RunTask", TRAINING_DEF, on),
        ("ecs:TagResource", TRAINING_TASK, {"ecs:CreateAction": "RunTask"}),
        ("ecs:StopTask", TRAINING_TASK, {**on, **TAGGED}),  # a lost race, Ctrl-C
        ("logs:GetLogEvents", f"{LOG_GROUP_ARN}:log-stream:train/trainer/{TASK_HEX}", {}),
        *[
            (f"s3:{verb}", f"{STORE}/{key}", {})
            for verb in ("PutObject", "GetObject", "DeleteObject")
            for key in (
                f"{'ab' * 16}/source.bundle",
                f"{'ab' * 16}/result.json",
                f"tasks/{TASK_HEX}.json",
                "ci-pending",
            )
        ],
        ("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "mlrig-remote/churn/tasks/"}),
        ("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "mlrig-remote/churn/ci-pending"}),
        ("s3:GetObject", f"{BUCKET_ARN}/dvc/files/md5/ab/cdef", {}),  # apply's dvc pull
    ]


def test_the_ci_role_may_make_every_call_a_remote_retrain_in_ci_makes(any_plan) -> None:
    ci = _ci(any_plan)
    cluster = any_plan.outputs["remote_training"]["cluster_arn"]
    refused = [call for call in _calls(cluster) if not iam_allows(ci, *call)]
    assert refused == []


def test_the_ci_role_reaches_no_further_than_the_training_resources(any_plan) -> None:
    ci = _ci(any_plan)
    cluster = any_plan.outputs["remote_training"]["cluster_arn"]
    other = f"{ACCOUNT}:cluster/other"
    on = {"ecs:cluster": cluster}
    server_task = f"{ACCOUNT}:task/mlflow-cluster/{'f' * 32}"
    beyond = [
        ("ecs:RunTask", f"{ACCOUNT}:task-definition/mlflow-server:3", on),  # not training's
        ("ecs:RunTask", TRAINING_DEF, {"ecs:cluster": other}),
        ("ecs:RegisterTaskDefinition", f"{ACCOUNT}:task-definition/mlrig-other-train-x:1", {}),
        ("ecs:StopTask", server_task, on),  # the tracking server's task: untagged
        ("ecs:StopTask", f"{ACCOUNT}:task/other/{TASK_HEX}", {"ecs:cluster": other, **TAGGED}),
        ("ecs:DescribeTasks", f"{ACCOUNT}:task/other/{TASK_HEX}", {"ecs:cluster": other}),
        ("ecs:ListTasks", "*", {"ecs:cluster": other}),
        ("ecs:TagResource", server_task, {}),  # tagging after creation
        ("ecs:UpdateService", f"{ACCOUNT}:service/mlflow-cluster/mlflow", on),
        ("iam:PassRole", f"{ROLES}/mlflow-task-role", TO_ECS),
        ("iam:PassRole", f"{ROLES}/training-task-role", {"iam:PassedToService": "lambda"}),
        ("logs:GetLogEvents", LOG_GROUP_ARN.replace("training", "mlflow") + ":log-stream:x", {}),
        ("ssm:GetParameter", f"{ACCOUNT.replace(':ecs:', ':ssm:')}:parameter/mlrig/plan/x", {}),
        ("s3:GetObject", f"{BUCKET_ARN}/mlflow-artifacts/1/model.pkl", {}),
        ("s3:PutObject", f"{BUCKET_ARN}/elsewhere/mlrig-remote/x", {}),
        ("s3:ListBucket", BUCKET_ARN, {"s3:prefix": "mlflow-artifacts/"}),
        ("s3:ListBucket", BUCKET_ARN, {}),  # the whole bucket
        ("s3:DeleteBucket", BUCKET_ARN, {}),
        ("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:x", {}),
    ]
    allowed = [call for call in beyond if iam_allows(ci, *call)]
    assert allowed == []


def test_the_stop_condition_names_the_tag_the_aws_backend_puts_on_tasks() -> None:
    from mlrig.core.compute import aws as aws_backend
    from mlrig.infra.config import TRAINING_PROJECT_TAG

    assert aws_backend.PROJECT_TAG == TRAINING_PROJECT_TAG


def test_iam_allows_reads_conditions_and_denies() -> None:
    """The evaluator the two tests above rest on: a condition key the request lacks fails
    its statement, an explicit Deny wins, an operator it cannot read is refused."""
    allow = {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/p/*",
        "Condition": {"StringLike": {"aws:ResourceTag/k": "*"}},
    }
    doc = {"Statement": [allow]}
    assert iam_allows([doc], "s3:getobject", "arn:aws:s3:::b/p/x", {"aws:ResourceTag/k": "v"})
    assert not iam_allows([doc], "s3:GetObject", "arn:aws:s3:::b/p/x")
    assert not iam_allows([doc], "s3:GetObject", "arn:aws:s3:::b/q/x", {"aws:ResourceTag/k": "v"})
    deny = {**allow, "Effect": "Deny", "Condition": {}}
    assert not iam_allows(
        [doc, {"Statement": deny}], "s3:GetObject", "arn:aws:s3:::b/p/x", {"aws:ResourceTag/k": "v"}
    )
    odd = {"Statement": [{**allow, "Condition": {"NumericLessThan": {"k": "1"}}}]}
    with pytest.raises(AssertionError, match="NumericLessThan"):
        iam_allows([odd], "s3:GetObject", "arn:aws:s3:::b/p/x", {"k": "0"})


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
