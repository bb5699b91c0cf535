"""`mlrig deploy` on an AWS stack, up to the Automation API (no Pulumi CLI here): the verbs'
state changes, the key check's parsing and hashing, one-line failures, `--dry-run`'s plan
and prices. The program it would run is tested under mocks in tests/infra/test_endpoint.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.deploy import _aws_state, _keys
from mlrig.core.deploy import aws as aws_deploy
from mlrig.core.deploy._aws_state import Desired
from mlrig.core.stack import endpoint_costs, endpoint_plan
from mlrig.errors import UsageError
from mlrig.infra.endpoint import authorizer
from mlrig.infra.endpoint.config import EndpointConfig
from mlrig.main import app
from tests.helpers import aws_outputs

runner = CliRunner()
IMG1 = endpoint_plan.sample_image("team", "us-east-1", "sha256:" + "1" * 64)
IMG2 = endpoint_plan.sample_image("team", "us-east-1", "sha256:" + "2" * 64)


# -- the key check ------------------------------------------------------------------------------
def test_the_authorizer_accepts_the_local_deploys_key_records() -> None:
    record, key = _keys.new_key()
    key_id, secret = key.split(":", 1)
    assert authorizer.ssha_matches(secret, record.hash)
    assert not authorizer.ssha_matches(secret + "x", record.hash)
    header = "Basic " + base64.b64encode(key.encode()).decode()
    assert authorizer.parse_basic(header) == (key_id, secret)
    assert authorizer.parse_basic("basic  " + header.split()[1]) == (key_id, secret)


@pytest.mark.parametrize(
    "stored",
    ["", "{SHA}abc", "{SSHA}", "{SSHA}!!!!", "{SSHA}" + base64.b64encode(b"x" * 20).decode()],
)
def test_a_malformed_stored_hash_never_matches(stored: str) -> None:
    assert authorizer.ssha_matches("anything", stored) is False


def test_the_decision_needs_a_2_0_request_event() -> None:
    record, key = _keys.new_key()
    keys = {record.id: record.hash}
    header = "Basic " + base64.b64encode(key.encode()).decode()
    good = {"version": "2.0", "type": "REQUEST", "headers": {"Authorization": header}}
    assert authorizer.decide(good, keys)["isAuthorized"] is True
    assert authorizer.decide({**good, "version": "1.0"}, keys) == {"isAuthorized": False}
    assert authorizer.decide({**good, "type": "TOKEN"}, keys) == {"isAuthorized": False}


# -- the verbs' state ---------------------------------------------------------------------------
def _deploy(current: Desired | None, served: str | None, **kw: Any) -> Desired:
    args = {"image": IMG2, "model": "churn", "version": "8", "canary": None, "warm": False}
    return _aws_state.deploy("churn", current, served, **{**args, "public": False, **kw})


def test_first_deploy_then_a_canary_promote_and_rollback() -> None:
    first = _deploy(None, None, image=IMG1, version="7")
    assert (first.image, first.stable_version, first.canary_percent) == (IMG1, None, None)
    canary = _deploy(first, "1", canary=10)
    assert (canary.image, canary.stable_version, canary.canary_percent) == (IMG2, "1", 10)
    promoted = _aws_state.promote("churn", canary, stable="1")
    assert (promoted.stable_version, promoted.canary_percent) == (None, None)
    assert promoted.previous_version == "1"
    back = _aws_state.rollback("churn", promoted, "2")
    # the alias goes back to version 1; the image (and so the function's code) is unchanged
    assert (back.image, back.stable_version, back.previous_version) == (IMG2, "1", "2")


def test_abort_keeps_the_stable_version() -> None:
    canary = _deploy(_deploy(None, None, image=IMG1), "1", canary=25)
    aborted = _aws_state.abort("churn", canary)
    assert (aborted.stable_version, aborted.canary_percent) == ("1", None)


def test_the_state_keeps_which_model_version_each_lambda_version_serves() -> None:
    def serves(d: Desired | None) -> str | None:
        return None if d is None or d.serving is None else d.serving.version

    first = _deploy(None, None, image=IMG1, version="7")
    canary = _deploy(first, "1", canary=10)
    assert (serves(canary), canary.stable_serves and canary.stable_serves.version) == ("7", "7")
    promoted = _aws_state.promote("churn", canary, stable="1")
    assert serves(promoted) == "8"
    assert promoted.previous_serves is not None and promoted.previous_serves.version == "7"
    back = _aws_state.rollback("churn", promoted, "2")
    assert serves(back) == "7" and back.previous_serves is not None
    assert (back.previous_version, back.previous_serves.version) == ("2", "8")
    forth = _aws_state.rollback("churn", back, "1")
    assert (forth.stable_version, serves(forth)) == ("2", "8")
    assert serves(_aws_state.abort("churn", _deploy(promoted, "2", canary=5))) == "8"


def test_a_damaged_serves_setting_is_one_line() -> None:
    from mlrig.errors import ConfigError

    with pytest.raises(ConfigError, match="mlrig:stableServes is not a model version"):
        Desired.from_config({"mlrig:image": IMG1, "mlrig:stableServes": '{"model": 1'})


def test_rollback_to_a_ref_publishes_its_image() -> None:
    current = _deploy(None, None)
    back = _aws_state.rollback("churn", current, "3", image=IMG1, model="churn", version="7")
    assert (back.image, back.stable_version, back.model_version) == (IMG1, None, "7")


def test_a_warm_rollback_puts_the_previous_digest_back() -> None:
    """ECS has no alias to re-point: the state keeps the previous image's digest, and a plain
    rollback deploys it again (same repository); rolling back twice goes forth again."""
    first = _deploy(None, None, image=IMG1, version="7", warm=True)
    second = _deploy(first, None, warm=True)
    assert second.previous_serves is not None
    assert (second.previous_serves.version, second.previous_serves.digest) == (
        "7",
        "sha256:" + "1" * 64,
    )
    back = _aws_state.rollback("churn", second, None)
    assert (back.image, back.model_version, back.warm) == (IMG1, "7", True)
    assert back.previous_serves is not None and back.previous_serves.version == "8"
    forth = _aws_state.rollback("churn", back, None)
    assert (forth.image, forth.model_version) == (IMG2, "8")
    with pytest.raises(UsageError, match="warm endpoint 'churn' has no previous version"):
        _aws_state.rollback("churn", first, None)


def test_a_stored_digest_that_is_not_one_is_one_line() -> None:
    """previous_serves is read back from the stack's config: a warm rollback makes an image
    reference of its digest, so anything but sha256:<64 hex> is refused where it is read."""
    from mlrig.errors import ConfigError

    bad = json.dumps({"model": "churn", "version": "7", "digest": "sha256:1@evil"})
    with pytest.raises(ConfigError, match="mlrig:previousServes is not a model version"):
        Desired.from_config(
            {"mlrig:image": IMG1, "mlrig:warm": "true", "mlrig:previousServes": bad}
        )
    with pytest.raises(ConfigError, match="mlrig:modelVersion is '7; rm', not a model"):
        Desired.from_config({"mlrig:image": IMG1, "mlrig:modelVersion": "7; rm"})


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (lambda: _deploy(None, None, canary=10), "serves nothing yet"),
        (lambda: _deploy(_deploy(_deploy(None, None), "1", canary=5), "1"), "has a canary"),
        (lambda: _aws_state.promote("churn", _deploy(None, None), stable="1"), "no canary"),
        (lambda: _aws_state.abort("churn", None), "no canary"),
        (lambda: _aws_state.rollback("churn", _deploy(None, None), "1"), "no previous version"),
        (lambda: _deploy(_deploy(None, None), "1", warm=True), "delete it first"),
        # a warm endpoint has no canary, with or without --warm on the command line
        (lambda: _deploy(_deploy(None, None, warm=True), None, canary=10), "has no canary"),
        (lambda: _deploy(_deploy(None, None, warm=True), None, canary=10, warm=True), "ECS"),
    ],
)
def test_refusals(step: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        step()


def test_what_status_shows_for_each_state() -> None:
    since = "2026-12-07T12:00:00+00:00"
    serving = Desired(IMG2, model="churn", model_version="8", since=since)
    (only,) = aws_deploy._view("churn", serving, {"published_version": "2"}).backends
    assert (only.version, only.lambda_version, only.weight) == ("8", "2", 100)
    assert only.since.isoformat() == since and only.digest == "sha256:" + "2" * 64
    canary = aws_deploy._view(
        "churn", Desired(IMG2, "1", 10, model="churn", model_version="8", since=since), {}
    )
    assert [(b.version, b.weight) for b in canary.backends] == [("lambda:1", 90), ("8", 10)]
    assert canary.canary is not None
    rolled_back = aws_deploy._view("churn", Desired(IMG2, "1", since=since), {})
    assert [(b.version, b.weight) for b in rolled_back.backends] == [("lambda:1", 100)]


def test_the_state_round_trips_through_the_stack_config() -> None:
    state = Desired(
        IMG1,
        "3",
        10,
        "2",
        False,
        True,
        "churn",
        "7",
        "2026-12-07T12:00:00+00:00",
        _aws_state.Serves(model="churn", version="6", digest="sha256:" + "6" * 64),
        _aws_state.Serves(model="churn", version="5"),
        10,
        "ab" * 16,
    )
    settings, removed = state.to_config()
    assert removed == []
    assert Desired.from_config(settings) == state
    plain = Desired(IMG1)
    settings, removed = plain.to_config()
    assert set(removed) == {
        "mlrig:stableVersion",
        "mlrig:canaryPercent",
        "mlrig:previousVersion",
        "mlrig:since",
        "mlrig:stableServes",
        "mlrig:previousServes",
        "mlrig:capturePercent",
        "mlrig:runId",
    }
    assert Desired.from_config(settings) == plain
    assert Desired.from_config({}) is None


# -- the CLI ------------------------------------------------------------------------------------
def _one_line(result: Any) -> str:
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) <= 2, text
    return " ".join(text.split())


@pytest.fixture
def aws_stack(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    contract.save(aws_outputs("team").model_copy(update={"region": "us-east-1"}))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no `pulumi` on PATH
    return "team"


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "models:/churn/7", "--stack", "team"],
        ["deploy", "models:/churn/7", "--stack", "team", "--warm"],
        ["deploy", "promote", "churn", "--stack", "team"],
        ["deploy", "abort", "churn", "--stack", "team"],
        ["deploy", "rollback", "churn", "--stack", "team"],
        ["deploy", "delete", "churn", "--stack", "team"],
        ["deploy", "status", "churn", "--stack", "team"],
        ["deploy", "list", "--stack", "team"],
    ],
)
def test_without_the_pulumi_cli_each_verb_fails_in_one_line(
    aws_stack: str, argv: list[str]
) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code != 0
    line = _one_line(result)
    assert "the `pulumi` CLI is not installed" in line and "https://get.pulumi.com" in line


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["deploy", "dry-run"])
def test_warm_with_a_canary_is_one_line_saying_what_happens_instead(
    aws_stack: str, monkeypatch: pytest.MonkeyPatch, dry_run: list[str]
) -> None:
    """Refused before REF is resolved (which may build and push) and before the Pulumi CLI
    is looked for; the line says what a warm deploy does instead."""
    monkeypatch.setattr(aws_deploy, "resolve", lambda *a: pytest.fail("REF was resolved"))
    argv = ["deploy", "models:/churn/7", "--stack", "team", "--warm", "--canary", "10"]
    result = runner.invoke(app, [*argv, *dry_run])
    assert result.exit_code != 0
    line = _one_line(result)
    assert "a warm endpoint has no canary" in line
    assert "once its /ping health check passes, then drains the old one" in line
    assert "rolls back by itself" in line and "mlrig deploy rollback" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            [
                "deploy",
                "models:/churn/7",
                "--canary",
                "5",
                "--max-error-rate",
                "1",
                "--p99-floor",
                "9",
            ],
            "--max-error-rate, --p99-floor: the local stack's canary limits; on AWS the "
            "canary's CloudWatch alarms judge it",
        ),
        (["deploy", "models:/churn/7", "--min-requests", "5"], "--min-requests: the local"),
        (["deploy", "promote", "churn", "--force"], "--force is for the local stack"),
    ],
)
def test_local_only_options_on_aws_are_one_line_not_ignored(
    aws_stack: str, argv: list[str], says: str
) -> None:
    """Refused before anything is read (no Pulumi CLI on PATH here: that line would win)."""
    result = runner.invoke(app, [*argv, "--stack", aws_stack])
    assert result.exit_code != 0
    assert says in _one_line(result)


def test_warm_and_dry_run_are_for_aws_stacks(mlrig_home: Path) -> None:
    from tests.helpers import sample

    contract.save(sample("here"))
    result = runner.invoke(app, ["deploy", "models:/m/1", "--stack", "here", "--dry-run"])
    assert result.exit_code != 0
    assert "--warm and --dry-run are for AWS stacks" in _one_line(result)


def test_dry_run_shows_resources_and_prices(
    aws_stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything after REF's resolution (MLflow + ECR, tested with the real services in
    the integration suite) runs offline: the program under mocks, priced."""
    target = aws_deploy.Target("churn", "7", "sha256:" + "1" * 64, IMG1)
    monkeypatch.setattr(aws_deploy, "resolve", lambda outputs, ref: target)
    result = runner.invoke(
        app, ["deploy", "models:/churn/7", "--stack", "team", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    types = {t for t, _ in doc["resources"]}
    assert {"aws:lambda/function:Function", "aws:lambda/alias:Alias"} <= types
    assert doc["reads"] == ["organization/mlrig/team"]
    cost = doc["cost"]
    assert cost["idle_month"] == 0.0  # nothing costs at rest
    assert 1.5 < cost["per_million_requests"] < 4.0
    assert (cost["price_region"], cost["price_date"]) == ("us-east-1", "2025-06")

    human = runner.invoke(app, ["deploy", "models:/churn/7", "--stack", "team", "--dry-run"])
    assert "$0.00/month idle" in human.output and "per million requests" in human.output
    canary = runner.invoke(
        app, ["deploy", "models:/churn/7", "--stack", "team", "--dry-run", "--canary", "10"]
    )
    assert "$0.20/month idle" in canary.output  # the canary's two alarms, while it runs


def test_warm_costs_a_fargate_task_a_month() -> None:
    cfg = EndpointConfig(
        base_stack="team", endpoint="churn", region="us-east-1", image=IMG1, warm=True
    )
    planned, _ = endpoint_plan.run_endpoint_program(cfg)
    est = endpoint_costs.estimate(planned)
    # 0.5 vCPU + 1 GB on-demand (17.6) + its public IPv4 (3.65) + Cloud Map (0.10)
    assert est.idle_month == pytest.approx(
        (0.5 * 0.04048 + 1 * 0.004445) * 730 + 0.005 * 730 + 0.10, abs=0.01
    )
    # per request: the API and the key check only (the task is paid by the hour)
    assert est.per_million == pytest.approx(
        1.0 + 0.2 + 0.128 * 0.010 * 1e6 * 0.0000133334 + 0.3 * 0.5, abs=0.01
    )


def test_lambda_per_million_is_requests_compute_api_and_logs() -> None:
    cfg = EndpointConfig(base_stack="team", endpoint="churn", region="us-east-1", image=IMG1)
    planned, _ = endpoint_plan.run_endpoint_program(cfg)
    est = endpoint_costs.estimate(planned)
    model = 0.2 + 1.0 * 0.100 * 1e6 * 0.0000166667 + 0.3 * 0.5
    check = 0.2 + 0.125 * 0.010 * 1e6 * 0.0000133334 + 0.3 * 0.5
    assert est.per_million == pytest.approx(model + check + 1.0, abs=0.01)
    assert est.idle_month == 0.0


def test_the_seam_picks_the_module_by_the_stacks_kind(mlrig_home: Path) -> None:
    from mlrig.core.deploy import backend, endpoints
    from tests.helpers import sample

    contract.save(aws_outputs("team"))
    contract.save(sample("here"))
    assert backend.for_stack("team") is aws_deploy
    assert backend.for_stack("here") is endpoints
    import inspect

    # the command calls either with the same arguments: AWS takes at least the local ones,
    # except the local canary's own watch (nginx's request log), which the command passes
    # only to the local stack (AWS watches its alarms: `bake_minutes`)
    local_only = {"deploy": {"bake", "limits"}, "promote": {"force"}}
    verbs = ("deploy", "status", "promote", "abort", "rollback", "delete")
    for verb in (*verbs, "create_key", "list_keys", "revoke_key"):
        local = inspect.signature(getattr(endpoints, verb)).parameters
        on_aws = inspect.signature(getattr(aws_deploy, verb)).parameters
        assert set(local) - local_only.get(verb, set()) <= set(on_aws), verb


def test_the_ecs_adapter_reads_the_primary_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a warm rollout is judged on: the PRIMARY deployment's task definition and
    rollout state, from DescribeServices as botocore validates it."""
    import boto3
    from botocore.stub import Stubber

    from mlrig.adapters import aws as aws_adapter

    ecs = boto3.client(
        "ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    td = "arn:aws:ecs:us-east-1:123456789012:task-definition/mlrig-team-ep-churn:{}"
    deployments = [
        {"id": "a", "status": "PRIMARY", "taskDefinition": td.format(3), "rolloutState": "FAILED"},
        {
            "id": "b",
            "status": "ACTIVE",
            "taskDefinition": td.format(2),
            "rolloutState": "COMPLETED",
        },
    ]
    asked = {"cluster": "c", "services": ["s"]}
    with Stubber(ecs) as stub:
        stub.add_response("describe_services", {"services": [{"deployments": deployments}]}, asked)
        stub.add_response("describe_services", {"services": [], "failures": []}, asked)
        monkeypatch.setattr(aws_adapter, "client", lambda *a, **kw: ecs)
        found = aws_adapter.ecs_primary_deployment("c", "s", region="us-east-1")
        assert found == aws_adapter.EcsRollout(td.format(3), "FAILED")
        assert aws_adapter.ecs_primary_deployment("c", "s", region="us-east-1") is None
