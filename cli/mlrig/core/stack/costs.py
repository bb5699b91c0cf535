"""A monthly cost estimate for a planned AWS stack, from a documented price table.

Prices: AWS public on-demand list prices for us-east-1, read from the AWS pricing pages in
2025-06 (PRICE_DATE). Other regions cost 0-25 % more; re-check before budgeting. A month is
730 hours. "idle" is what the stack costs with nobody using it; "usage" follows USAGE below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlrig.core.stack.plan import Plan, PlannedResource

PRICE_REGION = "us-east-1"
PRICE_DATE = "2025-06"
HOURS = 730

PRICES = {
    "fargate_vcpu_hour": 0.04048,
    "fargate_gb_hour": 0.004445,
    "fargate_spot_discount": 0.70,  # Spot has run 65-70 % below on-demand in us-east-1
    "public_ipv4_hour": 0.005,
    "rds_gp3_gb_month": 0.115,
    "secret_month": 0.40,
    "alb_hour": 0.0225,
    "alb_lcu_hour": 0.008,
    "nat_hour": 0.045,
    "nat_gb": 0.045,
    "http_api_million_requests": 1.00,
    "cloud_map_instance_month": 0.10,
    "hosted_zone_month": 0.50,  # Route 53; a Cloud Map DNS namespace is one private zone
    "logs_ingest_gb": 0.50,
    "logs_store_gb_month": 0.03,
    "s3_standard_gb_month": 0.023,
    "s3_put_per_1000": 0.005,
    "ecr_gb_month": 0.10,
    "container_insights_month": 5.00,  # ~17 cluster/service/task metrics at $0.30
}
RDS_POSTGRES_HOURLY = {  # single-AZ; multi-AZ doubles instance and storage
    "db.t4g.micro": 0.016,
    "db.t4g.small": 0.032,
    "db.t4g.medium": 0.065,
    "db.t4g.large": 0.129,
    "db.m7g.large": 0.168,
}

# A small team's month: what the "usage" column assumes.
USAGE = {
    "s3_gb": 20,  # DVC data + MLflow artifacts
    "s3_puts": 50_000,
    "ecr_models_gb": 5,
    "ecr_server_gb": 1.1,  # the mlflow-server image (measured), stored even when idle
    "requests": 200_000,  # MLflow API calls through the front door
    "log_gb": 1,
    "nat_gb": 5,
    "alb_lcu": 0.2,  # average LCUs under that load
}
USAGE_ASSUMPTION = (
    "20 GB in S3 with 50k PUTs, 5 GB of model images, 200k MLflow requests, "
    "1 GB of logs, 5 GB through NAT (production) per month"
)


@dataclass(frozen=True)
class CostItem:
    type: str
    name: str
    idle: float
    usage: float
    basis: str

    @property
    def total(self) -> float:
        return self.idle + self.usage


@dataclass
class CostEstimate:
    region: str
    items: list[CostItem] = field(default_factory=list)

    @property
    def idle_total(self) -> float:
        return sum(i.idle for i in self.items)

    @property
    def total(self) -> float:
        return sum(i.total for i in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": round(self.total, 2),
            "idle_total": round(self.idle_total, 2),
            "usage_total": round(self.total - self.idle_total, 2),
            "currency": "USD",
            "price_region": PRICE_REGION,
            "price_date": PRICE_DATE,
            "region": self.region,
            "usage_assumption": USAGE_ASSUMPTION,
            "items": [
                {
                    "type": i.type,
                    "name": i.name,
                    "idle": round(i.idle, 2),
                    "usage": round(i.usage, 2),
                    "total": round(i.total, 2),
                    "basis": i.basis,
                }
                for i in self.items
            ],
        }


def estimate(plan: Plan) -> CostEstimate:
    est = CostEstimate(region=plan.region)
    for res in plan.resources:
        pricer = _PRICERS.get(res.type)
        if pricer is not None:  # everything else (VPC, IAM, SGs, routes...) is free
            est.items.extend(pricer(res, plan))
    return est


def _task_size(plan: Plan, service: PlannedResource) -> tuple[float, float]:
    family = str(service.inputs["taskDefinition"]).rsplit("/", 1)[1].split(":")[0]
    for task in plan.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        if task.inputs["family"] == family:
            return int(task.inputs["cpu"]) / 1024, int(task.inputs["memory"]) / 1024
    raise LookupError(f"no task definition {family!r} in the plan")


def _task_count(plan: Plan) -> int:
    return sum(
        int(s.inputs.get("desiredCount", 1)) for s in plan.of_type("aws:ecs/service:Service")
    )


def _one(res: PlannedResource, idle: float, usage: float, basis: str) -> list[CostItem]:
    return [CostItem(res.type, res.name, idle, usage, basis)]


def fargate_hour(vcpu: float, gb: float, *, spot: bool) -> float:
    """An hour of a Fargate task of that size (Linux/x86), on demand or on Spot."""
    hourly = vcpu * PRICES["fargate_vcpu_hour"] + gb * PRICES["fargate_gb_hour"]
    return hourly * (1 - PRICES["fargate_spot_discount"]) if spot else hourly


# Two sizes `stack plan` prices an hour of remote training at: (CPU units, MiB).
TRAINING_EXAMPLES = ((1024, 4096), (4096, 16384))


def remote_training(plan: Plan) -> dict[str, Any] | None:
    """What `mlrig retrain --remote` adds to the plan ($0 while no task runs) and what an hour
    of a task costs at two sizes; None when the plan has no tracking server yet."""
    from mlrig.infra.config import TRAINING_COMPONENT

    names = sorted(
        r.name
        for r in plan.resources
        if r.name.startswith(f"{TRAINING_COMPONENT}-") or r.name.endswith("-training-policy")
    )
    if not names:
        return None
    return {
        "resources": names,
        "idle_month": 0.0,
        "per_hour": [
            {
                "cpu_units": cpu,
                "memory_mib": mib,
                "on_demand": round(fargate_hour(cpu / 1024, mib / 1024, spot=False), 4),
                "spot": round(fargate_hour(cpu / 1024, mib / 1024, spot=True), 4),
            }
            for cpu, mib in TRAINING_EXAMPLES
        ],
        "price_region": PRICE_REGION,
        "price_date": PRICE_DATE,
    }


def _fargate(res: PlannedResource, plan: Plan) -> list[CostItem]:
    p, i = PRICES, res.inputs
    vcpu, gb = _task_size(plan, res)
    count = int(i.get("desiredCount", 1))
    spot = any(
        s.get("capacityProvider") == "FARGATE_SPOT" for s in i.get("capacityProviderStrategies", [])
    )
    hourly = fargate_hour(vcpu, gb, spot=spot)
    items = _one(
        res,
        count * hourly * HOURS,
        0.0,
        f"{count} x Fargate{' Spot' if spot else ''} {vcpu:g} vCPU / {gb:g} GB, always on",
    )
    if i.get("networkConfiguration", {}).get("assignPublicIp"):
        items.append(
            CostItem(
                "aws:ec2:PublicIpv4",
                f"{res.name}-task-ip",
                count * p["public_ipv4_hour"] * HOURS,
                0.0,
                f"{count} public IPv4 address(es), one per task",
            )
        )
    return items


def _rds(res: PlannedResource, plan: Plan) -> list[CostItem]:
    i = res.inputs
    az = 2 if i.get("multiAz") else 1
    cls, gb = i["instanceClass"], int(i["allocatedStorage"])
    compute = az * RDS_POSTGRES_HOURLY[cls] * HOURS
    storage = az * gb * PRICES["rds_gp3_gb_month"]
    return _one(
        res,
        compute + storage,
        0.0,
        f"PostgreSQL {cls}{' Multi-AZ' if az == 2 else ''}"
        f" + {gb} GB gp3; backups up to DB size are free",
    )


def _alb(res: PlannedResource, plan: Plan) -> list[CostItem]:
    p, ips = PRICES, len(res.inputs.get("subnets", []))
    return _one(
        res,
        (p["alb_hour"] + ips * p["public_ipv4_hour"]) * HOURS,
        USAGE["alb_lcu"] * p["alb_lcu_hour"] * HOURS,
        f"ALB hours + {ips} public IPv4; LCUs from the usage assumption",
    )


def _ecr(res: PlannedResource, plan: Plan) -> list[CostItem]:
    # The server image is stored even when idle; model images come with usage.
    server = "mlflow-server" in str(res.inputs.get("name", ""))
    gb = USAGE["ecr_server_gb"] if server else USAGE["ecr_models_gb"]
    cost = gb * PRICES["ecr_gb_month"]
    return _one(res, cost if server else 0.0, 0.0 if server else cost, f"{gb:g} GB of images")


def _cluster(res: PlannedResource, plan: Plan) -> list[CostItem]:
    insights = any(
        s.get("name") == "containerInsights" and s.get("value") == "enabled"
        for s in res.inputs.get("settings", [])
    )
    return (
        _one(res, PRICES["container_insights_month"], 0.0, "Container Insights metrics")
        if insights
        else []
    )


def _http_api(res: PlannedResource) -> list[CostItem]:
    if str(res.inputs.get("name", "")).endswith("-endpoints"):
        # endpoints' requests are priced per endpoint (`endpoint_costs`), not in USAGE
        return _one(res, 0.0, 0.0, "endpoints' HTTP API: per request only, priced per endpoint")
    return _one(
        res,
        0.0,
        USAGE["requests"] / 1e6 * PRICES["http_api_million_requests"],
        "HTTP API: per request only, nothing when idle",
    )


def _log_group(res: PlannedResource) -> list[CostItem]:
    from mlrig.infra.config import TRAINING_COMPONENT

    if res.name == f"{TRAINING_COMPONENT}-logs":
        # a retrain's few MB of log lines; its task is priced per run (`--dry-run`)
        return _one(res, 0.0, 0.0, "remote training's task logs: a few MB per run")
    return _one(
        res,
        0.0,
        USAGE["log_gb"] * (PRICES["logs_ingest_gb"] + PRICES["logs_store_gb_month"]),
        "log ingestion + storage",
    )


Pricer = Callable[[PlannedResource, Plan], list[CostItem]]
_PRICERS: dict[str, Pricer] = {
    "aws:ecs/service:Service": _fargate,
    "aws:rds/instance:Instance": _rds,
    "aws:lb/loadBalancer:LoadBalancer": _alb,
    "aws:ecr/repository:Repository": _ecr,
    "aws:ecs/cluster:Cluster": _cluster,
    "aws:secretsmanager/secret:Secret": lambda r, _: _one(
        r, PRICES["secret_month"], 0.0, "one secret"
    ),
    "aws:ec2/natGateway:NatGateway": lambda r, _: _one(
        r,
        PRICES["nat_hour"] * HOURS,
        USAGE["nat_gb"] * PRICES["nat_gb"],
        "NAT gateway hours + data processed",
    ),
    "aws:ec2/eip:Eip": lambda r, _: _one(
        r, PRICES["public_ipv4_hour"] * HOURS, 0.0, "public IPv4 address"
    ),
    "aws:apigatewayv2/api:Api": lambda r, _: _http_api(r),
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": lambda r, _: _one(
        r, PRICES["hosted_zone_month"], 0.0, "Cloud Map namespace: one Route 53 private zone"
    ),
    "aws:servicediscovery/service:Service": lambda r, plan: _one(
        r,
        _task_count(plan) * PRICES["cloud_map_instance_month"],
        0.0,
        "Cloud Map: one registered instance per task",
    ),
    "aws:s3/bucket:Bucket": lambda r, _: _one(
        r,
        0.0,
        USAGE["s3_gb"] * PRICES["s3_standard_gb_month"]
        + USAGE["s3_puts"] / 1000 * PRICES["s3_put_per_1000"],
        "S3 Standard storage + PUT requests",
    ),
    "aws:cloudwatch/logGroup:LogGroup": lambda r, _: _log_group(r),
}
