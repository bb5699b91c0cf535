"""Security policy over a planned resource graph: each rule returns what it found wrong.

Plain functions over (type, name, inputs), so the same rules run in tests, on
`mlrig stack plan` output, or against any JSON plan in the same format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Resource(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> dict[str, Any]: ...


# Actions with no resource-level permissions: "*" is the only valid Resource for them.
RESOURCE_STAR_ALLOWED = {"ecr:GetAuthorizationToken"}
# Actions whose only resource does not apply: "*" is allowed when narrowed by this key.
RESOURCE_STAR_WITH_CONDITION = {"ecs:ListTasks": "ecs:cluster"}
FORBIDDEN_TYPES = {
    "aws:iam/user:User",
    "aws:iam/accessKey:AccessKey",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/userLoginProfile:UserLoginProfile",
}
HTTPS = 443


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def no_public_buckets(resources: Iterable[Resource]) -> list[str]:
    found = []
    blocks = [r for r in resources if r.type.endswith("BucketPublicAccessBlock")]
    buckets = [r for r in resources if r.type == "aws:s3/bucket:Bucket"]
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for b in blocks:
        off = [f for f in flags if b.inputs.get(f) is not True]
        if off:
            found.append(f"{b.name}: public access block has {', '.join(off)} off")
    if len(blocks) < len(buckets):
        found.append(f"{len(buckets)} bucket(s) but {len(blocks)} public access block(s)")
    for r in resources:
        if r.type == "aws:s3/bucket:Bucket" and r.inputs.get("acl") not in (None, "private"):
            found.append(f"{r.name}: bucket ACL {r.inputs['acl']}")
        if (
            r.type.endswith("BucketOwnershipControls")
            and r.inputs.get("rule", {}).get("objectOwnership") != "BucketOwnerEnforced"
        ):
            found.append(f"{r.name}: ACLs are not disabled (ownership not enforced)")
    return found


def immutable_tags(resources: Iterable[Resource]) -> list[str]:
    return [
        f"{r.name}: image tags are {r.inputs.get('imageTagMutability', 'MUTABLE')}"
        for r in resources
        if r.type == "aws:ecr/repository:Repository"
        and not str(r.inputs.get("imageTagMutability", "")).startswith("IMMUTABLE")
    ]


def private_databases(resources: Iterable[Resource]) -> list[str]:
    found = []
    for r in resources:
        if r.type in ("aws:rds/instance:Instance", "aws:rds/clusterInstance:ClusterInstance"):
            if r.inputs.get("publiclyAccessible") is not False:
                found.append(f"{r.name}: database is publicly accessible")
            if r.inputs.get("storageEncrypted") is not True and "clusterInstance" not in r.type:
                found.append(f"{r.name}: database storage is not encrypted")
    return found


def open_ports(resources: Iterable[Resource]) -> list[str]:
    """Ingress from anywhere is allowed on HTTPS only."""
    found = []
    for r in resources:
        rules: list[dict[str, Any]] = []
        if r.type in (
            "aws:ec2/securityGroup:SecurityGroup",
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
        ):
            rules = r.inputs.get("ingress", [])
        elif r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
            rules = [
                {
                    **r.inputs,
                    "cidrBlocks": [r.inputs.get("cidrIpv4")],
                    "ipv6CidrBlocks": [r.inputs.get("cidrIpv6")],
                }
            ]
        elif (
            r.type == "aws:ec2/securityGroupRule:SecurityGroupRule"
            and r.inputs.get("type") == "ingress"
        ):
            rules = [r.inputs]
        for rule in rules:
            anywhere = {"0.0.0.0/0", "::/0"} & set(
                (rule.get("cidrBlocks") or []) + (rule.get("ipv6CidrBlocks") or [])
            )
            ports = (rule.get("fromPort"), rule.get("toPort"))
            if anywhere and ports != (HTTPS, HTTPS):
                found.append(f"{r.name}: ports {ports[0]}-{ports[1]} open to {sorted(anywhere)}")
    return found


def _statements(r: Resource) -> list[dict[str, Any]]:
    keys = {
        "aws:iam/rolePolicy:RolePolicy": "policy",
        "aws:iam/policy:Policy": "policy",
        "aws:iam/role:Role": "assumeRolePolicy",
        "aws:s3/bucketPolicy:BucketPolicy": "policy",
    }
    key = keys.get(r.type)
    if key is None or key not in r.inputs:
        return []
    return _as_list(json.loads(r.inputs[key]).get("Statement", []))


def _narrowed(actions: list[str], condition: dict[str, Any] | None) -> bool:
    """Every action is one whose "*" a condition key narrows, and the statement has it."""
    keys = {k for test in (condition or {}).values() for k in test}
    return bool(actions) and all(RESOURCE_STAR_WITH_CONDITION.get(a) in keys for a in actions)


def scoped_iam(resources: Iterable[Resource]) -> list[str]:
    """Allow statements name their actions and resources; trust is never `*`."""
    found = []
    for r in resources:
        for st in _statements(r):
            if st.get("Effect") != "Allow":
                continue  # a broad Deny only narrows access
            actions = _as_list(st.get("Action", []))
            if any(a == "*" or a.endswith(":*") for a in actions):
                found.append(f"{r.name}: wildcard action {actions}")
            res = _as_list(st.get("Resource", []))
            if "*" in res and not (
                set(actions) <= RESOURCE_STAR_ALLOWED or _narrowed(actions, st.get("Condition"))
            ):
                found.append(f"{r.name}: Resource '*' for {actions}")
            if st.get("Principal") == "*" or st.get("Principal", {}) == {"AWS": "*"}:
                found.append(f"{r.name}: Allow to Principal '*'")
    return found


def no_iam_users(resources: Iterable[Resource]) -> list[str]:
    return [
        f"{r.name}: {r.type} (use roles, not users or keys)"
        for r in resources
        if r.type in FORBIDDEN_TYPES
    ]


RULES: tuple[Callable[[Iterable[Resource]], list[str]], ...] = (
    no_public_buckets,
    immutable_tags,
    private_databases,
    open_ports,
    scoped_iam,
    no_iam_users,
)


def violations(resources: Iterable[Resource]) -> list[str]:
    items = list(resources)
    return [v for rule in RULES for v in rule(items)]
