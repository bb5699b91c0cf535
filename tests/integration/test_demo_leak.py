"""The demo's planted-leak steps (core/demo/leak.py) on the real local stack: a temporal
repository is made beside the demo's, a feature from the future planted in a throwaway clone
stops its pipeline at preprocess with one line naming the column and a row (no MLflow run, no
model version), and the repository without the leak trains a version; a second pass reuses
the repository and finds it up to date."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlrig.core.demo import leak
from mlrig.core.demo._context import DemoContext
from tests.helpers import mlflow_client

pytestmark = pytest.mark.integration


def test_the_planted_leak_is_caught_before_train_and_the_fixed_pipeline_trains(
    stack_env: dict, tmp_path: Path
) -> None:
    ctx = DemoContext("local", tmp_path / "demo", tmp_path / "demo.log")
    client = mlflow_client(stack_env)

    caught = leak.planted_leak(ctx)
    assert re.fullmatch(
        r"caught before train: preprocess: rule 'leakage': column 'refund_next_7d' of the "
        r"labels has no availability time .* \(row: entity_id=\d+, label_time=[^,]+, "
        r"refund_next_7d=[\d.]+\)",
        caught,
    ), caught
    assert not (ctx.workdir / "demo-temporal-leak").exists()
    assert client.search_model_versions(f"name='{leak.TEMPORAL_PROJECT}'") == []

    trained = leak.fixed_pipeline(ctx)
    versions = client.search_model_versions(f"name='{leak.TEMPORAL_PROJECT}'")
    assert [v.version for v in versions] == ["1"]
    assert re.fullmatch(
        r"\d+ train rows \(\S+ \.\. \S+\), \d+ test rows \(\S+ \.\. \S+\), gap .*; "
        rf"trained models:/{leak.TEMPORAL_PROJECT}/1",
        trained,
    ), trained
    run = client.get_run(versions[0].run_id)
    assert run.data.tags["mlflow.user"] == f"repo-{leak.TEMPORAL_PROJECT.replace('_', '-')}"

    # the demo run again: the leak is caught again, nothing is trained twice
    assert leak.planted_leak(ctx).startswith("caught before train: ")
    assert leak.fixed_pipeline(ctx).endswith("up to date (trained by an earlier run)")
    assert len(client.search_model_versions(f"name='{leak.TEMPORAL_PROJECT}'")) == 1
