"""`mlrig stack plan`: the --json format other tools read, the table, bad input, costs."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from mlrig.main import app

TOKEN = re.compile(r"^aws:[a-zA-Z0-9]+/[a-zA-Z0-9]+:[A-Z][A-Za-z0-9]+$")
runner = CliRunner()


@pytest.fixture(scope="module")
def small_json() -> dict:
    result = runner.invoke(app, ["stack", "plan", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_shape(small_json: dict) -> None:
    assert set(small_json) >= {"resources", "monthly_cost_usd"}
    assert small_json["policy_violations"] == []
    resources = small_json["resources"]
    assert len(resources) > 40
    for res in resources:
        assert set(res) == {"type", "name", "inputs"}
        assert TOKEN.match(res["type"]), res["type"]
        assert isinstance(res["name"], str) and res["name"]
        # Inputs as the provider receives them: camelCase keys, no Python names.
        assert all("_" not in key for key in res["inputs"]), res["inputs"].keys()
    bucket = next(r for r in resources if r["type"] == "aws:s3/bucket:Bucket")
    assert bucket["inputs"]["forceDestroy"] is False
    block = next(r for r in resources if r["type"].endswith("BucketPublicAccessBlock"))
    assert block["inputs"]["restrictPublicBuckets"] is True


def test_json_cost(small_json: dict) -> None:
    cost = small_json["monthly_cost_usd"]
    assert isinstance(cost["total"], float | int) and isinstance(cost["items"], list)
    assert cost["total"] == pytest.approx(sum(i["total"] for i in cost["items"]), abs=0.05)
    assert cost["idle_total"] <= 30  # the budget for an idle small stack
    assert {"price_date", "price_region", "usage_assumption"} <= set(cost)
    names = {i["name"] for i in cost["items"]}
    assert {"mlflow-db", "mlflow-service"} <= names
    types = {r["type"] for r in small_json["resources"]}
    assert all(i["type"] in types or i["type"].startswith("aws:ec2:") for i in cost["items"])


def test_production_plan_with_domain() -> None:
    result = runner.invoke(
        app,
        ["stack", "plan", "--json", "--profile", "production", "--domain", "mlflow.example.com"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    types = [r["type"] for r in doc["resources"]]
    assert "aws:lb/loadBalancer:LoadBalancer" in types
    assert types.count("aws:ec2/natGateway:NatGateway") == 2
    assert doc["monthly_cost_usd"]["idle_total"] > 100
    # endpoints route on the base stack's endpoints-only HTTP API, not on the ALB
    assert "aws:apigatewayv2/vpcLink:VpcLink" in types
    per = doc["endpoint_cost_usd"]
    assert set(per) == {"lambda", "warm"} and per["lambda"]["idle_month"] == 0.0


def test_json_lists_what_remote_training_adds_at_zero_idle(small_json: dict) -> None:
    training = small_json["remote_training_usd"]
    assert training["resources"] == [
        "ci-training-policy",
        "training-execution-policy",
        "training-execution-role",
        "training-logs",
        "training-outputs",
        "training-sg",
        "training-task-policy",
        "training-task-role",
    ]
    assert training["idle_month"] == 0.0
    items = {i["name"]: i for i in small_json["monthly_cost_usd"]["items"]}
    assert [items[n]["total"] for n in training["resources"] if n in items] == [0.0]
    one, four = training["per_hour"]
    assert (one["cpu_units"], one["memory_mib"]) == (1024, 4096)
    assert one["on_demand"] == pytest.approx(0.04048 + 4 * 0.004445, abs=1e-4)
    assert one["spot"] == pytest.approx(one["on_demand"] * 0.3, abs=1e-4)
    assert four["on_demand"] > one["on_demand"]


def test_the_table_names_remote_training() -> None:
    result = runner.invoke(app, ["stack", "plan"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("remote training"))
    assert "training-task-role" in line and "$0.00/month idle" in line
    assert "1 vCPU / 4 GiB $0.0583 on demand, $0.0175 on Spot" in line
    assert "us-east-1 prices of 2025-06" in line


def test_json_lists_what_each_endpoint_costs(small_json: dict) -> None:
    per = small_json["endpoint_cost_usd"]
    assert set(per) == {"lambda", "warm"}
    assert per["lambda"]["idle_month"] == 0.0  # $0 at rest
    assert 1.5 < per["lambda"]["per_million_requests"] < 4
    assert per["warm"]["idle_month"] > 15  # a Fargate task around the clock
    for cost in per.values():
        assert (cost["price_region"], cost["price_date"]) == ("us-east-1", "2025-06")


def test_table_output() -> None:
    result = runner.invoke(app, ["stack", "plan"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "aws:rds/instance:Instance" in result.stdout
    assert "publiclyAccessible=False" in result.stdout
    assert "total" in result.stdout and "usage assumption" in result.stdout
    assert "policy: every rule passes" in result.stdout
    assert "each endpoint, Lambda function: $0.00/month idle" in result.stdout


def test_unknown_profile_is_one_line() -> None:
    result = runner.invoke(app, ["stack", "plan", "--profile", "huge"])
    assert result.exit_code == 2
    assert "unknown profile 'huge'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--region", "mars-1"], "invalid AWS region 'mars-1'"),
        (["--domain", "a..b"], "invalid --domain 'a..b'"),
        (["--domain", "not a domain!"], "invalid --domain 'not a domain!'"),
        (["--github-repo", "not a repo"], "invalid --github-repo 'not a repo'"),
        (["--github-repo", "acme/churn/x"], "invalid --github-repo 'acme/churn/x'"),
        (["--server-size", "big"], "invalid --server-size: server size 'big' is not CPU:MIB"),
        (["--server-size", "3000:4096"], "Fargate has no task of 3000 CPU units"),
        (["--server-size", "2048:1024"], "a 2048-unit Fargate task takes 4096-16384 MiB"),
        (["--server-size", "512:4608"], "a 512-unit Fargate task takes 1024-4096 MiB"),
    ],
)
def test_plan_refuses_what_up_refuses(args: list[str], expected: str) -> None:
    """The same checks as `stack up --aws` (core.aws_inputs), before anything is planned."""
    result = runner.invoke(app, ["stack", "plan", "--json", *args])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output and "resources" not in result.output


@pytest.mark.parametrize(
    ("region", "repo", "domain"),
    [
        ("us-gov-west-1", "a/b", "ml.example.io"),
        ("ap-southeast-10", "Acme-Corp/churn.model_v2", "mlflow.team-a.example.com"),
        ("us-isob-east-1", "x/.github", "a.xn--p1ai"),
    ],
)
def test_aws_inputs_accept_real_values(region: str, repo: str, domain: str) -> None:
    from mlrig.core.shared import aws_inputs
    from mlrig.core.stack.aws import stack as aws_stack

    aws_inputs.check(region, repo, domain)
    req = aws_stack.AwsStackRequest(name="t1", region=region, github_repo=repo, domain=domain)
    assert req.validate() is req


def test_a_server_size_sizes_the_task_its_workers_and_its_price() -> None:
    """`--server-size` replaces the profile's task size; workers follow the CPU, the bill the
    task definition, and a stack's request refuses what the plan refuses."""
    from mlrig.core.stack.aws import stack as aws_stack
    from mlrig.errors import UsageError

    result = runner.invoke(app, ["stack", "plan", "--json", "--server-size", "2048:4096"])
    assert result.exit_code == 0, result.output
    sized = json.loads(result.stdout)
    task = next(
        r for r in sized["resources"] if r["type"] == "aws:ecs/taskDefinition:TaskDefinition"
    )
    assert (task["inputs"]["cpu"], task["inputs"]["memory"]) == ("2048", "4096")
    command = json.loads(task["inputs"]["containerDefinitions"])[0]["command"]
    assert command[command.index("--workers") + 1] == "4"  # one per half vCPU
    bills = {}
    for args in ([], ["--server-size", "2048:4096"]):
        out = runner.invoke(app, ["stack", "plan", "--json", *args]).stdout
        items = json.loads(out)["monthly_cost_usd"]["items"]
        bills[len(args)] = next(i for i in items if i["name"] == "mlflow-service")
    assert "0.5 vCPU / 1 GB" in bills[0]["basis"] and "2 vCPU / 4 GB" in bills[2]["basis"]
    assert bills[2]["idle"] > 3.9 * bills[0]["idle"]
    table = runner.invoke(app, ["stack", "plan", "--server-size", "1024:2048"])
    assert "profile small (tracking server 1024:2048)" in " ".join(table.output.split())
    with pytest.raises(UsageError, match="invalid --server-size"):
        aws_stack.AwsStackRequest(name="t1", region="us-east-1", server_size="1:1").validate()
