"""The AWS deploy verbs end to end above the Automation API: `deploy list`, the audit line of
each change and what a rollback records on the model version, with the endpoint stacks held
by an in-memory stand-in for Pulumi (config and outputs; `up` publishes a Lambda version when
the image changes and reports the one the alias serves, as the endpoint program does).

What this proves: which stacks `list` shows (this base stack's, deployed, valid names), the
rows' shape (the one `deploy status` renders for the local stack), that every verb writes
one line in the local stack's audit format naming the version it concerns, that a plain
rollback names the model version the older Lambda version serves, and that delete forgets
the endpoint stack. What it does not prove: the Pulumi CLI's own listing of a backend (there
is no CLI here; `list_stack_names` is a thin call of LocalWorkspace.list_stacks), the program
(tests/infra/test_endpoint*.py), SSM and the key check (tests/integration/
test_endpoint_authorizer.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.adapters import pulumi as pulumi_adapter
from mlrig.core.access import _log, audit
from mlrig.core.deploy import _aws_keys
from mlrig.core.deploy import aws as aws_deploy
from mlrig.core.stack import endpoint_plan
from mlrig.main import app
from tests.helpers import aws_outputs

runner = CliRunner()
STACK = "team"
IMG = {v: endpoint_plan.sample_image(STACK, "us-east-1", "sha256:" + v * 64) for v in "789"}


class FakeStack:
    """An endpoint stack: config, and outputs as the endpoint program computes them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.config: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.published: list[str] = []  # images, in the order each published a version

    def up(self) -> dict[str, Any]:
        image = self.config["mlrig:image"]
        if not self.published or self.published[-1] != image:
            self.published.append(image)
        published = str(len(self.published))
        self.outputs = {
            "published_version": published,
            "served_version": self.config.get("mlrig:stableVersion", published),
            "url": f"https://api.example.com/endpoints/{self.name.split('.', 1)[1]}",
            "alarm_names": [],
        }
        return dict(self.outputs)


@pytest.fixture
def world(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    contract.save(aws_outputs(STACK).model_copy(update={"region": "us-east-1"}))
    stacks: dict[str, FakeStack] = {}
    keys: dict[str, list[Any]] = {}
    recorded: list[tuple[str, str, str, str]] = []

    def open_(outputs: Any, endpoint: str) -> FakeStack:
        return stacks.setdefault(endpoint, FakeStack(f"{outputs.name}.{endpoint}"))

    def set_config(stack: FakeStack, values: dict[str, str], _secret: Any) -> None:
        stack.config.update(values)

    def remove_config(stack: FakeStack, removed: list[str]) -> None:
        for k in removed:
            stack.config.pop(k, None)

    def remove_stack(stack: FakeStack) -> None:
        del stacks[stack.name.split(".", 1)[1]]

    def list_names(**_kw: Any) -> list[str]:
        # another base stack's endpoint, a name mlrig never makes
        return [
            *(s.name for s in stacks.values()),
            "other.churn",
            f"{STACK}.Bad_Name",
        ]

    patches: dict[str, Any] = {
        "cli_path": lambda: "/usr/bin/pulumi",
        "set_config": set_config,
        "remove_config": remove_config,
        "get_config": lambda stack, key: stack.config.get(key),
        "outputs": lambda stack: dict(stack.outputs),
        "up": lambda stack, on_output: stack.up(),
        "destroy": lambda stack, on_output: stack.outputs.clear(),
        "remove_stack": remove_stack,
        "list_stack_names": list_names,
    }
    for attr, fake in patches.items():
        monkeypatch.setattr(pulumi_adapter, attr, fake)
    monkeypatch.setattr(aws_deploy, "_open", open_)
    monkeypatch.setattr(
        aws_deploy,
        "resolve",
        lambda outputs, ref: aws_deploy.Target(
            "churn", ref.rsplit("/", 1)[1], "sha256:" + ref[-1] * 64, IMG[ref[-1]], ref[-1] * 32
        ),
    )
    monkeypatch.setattr(
        aws_deploy,
        "_record",
        lambda outputs, name, model, version, what: recorded.append((name, model, version, what)),
    )
    monkeypatch.setattr(aws_deploy, "_forget_alias", lambda *a: None)
    monkeypatch.setattr(_aws_keys, "read", lambda base, name, region: keys.get(name))
    monkeypatch.setattr(
        _aws_keys, "write", lambda base, name, region, records: keys.__setitem__(name, records)
    )
    monkeypatch.setattr(_aws_keys, "delete", lambda base, name, region: keys.pop(name, None))
    return {"stacks": stacks, "keys": keys, "recorded": recorded}


def _audit_lines() -> list[_log.AuditEntry]:
    with audit.path(STACK).open(encoding="utf-8") as fh:
        return _log.read_entries(fh)


def _ok(argv: list[str]) -> str:
    result = runner.invoke(app, [*argv, "--stack", STACK])
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def test_list_shows_this_stacks_endpoints_as_status_does(world: dict[str, Any]) -> None:
    assert json.loads(_ok(["deploy", "list", "--json"])) == []
    _ok(["deploy", "models:/churn/7"])
    _ok(["deploy", "models:/churn/8", "--endpoint", "fraud", "--public"])
    world["stacks"]["halfmade"] = FakeStack(f"{STACK}.halfmade")  # a first deploy that failed

    rows = json.loads(_ok(["deploy", "list", "--json"]))
    assert [r["endpoint"] for r in rows] == ["churn", "fraud"]
    churn, fraud = rows
    assert churn["key_count"] == 1 and churn["public"] is False
    assert fraud["key_count"] == 0 and fraud["public"] is True
    assert churn["url"] == "https://api.example.com/endpoints/churn/invocations"
    (serving,) = churn["serving"]
    assert (serving["model"], serving["version"], serving["traffic"]) == ("churn", "7", 100)
    assert serving["digest"] == "sha256:" + "7" * 64 and serving["lambda_version"] == "1"
    assert json.loads(_ok(["deploy", "status", "churn", "--json"])) == [churn]

    human = _ok(["deploy", "list"])
    assert "churn: https://api.example.com/endpoints/churn/invocations (API Gateway)" in human
    assert "1 key" in human and "[PUBLIC: no key needed]" in human
    assert "100%  churn v7  sha256:77777777777" in human


def test_each_change_is_an_audit_line_and_a_plain_rollback_names_its_version(
    world: dict[str, Any],
) -> None:
    _ok(["deploy", "models:/churn/7"])
    _ok(["deploy", "models:/churn/8", "--canary", "10", "--bake", "0"])
    canary = json.loads(_ok(["deploy", "status", "churn", "--json"]))[0]["serving"]
    assert [(b["version"], b["traffic"]) for b in canary] == [("7", 90), ("8", 10)]
    _ok(["deploy", "abort", "churn"])
    _ok(["deploy", "models:/churn/8", "--canary", "20", "--bake", "0"])
    _ok(["deploy", "promote", "churn"])
    world["recorded"].clear()

    back = json.loads(_ok(["deploy", "rollback", "churn", "--json"]))
    (serving,) = back["serving"]
    # the alias re-points to Lambda version 1, which serves model version 7
    assert (serving["version"], serving["lambda_version"]) == ("7", "1")
    assert serving["digest"] == "sha256:" + "7" * 64
    assert back["previous"] == "8"
    assert world["recorded"] == [("churn", "churn", "7", "rolled back")]
    again = json.loads(_ok(["deploy", "rollback", "churn", "--json"]))
    assert again["serving"][0]["version"] == "8" and again["previous"] == "7"

    key = _ok(["deploy", "keys", "create", "churn"]).strip()
    key_id = key.split(":", 1)[0]
    _ok(["deploy", "keys", "revoke", "churn", key_id])
    _ok(["deploy", "delete", "churn"])
    assert "churn" not in world["stacks"]  # the endpoint stack is forgotten: not listed
    assert json.loads(_ok(["deploy", "list", "--json"])) == []

    lines = _audit_lines()
    assert [e.method for e in lines] == [
        "DEPLOY",
        "CANARY",
        "ABORT",
        "CANARY",
        "PROMOTE",
        "ROLLBACK",
        "ROLLBACK",
        "KEY-CREATE",
        "KEY-REVOKE",
        "DELETE",
    ]
    assert {e.path for e in lines} == {"/endpoints/churn"}
    assert {(e.auth, e.source) for e in lines} == {("local", "cli")}
    deploy, canary1, abort, _c2, promote, rollback, rollback2 = lines[:7]
    assert deploy.object["version"] == "7" and deploy.object["key_id"]
    assert (canary1.object["version"], canary1.object["traffic"]) == ("8", "10")
    assert abort.object["version"] == "8"  # the canary that stopped serving
    assert (promote.object["version"], promote.object["traffic"]) == ("8", "100")
    assert rollback.object["version"] == "7"
    assert rollback.object["digest"] == "sha256:" + "7" * 64
    assert rollback2.object["version"] == "8"
    assert lines[7].object["key_id"] == key_id == lines[8].object["key_id"]
    assert not any(key.split(":", 1)[1] in json.dumps(e.object) for e in lines)


def test_status_of_an_unknown_endpoint_is_one_line(world: dict[str, Any]) -> None:
    result = runner.invoke(app, ["deploy", "status", "nope", "--stack", STACK])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no endpoint 'nope' on stack 'team'" in result.output


def test_capture_is_the_endpoints_setting_on_aws(world: dict[str, Any]) -> None:
    _ok(["deploy", "models:/churn/7", "--capture", "10"])
    config = world["stacks"]["churn"].config
    assert config["mlrig:capturePercent"] == "10"
    assert config["mlrig:runId"] == "7" * 32  # what the function's records name
    (row,) = json.loads(_ok(["deploy", "status", "churn", "--json"]))
    assert (row["capture"], row["captures"]) == (10, "s3://bucket/captures/churn")
    _ok(["deploy", "models:/churn/8"])  # kept when not given
    assert world["stacks"]["churn"].config["mlrig:capturePercent"] == "10"
    _ok(["deploy", "models:/churn/9", "--capture", "0"])  # 0 turns it off
    assert "mlrig:capturePercent" not in world["stacks"]["churn"].config
    result = runner.invoke(app, ["deploy", "models:/churn/9", "--capture", "101", "--stack", STACK])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_a_warm_endpoint_takes_capture_as_its_setting(world: dict[str, Any]) -> None:
    """`deploy --warm --capture N`: accepted, kept in the endpoint stack's config, and what
    the endpoint program reads back (its task role gets PutObject only with a share)."""
    from mlrig.infra.endpoint.config import EndpointConfig

    _ok(["deploy", "models:/churn/7", "--warm", "--capture", "25"])
    config = world["stacks"]["churn"].config
    assert (config["mlrig:warm"], config["mlrig:capturePercent"]) == ("true", "25")
    (row,) = json.loads(_ok(["deploy", "status", "churn", "--json"]))
    assert (row["capture"], row["captures"]) == (25, "s3://bucket/captures/churn")
    planned = EndpointConfig(
        base_stack=STACK,
        endpoint="churn",
        region="us-east-1",
        image=config["mlrig:image"],
        warm=True,
        capture_percent=int(config["mlrig:capturePercent"]),
    )
    assert planned.captures
