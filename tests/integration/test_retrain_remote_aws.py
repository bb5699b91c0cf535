"""`mlrig retrain --remote` on an AWS stack, through the whole command, against moto's
standalone server (S3, ECR, ECS, Secrets Manager, CloudWatch Logs) and the real local MLflow.

The stack: its DVC bucket, ECR repository, cluster, network and log group in moto; its
tracking server the local stack's MLflow (its admin password in moto's Secrets Manager, the
repository's machine identity's password beside it, as `access add-machine` keeps it on AWS).

1. `retrain --remote --detach --json` (a subprocess): the trainer image found in ECR by its
   tag (DescribeImages: reused, not rebuilt), the commit bundled into the DVC bucket, the
   Fargate task run with the identity's secret as `valueFrom` (the password nowhere in the
   task definition or its overrides), the caller's record stored beside the bundle, the ARN
   as the last line's `task_id`.
2. The task: the real entrypoint (`python -m mlrig.core.compute.task`) run on this machine
   with exactly the environment ECS would give the container (RunTask's overrides as moto
   recorded them, plus the secret ECS would inject): it clones from the bundle in S3,
   retrains, and writes its result bundle and result.json back to S3.
3. `retrain --remote --attach TASK_ID` from a fresh clone (a later CI job): the record read
   from S3, the task followed to STOPPED, the result validated and applied (commit, champion,
   `mlrig.compute.*` tags with an estimated Fargate cost), every remote object removed.
4. A hostile result.json (another run's) applies nothing.

What this proves: the caller's and the task's sides of the AWS contract, request for request
as botocore validates them and moto answers them, with real git, DVC and MLflow. What it does
not: the container runtime (the entrypoint runs as a process here, not in Fargate), ECS
injecting the secret and the task role's credentials (the test passes both as ECS would),
IAM (moto enforces no policy), the awslogs driver (no log stream: `--attach` follows the
task's state only), a real exit code (moto reports 0 for every stopped container), and the
image push to ECR (the image is put there by manifest; pushing to the local stack's registry
is what tests/integration/test_retrain_remote.py proves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.helpers import VENV_BIN, environ_with, mlrig_on, repo_env, sh

pytestmark = pytest.mark.integration
PROJECT = "awsrig"
STACK = "cloudrig"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "mlrig-cloudrig-dvc"


def _transition(moto: str, times: int | None) -> None:
    """moto's ECS tasks stay RUNNING (times: describes per step), or advance one step per
    DescribeTasks (None) to STOPPED."""
    import requests

    body: dict[str, Any] = {"model_name": "ecs::task"}
    if times is not None:
        body["transition"] = {"progression": "manual", "times": times}
    path = "unset-transition" if times is None else "set-transition"
    resp = requests.post(f"{moto}/moto-api/state-manager/{path}", data=json.dumps(body), timeout=10)
    resp.raise_for_status()


@pytest.fixture(scope="module")
def cloud(
    local_stack: dict, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import boto3

    from mlrig import contract
    from mlrig.contract import AwsCompute, BasicAuth, DvcRemote, Mlflow, Registry, SecretRef
    from mlrig.core.access import identities
    from mlrig.core.shared import secrets
    from mlrig.core.shared.names import machine_user

    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_server,
        "MLRIG_AWS_ENDPOINT_URL": moto_server,
    }
    root = tmp_path_factory.mktemp("remote-aws")
    env = {**repo_env(local_stack["home"]), **aws}
    sh(root, str(VENV_BIN / "mlrig"), "init", PROJECT, "--stack", "local", "--no-input", env=env)
    repo = root / PROJECT
    # the stack's storage is the (moto) DVC bucket: the repository's remote and its source
    s3 = boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(
        Bucket=BUCKET,
        Key="dvc/incoming/patients.csv",
        Body=(repo / "data/raw/breast_cancer.csv").read_bytes(),
    )
    remote = sh(repo, "dvc", "remote", "default", env=env).strip()
    sh(repo, "dvc", "remote", "modify", remote, "url", f"s3://{BUCKET}/dvc", env=env)
    sh(repo, "dvc", "remote", "modify", remote, "endpointurl", moto_server, env=env)
    params = (repo / "params.yaml").read_text()
    source = yaml.safe_load(params)["ingest"]["source"]
    (repo / "params.yaml").write_text(
        params.replace(f"source: {source}", f"source: remote://{remote}/incoming/patients.csv", 1)
    )
    sh(repo, "git", "commit", "-qam", "Data from the stack's bucket", env=env)
    origin = root / f"{PROJECT}-origin.git"
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    sh(repo, "git", "remote", "add", "origin", str(origin), env=env)
    sh(repo, "git", "push", "-q", "origin", "main", env=env)

    def client(name: str) -> Any:
        return boto3.client(
            name,
            region_name=REGION,
            endpoint_url=moto_server,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    ec2, ecs, ecr, sm, logs = (client(n) for n in ("ec2", "ecs", "ecr", "secretsmanager", "logs"))
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # ENIs get names
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"t-{vpc}", Description="t", VpcId=vpc)
    cluster = ecs.create_cluster(
        clusterName=f"mlrig-{uuid.uuid4().hex[:8]}", capacityProviders=["FARGATE", "FARGATE_SPOT"]
    )["cluster"]["clusterArn"]
    log_group = f"/mlrig/{STACK}/training"
    logs.create_log_group(logGroupName=log_group)
    repository = f"mlrig-{STACK}/models"
    ecr.create_repository(repositoryName=repository)
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}"

    local = local_stack["outputs"]
    user = machine_user(PROJECT)
    with environ_with({"MLRIG_HOME": str(local_stack["home"])}):
        admin = sm.create_secret(
            Name=f"mlrig/{STACK}/mlflow-admin",
            SecretString=json.dumps({"password": secrets.resolve(local.mlflow.auth.password)}),
        )["ARN"]
        password = identities.local_secret_file("local", user).read_text().strip()
        outputs = contract.StackOutputs(
            name=STACK,
            kind="aws",
            region=REGION,
            dvc_remote=DvcRemote(url=f"s3://{BUCKET}/dvc", endpoint_url=moto_server, region=REGION),
            mlflow=Mlflow(
                tracking_uri=local.mlflow_tracking_uri,
                auth=BasicAuth(
                    username="admin",
                    password=SecretRef(source="aws-secretsmanager", ref=admin, key="password"),
                ),
            ),
            registry=Registry(kind="ecr", url=registry),
            ci_role_arn=f"arn:aws:iam::{ACCOUNT}:role/ci",
            compute=AwsCompute(
                cluster_arn=cluster,
                subnet_ids=[subnet],
                security_group_id=group["GroupId"],
                assign_public_ip=True,
                task_role_arn=f"arn:aws:iam::{ACCOUNT}:role/training-task",
                execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/training-execution",
                log_group=log_group,
            ),
        )
        contract.save(outputs)
        # what `access add-machine` keeps on an AWS stack: the identity's password by name
        sm.create_secret(Name=identities.aws_secret_name(STACK, user), SecretString=password)
    # the repository's trainer image, in ECR under the tag the installed mlrig computes (in a
    # process of its own: a checkout's egg-info in this one's path may name another version)
    tag = (
        sh(
            root,
            str(VENV_BIN / "python"),
            "-c",
            "import sys; from pathlib import Path; from mlrig.core.compute import image; "
            "print(image.image_tag(sys.argv[1], image.requirements_of(Path(sys.argv[2]))))",
            PROJECT,
            str(repo),
            env=env,
        )
        .strip()
        .splitlines()[-1]
        .rsplit(":", 1)[1]
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + uuid.uuid4().hex * 2, "size": 2},
            "layers": [],
        }
    )
    digest = ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)[
        "image"
    ]["imageId"]["imageDigest"]
    _transition(moto_server, 10**6)  # the task stays RUNNING until the test lets it stop
    try:
        yield {
            "repo": repo,
            "origin": origin,
            "root": root,
            "env": env,
            "aws": aws,
            "moto": moto_server,
            "ecs": ecs,
            "s3": s3,
            "cluster": cluster,
            "image": f"{registry}@{digest}",
            "password": password,
            "secret": identities.aws_secret_name(STACK, user),
            "tracking": local_stack["env"],
        }
    finally:
        _transition(moto_server, None)


def _keys(cloud: dict[str, Any]) -> list[str]:
    """What remote retrains keep in the bucket."""
    listed = cloud["s3"].list_objects_v2(Bucket=BUCKET, Prefix="mlrig-remote/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _run_task_as_ecs_would(cloud: dict[str, Any], arn: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint with the container's environment: RunTask's overrides as moto recorded
    them, the secret ECS injects from `valueFrom`, the task role's credentials (here moto's)."""
    task = cloud["ecs"].describe_tasks(cluster=cloud["cluster"], tasks=[arn])["tasks"][0]
    (override,) = task["overrides"]["containerOverrides"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    env.update(cloud["aws"])
    env["MLFLOW_TRACKING_PASSWORD"] = cloud["password"]
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
        HOME=str(cloud["root"] / "task-home"),
        DVC_NO_ANALYTICS="1",
    )
    assert override["command"][:3] == ["python", "-m", "mlrig.core.compute.task"]
    return subprocess.run(
        [sys.executable, *override["command"][1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_an_aws_remote_retrain_submits_runs_and_applies_from_a_fresh_clone(
    cloud: dict[str, Any],
) -> None:
    from mlflow import MlflowClient

    repo, env = cloud["repo"], cloud["env"]
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    proc = mlrig_on(
        repo, env, "retrain", "--remote", "--detach", "--json", "--spot", "--stack", STACK
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    submitted = json.loads(proc.stdout.strip().splitlines()[-1])
    arn = submitted["task_id"]
    assert submitted["backend"] == "aws" and arn.startswith("arn:aws:ecs:")
    task_id = arn.rsplit("/", 1)[1]
    assert f"--attach {task_id}" in submitted["attach"]
    assert "reused" in proc.stderr  # the trainer image came from ECR, by digest
    # the task as ECS runs it: the image by digest, the secret by reference only
    ecs = cloud["ecs"]
    task = ecs.describe_tasks(cluster=cloud["cluster"], tasks=[arn], include=["TAGS"])["tasks"][0]
    assert task["lastStatus"] == "RUNNING" and task["capacityProviderName"] == "FARGATE_SPOT"
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    (container,) = definition["taskDefinition"]["containerDefinitions"]
    assert container["image"] == cloud["image"]
    assert container["secrets"] == [
        {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": cloud["secret"]}
    ]
    recorded = json.dumps([definition, task], default=str)
    assert cloud["password"] not in recorded and cloud["password"] not in proc.stdout + proc.stderr
    (override,) = task["overrides"]["containerOverrides"]
    task_env = {e["name"]: e["value"] for e in override["environment"]}
    prefix = task_env["MLRIG_TASK_PREFIX"]
    assert prefix.startswith(f"s3://{BUCKET}/mlrig-remote/{PROJECT}/")
    assert task_env["MLRIG_TASK_SHA"] == head and "AWS_PROFILE" not in task_env
    run_id = prefix.rsplit("/", 1)[1]
    assert _keys(cloud) == [
        f"mlrig-remote/{PROJECT}/{run_id}/source.bundle",
        f"mlrig-remote/{PROJECT}/tasks/{task_id}.json",
    ]
    # a second submit while it runs is one line, and runs nothing
    again = mlrig_on(repo, env, "retrain", "--remote", "--detach", "--stack", STACK)
    assert again.returncode != 0 and f"already running (task {task_id})" in again.stderr
    assert "Traceback" not in again.stderr
    assert len(ecs.list_tasks(cluster=cloud["cluster"])["taskArns"]) == 1

    # the task: the real entrypoint, with the container's environment
    ran = _run_task_as_ecs_would(cloud, arn)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Running stage 'train'" in ran.stdout and cloud["password"] not in ran.stdout
    assert f"mlrig-remote/{PROJECT}/{run_id}/result.json" in _keys(cloud)
    # nothing is published until the caller applies it
    assert sh(cloud["origin"], "git", "rev-parse", "main", env=env).strip() == head

    # a later job: a fresh clone attaches by the task's ID, from the record in S3
    fresh = cloud["root"] / "fresh"
    sh(cloud["root"], "git", "clone", "-q", str(cloud["origin"]), str(fresh), env=env)
    _transition(cloud["moto"], None)  # the task now reaches STOPPED (moto: exit code 0)
    applied = mlrig_on(
        fresh,
        env,
        "retrain",
        "--remote",
        "--attach",
        task_id,
        "--json",
        "--no-push-image",
        "--stack",
        STACK,
    )
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    result = json.loads(applied.stdout.strip().splitlines()[-1])
    assert result["changed"] and result["decision"] == "promoted" and result["version"] == "1"
    new_head = sh(fresh, "git", "rev-parse", "HEAD", env=env).strip()
    assert result["commit"] == new_head
    assert sh(fresh, "git", "rev-parse", "HEAD^", env=env).strip() == head
    assert sh(cloud["origin"], "git", "rev-parse", "main", env=env).strip() == new_head
    client = MlflowClient(tracking_uri=cloud["tracking"]["MLFLOW_TRACKING_URI"])
    with environ_with(cloud["tracking"]):
        version = client.get_model_version_by_alias(PROJECT, "champion")
        tags = client.get_run(version.run_id).data.tags
    assert version.version == "1"
    assert tags["mlrig.compute.backend"] == "aws" and tags["mlrig.compute.task"] == arn
    assert tags["mlrig.compute.spot"] == "requested"
    assert float(tags["mlrig.compute.cost_usd"]) > 0  # Spot's list price for its wall time
    assert tags["mlrig.compute.image"] == cloud["image"]
    assert _keys(cloud) == []  # bundles, result and record: gone once applied
    assert not (fresh / ".dvc/tmp/mlrig-remote.json").exists()


def test_a_result_of_another_run_applies_nothing(cloud: dict[str, Any]) -> None:
    repo, env = cloud["repo"], cloud["env"]
    sh(repo, "git", "pull", "-q", "origin", "main", env=env)
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    _transition(cloud["moto"], 10**6)
    proc = mlrig_on(repo, env, "retrain", "--remote", "--detach", "--json", "--stack", STACK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    arn = json.loads(proc.stdout.strip().splitlines()[-1])["task_id"]
    (bundle,) = [k for k in _keys(cloud) if k.endswith("source.bundle")]
    hostile = {
        "schema_version": 1,
        "retrain_id": "f" * 32,  # another run's
        "submitted": head,
        "ok": True,
        "changed": True,
        "commit": "e" * 40,
        "started": 0.0,
        "finished": 1.0,
    }
    key = bundle.replace("source.bundle", "result.json")
    cloud["s3"].put_object(Bucket=BUCKET, Key=key, Body=json.dumps(hostile).encode())
    _transition(cloud["moto"], None)
    applied = mlrig_on(repo, env, "retrain", "--remote", "--attach", arn, "--stack", STACK)
    assert applied.returncode != 0
    assert "another run's: nothing applied" in applied.stderr
    assert "Traceback" not in applied.stderr
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == head
    assert sh(cloud["origin"], "git", "rev-parse", "main", env=env).strip() == head
    assert _keys(cloud) == []


def test_the_network_gone_while_following_names_the_reattach_and_the_task_goes_on(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: following a submitted task with the AWS endpoint gone (a loopback port
    nothing listens on) is one line naming the command that reattaches, and the task runs on;
    that command, once the network is back, applies (here: undoes) the run."""
    import socket

    from mlrig.adapters import aws
    from mlrig.core.compute import remote

    repo, env = cloud["repo"], cloud["env"]
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    _transition(cloud["moto"], 10**6)
    proc = mlrig_on(repo, env, "retrain", "--remote", "--detach", "--json", "--stack", STACK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    arn = json.loads(proc.stdout.strip().splitlines()[-1])["task_id"]
    task_id = arn.rsplit("/", 1)[1]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    aws.session.cache_clear()
    sub = remote.attach(repo, task_id, stack=STACK, log=lambda _m: None)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing answers there
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MLRIG_AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.session.cache_clear()
    with pytest.raises(remote.FollowBroken) as broke:
        remote.follow(sub, out=lambda _l: None, ask_stop=lambda: True)
    line = broke.value.one_line()
    assert f"following task {task_id} broke" in line and "the task goes on" in line
    assert f"mlrig retrain --remote --attach {task_id} --repo {repo}" in line
    status = cloud["ecs"].describe_tasks(cluster=cloud["cluster"], tasks=[arn])["tasks"][0]
    assert status["lastStatus"] == "RUNNING"  # nothing stopped it
    # the network is back: the printed command picks the run up (no result: nothing applied)
    _transition(cloud["moto"], None)
    again = mlrig_on(repo, env, "retrain", "--remote", "--attach", task_id, "--stack", STACK)
    assert again.returncode != 0 and "the remote retrain failed" in again.stderr
    assert "Traceback" not in again.stderr
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == head
    assert _keys(cloud) == []
