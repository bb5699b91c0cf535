"""`mlrig stack plan`: the AWS program's resource graph, offline, with its rendering.

No Pulumi CLI, no provider plugin, no AWS account: the Pulumi adapter runs the program under
mocks, and this module answers every resource with realistic computed outputs (arn, name,
repositoryUrl...), so dependent inputs are known and appear exactly as the provider would
receive them (camelCase keys, nested values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlrig.adapters import pulumi as pulumi_adapter
from mlrig.errors import UsageError

ACCOUNT = "123456789012"
PLAN_STACK = "plan"
PLACEHOLDER_SECRET = "generated-by-mlrig-stack-up"  # noqa: S105 - not a secret, a label
RESOLVE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class PlannedResource:
    type: str  # Pulumi type token, e.g. aws:s3/bucket:Bucket
    name: str
    inputs: dict[str, Any]


@dataclass
class Plan:
    profile: str
    region: str
    resources: list[PlannedResource] = field(default_factory=list)
    components: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    server_size: str | None = None  # CPU:MIB when not the profile's

    def of_type(self, token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == token]

    def one(self, token: str, name: str | None = None) -> PlannedResource:
        found = [r for r in self.of_type(token) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {token} {name or ''}, found {len(found)}")
        return found[0]


# The program did not finish under mocks (an output never resolved, or had no value).
PlanError = pulumi_adapter.MocksRunError


def _arn(service: str, region: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"


def computed_outputs(
    typ: str, name: str, inputs: dict[str, Any], region: str
) -> tuple[str, dict[str, Any]]:
    """What AWS would report back for a resource: its id and computed attributes."""
    service = typ.split(":")[1].split("/")[0]
    service = {"lb": "elasticloadbalancing", "apigatewayv2": "apigateway"}.get(service, service)
    rid = f"{name}-id"
    out: dict[str, Any] = {
        "arn": _arn(service, region, f"{name}"),
        "name": inputs.get("name", name),
    }
    if typ == "aws:s3/bucket:Bucket":
        rid = f"{inputs.get('bucketPrefix', name)}20261126abcdef"
        out.update(bucket=rid, arn=f"arn:aws:s3:::{rid}")
    elif typ == "aws:ecr/repository:Repository":
        repo = inputs["name"]
        rid = repo
        out.update(
            arn=_arn("ecr", region, f"repository/{repo}"),
            repositoryUrl=f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{repo}",
            registryId=ACCOUNT,
        )
    elif typ == "aws:iam/role:Role":
        out.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{name}", name=name)
        rid = name
    elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        out["arn"] = f"arn:aws:iam::{ACCOUNT}:oidc-provider/" + str(inputs["url"]).removeprefix(
            "https://"
        )
    elif typ == "aws:secretsmanager/secret:Secret":
        out["arn"] = _arn("secretsmanager", region, f"secret:{name}-AbCdEf")
        rid = out["arn"]
    elif typ == "aws:ssm/parameter:Parameter":
        out["arn"] = _arn("ssm", region, f"parameter{inputs['name']}")
    elif typ == "aws:cloudwatch/logGroup:LogGroup":
        out["arn"] = _arn("logs", region, f"log-group:{inputs['name']}")
    elif typ == "aws:rds/instance:Instance":
        address = f"{name}.cabcdefghijk.{region}.rds.amazonaws.com"
        out.update(
            address=address, endpoint=f"{address}:5432", arn=_arn("rds", region, f"db:{name}")
        )
    elif typ == "aws:ecs/cluster:Cluster":
        out.update(arn=_arn("ecs", region, f"cluster/{name}"), name=name)
    elif typ == "aws:ecs/taskDefinition:TaskDefinition":
        out["arn"] = _arn("ecs", region, f"task-definition/{inputs['family']}:1")
    elif typ == "aws:apigatewayv2/api:Api":
        rid = "a1b2c3d4e5"
        out["apiEndpoint"] = f"https://{rid}.execute-api.{region}.amazonaws.com"
        out["executionArn"] = _arn("execute-api", region, rid)
    elif typ == "aws:lambda/function:Function":
        fn = _arn("lambda", region, f"function:{inputs.get('name', name)}")
        out.update(
            arn=fn,
            version="1" if inputs.get("publish") else "$LATEST",
            qualifiedArn=f"{fn}:1",
            invokeArn=f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{fn}"
            "/invocations",
        )
    elif typ == "aws:lambda/alias:Alias":
        fn = _arn("lambda", region, f"function:{inputs['functionName']}:{inputs['name']}")
        out.update(
            arn=fn,
            invokeArn=f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{fn}"
            "/invocations",
        )
    elif typ == "aws:apigatewayv2/domainName:DomainName":
        rid = inputs["domainName"]
        out["domainNameConfiguration"] = {
            **inputs["domainNameConfiguration"],
            "hostedZoneId": "Z1UJRXOUMOOFQ8",
            "targetDomainName": f"d-abc123.execute-api.{region}.amazonaws.com",
        }
    elif typ == "aws:acm/certificate:Certificate":
        domain = inputs["domainName"]
        out["domainValidationOptions"] = [
            {
                "domainName": domain,
                "resourceRecordName": f"_x1.{domain}.",
                "resourceRecordType": "CNAME",
                "resourceRecordValue": "_y2.acm-validations.aws.",
            }
        ]
    elif typ == "aws:acm/certificateValidation:CertificateValidation":
        out["certificateArn"] = inputs["certificateArn"]
    elif typ == "aws:route53/record:Record":
        out["fqdn"] = inputs["name"]
    elif typ == "aws:lb/loadBalancer:LoadBalancer":
        out.update(dnsName=f"{name}-123.{region}.elb.amazonaws.com", zoneId="Z35SXDOTRQ7X7K")
    return rid, out


def _plain_numbers(value: Any) -> Any:
    """The wire format carries every number as a double; show 30 rather than 30.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


class _Recorder:
    """Answers the mocks' questions for a plan and records every registration in it."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def new_resource(
        self, typ: str, name: str, inputs: dict[str, Any], custom: bool
    ) -> tuple[str, dict[str, Any]]:
        if not custom:
            self.plan.components.append((typ, name))
            return "", {}
        self.plan.resources.append(PlannedResource(typ, name, _plain_numbers(inputs)))
        rid, computed = computed_outputs(typ, name, inputs, self.plan.region)
        return rid, {**inputs, **computed}

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": [f"{self.plan.region}{z}" for z in "abc"],
                "zoneIds": ["use1-az1", "use1-az2", "use1-az4"],
            }
        if token == "aws:route53/getZone:getZone":
            return {"zoneId": "Z0123456789PLAN", "name": args.get("name")}
        if token == "aws:index/getRegion:getRegion":
            return {"region": self.plan.region, "name": self.plan.region}
        raise PlanError(f"the plan has no mock for the call {token}")


def run_program(cfg: Any, build: Any = None) -> Plan:
    """Run `build(cfg)` (default: infra.program.build) under mocks; every output must resolve."""
    if build is None:
        from mlrig.infra import program

        build = program.build
    plan = Plan(profile=cfg.profile.name, region=cfg.region, server_size=cfg.profile.server_size)
    recorder = _Recorder(plan)
    plan.outputs = pulumi_adapter.run_under_mocks(
        lambda: build(cfg),
        stack=cfg.stack,
        on_resource=recorder.new_resource,
        on_call=recorder.call,
        resolve_timeout=RESOLVE_TIMEOUT_S,
    )
    plan.resources.sort(key=lambda r: (r.type, r.name))
    return plan


def plan_config(
    profile: str,
    *,
    region: str = "us-east-1",
    name: str = PLAN_STACK,
    github_repo: str | None = "example-org/example-model",
    domain: str | None = None,
    server_size: str | None = None,
) -> Any:
    """The StackConfig a plan renders: every part on, secrets replaced by a label; the
    tracking server's task at `server_size` (CPU:MIB) when given."""
    from mlrig.core.shared import aws_inputs
    from mlrig.infra.config import PROFILES, Secrets, StackConfig, sized

    aws_inputs.check(region, github_repo, domain)
    aws_inputs.check_server_size(server_size)
    if profile not in PROFILES:
        raise UsageError(
            f"unknown profile {profile!r}", hint=f"use one of: {', '.join(sorted(PROFILES))}"
        )
    prefix = f"mlrig-{name}"
    return StackConfig(
        stack=name,
        region=region,
        profile=sized(PROFILES[profile], server_size),
        secrets=Secrets(PLACEHOLDER_SECRET, PLACEHOLDER_SECRET, PLACEHOLDER_SECRET),
        mlflow_image=f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{prefix}/mlflow-server:plan",
        github_repo=github_repo,
        domain=domain,
    )


def policy_violations(plan: Plan) -> list[str]:
    """The security policy suite (mlrig.infra.policy) over this plan; empty when it passes."""
    from mlrig.infra import policy

    return policy.violations(plan.resources)


def render_json(plan: Plan, estimate: Any) -> str:
    doc = {
        "profile": plan.profile,
        "region": plan.region,
        "resources": [{"type": r.type, "name": r.name, "inputs": r.inputs} for r in plan.resources],
        "monthly_cost_usd": estimate.as_dict(),
        "policy_violations": policy_violations(plan),
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str)


# The inputs worth a glance per type in the human-readable plan (the JSON has them all).
_HIGHLIGHTS: dict[str, tuple[str, ...]] = {
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": ("rule.objectOwnership",),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "rules.0.applyServerSideEncryptionByDefault.sseAlgorithm",
    ),
    "aws:s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": (
        "rules.0.noncurrentVersionExpiration.noncurrentDays",
        "rules.0.abortIncompleteMultipartUpload.daysAfterInitiation",
    ),
    "aws:ecr/repository:Repository": (
        "imageTagMutability",
        "imageScanningConfiguration.scanOnPush",
        "encryptionConfigurations.0.encryptionType",
        "forceDelete",
    ),
    "aws:rds/instance:Instance": (
        "instanceClass",
        "publiclyAccessible",
        "storageEncrypted",
        "multiAz",
        "deletionProtection",
        "skipFinalSnapshot",
    ),
    "aws:ecs/service:Service": ("desiredCount", "networkConfiguration.assignPublicIp"),
    "aws:ecs/taskDefinition:TaskDefinition": ("cpu", "memory"),
    "aws:lb/listener:Listener": ("port", "protocol", "sslPolicy"),
    "aws:apigatewayv2/api:Api": ("protocolType", "disableExecuteApiEndpoint"),
    "aws:ec2/natGateway:NatGateway": (),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "mapPublicIpOnLaunch"),
    "aws:iam/role:Role": ("description",),
    "aws:secretsmanager/secret:Secret": ("recoveryWindowInDays",),
    "aws:cloudwatch/logGroup:LogGroup": ("retentionInDays",),
}


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _rules(rules: list[dict[str, Any]]) -> str:
    out = []
    for r in rules:
        src = ",".join(r.get("cidrBlocks") or []) or ("sg" if r.get("securityGroups") else "-")
        out.append(f"{r.get('fromPort')}/{r.get('protocol')} {src}")
    return " ".join(out) or "none"


def highlights(res: PlannedResource) -> str:
    """One line of the security-relevant settings of a planned resource."""
    if res.type == "aws:ec2/securityGroup:SecurityGroup":
        return (
            f"in: {_rules(res.inputs.get('ingress', []))}; "
            f"out: {_rules(res.inputs.get('egress', []))}"
        )
    if res.type in ("aws:iam/rolePolicy:RolePolicy", "aws:s3/bucketPolicy:BucketPolicy"):
        doc = json.loads(res.inputs["policy"])
        return "; ".join(f"{s.get('Sid', s['Effect'])}" for s in doc["Statement"])
    keys = _HIGHLIGHTS.get(res.type, ())
    return ", ".join(f"{k.split('.')[-1]}={_dig(res.inputs, k)}" for k in keys)
