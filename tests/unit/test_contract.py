"""The StackOutputs contract: round trip, atomic storage, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig import contract
from mlrig.contract import SCHEMA_VERSION
from mlrig.errors import ConfigError, StackNotFound, UsageError
from tests.helpers import sample


def test_round_trip_through_disk(mlrig_home: Path) -> None:
    path = contract.save(sample())
    assert path == mlrig_home / "stacks" / "dev" / "outputs.json"
    loaded = contract.load("dev")
    assert loaded == sample().model_copy(update={"created_at": loaded.created_at})
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.registry.host == "127.0.0.1:5001"
    assert loaded.registry.repository == "models"
    assert contract.list_names() == ["dev"]


COMPUTE = {
    "cluster_arn": "arn:aws:ecs:us-east-1:123456789012:cluster/mlflow-cluster-1a2b",
    "subnet_ids": ["subnet-1", "subnet-2"],
    "security_group_id": "sg-1",
    "assign_public_ip": True,
    "task_role_arn": "arn:aws:iam::123456789012:role/training-task-role-1",
    "execution_role_arn": "arn:aws:iam::123456789012:role/training-execution-role-1",
    "log_group": "/mlrig/dev/training",
}


def test_schema_one_files_still_read_without_compute(mlrig_home: Path) -> None:
    """Schema 2 added `compute`: a file an older mlrig wrote reads, with no compute."""
    raw = json.loads(sample().model_dump_json())
    raw["schema_version"] = 1
    raw.pop("compute")
    path = contract.outputs_path("dev")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw))
    loaded = contract.load("dev")
    assert (loaded.schema_version, loaded.compute) == (1, None)


def test_compute_round_trips_and_is_checked(mlrig_home: Path) -> None:
    contract.save(sample().model_copy(update={"compute": contract.AwsCompute(**COMPUTE)}))
    assert contract.load("dev").compute == contract.AwsCompute(**COMPUTE)
    raw = json.loads(contract.outputs_path("dev").read_text())
    raw["compute"]["assign_public_ip"] = "perhaps"
    contract.outputs_path("dev").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="invalid at compute.assign_public_ip"):
        contract.load("dev")


def test_outputs_never_hold_a_secret_value(mlrig_home: Path) -> None:
    text = contract.outputs_path("dev").parent
    contract.save(sample())
    raw = json.loads((text / "outputs.json").read_text())
    assert raw["mlflow"]["auth"]["password"] == {"source": "file", "ref": "/x/secret", "key": None}


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    contract.atomic_write(target, "one")
    contract.atomic_write(target, "two", mode=0o600)
    assert target.read_text() == "two"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_unknown_stack_names_known_ones(mlrig_home: Path) -> None:
    contract.save(sample("alpha"))
    with pytest.raises(StackNotFound, match="known stacks: alpha"):
        contract.load("beta")


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"schema_version": 1, "name": "dev"}), "invalid at kind"),
    ],
)
def test_corrupt_file_is_a_clear_error(mlrig_home: Path, text: str, match: str) -> None:
    path = contract.outputs_path("dev")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        contract.load("dev")
    assert "stack up" in info.value.one_line()


def test_newer_schema_asks_for_an_upgrade(mlrig_home: Path) -> None:
    raw = json.loads(sample().model_dump_json())
    raw["schema_version"] = SCHEMA_VERSION + 1
    path = contract.outputs_path("dev")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="upgrade mlrig") as info:
        contract.load("dev")
    assert f"has schema version {SCHEMA_VERSION + 1}, written by a newer mlrig" in str(info.value)
    assert f"reads up to {SCHEMA_VERSION} (1: name, kind," in str(info.value)


def test_every_schema_version_says_what_it_brought() -> None:
    """docs/releasing.md: a schema bump adds its entry to SCHEMA_CHANGES."""
    assert sorted(contract.SCHEMA_CHANGES) == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", [0, -1, "1", True, None])
def test_a_schema_version_no_mlrig_wrote_is_refused(mlrig_home: Path, version: object) -> None:
    raw = json.loads(sample().model_dump_json())
    raw["schema_version"] = version
    path = contract.outputs_path("dev")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="which no mlrig wrote") as info:
        contract.load("dev")
    assert "stack up" in info.value.one_line()


@pytest.mark.parametrize(
    "name, match",
    [
        ("", "empty"),
        ("a b", "invalid"),
        ("..", "invalid"),
        ("../etc", "invalid"),
        ("x" * 200, "200 characters"),
        ("Dev", "invalid"),
        ("dev-", "trailing"),
    ],
)
def test_invalid_stack_names(name: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        contract.validate_stack_name(name)


@pytest.mark.parametrize("name", ["local", "dev-2", "a" * 32])
def test_valid_stack_names(name: str) -> None:
    assert contract.validate_stack_name(name) == name


def test_a_name_keeps_its_kind(mlrig_home: Path) -> None:
    from mlrig.core.stack.local.stack import LocalStack
    from mlrig.errors import Conflict

    contract.save(sample("team").model_copy(update={"kind": "aws"}))
    expected = "'team' is an AWS stack, not a local one.*stack up --aws --stack team"
    with pytest.raises(Conflict, match=expected):
        LocalStack("team").up()
    assert not (mlrig_home / "stacks" / "team" / "local.json").exists()
    assert contract.load("team").kind == "aws"
    contract.ensure_kind("team", "aws")  # same kind: fine
    contract.ensure_kind("fresh", "local")  # unknown name: fine


@pytest.mark.parametrize("before", [None, "some-plugin"])
def test_reading_outputs_leaves_the_plugin_setting_as_it_was(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    """The models are built without pydantic's plugin scan, and the environment a child
    process would inherit is the one the command started with."""
    import os

    if before is None:
        monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", before)
    contract.save(sample("dev"))
    assert contract.load("dev").name == "dev"
    with pytest.raises(ConfigError):
        contract.parse("{}", source="x")  # restored on a failed validation too
    assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == before
