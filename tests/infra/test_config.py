"""The `mlrig:*` config the CLI writes is what the program reads (pulumi CLI path too)."""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest
from pulumi.runtime import config

from mlrig.core.stack import plan as plans
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


def test_the_server_size_in_config_sizes_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {f"mlrig:{k}": "x" for k in ("dbPassword", "adminPassword", "flaskSecret")}
    image = {"mlrig:mlflowImage": "1.dkr.ecr.us-east-1.amazonaws.com/x@sha256:abc"}
    values = {"aws:region": "us-east-1", "mlrig:serverSize": "2048:4096", **secrets, **image}
    _with_config(monkeypatch, values)
    seen = {}

    def build(_cfg):  # type: ignore[no-untyped-def]
        seen["cfg"] = from_pulumi_config()
        return program.build(seen["cfg"])

    planned = plans.run_program(plans.plan_config("small", name="cfgsize"), build)
    assert (seen["cfg"].profile.name, seen["cfg"].profile.server_size) == ("small", "2048:4096")
    task = planned.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert (task["cpu"], task["memory"]) == ("2048", "4096")
    _with_config(monkeypatch, {"aws:region": "us-east-1", "mlrig:serverSize": "2048:1024"})
    with pytest.raises(ValueError, match="a 2048-unit Fargate task takes 4096-16384 MiB"):
        from_pulumi_config()
