"""The cost estimate: the price table applied to planned resources, by hand."""

from __future__ import annotations

import pytest

from mlrig.core.stack import costs
from mlrig.core.stack.plan import Plan, PlannedResource, plan_config, run_program


def _items(plan: Plan) -> dict[str, costs.CostItem]:
    return {i.name: i for i in costs.estimate(plan).items}


def test_small_profile_idle_cost_is_within_budget() -> None:
    est = costs.estimate(run_program(plan_config("small")))
    items = {i.name: i for i in est.items}
    # db.t4g.micro 730 h x $0.016 + 20 GB gp3 x $0.115
    assert items["mlflow-db"].idle == pytest.approx(730 * 0.016 + 20 * 0.115)
    # Fargate Spot: (0.5 vCPU x 0.04048 + 1 GB x 0.004445) x 730 h x 30 %
    assert items["mlflow-service"].idle == pytest.approx((0.5 * 0.04048 + 1 * 0.004445) * 730 * 0.3)
    assert items["mlflow-service-task-ip"].idle == pytest.approx(3.65)
    # the Cloud Map namespace is a Route 53 private hosted zone
    assert items["mlflow-front-ns"].idle == pytest.approx(0.50)
    assert est.idle_total == pytest.approx(24.95, abs=0.01)
    assert est.idle_total <= 30


def test_production_prices_its_endpoints_api_and_each_endpoint_without_a_public_ip() -> None:
    """The endpoints-only HTTP API costs nothing idle and its requests are priced per
    endpoint (not in the MLflow usage assumption); its namespace is one hosted zone; a warm
    endpoint's task sits in a private subnet (no public IPv4: its image pulls go via NAT)."""
    from mlrig.core.stack import endpoint_costs

    planned = run_program(plan_config("production", domain="mlflow.example.com"))
    items = _items(planned)
    assert (items["endpoints-api"].idle, items["endpoints-api"].usage) == (0.0, 0.0)
    assert items["endpoints-ns"].idle == pytest.approx(0.50)
    per = endpoint_costs.per_endpoint(planned, "plan")
    assert per["lambda"]["idle_month"] == 0.0
    assert per["lambda"]["per_million_requests"] == pytest.approx(3.38, abs=0.01)
    warm = {i["name"]: i["idle_month"] for i in per["warm"]["items"] if i["idle_month"]}
    assert warm == {"example-service": 18.02, "example-discovery": 0.1}
    small = endpoint_costs.per_endpoint(run_program(plan_config("small")), "plan")
    assert small["warm"]["idle_month"] == pytest.approx(21.77, abs=0.01)  # + public IPv4


def test_multi_az_doubles_the_database() -> None:
    db = {"instanceClass": "db.t4g.medium", "allocatedStorage": 50, "multiAz": True}
    plan = Plan("production", "us-east-1", [PlannedResource("aws:rds/instance:Instance", "db", db)])
    assert _items(plan)["db"].idle == pytest.approx(2 * (730 * 0.065 + 50 * 0.115))


def test_free_resources_have_no_item() -> None:
    plan = Plan(
        "small",
        "us-east-1",
        [
            PlannedResource("aws:ec2/vpc:Vpc", "vpc", {}),
            PlannedResource("aws:iam/role:Role", "r", {}),
        ],
    )
    assert costs.estimate(plan).items == []


def test_unknown_instance_class_is_an_error() -> None:
    plan = Plan(
        "small",
        "us-east-1",
        [
            PlannedResource(
                "aws:rds/instance:Instance",
                "db",
                {"instanceClass": "db.x9.huge", "allocatedStorage": 20},
            )
        ],
    )
    with pytest.raises(KeyError, match="db.x9.huge"):
        costs.estimate(plan)
