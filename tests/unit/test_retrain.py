"""`mlrig retrain` without a stack: the result contract, the saved state, bad input, the
demo's new rows. The runs themselves are in tests/integration/test_retrain.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.adapters import dvc
from mlrig.core.demo import retrain as demo_retrain
from mlrig.core.retrain import _repo as retrain_repo
from mlrig.core.retrain import retrain
from mlrig.core.retrain import state as retrain_state
from mlrig.errors import MlrigError
from mlrig.main import app

runner = CliRunner()


def test_the_json_result_has_exactly_the_contract_fields() -> None:
    result = retrain.RetrainResult(True, "ab" * 16, version="3", message="for people")
    assert list(result.as_json()) == [
        "changed",
        "snapshot",
        "version",
        "champion_moved",
        "decision",
        "image",
        "digest",
        "commit",
    ]


def test_saved_state_round_trips_and_a_corrupt_marker_is_one_error(tmp_path: Path) -> None:
    assert retrain_state.load(tmp_path) is None
    saved = retrain_state.new(tmp_path, head="a" * 40, branch="main", model="m", champion="2")
    saved.save(tmp_path)
    assert retrain_state.load(tmp_path) == saved
    (tmp_path / retrain_state.MARKER).write_text("{not json")
    with pytest.raises(MlrigError, match="not a retrain marker"):
        retrain_state.load(tmp_path)
    retrain_state.clear(tmp_path)
    assert retrain_state.load(tmp_path) is None


def test_a_dead_process_is_not_alive_and_this_one_does_not_block_itself() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert retrain_state.alive(proc.pid) is False
    assert retrain_state.alive(os.getpid()) is False  # a marker of ours is ours to undo
    assert retrain_state.alive(1) is True


def test_the_decision_line_names_both_scores_and_the_verdict() -> None:
    gate = {"metric": "roc_auc", "candidate": 0.99, "champion": 0.98, "margin": 0.0}
    promoted = retrain_repo.decision_line("4", {**gate, "verdict": "promoted"})
    assert promoted == (
        "new model version 4: roc_auc 0.99 vs champion 0.98, margin 0.0: champion moved to it"
    )
    kept = retrain_repo.decision_line("5", {**gate, "champion": None, "verdict": "kept"})
    assert "vs champion (none)" in kept and kept.endswith("champion kept")
    reason = {**gate, "verdict": "kept", "reason": "the candidate does not win"}
    assert retrain_repo.decision_line("6", reason).endswith(
        "0.98 (the candidate does not win), margin 0.0: champion kept"
    )
    nothing = {"verdict": "kept", "version": None, "reason": "no version registered"}
    assert retrain_repo.decision_line(None, nothing) == (
        "no new model version: champion kept (no version registered)"
    )


def test_the_failed_stage_is_read_from_dvcs_error() -> None:
    assert dvc._failed_stage("failed to reproduce 'validate'") == "validate"
    assert dvc._failed_stage("failed to reproduce 'sub/dvc.yaml:train'") == "train"
    assert dvc._failed_stage("something else") == "dvc repro"


def test_snapshot_record_and_gate_are_read_when_present(tmp_path: Path) -> None:
    assert retrain_repo.snapshot(tmp_path) == retrain_repo.Snapshot(None, None, None)
    assert retrain_repo.snapshot(tmp_path).describe() == "the pipeline's inputs"
    record = tmp_path / retrain_repo.RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"md5": "f" * 32, "rows": 609, "source": "x.csv"}))
    snap = retrain_repo.snapshot(tmp_path)
    assert snap.describe() == f"snapshot {'f' * 32} (609 rows)"
    (tmp_path / "gate.json").write_text(json.dumps({"verdict": "kept", "version": 7}))
    assert retrain_repo.registered_version(tmp_path) == "7"


def test_a_partitioned_repos_watermark_is_its_snapshot_record(tmp_path: Path) -> None:
    watermark = tmp_path / retrain_repo.WATERMARK
    watermark.parent.mkdir(parents=True)
    record = {"column": None, "keys": "a" * 32, "md5": "b" * 32 + ".dir", "rows": 620}
    watermark.write_text(json.dumps({**record, "source": "data/raw/x.csv"}))
    snap = retrain_repo.snapshot(tmp_path)
    assert snap == retrain_repo.Snapshot("b" * 32 + ".dir", 620, "data/raw/x.csv")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "is not a git repository"),
        (lambda p: p, "is not a git repository"),
    ],
)
def test_bad_repo_is_one_line_and_nothing_written(tmp_path: Path, make, expected: str) -> None:
    result = runner.invoke(app, ["retrain", "--repo", str(make(tmp_path))])
    assert result.exit_code != 0
    assert expected in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_git_repo_without_dvc_is_refused(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = runner.invoke(app, ["retrain", "--repo", str(tmp_path)])
    assert result.exit_code != 0 and "is not a DVC repository" in result.output


def test_new_rows_have_fresh_ids_and_every_column(tmp_path: Path) -> None:
    source = tmp_path / "patients.csv"
    source.write_text("id,mean_radius,target\n1,10.0,0\n2,20.0,1\n")
    assert demo_retrain.append_rows(source, 2) == 4
    with source.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["target"] for r in rows[2:]] == ["0", "1"]
    assert float(rows[3]["mean_radius"]) == pytest.approx(20.2)


def test_the_rest_client_sends_an_oidc_token_as_mlflows_client_does() -> None:
    """In CI the login is a bearer token (MLFLOW_TRACKING_TOKEN), never a password."""
    from mlrig.adapters.mlflow_rest import MlflowRest

    keyless = MlflowRest.from_env({"MLFLOW_TRACKING_URI": "http://x", "MLFLOW_TRACKING_TOKEN": "t"})
    assert keyless.session.headers["Authorization"] == "Bearer t" and keyless.session.auth is None
    basic = MlflowRest.from_env(
        {
            "MLFLOW_TRACKING_URI": "http://x",
            "MLFLOW_TRACKING_USERNAME": "u",
            "MLFLOW_TRACKING_TOKEN": "t",
        }
    )
    assert "Authorization" not in basic.session.headers and basic.session.auth == ("u", "")


def test_an_adopted_repository_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """No declared data stage and gate: retrain says what to declare, writes nothing, asks
    no stack."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".copier-answers.yml").write_text(
        "_adopted: true\nproject_name: getting_started\nstack: local\n"
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["retrain", "--repo", str(tmp_path)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "was adopted" in said and "the stage that brings new data" in said
    assert "the metric (and direction) that decides promotion" in said
    assert "declares no `retrain` block" in said and "data_stages: [STAGE]" in said
    assert "Traceback" not in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
