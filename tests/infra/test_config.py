"""The `mlrig:*` config the CLI writes is what the program reads (pulumi CLI path too)."""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest
from pulumi.runtime import config

from mlrig.core import plan as plans
from mlrig.infra import program
from mlrig.infra.config import from_pulumi_config


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    yield
    config.set_all_config({}, [])


def _with_config(_mp: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    config.set_all_config(
        dict(values), ["mlrig:dbPassword", "mlrig:adminPassword", "mlrig:flaskSecret"]
    )


def test_config_keys_reach_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_config(
        monkeypatch,
        {
            "aws:region": "eu-west-1",
            "mlrig:profile": "production",
            "mlrig:dbPassword": "db-pw",
            "mlrig:adminPassword": "admin-pw",
            "mlrig:flaskSecret": "flask",
            "mlrig:githubRepo": "acme/model",
            "mlrig:githubRef": "environment:prod",
            "mlrig:domain": "ml.acme.io",
            "mlrig:mlflowImage": "1.dkr.ecr.eu-west-1.amazonaws.com/x@sha256:abc",
            "mlrig:forceDelete": "true",
            "mlrig:enhancedScanning": "true",
        },
    )
    seen = {}

    def build(_cfg):  # type: ignore[no-untyped-def]
        cfg = from_pulumi_config()
        seen["cfg"] = cfg
        return program.build(cfg)

    planned = plans.run_program(plans.plan_config("small", name="cfgtest"), build)
    cfg = seen["cfg"]
    assert (cfg.region, cfg.profile.name, cfg.github_repo, cfg.github_ref, cfg.domain) == (
        "eu-west-1",
        "production",
        "acme/model",
        "environment:prod",
        "ml.acme.io",
    )
    assert cfg.force_delete is True and cfg.enhanced_scanning is True
    assert isinstance(cfg.secrets.db_password, pulumi.Output)  # kept secret
    assert planned.one("aws:rds/instance:Instance").inputs["multiAz"] is True
    container = planned.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    assert "1.dkr.ecr.eu-west-1.amazonaws.com/x@sha256:abc" in container
    assert planned.outputs["mlflow_tracking_uri"] == "https://ml.acme.io"


def test_unknown_profile_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_config(monkeypatch, {"aws:region": "us-east-1", "mlrig:profile": "tiny"})
    with pytest.raises(ValueError, match="mlrig:profile must be one of"):
        from_pulumi_config()
