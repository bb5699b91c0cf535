"""A temporal repository (`mlrig init --temporal`) against the real local stack: its pipeline
trains on the point-in-time table of the generated example and records the split's windows,
which `mlrig trace` shows, and the partitions it read (a temporal repository keeps dated
partitions by default); a feature from the future planted in the labels (declared in the
schema, so validate lets it through) stops the pipeline at preprocess with one line, before
train: no run, no model version, the champion unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import PIPELINE_STAGES, VENV_BIN, mlflow_client, ran_stages, repo_env, sh

pytestmark = pytest.mark.integration
PROJECT = "tempo"


@pytest.fixture(scope="module")
def shared(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One temporal repo made by the real CLI, its pipeline run once and committed."""
    root = tmp_path_factory.mktemp("temporal")
    env = repo_env(local_stack["home"])
    mlrig = str(VENV_BIN / "mlrig")
    sh(root, mlrig, "init", PROJECT, "--stack", "local", "--no-input", "--temporal", env=env)
    repo = root / PROJECT
    out = sh(repo, "dvc", "repro", env=env)
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First temporal run", env=env)
    return {"repo": repo, "env": env, "repro": out}


def test_the_pipeline_trains_on_the_point_in_time_table_and_traces_its_windows(
    shared: dict, stack_env: dict
) -> None:
    repo, env = shared["repo"], shared["env"]
    assert ran_stages(shared["repro"]) == set(PIPELINE_STAGES)
    windows = json.loads((repo / "data/processed/windows.json").read_text())
    assert windows["horizon"] == "7 days, 0:00:00"
    run = json.loads((repo / "models/mlflow_run.json").read_text())
    tags = mlflow_client(stack_env).get_run(run["run_id"]).data.tags
    assert {k: v for k, v in tags.items() if k.startswith("mlrig.temporal.")} == {
        f"mlrig.temporal.{k}": v for k, v in windows.items()
    }
    # the partitions it trained on: the directory's DVC hash, as dvc.lock records it
    (partition,) = sorted((repo / "data/snapshots").glob("*.parquet"))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/snapshots"]
    assert tags["dvc.dep.data/snapshots"] == out["md5"] and out["md5"].endswith(".dir")
    assert tags["mlrig.data.partitions"] == "1"
    assert tags["mlrig.data.partitions.first"] == tags["mlrig.data.partitions.last"]
    assert tags["mlrig.data.partitions.first"] == partition.name
    listed = mlflow_client(stack_env).download_artifacts(run["run_id"], "mlrig/partitions.json")
    assert [p["name"] for p in json.loads(Path(listed).read_text())] == [partition.name]
    shown = sh(repo, str(VENV_BIN / "mlrig"), "trace", f"runs:/{run['run_id']}", env=env)
    assert f"train {windows['train_from']} .. {windows['train_to']}" in shown
    assert f"gap {windows['gap']}" in shown


def test_a_planted_feature_from_the_future_stops_the_pipeline_before_train(
    shared: dict, stack_env: dict
) -> None:
    repo, env = shared["repo"], shared["env"]
    client = mlflow_client(stack_env)
    versions = {v.version for v in client.search_model_versions(f"name='{PROJECT}'")}
    champion = client.get_model_version_by_alias(PROJECT, "champion").version
    run_file = (repo / "models/mlflow_run.json").read_bytes()

    sh(
        repo,
        str(VENV_BIN / "python"),
        "-m",
        f"{PROJECT}.example",
        "--leak",
        env={**env, "PYTHONPATH": "src"},
    )
    # partitions are never rewritten: a column added to labels already ingested is not
    # picked up, so the snapshot starts over from the leaking labels
    shutil.rmtree(repo / "data/snapshots")
    shutil.rmtree(repo / "data/snapshot_state")
    schema_file = repo / "data/schema.yaml"
    schema = yaml.safe_load(schema_file.read_text())
    schema["columns"]["refund_next_7d"] = {"type": "float", "nullable": False}
    schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
    proc = subprocess.run(
        ["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0
    assert "preprocess: rule 'leakage': column 'refund_next_7d' of the labels" in proc.stderr
    assert "Running stage 'train'" not in proc.stdout
    assert {v.version for v in client.search_model_versions(f"name='{PROJECT}'")} == versions
    assert client.get_model_version_by_alias(PROJECT, "champion").version == champion
    assert (repo / "models/mlflow_run.json").read_bytes() == run_file
    assert not (repo / "data/processed/train.csv").exists()  # DVC cleared it; nothing new
