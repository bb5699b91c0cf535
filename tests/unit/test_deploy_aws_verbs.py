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
TASK_DEFINITION = "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:{}"
IMG = {v: endpoint_plan.sample_image(STACK, "us-east-1", "sha256:" + v * 64) for v in "789"}


class FakeStack:
    """An endpoint stack: config, and outputs as the endpoint program computes them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.config: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.published: list[str] = []  # images, in the order each published a version
        self.ups = 0

    def up(self) -> dict[str, Any]:
        image = self.config["mlrig:image"]
        if not self.published or self.published[-1] != image:
            self.published.append(image)
        published = str(len(self.published))
        url = f"https://api.example.com/endpoints/{self.name.split('.', 1)[1]}"
        self.ups += 1
        if self.config.get("mlrig:warm") == "true":
            # each `up` that changes the image registers a task definition revision
            family = f"mlrig-{self.name.replace('.', '-ep-')}"
            self.outputs = {
                "url": url,
                "kind": "warm",
                "cluster_arn": "arn:aws:ecs:us-east-1:123456789012:cluster/mlflow-cluster",
                "service_name": f"{family}-service",
                "task_definition_arn": TASK_DEFINITION.format(family, published),
            }
            return dict(self.outputs)
        self.outputs = {
            "published_version": published,
            "served_version": self.config.get("mlrig:stableVersion", published),
            "url": url,
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


# -- warm endpoints: ECS rolls out, the CLI checks what it runs ----------------------------------
@pytest.fixture
def ecs(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """ECS as the CLI reads it after `up`: the PRIMARY deployment runs the newest task
    definition, or (rolls_back) the circuit breaker put the one before it back (a first
    rollout, with none before it, stays FAILED)."""
    from mlrig.adapters import aws as aws_adapter

    seen: dict[str, Any] = {"rolls_back": False, "asked": [], "verified": []}

    def primary(cluster: str, service: str, *, region: str | None = None) -> Any:
        seen["asked"].append((cluster, service, region))
        stack = world["stacks"]["churn"]
        newest = stack.outputs["task_definition_arn"]
        if not seen["rolls_back"]:
            return aws_adapter.EcsRollout(newest, "COMPLETED")
        family, revision = newest.rsplit(":", 1)
        if revision == "1":  # a first rollout has nothing to go back to: it stays FAILED
            return aws_adapter.EcsRollout(newest, "FAILED")
        return aws_adapter.EcsRollout(f"{family}:{int(revision) - 1}", "COMPLETED")

    def verify(outputs: Any, model: str, version: str, repository: str, digest: str) -> Any:
        seen["verified"].append((model, version, digest))
        return aws_deploy.Target(model, version, digest, f"{repository}@{digest}")

    monkeypatch.setattr(aws_adapter, "ecs_primary_deployment", primary)
    monkeypatch.setattr(aws_deploy, "verify_image", verify)
    return seen


def _fails(argv: list[str]) -> str:
    result = runner.invoke(app, [*argv, "--stack", STACK])
    assert result.exit_code != 0
    # progress lines (•) go to stderr while it runs; the failure is one line
    text = "\n".join(x for x in result.output.strip().splitlines() if not x.startswith("•"))
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return " ".join(text.split())


def test_a_warm_rollback_deploys_the_previous_digest_again(
    world: dict[str, Any], ecs: dict[str, Any]
) -> None:
    """No alias on ECS: the state keeps the digest that served before, a plain rollback
    checks it is still in ECR and rolls it out; each change is proven on ECS first."""
    _ok(["deploy", "models:/churn/7", "--warm"])
    _ok(["deploy", "models:/churn/8", "--warm"])
    assert ecs["asked"][-1] == (
        "arn:aws:ecs:us-east-1:123456789012:cluster/mlflow-cluster",
        "mlrig-team-ep-churn-service",
        "us-east-1",
    )
    world["recorded"].clear()

    back = json.loads(_ok(["deploy", "rollback", "churn", "--json"]))
    (serving,) = back["serving"]
    assert (serving["version"], serving["digest"]) == ("7", "sha256:" + "7" * 64)
    assert world["stacks"]["churn"].config["mlrig:image"] == IMG["7"]
    assert ecs["verified"] == [("churn", "7", "sha256:" + "7" * 64)]
    assert world["recorded"] == [("churn", "churn", "7", "rolled back")]
    assert back["previous"] == "8" and back["previous_digest"] == "sha256:" + "8" * 64
    again = json.loads(_ok(["deploy", "rollback", "churn", "--json"]))
    assert again["serving"][0]["version"] == "8"
    assert len(ecs["asked"]) == 4  # deploy, deploy, rollback, rollback: each one checked
    assert [e.method for e in _audit_lines()] == ["DEPLOY", "DEPLOY", "ROLLBACK", "ROLLBACK"]


def test_a_warm_rollout_ecs_rolled_back_is_one_line_and_the_state_follows(
    world: dict[str, Any], ecs: dict[str, Any]
) -> None:
    """`up` succeeds on a steady service even when the circuit breaker rolled it back: the
    CLI reads the task definition ECS runs, says in one line what still serves, and puts
    the state back to it (so status, rollback and the next deploy start from the truth)."""
    _ok(["deploy", "models:/churn/7", "--warm"])
    stack = world["stacks"]["churn"]
    before = dict(stack.config)
    ecs["rolls_back"] = True
    line = _fails(["deploy", "models:/churn/8", "--warm"])
    assert "the new version of warm endpoint churn did not roll out" in line
    assert "ECS runs mlrig-team-ep-churn:1 again: the new task never passed its /ping" in line
    assert "churn v7 (sha256:777777777777) still serves" in line
    assert "aws logs tail /mlrig/team/endpoints/churn" in line
    assert stack.config == before  # the image, version and since of v7 again
    assert stack.ups == 3  # the deploy's `up`, then the one that put v7's state back
    (row,) = json.loads(_ok(["deploy", "status", "churn", "--json"]))
    assert [b["version"] for b in row["serving"]] == ["7"]
    assert [e.method for e in _audit_lines()] == ["DEPLOY"]  # nothing claims v8 served
    line = _fails(["deploy", "rollback", "churn"])  # v7 kept no previous: nothing to go to
    assert "has no previous version" in line


def test_a_first_warm_deploy_that_never_rolls_out_leaves_nothing(
    world: dict[str, Any], ecs: dict[str, Any]
) -> None:
    ecs["rolls_back"] = True
    line = _fails(["deploy", "models:/churn/7", "--warm"])
    assert "did not roll out (its rollout is FAILED)" in line
    assert "still serves" not in line
    assert world["stacks"]["churn"].outputs == {}  # destroyed
    assert "churn" not in world["keys"]  # its first key removed


def test_trace_endpoint_follows_the_ecr_image_taking_most_traffic(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.deploy import serving
    from mlrig.core.provenance import record as p
    from mlrig.core.provenance import trace as provenance_trace

    asked: list[tuple[str, str | None]] = []

    def fake(ref: str, *, stack: str | None = None, repo: Path | None = None) -> object:
        asked.append((ref, stack))
        digest = ref.rsplit("@", 1)[1]
        return p.ProvenanceRecord(
            ref=ref,
            images=[p.ImageRecord(digest=digest, reference=ref)],
            model=p.ModelRecord(name="churn", version="7"),
            run=p.RunRecord(id="7" * 32),
            code=p.CodeRecord(commit="c" * 40),
        )

    monkeypatch.setattr(provenance_trace, "trace", fake)
    _ok(["deploy", "models:/churn/7"])
    _ok(["deploy", "models:/churn/8", "--canary", "10", "--bake", "0"])

    record = serving.trace("endpoint:churn", stack=STACK)
    registry = aws_outputs(STACK).registry_url
    assert asked == [(f"{registry}@sha256:{'7' * 64}", STACK)]
    assert record.endpoint is not None and record.endpoint.traced == "7"
    assert record.endpoint.url == "https://api.example.com/endpoints/churn/invocations"
    assert [(s.version, s.traffic, s.image) for s in record.endpoint.serving] == [
        ("7", 90, f"{registry}@sha256:{'7' * 64}"),
        ("8", 10, f"{registry}@sha256:{'8' * 64}"),
    ]
    assert not record.refused

    out = runner.invoke(app, ["trace", "endpoint:nope", "--stack", STACK])
    assert out.exit_code != 0 and "no endpoint 'nope' on stack 'team'" in out.output


def test_doctor_flags_a_public_aws_endpoint_and_skips_without_the_pulumi_cli(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.doctor import doctor
    from mlrig.errors import DependencyMissing

    outputs = contract.load(STACK)
    assert doctor._endpoints(outputs).status == doctor.SKIP  # none deployed
    _ok(["deploy", "models:/churn/7"])
    check = doctor._endpoints(outputs)
    assert (check.status, check.detail) == (doctor.OK, "churn (1 keys)")
    _ok(["deploy", "models:/churn/8", "--endpoint", "fraud", "--public"])
    check = doctor._endpoints(outputs)
    assert check.status == doctor.WARN and check.detail == "public (no key needed): fraud"
    assert "mlrig deploy keys create fraud --stack team" in check.fix

    def no_cli() -> str:
        raise DependencyMissing("the `pulumi` CLI is not installed", hint="install it")

    monkeypatch.setattr(pulumi_adapter, "cli_path", no_cli)
    check = doctor._endpoints(outputs)
    assert check.status == doctor.SKIP and not check.needed
    assert check.detail == "not checked: the `pulumi` CLI is not installed"


def test_a_warm_endpoint_takes_capture_as_its_setting(
    world: dict[str, Any], ecs: dict[str, Any]
) -> None:
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
