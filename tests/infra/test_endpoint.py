"""The endpoint program under Pulumi mocks: a Lambda container function by digest, its alias
`live` (weighted for a canary), the keyed route on the base stack's HTTP API, the alarms,
least-privilege roles, the warm variant; and that it holds only endpoint resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.stack import endpoint_plan
from mlrig.core.stack import plan as plans
from mlrig.infra.endpoint.config import EndpointConfig, function_log_group, warm_log_group
from mlrig.infra.endpoint.refs import RefNames, names
from tests.helpers import DOMAIN, make_plan, schema_problems, statement
from tests.helpers import ENDPOINT_IMAGE as IMAGE
from tests.helpers import endpoint_plan as endpoint_plan_of

REGION = "us-east-1"
DIGEST = "sha256:" + "cd" * 32
FUNCTION = "aws:lambda/function:Function"
ALIAS = "aws:lambda/alias:Alias"
ROUTE = "aws:apigatewayv2/route:Route"
POLICY = "aws:iam/rolePolicy:RolePolicy"


def _plan(**changes: Any) -> tuple[plans.Plan, tuple[Any, ...]]:
    return endpoint_plan_of(**changes)


def plan(**changes: Any) -> plans.Plan:
    return _plan(**changes)[0]


def test_the_function_runs_the_image_by_digest_and_publishes_versions() -> None:
    fn = plan().one(FUNCTION, "churn-function").inputs
    assert fn["packageType"] == "Image"
    assert fn["imageUri"] == IMAGE and "@sha256:" in fn["imageUri"]
    assert fn["publish"] is True
    assert fn["name"] == "mlrig-plan-ep-churn"
    assert fn["memorySize"] == 1024 and fn["timeout"] == 29
    assert fn["loggingConfig"]["logGroup"] == "/aws/lambda/mlrig-plan-ep-churn"
    assert fn["loggingConfig"]["logGroup"] == function_log_group("plan", "churn")  # deploy logs
    assert fn["environment"]["variables"]["MLRIG_BASE_PATH"] == "/endpoints/churn"


def test_the_alias_serves_the_new_version_without_a_canary() -> None:
    alias = plan().one(ALIAS).inputs
    assert alias["name"] == "live"
    assert alias["functionVersion"] == "1"  # the version the image published (mocked)
    assert "routingConfig" not in alias


def test_a_canary_weights_the_new_version_beside_the_stable_one() -> None:
    planned = plan(stable_version="4", canary_percent=10)
    alias = planned.one(ALIAS).inputs
    assert alias["functionVersion"] == "4"
    assert alias["routingConfig"] == {"additionalVersionWeights": {"1": 0.1}}
    assert planned.outputs["canary_percent"] == 10
    # the canary's alarms watch only the version it runs
    for alarm in planned.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.inputs["dimensions"]["ExecutedVersion"] == "1"


def test_a_rollback_re_points_the_alias_to_an_older_version() -> None:
    alias = plan(stable_version="3").one(ALIAS).inputs
    assert alias["functionVersion"] == "3" and "routingConfig" not in alias


def test_the_route_is_on_the_base_api_behind_the_key_authorizer() -> None:
    planned = plan()
    route = planned.one(ROUTE).inputs
    assert route["routeKey"] == "ANY /endpoints/churn/{proxy+}"
    assert route["apiId"] == "a1b2c3d4e5"  # the base stack's API, through the reference
    assert route["authorizationType"] == "CUSTOM"
    assert route["authorizerId"] == "churn-authorizer-id"
    assert route["target"] == "integrations/churn-integration-id"
    auth = planned.one("aws:apigatewayv2/authorizer:Authorizer").inputs
    assert auth["authorizerType"] == "REQUEST"
    assert auth["authorizerPayloadFormatVersion"] == "2.0"
    assert auth["enableSimpleResponses"] is True
    assert auth["identitySources"] == ["$request.header.Authorization"]
    assert auth["authorizerUri"].endswith("function:mlrig-plan-ep-churn-auth/invocations")
    integration = planned.one("aws:apigatewayv2/integration:Integration").inputs
    assert integration["integrationType"] == "AWS_PROXY"
    assert integration["integrationUri"].endswith(":function:mlrig-plan-ep-churn:live")
    assert integration["payloadFormatVersion"] == "2.0"
    checker = planned.one(FUNCTION, "churn-auth-function").inputs
    assert checker["environment"]["variables"]["MLRIG_KEYS_PARAMETER"] == (
        "/mlrig/plan/endpoints/churn/keys"
    )


def test_api_gateway_may_invoke_only_the_alias_on_the_endpoints_path() -> None:
    perms = {p.name: p.inputs for p in plan().of_type("aws:lambda/permission:Permission")}
    invoke = perms["churn-invoke"]
    assert invoke["qualifier"] == "live" and invoke["principal"] == "apigateway.amazonaws.com"
    assert invoke["sourceArn"] == (
        "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/*/*/endpoints/churn/*"
    )
    assert perms["churn-auth-invoke"]["sourceArn"].endswith("/authorizers/churn-authorizer-id")


def test_a_public_endpoint_has_no_authorizer() -> None:
    planned = plan(public=True)
    assert planned.one(ROUTE).inputs["authorizationType"] == "NONE"
    assert planned.of_type("aws:apigatewayv2/authorizer:Authorizer") == []
    assert [r.name for r in planned.of_type(FUNCTION)] == ["churn-function"]


def test_a_canary_has_alarms_on_its_errors_and_p99_and_nothing_else_has() -> None:
    canary = plan(stable_version="4", canary_percent=10)
    alarms = {a.name: a.inputs for a in canary.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms) == {"churn-errors", "churn-p99"}
    assert alarms["churn-errors"]["dimensions"] == {
        "FunctionName": "mlrig-plan-ep-churn",
        "Resource": "mlrig-plan-ep-churn:live",
        "ExecutedVersion": "1",
    }
    assert alarms["churn-errors"]["statistic"] == "Sum"
    assert alarms["churn-p99"]["extendedStatistic"] == "p99"
    assert alarms["churn-p99"]["threshold"] == 2000
    assert canary.outputs["alarm_names"] == [
        "mlrig-plan-ep-churn-errors",
        "mlrig-plan-ep-churn-p99",
    ]
    # a standing alarm costs $0.10 a month: none outside a canary ($0 when idle)
    assert plan().of_type("aws:cloudwatch/metricAlarm:MetricAlarm") == []
    assert plan().outputs["alarm_names"] == []


def test_log_groups_have_a_retention() -> None:
    groups = plan().of_type("aws:cloudwatch/logGroup:LogGroup")
    assert len(groups) == 2 and all(g.inputs["retentionInDays"] == 14 for g in groups)


def test_the_function_role_writes_only_its_logs() -> None:
    doc = json.loads(plan().one(POLICY, "churn-policy").inputs["policy"])
    assert doc["Statement"] == [
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:"
            "/aws/lambda/mlrig-plan-ep-churn:*",
        }
    ]


def test_capture_adds_only_the_endpoints_prefix() -> None:
    write = statement(plan(capture_percent=10).one(POLICY, "churn-policy"), "WriteOwnCaptures")
    assert write["Action"] == "s3:PutObject"
    assert write["Resource"] == "arn:aws:s3:::mlrig-plan-20261126abcdef/captures/churn/*"


def test_a_capture_share_sets_the_images_capture_settings_and_its_write_right() -> None:
    p = plan(capture_percent=10, model="churn", model_version="7", run_id="ab" * 16)
    env = p.one(FUNCTION, "churn-function").inputs["environment"]["variables"]
    assert env["MLRIG_CAPTURE_PERCENT"] == "10"
    assert env["MLRIG_CAPTURE_DIR"] == "s3://mlrig-plan-20261126abcdef/captures/churn"
    assert (env["MLRIG_MODEL_NAME"], env["MLRIG_MODEL_VERSION"]) == ("churn", "7")
    assert env["MLRIG_IMAGE_DIGEST"] == IMAGE.rsplit("@", 1)[1]
    assert env["MLRIG_RUN_ID"] == "ab" * 16
    write = statement(p.one(POLICY, "churn-policy"), "WriteOwnCaptures")
    assert write["Resource"] == "arn:aws:s3:::mlrig-plan-20261126abcdef/captures/churn/*"
    off = plan().one(FUNCTION, "churn-function").inputs["environment"]["variables"]
    assert not any(k.startswith("MLRIG_CAPTURE") for k in off)
    with pytest.raises(ValueError, match="capture share 101 is not 0-100"):
        plan(capture_percent=101)


def test_a_warm_endpoint_captures_with_its_task_role_only_when_asked() -> None:
    """The same settings in the task's environment (its region for signing; credentials from
    ECS's endpoint), PutObject on the endpoint's prefix for the task role only with a share;
    without one, the task role has no policy at all."""
    p = plan(warm=True, capture_percent=10, model="churn", model_version="7", run_id="ab" * 16)
    (container,) = json.loads(
        p.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["MLRIG_CAPTURE_PERCENT"] == "10"
    assert env["MLRIG_CAPTURE_DIR"] == "s3://mlrig-plan-20261126abcdef/captures/churn"
    assert (env["MLRIG_MODEL_VERSION"], env["MLRIG_RUN_ID"]) == ("7", "ab" * 16)
    assert env["AWS_REGION"] == "us-east-1"
    assert not any(k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET") for k in env)
    write = statement(p.one(POLICY, "churn-task-policy"), "WriteOwnCaptures")
    assert write == {
        "Sid": "WriteOwnCaptures",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::mlrig-plan-20261126abcdef/captures/churn/*",
    }
    off = plan(warm=True)
    assert not [r for r in off.of_type(POLICY) if r.name == "churn-task-policy"]
    (plain,) = json.loads(
        off.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    assert not any(e["name"].startswith("MLRIG_CAPTURE") for e in plain["environment"])


def test_the_authorizer_reads_only_its_endpoints_keys() -> None:
    read = statement(plan().one(POLICY, "churn-auth-policy"), "ReadOwnKeyHashes")
    assert read["Action"] == "ssm:GetParameter"
    assert read["Resource"] == (
        "arn:aws:ssm:us-east-1:123456789012:parameter/mlrig/plan/endpoints/churn/keys"
    )


def test_warm_runs_a_fargate_service_behind_the_same_api() -> None:
    planned = plan(warm=True)
    assert planned.of_type(ALIAS) == []
    service = planned.one("aws:ecs/service:Service").inputs
    assert service["cluster"].endswith(":cluster/mlflow-cluster")  # the base stack's cluster
    assert service["serviceRegistries"]["registryArn"].endswith("churn-discovery")
    discovery = planned.one("aws:servicediscovery/service:Service").inputs
    assert discovery["namespaceId"] == "mlflow-front-ns-id"
    integration = planned.one("aws:apigatewayv2/integration:Integration").inputs
    assert integration["connectionType"] == "VPC_LINK"
    assert integration["connectionId"] == "mlflow-front-link-id"
    assert integration["requestParameters"] == {"overwrite:path": "/$request.path.proxy"}
    (container,) = json.loads(
        planned.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    assert container["image"] == IMAGE
    # where `mlrig deploy logs` reads a warm endpoint's output (endpoint config's name)
    assert container["logConfiguration"]["options"]["awslogs-group"] == (
        "/mlrig/plan/endpoints/churn"
    )
    assert container["logConfiguration"]["options"]["awslogs-group"] == warm_log_group(
        "plan", "churn"
    )
    sg = planned.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["ingress"][0]["securityGroups"] == ["mlflow-front-sg-id"]  # the link's, only
    pull = statement(planned.one(POLICY, "churn-execution-policy"), "PullModelImage")
    assert pull["Resource"] == "arn:aws:ecr:us-east-1:123456789012:repository/mlrig-plan/models"
    assert planned.one(ROUTE).inputs["authorizationType"] == "CUSTOM"


def test_a_warm_rollout_keeps_the_old_task_until_the_new_one_answers_ping() -> None:
    """No dropped request: the new task starts beside the old (max 200 %), the old one stops
    only once the new one counts as healthy (min 100 %), which its container health check
    (the image's healthcheck.py: GET /ping) decides; a new task that never gets healthy
    trips the circuit breaker, which rolls the service back. `up` waits for the service to
    settle, and the stack exports what the CLI asks ECS about afterwards."""
    planned = plan(warm=True)
    service = planned.one("aws:ecs/service:Service").inputs
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["deploymentMinimumHealthyPercent"] == 100
    assert service["deploymentMaximumPercent"] == 200
    assert service["waitForSteadyState"] is True
    assert service["desiredCount"] == 1
    (container,) = json.loads(
        planned.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    check = container["healthCheck"]
    assert check["command"] == ["CMD", "/opt/venv/bin/python", "-I", "/opt/mlrig/healthcheck.py"]
    assert check["retries"] >= 1 and check["startPeriod"] > 0
    # the file the command runs is the image's, and it asks the server's /ping
    serving = Path(__file__).parents[2] / "docker" / "serving"
    assert "COPY serve.py healthcheck.py /opt/mlrig/" in (serving / "Dockerfile.tmpl").read_text()
    assert '/ping"' in (serving / "healthcheck.py").read_text()
    assert planned.outputs["kind"] == "warm"
    assert planned.outputs["cluster_arn"].endswith(":cluster/mlflow-cluster")
    assert planned.outputs["task_definition_arn"].endswith(":task-definition/mlrig-plan-ep-churn:1")
    assert planned.outputs["service_name"]


@pytest.mark.parametrize(
    "bad",
    [
        {"image": IMAGE.replace(DIGEST, "latest").replace("@", ":")},  # a tag, not a digest
        {"image": IMAGE.replace("us-east-1", "eu-west-1")},  # another region's registry
        {"canary_percent": 10},  # no stable version to compare with
        {"stable_version": "4", "canary_percent": 100},
        {"endpoint": "Bad_Name"},
        {"warm": True, "stable_version": "2", "canary_percent": 5},
    ],
)
def test_bad_settings_are_refused_before_any_resource(bad: dict[str, Any]) -> None:
    settings = {"base_stack": "plan", "endpoint": "churn", "region": REGION, "image": IMAGE}
    with pytest.raises(ValueError):
        EndpointConfig(**{**settings, **bad})


# -- the endpoint stack holds only endpoint resources -------------------------------------------
BASE_TYPES_OWNED_BY_ENDPOINTS = {
    # types both programs use: the endpoint's own instances, named by the endpoint
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:apigatewayv2/integration:Integration",
    "aws:apigatewayv2/route:Route",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ecs/service:Service",
    "aws:ecs/taskDefinition:TaskDefinition",
    "aws:servicediscovery/service:Service",
}
BASE_ONLY = {
    "aws:s3/bucket:Bucket",
    "aws:rds/instance:Instance",
    "aws:ecr/repository:Repository",
    "aws:apigatewayv2/api:Api",
    "aws:apigatewayv2/vpcLink:VpcLink",
    "aws:ecs/cluster:Cluster",
    "aws:ec2/vpc:Vpc",
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace",
    "aws:secretsmanager/secret:Secret",
}


PROFILES = {"small": ("small", None), "production": ("production", DOMAIN)}


def _on(profile: str, **changes: Any) -> tuple[plans.Plan, tuple[Any, ...]]:
    """The endpoint planned on that profile's base outputs (as its StackReference reads)."""
    refs = endpoint_plan.sample_refs("plan", REGION, profile)
    settings: dict[str, Any] = {
        "base_stack": "plan",
        "endpoint": "churn",
        "region": REGION,
        "image": IMAGE,
        **changes,
    }
    planned, reads = endpoint_plan.run_endpoint_program(EndpointConfig(**settings), refs)
    return planned, tuple(reads)


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize(
    "variant", [{}, {"warm": True, "capture_percent": 10}], ids=["lambda", "warm"]
)
def test_the_endpoint_stack_holds_only_endpoint_resources(
    variant: dict[str, Any], profile: str
) -> None:
    """What a preview of the endpoint stack could touch: its own resources, all named for the
    endpoint, none of the base stack's (its names or its stateful types); the base stack is
    only read, through one StackReference. On both profiles: production's endpoints attach
    to the base stack's endpoints-only API, never to its ALB."""
    planned, reads = _on(profile, **variant)
    base = make_plan(*PROFILES[profile])
    base_names = {(r.type, r.name) for r in base.resources}
    mine = {(r.type, r.name) for r in planned.resources}
    assert mine and not mine & base_names
    assert not {t for t, _ in mine} & BASE_ONLY
    assert not any(t.startswith("aws:lb/") for t, _ in mine)
    assert all(name.startswith("churn-") for _, name in mine)
    assert {t for t, _ in mine} - BASE_TYPES_OWNED_BY_ENDPOINTS <= {
        FUNCTION,
        ALIAS,
        "aws:lambda/permission:Permission",
        "aws:apigatewayv2/authorizer:Authorizer",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
    }
    assert [(t, i["name"]) for t, _n, i in reads] == [
        ("pulumi:pulumi:StackReference", "organization/mlrig/plan")
    ]
    components = {t for t, _ in planned.components}
    assert components <= {
        "mlrig:aws:EndpointFunction",
        "mlrig:aws:EndpointRoute",
        "mlrig:aws:WarmEndpoint",
    }


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_base_stack_exports_what_endpoints_read(profile: str) -> None:
    """Both profiles export every name the endpoint program reads, with the values its
    offline plans assume (a missing one would fail `require_output` at deploy time)."""
    base = make_plan(*PROFILES[profile])
    refs = endpoint_plan.sample_refs("plan", REGION, profile)
    assert set(refs) == set(names())
    for name in refs:
        assert base.outputs[name] == refs[name], name


def test_production_endpoints_have_their_own_api_beside_the_alb() -> None:
    """The ALB stays the tracking server's: endpoints get a routeless HTTP API ($0 idle),
    a VPC link in the tasks' private subnets whose group reaches only the warm tasks' port
    inside the VPC, and a namespace for warm endpoints; warm tasks get no public IP."""
    base = make_plan("production", DOMAIN)
    assert base.outputs[RefNames.API_URL] != base.outputs["mlflow_tracking_uri"]
    api = base.one("aws:apigatewayv2/api:Api", "endpoints-api").inputs
    assert api == {"name": "mlrig-plan-endpoints", "protocolType": "HTTP", "tags": api["tags"]}
    assert [r.name for r in base.of_type("aws:apigatewayv2/route:Route")] == []
    assert base.one("aws:apigatewayv2/stage:Stage", "endpoints-stage").inputs[
        "defaultRouteSettings"
    ] == {"throttlingBurstLimit": 200, "throttlingRateLimit": 100}
    link = base.one("aws:apigatewayv2/vpcLink:VpcLink", "endpoints-link").inputs
    assert link["subnetIds"] == ["network-private-0-id", "network-private-1-id"]
    assert link["securityGroupIds"] == ["endpoints-link-sg-id"]
    group = base.one("aws:ec2/securityGroup:SecurityGroup", "endpoints-link-sg").inputs
    assert group["ingress"] == []
    assert [(e["fromPort"], e["toPort"], e["cidrBlocks"]) for e in group["egress"]] == [
        (5000, 5000, ["10.42.0.0/16"])
    ]
    assert base.outputs[RefNames.PUBLIC_IP] is False
    warm, _ = _on("production", warm=True)
    service = warm.one("aws:ecs/service:Service").inputs
    assert service["networkConfiguration"]["assignPublicIp"] is False
    assert service["networkConfiguration"]["subnets"] == base.outputs[RefNames.SUBNET_IDS]
    ingress = warm.one("aws:ec2/securityGroup:SecurityGroup").inputs["ingress"]
    assert ingress[0]["securityGroups"] == ["endpoints-link-sg-id"]
    # the small profile's endpoints keep sharing its front-door API: no second one
    assert make_plan("small").of_type("aws:apigatewayv2/api:Api")[0].name == "mlflow-front-api"
    assert len(make_plan("small").of_type("aws:apigatewayv2/api:Api")) == 1


def test_lambda_may_pull_only_for_this_stacks_endpoints() -> None:
    policy = make_plan("small").one(
        "aws:ecr/repositoryPolicy:RepositoryPolicy", "models-lambda-pull"
    )
    (st,) = json.loads(policy.inputs["policy"])["Statement"]
    assert st["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert st["Action"] == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert st["Condition"] == {
        "StringLike": {
            "aws:sourceArn": "arn:aws:lambda:us-east-1:123456789012:function:mlrig-plan-ep-*"
        }
    }
    assert policy.inputs["repository"] == "mlrig-plan/models"


@pytest.mark.parametrize(
    "variant",
    [{}, {"stable_version": "4", "canary_percent": 10}, {"warm": True, "capture_percent": 10}],
    ids=["lambda", "canary", "warm"],
)
def test_inputs_match_the_provider_types(variant: dict[str, Any]) -> None:
    """Every key of every input (nested too) is a field pulumi-aws knows (test_schema's walk)."""
    assert schema_problems(plan(**variant).resources) == []
    assert schema_problems(_on("production", **variant)[0].resources) == []
