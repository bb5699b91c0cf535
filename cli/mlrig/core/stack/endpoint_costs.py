"""What one endpoint costs: idle per month and per million requests, from its planned
resources (`endpoint_plan`) and the documented prices of `costs` (same region and date).

Assumptions, stated with the numbers: a model invocation averages MODEL_MS at the
function's memory; the key check runs on every request (API Gateway's cache of a key's
verdict only lowers this); ~300 bytes of Lambda platform log lines per invocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlrig.core.stack import costs
from mlrig.core.stack.plan import Plan, PlannedResource

PRICES = {
    "lambda_million_requests": 0.20,
    "lambda_x86_gb_second": 0.0000166667,
    "lambda_arm_gb_second": 0.0000133334,
    "alarm_metric_month": 0.10,  # a standard-resolution alarm, per metric
    "ssm_standard_parameter_month": 0.0,  # standard tier; aws/ssm key: no monthly fee
}
MODEL_MS = 100  # average duration of one prediction, warm (the template's model: far less)
AUTHORIZER_MS = 10
LOG_BYTES_PER_INVOCATION = 300
MILLION = 1_000_000


@dataclass(frozen=True)
class EndpointCostItem:
    type: str
    name: str
    idle_month: float
    per_million: float
    basis: str


@dataclass
class EndpointEstimate:
    items: list[EndpointCostItem] = field(default_factory=list)

    @property
    def idle_month(self) -> float:
        return sum(i.idle_month for i in self.items)

    @property
    def per_million(self) -> float:
        return sum(i.per_million for i in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "idle_month": round(self.idle_month, 2),
            "per_million_requests": round(self.per_million, 2),
            "currency": "USD",
            "price_region": costs.PRICE_REGION,
            "price_date": costs.PRICE_DATE,
            "assumption": (
                f"{MODEL_MS} ms per prediction, the key check ({AUTHORIZER_MS} ms) on every "
                f"request, {LOG_BYTES_PER_INVOCATION} B of logs per invocation"
            ),
            "items": [
                {
                    "type": i.type,
                    "name": i.name,
                    "idle_month": round(i.idle_month, 2),
                    "per_million": round(i.per_million, 4),
                    "basis": i.basis,
                }
                for i in self.items
            ],
        }


def _lambda(res: PlannedResource) -> EndpointCostItem:
    gb = int(res.inputs.get("memorySize", 128)) / 1024
    arm = "arm64" in res.inputs.get("architectures", [])
    is_model = res.inputs.get("packageType") == "Image"
    ms = MODEL_MS if is_model else AUTHORIZER_MS
    gb_s = PRICES["lambda_arm_gb_second" if arm else "lambda_x86_gb_second"]
    compute = MILLION * gb * ms / 1000 * gb_s
    logs = MILLION * LOG_BYTES_PER_INVOCATION / 1e9 * costs.PRICES["logs_ingest_gb"]
    return EndpointCostItem(
        res.type,
        res.name,
        0.0,
        PRICES["lambda_million_requests"] + compute + logs,
        f"requests + {gb:g} GB x {ms} ms ({'arm64' if arm else 'x86_64'}) + log lines; "
        "nothing when idle",
    )


def estimate(plan: Plan) -> EndpointEstimate:
    est = EndpointEstimate()
    for res in plan.resources:
        if res.type == "aws:lambda/function:Function":
            est.items.append(_lambda(res))
        elif res.type == "aws:apigatewayv2/route:Route":
            est.items.append(
                EndpointCostItem(
                    res.type,
                    res.name,
                    0.0,
                    costs.PRICES["http_api_million_requests"],
                    "HTTP API requests (the base stack's API)",
                )
            )
        elif res.type == "aws:cloudwatch/metricAlarm:MetricAlarm":
            est.items.append(
                EndpointCostItem(
                    res.type, res.name, PRICES["alarm_metric_month"], 0.0, "one alarm, one metric"
                )
            )
        elif res.type == "aws:ecs/service:Service":
            for item in costs._fargate(res, plan):
                est.items.append(EndpointCostItem(item.type, item.name, item.idle, 0.0, item.basis))
        elif res.type == "aws:servicediscovery/service:Service":
            est.items.append(
                EndpointCostItem(
                    res.type,
                    res.name,
                    costs.PRICES["cloud_map_instance_month"],
                    0.0,
                    "Cloud Map: the warm task's registered instance",
                )
            )
    est.items.append(
        EndpointCostItem(
            "aws:ssm/parameter:Parameter",
            "keys",
            PRICES["ssm_standard_parameter_month"],
            0.0,
            "the key hashes: a standard SecureString (aws/ssm key), free; reads cached",
        )
    )
    return est


def per_endpoint(plan: Plan, stack: str) -> dict[str, dict[str, Any]]:
    """What one endpoint adds to this stack, per kind (Lambda, warm Fargate), planned on
    this base plan's own endpoint outputs (production: a warm task in a private subnet has
    no public IPv4); nothing before the tracking server exists (phase one of `up`)."""
    from mlrig.core.stack import endpoint_plan
    from mlrig.infra.endpoint.config import EndpointConfig
    from mlrig.infra.endpoint.refs import names

    if not all(name in plan.outputs for name in names()):
        return {}
    refs = {name: plan.outputs[name] for name in names()}
    image = endpoint_plan.sample_image(stack, plan.region)
    found = {}
    for kind, warm in (("lambda", False), ("warm", True)):
        cfg = EndpointConfig(
            base_stack=stack, endpoint="example", region=plan.region, image=image, warm=warm
        )
        planned, _ = endpoint_plan.run_endpoint_program(cfg, refs)
        found[kind] = estimate(planned).as_dict()
    return found
