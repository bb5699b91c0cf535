"""A model version whose retrain was undone (tagged mlrig.undone=true by the undo) is in no
commit, so nothing picks it by default: `mlrig image build` without --model took the highest
version number, which after an interrupted retrain is the undone run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.core.image import model as image_model
from mlrig.core.provenance import record as provenance
from mlrig.errors import UsageError


def _register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versions: int) -> Any:
    from mlflow import MlflowClient

    # the client alone, never the fluent API: its active experiment outlives a test in the
    # same process and names an experiment this fresh store does not have
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("churn")
    client.create_registered_model("churn")
    for _ in range(versions):
        run = client.create_run(experiment)
        client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run.info.run_id)
    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: local\n")
    return client


def test_the_default_model_skips_a_version_whose_retrain_was_undone(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _register(tmp_path, monkeypatch, versions=3)
    assert image_model.default_model_uri(tmp_path) == "models:/churn/3"
    client.set_model_version_tag("churn", "3", provenance.TAG_UNDONE, "true")
    assert image_model.default_model_uri(tmp_path) == "models:/churn/2"


def test_when_every_version_was_undone_the_default_names_none(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _register(tmp_path, monkeypatch, versions=1)
    client.set_model_version_tag("churn", "1", provenance.TAG_UNDONE, "true")
    with pytest.raises(UsageError, match="undone") as err:
        image_model.default_model_uri(tmp_path)
    assert "--model" in (err.value.hint or "")
