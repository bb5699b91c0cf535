"""The transformation that sets the stack's tags once (mlrig.infra.tagging)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from mlrig.core.stack import plan as plans
from mlrig.infra.tagging import merged, tagged

STACK_TAGS = {"project": "mlrig", "stack": "plan"}


def test_a_resource_keeps_its_own_tags_and_wins_a_clash() -> None:
    assert merged(STACK_TAGS, None) == STACK_TAGS
    assert merged(STACK_TAGS, {"Name": "vpc", "stack": "mine"}) == {
        "project": "mlrig",
        "stack": "mine",
        "Name": "vpc",
    }


class _Part(pulumi.ComponentResource):
    def __init__(self, name: str, opts: pulumi.ResourceOptions) -> None:
        super().__init__("test:index:Part", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        group = aws.cloudwatch.LogGroup(f"{name}-plain", name="plain", opts=child)
        aws.cloudwatch.LogGroup(f"{name}-own", name="own", tags={"tier": "x"}, opts=child)
        # Tags known only at deployment still get the stack's beside them.
        aws.cloudwatch.LogGroup(
            f"{name}-later",
            name="later",
            tags=group.name.apply(lambda n: {"of": n}),
            opts=child,
        )
        aws.ecs.ClusterCapacityProviders(f"{name}-untaggable", cluster_name="c", opts=child)
        self.register_outputs({"arn": group.arn})


def _tags_under(tags: dict[str, str]) -> dict[str, Any]:
    def build(_cfg: Any) -> dict[str, pulumi.Input[object]]:
        _Part("part", tagged(tags))
        return {"done": True}

    plan = plans.run_program(plans.plan_config("small"), build)
    return {r.name: r.inputs.get("tags") for r in plan.resources}


def test_a_components_children_are_tagged_and_untaggable_ones_left_alone() -> None:
    assert _tags_under(STACK_TAGS) == {
        "part-plain": STACK_TAGS,
        "part-own": {**STACK_TAGS, "tier": "x"},
        "part-later": {**STACK_TAGS, "of": "plain"},
        "part-untaggable": None,
    }


def test_one_programs_tags_do_not_leak_into_the_next_in_the_same_process() -> None:
    _tags_under({"stack": "a", "only-a": "1"})
    assert _tags_under({"stack": "b"})["part-plain"] == {"stack": "b"}
