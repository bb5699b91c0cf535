"""Fixtures: plans of the AWS program under Pulumi mocks (`tests.helpers.make_plan`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import DOMAIN, make_plan

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
