"""Existing stacks keep every resource: each URN they hold is still claimed by the program.

A resource's URN spells its parent chain, so moving it under a new sub-component replaces it
unless it carries an alias to its former parent. `stack_urns.json` lists the URNs deployed
stacks hold (the program before its components were split); every one of them must be a
planned resource's URN or one of its aliases, and no planned resource may claim none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import mocks

from mlrig.core.stack import plan as plans
from tests.helpers import DOMAIN

DEPLOYED = json.loads((Path(__file__).parent / "stack_urns.json").read_text())
STACK_TYPE = "pulumi:pulumi:Stack"


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every RegisterResource request the program sends to the mock monitor."""
    seen: list[dict[str, Any]] = []
    register = mocks.MockMonitor.RegisterResource

    def record(self: Any, request: Any) -> Any:
        response = register(self, request)
        seen.append(
            {
                "urn": response.urn,
                "type": request.type,
                "name": request.name,
                "parent": request.parent,
                "custom": request.custom,
                "alias_parents": [a.spec.parentUrn for a in request.aliases if a.spec.parentUrn],
            }
        )
        return response

    monkeypatch.setattr(mocks.MockMonitor, "RegisterResource", record)
    yield seen


def _claimed_urns(seen: list[dict[str, Any]]) -> list[set[str]]:
    """Per custom resource, the engine's URNs it answers to (its own and its aliases')."""
    by_urn = {r["urn"]: r for r in seen}

    def chain(urn: str) -> str:
        # The mock monitor's URNs name only the parent's type; the engine's name the chain.
        res = by_urn.get(urn)
        if res is None or res["type"] == STACK_TYPE:
            return ""
        parent = chain(res["parent"]) if res["parent"] else ""
        return f"{parent}${res['type']}" if parent else res["type"]

    def urn(qualified_type: str, name: str) -> str:
        return f"urn:pulumi:{plans.PLAN_STACK}::mlrig::{qualified_type}::{name}"

    claimed = []
    for res in seen:
        if not res["custom"]:
            continue
        own = urn(chain(res["urn"]), res["name"])
        via = {urn(f"{chain(p)}${res['type']}", res["name"]) for p in res["alias_parents"]}
        claimed.append({own} | via)
    return claimed


@pytest.mark.parametrize(("profile", "domain"), [("small", None), ("production", DOMAIN)])
def test_every_deployed_urn_is_still_claimed(registrations, profile, domain) -> None:
    plans.run_program(plans.plan_config(profile, domain=domain))
    claimed = _claimed_urns(registrations)
    deployed = set(DEPLOYED[profile])
    assert [c for c in claimed if not c & deployed] == [], "new resources (or renamed ones)"
    assert deployed - set().union(*claimed) == set(), "deployed resources would be replaced"
    # The split moved some children under sub-components: they must answer through aliases.
    assert any(len(c) > 1 for c in claimed)
