"""The MLflow tracking server: private encrypted DB, secrets, container contract, HTTPS."""

from __future__ import annotations

import json

from mlrig.infra.config import server_log_group
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from tests.helpers import DOMAIN, make_plan, statement

RDS = "aws:rds/instance:Instance"
SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SG = "aws:ec2/securityGroup:SecurityGroup"
BUCKET = "mlrig-plan-20261126abcdef"
DB_HOST = "mlflow-db.cabcdefghijk.us-east-1.rds.amazonaws.com"


def secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"


def test_database_small(small) -> None:
    db = small.one(RDS).inputs
    assert (db["engine"], db["engineVersion"], db["instanceClass"]) == (
        "postgres",
        "16",
        "db.t4g.micro",
    )
    assert db["publiclyAccessible"] is False and db["storageEncrypted"] is True
    assert db["multiAz"] is False and db["deletionProtection"] is False
    # Tracking data is kept as a snapshot on teardown, unless purged.
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"] == "mlrig-plan-final"
    assert db["allocatedStorage"] == 20 and db["storageType"] == "gp3"


def test_database_production(production) -> None:
    db = production.one(RDS).inputs
    assert db["instanceClass"] == "db.t4g.medium"
    assert db["publiclyAccessible"] is False and db["storageEncrypted"] is True
    assert db["multiAz"] is True and db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False
    assert db["finalSnapshotIdentifier"] == "mlrig-plan-final"
    assert db["backupRetentionPeriod"] == 14


def test_database_only_in_private_subnets_and_from_tasks(any_plan) -> None:
    group = any_plan.one("aws:rds/subnetGroup:SubnetGroup").inputs
    assert group["subnetIds"] == ["network-private-0-id", "network-private-1-id"]
    db_sg = any_plan.one(SG, "mlflow-db-sg").inputs
    assert db_sg["ingress"] == [
        {
            "protocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "securityGroups": ["mlflow-task-sg-id"],
            "description": "tracking server tasks",
        }
    ]
    assert db_sg["egress"] == []
    assert any_plan.one(RDS).inputs["vpcSecurityGroupIds"] == ["mlflow-db-sg-id"]


def test_passwords_live_in_secrets_manager(any_plan) -> None:
    versions = {
        v.name: v.inputs for v in any_plan.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }
    assert set(versions) == {
        "mlflow-admin-password-value",
        "mlflow-flask-secret-value",
        "mlflow-db-password-value",
    }
    assert versions["mlflow-db-password-value"]["secretId"] == secret_arn("mlflow-db-password")
    assert any_plan.outputs["mlflow_admin_secret_arn"] == secret_arn("mlflow-admin-password")


def _container(plan) -> dict:
    (container,) = json.loads(plan.one(TASK).inputs["containerDefinitions"])
    return container


def test_container_definition_comes_from_the_shared_contract(any_plan) -> None:
    c = _container(any_plan)
    profile = any_plan.profile
    spec = ts_container.container_spec(
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mlrig-plan/mlflow-server:plan",
        db_host=DB_HOST,
        db_name="mlflow",
        db_user="mlflow",
        artifacts_destination=f"s3://{BUCKET}/mlflow-artifacts",
        profile=profile,
        allowed_hosts=c["command"][-1].split(","),
    )
    assert c["image"] == spec.image and c["user"] == ts_container.CONTAINER_USER
    assert c["command"] == list(spec.command)
    assert c["command"][:2] == ["--app-name", "basic-auth"]
    cmd = c["command"]
    args = {
        flag: cmd[i + 1]
        for i, flag in enumerate(cmd[:-1])
        if flag != "--serve-artifacts" and flag.startswith("--")
    }
    assert args["--backend-store-uri"] == (
        f"postgresql://mlflow@{DB_HOST}:5432/mlflow?sslmode=require"
    )
    assert args["--artifacts-destination"] == f"s3://{BUCKET}/mlflow-artifacts"
    assert "*.execute-api.us-east-1.amazonaws.com" in args["--allowed-hosts"].split(",")
    assert "--serve-artifacts" in c["command"]
    assert c["portMappings"] == [{"containerPort": ts.CONTAINER_PORT, "protocol": "tcp"}]
    assert {e["name"]: e["value"] for e in c["environment"]} == spec.env
    assert c["secrets"] == [
        {"name": ts.ENV_ADMIN_PASSWORD, "valueFrom": secret_arn("mlflow-admin-password")},
        {"name": ts.ENV_FLASK_SECRET, "valueFrom": secret_arn("mlflow-flask-secret")},
        {"name": ts_container.ENV_PG_PASSWORD, "valueFrom": secret_arn("mlflow-db-password")},
    ]
    assert ts.HEALTH_PATH in c["healthCheck"]["command"][-1]
    assert c["logConfiguration"]["options"]["awslogs-group"] == "/mlrig/plan/mlflow"
    assert server_log_group("plan") == "/mlrig/plan/mlflow"  # where `mlrig access log` reads
    # The secret values appear nowhere in the task definition.
    assert "generated-by-mlrig-stack-up" not in json.dumps(c)


def test_task_size_per_profile(any_plan) -> None:
    task = any_plan.one(TASK).inputs
    cpu, memory, _ = ts_container.CONTAINER_SIZES[any_plan.profile]
    assert (task["cpu"], task["memory"]) == (str(cpu), str(memory))
    assert task["family"] == "mlrig-plan-mlflow"
    assert task["networkMode"] == "awsvpc" and task["requiresCompatibilities"] == ["FARGATE"]
    assert task["taskRoleArn"] == "arn:aws:iam::123456789012:role/mlflow-task-role"
    assert task["executionRoleArn"] == "arn:aws:iam::123456789012:role/mlflow-execution-role"


def test_task_role_is_limited_to_the_artifact_prefix(any_plan) -> None:
    policy = any_plan.one("aws:iam/rolePolicy:RolePolicy", "mlflow-task-policy")
    listing = statement(policy, "ListPrefix")
    assert listing["Resource"] == f"arn:aws:s3:::{BUCKET}"
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": ["mlflow-artifacts", "mlflow-artifacts/*"]}
    }
    objects = statement(policy, "ObjectsInPrefix")
    assert objects["Resource"] == f"arn:aws:s3:::{BUCKET}/mlflow-artifacts/*"
    assert "s3:PutObject" in objects["Action"] and "s3:*" not in objects["Action"]


def test_execution_role_reads_only_its_secrets(any_plan) -> None:
    policy = any_plan.one("aws:iam/rolePolicy:RolePolicy", "mlflow-execution-policy")
    assert sorted(statement(policy, "ReadSecrets")["Resource"]) == sorted(
        secret_arn(n)
        for n in ("mlflow-admin-password", "mlflow-flask-secret", "mlflow-db-password")
    )
    assert statement(policy, "PullServerImage")["Resource"] == (
        "arn:aws:ecr:us-east-1:123456789012:repository/mlrig-plan/mlflow-server"
    )
    assert statement(policy, "WriteLogs")["Resource"] == (
        "arn:aws:logs:us-east-1:123456789012:log-group:/mlrig/plan/mlflow:*"
    )


def test_small_runs_one_spot_task_in_public_subnets_behind_http_api(small) -> None:
    svc = small.one(SERVICE).inputs
    assert svc["desiredCount"] == 1
    assert svc["capacityProviderStrategies"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert "launchType" not in svc
    assert svc["networkConfiguration"] == {
        "subnets": ["network-public-0-id", "network-public-1-id"],
        "securityGroups": ["mlflow-task-sg-id"],
        "assignPublicIp": True,
    }
    assert svc["serviceRegistries"] == {
        "registryArn": "arn:aws:servicediscovery:us-east-1:123456789012:mlflow-front-discovery",
        "containerName": "mlflow",
        "containerPort": 5000,
    }
    assert small.of_type("aws:ec2/natGateway:NatGateway") == []
    assert small.of_type("aws:lb/loadBalancer:LoadBalancer") == []
    integration = small.one("aws:apigatewayv2/integration:Integration").inputs
    assert (integration["connectionType"], integration["integrationType"]) == (
        "VPC_LINK",
        "HTTP_PROXY",
    )
    assert small.outputs["mlflow_tracking_uri"] == (
        "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    )


def test_task_security_group_admits_only_the_front_door(any_plan) -> None:
    sg = any_plan.one(SG, "mlflow-task-sg").inputs
    assert sg["ingress"] == [
        {
            "protocol": "tcp",
            "fromPort": 5000,
            "toPort": 5000,
            "securityGroups": ["mlflow-front-sg-id"],
            "description": "front door",
        }
    ]
    assert {(r["fromPort"], tuple(r["cidrBlocks"])) for r in sg["egress"]} == {
        (443, ("0.0.0.0/0",)),
        (5432, ("10.42.0.0/16",)),
    }


def test_production_two_tasks_private_behind_https_alb(production) -> None:
    svc = production.one(SERVICE).inputs
    assert svc["desiredCount"] == 2 and svc["launchType"] == "FARGATE"
    assert svc["networkConfiguration"]["assignPublicIp"] is False
    assert svc["networkConfiguration"]["subnets"] == [
        "network-private-0-id",
        "network-private-1-id",
    ]
    assert svc["loadBalancers"] == [
        {
            "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:mlflow-front-tg",
            "containerName": "mlflow",
            "containerPort": 5000,
        }
    ]
    assert len(production.of_type("aws:ec2/natGateway:NatGateway")) == 2
    listener = production.one("aws:lb/listener:Listener").inputs
    assert (listener["port"], listener["protocol"]) == (443, "HTTPS")
    assert listener["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listener["certificateArn"] == ("arn:aws:acm:us-east-1:123456789012:mlflow-front-cert")
    alb = production.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["dropInvalidHeaderFields"] is True and alb["enableDeletionProtection"] is True
    assert production.one(SG, "mlflow-front-sg").inputs["ingress"] == [
        {
            "protocol": "tcp",
            "fromPort": 443,
            "toPort": 443,
            "cidrBlocks": ["0.0.0.0/0"],
            "description": "HTTPS",
        }
    ]
    assert production.outputs["mlflow_tracking_uri"] == f"https://{DOMAIN}"


def test_custom_domain_on_small_uses_the_http_api_with_acm() -> None:
    plan = make_plan("small", DOMAIN)
    domain = plan.one("aws:apigatewayv2/domainName:DomainName").inputs
    assert domain["domainName"] == DOMAIN
    assert domain["domainNameConfiguration"] == {
        "certificateArn": "arn:aws:acm:us-east-1:123456789012:mlflow-front-cert",
        "endpointType": "REGIONAL",
        "securityPolicy": "TLS_1_2",
    }
    assert plan.one("aws:apigatewayv2/api:Api").inputs["disableExecuteApiEndpoint"] is True
    alias = plan.one("aws:route53/record:Record", "mlflow-front-alias").inputs
    assert alias["zoneId"] == "Z0123456789PLAN" and alias["type"] == "A"
    assert plan.outputs["mlflow_tracking_uri"] == f"https://{DOMAIN}"


def test_production_without_domain_falls_back_to_the_http_api() -> None:
    plan = make_plan("production")
    assert plan.of_type("aws:lb/loadBalancer:LoadBalancer") == []
    assert plan.outputs["mlflow_tracking_uri"].endswith(".execute-api.us-east-1.amazonaws.com")
    assert plan.one(SERVICE).inputs["networkConfiguration"]["assignPublicIp"] is False


def test_phase_one_has_no_tracking_server() -> None:
    plan = make_plan("small", mlflow_image=None)
    assert plan.of_type(SERVICE) == [] and plan.of_type(RDS) == []
    assert "mlflow_tracking_uri" not in plan.outputs
    assert plan.outputs["mlflow_server_repository_url"].endswith("/mlrig-plan/mlflow-server")


def test_purge_lifts_deletion_protection_but_keeps_the_final_snapshot() -> None:
    plan = make_plan("production", DOMAIN, force_delete=True)
    db = plan.one(RDS).inputs
    assert db["deletionProtection"] is False
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"] == "mlrig-plan-final"
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["enableDeletionProtection"] is False


def test_small_purge_deletes_without_snapshot_and_down_names_its_snapshot() -> None:
    purged = make_plan("small", force_delete=True).one(RDS).inputs
    assert purged["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in purged
    kept = make_plan("small", final_snapshot_id="mlrig-plan-final-202611261300").one(RDS).inputs
    assert kept["finalSnapshotIdentifier"] == "mlrig-plan-final-202611261300"
