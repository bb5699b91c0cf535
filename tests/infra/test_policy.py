"""Policy suite over the plan graph: the real plans pass, each regression is caught."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from mlrig.core.stack.plan import PlannedResource
from mlrig.infra import policy
from tests.helpers import DOMAIN, make_plan


@pytest.mark.parametrize(
    ("profile", "domain"),
    [("small", None), ("small", DOMAIN), ("production", DOMAIN), ("production", None)],
)
def test_the_stack_passes_every_rule(profile: str, domain: str | None) -> None:
    assert policy.violations(make_plan(profile, domain).resources) == []


def _mutated(token: str, name: str | None, change) -> list[PlannedResource]:  # type: ignore[no-untyped-def]
    """The small plan with one resource's inputs changed (the plan itself is not touched)."""
    out = []
    for res in make_plan("small").resources:
        if res.type == token and (name is None or res.name == name):
            inputs = copy.deepcopy(res.inputs)
            change(inputs)
            res = replace(res, inputs=inputs)
        out.append(res)
    return out


def _set(key: str, value: object):  # type: ignore[no-untyped-def]
    return lambda inputs: inputs.__setitem__(key, value)


def _policy_edit(edit):  # type: ignore[no-untyped-def]
    def change(inputs: dict) -> None:
        doc = json.loads(inputs["policy"])
        edit(doc["Statement"])
        inputs["policy"] = json.dumps(doc)

    return change


REGRESSIONS = [
    (
        "public bucket",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        None,
        _set("restrictPublicBuckets", False),
        "restrictPublicBuckets off",
    ),
    (
        "ACLs back on",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        None,
        _set("rule", {"objectOwnership": "ObjectWriter"}),
        "ownership not enforced",
    ),
    (
        "mutable tags",
        "aws:ecr/repository:Repository",
        "models",
        _set("imageTagMutability", "MUTABLE"),
        "image tags are MUTABLE",
    ),
    (
        "public database",
        "aws:rds/instance:Instance",
        None,
        _set("publiclyAccessible", True),
        "publicly accessible",
    ),
    (
        "unencrypted database",
        "aws:rds/instance:Instance",
        None,
        _set("storageEncrypted", False),
        "not encrypted",
    ),
    (
        "ssh open to the world",
        "aws:ec2/securityGroup:SecurityGroup",
        "mlflow-task-sg",
        lambda i: i["ingress"].append(
            {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}
        ),
        "ports 22-22 open",
    ),
    (
        "server port open to the world",
        "aws:ec2/securityGroup:SecurityGroup",
        "mlflow-task-sg",
        lambda i: i["ingress"][0].update(cidrBlocks=["0.0.0.0/0"]),
        "ports 5000-5000 open",
    ),
    (
        "wildcard action",
        "aws:iam/rolePolicy:RolePolicy",
        "ci-policy",
        _policy_edit(lambda st: st[1].update(Action="ecr:*")),
        "wildcard action",
    ),
    (
        "wildcard resource",
        "aws:iam/rolePolicy:RolePolicy",
        "mlflow-task-policy",
        _policy_edit(lambda st: st[1].update(Resource="*")),
        "Resource '*'",
    ),
    (
        "admin everything",
        "aws:iam/rolePolicy:RolePolicy",
        "mlflow-execution-policy",
        _policy_edit(lambda st: st.append({"Effect": "Allow", "Action": "*", "Resource": "*"})),
        "wildcard action",
    ),
]


@pytest.mark.parametrize(
    ("token", "name", "change", "expected"),
    [r[1:] for r in REGRESSIONS],
    ids=[r[0] for r in REGRESSIONS],
)
def test_each_regression_is_caught(token: str, name: str | None, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    found = policy.violations(_mutated(token, name, change))
    assert any(expected in v for v in found), found


def test_iam_users_and_keys_are_caught() -> None:
    resources = [
        *make_plan("small").resources,
        PlannedResource("aws:iam/user:User", "deployer", {"name": "deployer"}),
        PlannedResource("aws:iam/accessKey:AccessKey", "deployer-key", {"user": "deployer"}),
    ]
    found = policy.violations(resources)
    assert [v.split(":")[0] for v in found] == ["deployer", "deployer-key"]


def test_missing_public_access_block_is_caught() -> None:
    resources = [
        r for r in make_plan("small").resources if not r.type.endswith("BucketPublicAccessBlock")
    ]
    assert policy.no_public_buckets(resources) == ["1 bucket(s) but 0 public access block(s)"]
