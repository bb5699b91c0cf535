"""Whole-graph properties: tags everywhere, current resource names, outputs per contract."""

from __future__ import annotations

import dataclasses
import inspect

import pulumi
import pulumi_aws as aws
import pytest

from mlrig.contract import OutputNames
from mlrig.core.stack import plan as plans
from tests.helpers import DOMAIN

TAGS = {"project": "mlrig", "stack": "plan", "managed-by": "pulumi-mlrig"}


def _taggable(token: str) -> bool:
    """Whether the provider's resource class for this type token accepts `tags`."""
    _, module, name = token.split(":")
    cls = getattr(getattr(aws, module.split("/")[0]), name)
    return "tags" in inspect.signature(cls._internal_init).parameters


def test_every_taggable_resource_is_tagged(any_plan) -> None:
    taggable = [r for r in any_plan.resources if _taggable(r.type)]
    assert len(taggable) > 30
    for res in taggable:
        tags = res.inputs.get("tags")
        assert tags is not None, f"{res.type} {res.name} has no tags"
        assert {k: tags.get(k) for k in TAGS} == TAGS, res.name


def test_tags_are_set_in_one_place(monkeypatch) -> None:
    """Without the tagging transformation no resource has the stack's tags: none pass them."""
    from mlrig.infra import program

    monkeypatch.setattr(program, "tagged", lambda tags: pulumi.ResourceOptions())
    plan = plans.run_program(plans.plan_config("production", domain=DOMAIN))
    assert [r.name for r in plan.resources if set(TAGS) & set(r.inputs.get("tags") or {})] == []
    assert plan.one("aws:ec2/vpc:Vpc").inputs["tags"] == {"Name": "network"}


def test_extra_tags_reach_every_taggable_resource_beside_their_own() -> None:
    cfg = dataclasses.replace(plans.plan_config("small"), extra_tags={"cost-center": "ml"})
    plan = plans.run_program(cfg)
    taggable = [r for r in plan.resources if _taggable(r.type)]
    assert len(taggable) > 30
    assert [r.name for r in taggable if r.inputs["tags"].get("cost-center") != "ml"] == []
    assert plan.one("aws:ec2/vpc:Vpc").inputs["tags"] == {
        **TAGS,
        "cost-center": "ml",
        "Name": "network",
    }
    subnet = plan.one("aws:ec2/subnet:Subnet", "network-private-0").inputs
    assert subnet["tags"]["tier"] == "private"


def test_no_deprecated_v2_resources(any_plan) -> None:
    assert [r.type for r in any_plan.resources if r.type.endswith("V2")] == []


def test_contract_outputs_are_exported(any_plan) -> None:
    names = {v for k, v in vars(OutputNames).items() if k.isupper()}
    assert names <= set(any_plan.outputs)
    assert any_plan.outputs[OutputNames.REGION] == "us-east-1"
    assert any_plan.outputs[OutputNames.ARTIFACTS_URL] == (
        "s3://mlrig-plan-20261126abcdef/mlflow-artifacts"
    )


def _cfg():  # type: ignore[no-untyped-def]
    return plans.plan_config("small")


def test_an_output_that_never_resolves_fails_the_run(monkeypatch) -> None:
    monkeypatch.setattr(plans, "RESOLVE_TIMEOUT_S", 0.5)

    def build(cfg):  # type: ignore[no-untyped-def]
        import asyncio

        never: asyncio.Future = asyncio.get_event_loop().create_future()
        known: asyncio.Future = asyncio.get_event_loop().create_future()
        known.set_result(True)
        return {"stuck": pulumi.Output(set(), never, known)}

    with pytest.raises(plans.PlanError, match="did not resolve"):
        plans.run_program(_cfg(), build)


def test_an_output_with_no_value_fails_the_run() -> None:
    def build(cfg):  # type: ignore[no-untyped-def]
        # The mocks do not compute `kmsKeyId` for a log group: it stays unset.
        group = aws.cloudwatch.LogGroup("g", name="g")
        return {"fine": group.arn, "missing": group.kms_key_id}

    with pytest.raises(plans.PlanError, match="'missing' resolved to nothing"):
        plans.run_program(_cfg(), build)


def test_a_program_error_surfaces() -> None:
    def build(cfg):  # type: ignore[no-untyped-def]
        raise ValueError("broken component")

    with pytest.raises(ValueError, match="broken component"):
        plans.run_program(_cfg(), build)


def test_account_wide_names_carry_the_stack_name() -> None:
    """Two stacks in one account must not collide on names AWS requires to be unique."""
    from tests.helpers import make_plan

    plan = make_plan("small", stack="team-b")
    named = {
        "aws:cloudwatch/logGroup:LogGroup": "name",
        "aws:ecr/repository:Repository": "name",
        "aws:ecs/taskDefinition:TaskDefinition": "family",
        "aws:s3/bucket:Bucket": "bucketPrefix",
        "aws:rds/instance:Instance": "finalSnapshotIdentifier",
    }
    for token, key in named.items():
        for res in plan.of_type(token):
            assert "team-b" in res.inputs[key], (token, res.inputs[key])


def test_plan_runs_after_asyncio_run_closed_the_loop() -> None:
    """Other code in the process (servers, clients) may have run and closed a loop."""
    import asyncio

    async def nothing() -> None:
        return None

    asyncio.run(nothing())  # leaves the main thread with no current event loop
    assert plans.run_program(_cfg()).outputs["region"] == "us-east-1"
