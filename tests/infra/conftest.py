"""Plans of the AWS program under Pulumi mocks, built once per configuration per session."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from typing import Any

import pytest

DOMAIN = "mlflow.example.com"
REPO = "acme/churn-model"


@cache
def _plan(profile: str, domain: str | None, overrides: tuple[tuple[str, Any], ...]) -> Any:
    from mlrig.core import plan

    cfg = plan.plan_config(profile, domain=domain, github_repo=REPO)
    return plan.run_program(dataclasses.replace(cfg, **dict(overrides)))


def make_plan(profile: str, domain: str | None = None, **overrides: Any) -> Any:
    return _plan(profile, domain, tuple(sorted(overrides.items())))


# The two profiles as they are meant to be deployed: production with its domain (ALB).
PROFILES = [("small", None), ("production", DOMAIN)]


@pytest.fixture(params=PROFILES, ids=[p for p, _ in PROFILES])
def any_plan(request: pytest.FixtureRequest) -> Any:
    profile, domain = request.param
    return make_plan(profile, domain)


@pytest.fixture
def small() -> Any:
    return make_plan("small")


@pytest.fixture
def production() -> Any:
    return make_plan("production", DOMAIN)


def policy_doc(resource: Any, key: str = "policy") -> dict[str, Any]:
    return json.loads(resource.inputs[key])


def statement(resource: Any, sid: str, key: str = "policy") -> dict[str, Any]:
    found = [s for s in policy_doc(resource, key)["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1, f"{resource.name} has no single statement {sid}"
    return found[0]
