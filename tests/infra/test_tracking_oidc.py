"""Where an AWS stack's OIDC rules live: Pulumi config (`mlrig:oidcRules`) -> StackConfig ->
the task's MLRIG_OIDC_CONFIG, which the server's auth hook reads (mlrig/tracking/oidc.py)."""

from __future__ import annotations

import json

from pulumi.runtime import config

from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.tracking import oidc as tracking_oidc
from tests.helpers import make_plan

TASK = "aws:ecs/taskDefinition:TaskDefinition"
RULE = tracking_oidc.Rule("acme/churn-model", "repo-churn-model", ("refs/heads/main",))


def _env(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    (container,) = json.loads(plan.one(TASK).inputs["containerDefinitions"])
    return {e["name"]: e["value"] for e in container["environment"]}


def test_the_rules_reach_the_task_with_the_stacks_audience() -> None:
    env = _env(make_plan("small", oidc_rules=(RULE,)))
    config = tracking_oidc.ConfigSource(env).get()
    assert config.issuer == tracking_oidc.GITHUB_ISSUER
    assert config.audience == "mlrig:plan"
    assert config.rules == (RULE,)
    assert ts.ENV_OIDC_CONFIG not in ts_container.CONTAINER_SECRET_ENV_NAMES  # not a secret


def test_no_rules_no_bearer_config() -> None:
    assert ts.ENV_OIDC_CONFIG not in _env(make_plan("small"))


def test_the_program_reads_the_rules_the_cli_writes() -> None:
    try:
        _program_reads_the_rules()
    finally:
        config.set_all_config({}, [])


def _program_reads_the_rules() -> None:
    from mlrig.infra.config import from_pulumi_config

    secrets = ["mlrig:dbPassword", "mlrig:adminPassword", "mlrig:flaskSecret"]
    values = {k: "x" for k in secrets}
    values |= {
        "aws:region": "us-east-1",
        "mlrig:oidcRules": json.dumps([RULE.to_json()]),
        "mlrig:oidcAudience": "mlrig:team",
    }
    config.set_all_config(values, secrets)
    cfg = from_pulumi_config()
    assert cfg.oidc_rules == (RULE,)
    assert cfg.oidc == {
        "issuer": tracking_oidc.GITHUB_ISSUER,
        "audience": "mlrig:team",
        "rules": [RULE.to_json()],
    }
    config.set_all_config({**values, "mlrig:oidcRules": "[]"}, secrets)
    assert from_pulumi_config().oidc is None  # the last rule removed: no bearer config
