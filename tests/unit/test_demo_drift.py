"""The demo's drift steps: the shifted traffic it sends and the loop policy it writes."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from mlrig.core.demo import drift
from mlrig.core.demo._context import StepFailed
from mlrig.core.trainer import policy as loop_policy
from tests.helpers import default_template_file


def _rows(n: int = 40) -> list[dict[str, str]]:
    return [
        {"id": str(i), "a": str(float(i)), "b": str(float(i % 7)), "c": "1.5", "target": str(i % 2)}
        for i in range(n)
    ]


def test_shifted_rows_move_the_first_columns_by_the_stated_sigma() -> None:
    rows = _rows()
    out, moved = drift.shifted_rows(rows, ["id", "a", "b", "c"], 80)
    assert moved == ["a", "b"] and len(out) == 80
    assert [r["id"] for r in out[:2]] == ["39", "38"]  # the id is never moved
    for col in moved:
        sigma = statistics.pstdev(float(r[col]) for r in rows)
        before = statistics.fmean(float(r[col]) for r in rows)
        after = statistics.fmean(float(r[col]) for r in out)
        assert after - before == pytest.approx(drift.SHIFT_SIGMA * sigma, rel=1e-4)
    assert {r["c"] for r in out} == {"1.5"}  # an unmoved column keeps its values
    assert {r["target"] for r in out} == {"0", "1"}  # labels ride along unchanged
    assert rows[-1]["a"] == "39.0"  # the source rows are not changed in place


def test_the_loop_policy_is_written_into_params_and_read_back_by_the_trainer(
    tmp_path: Path,
) -> None:
    (tmp_path / "params.yaml").write_text(default_template_file("params.yaml"))
    before = loop_policy.load(tmp_path)
    assert before.monitor.action == "none" and before.deploy.canary == 0
    assert drift._set_policy(tmp_path) is True
    after = loop_policy.load(tmp_path)
    assert after.monitor.action == "retrain" and after.monitor.consecutive == 1
    assert after.monitor.window == drift.WINDOW
    assert (after.deploy.endpoint, after.deploy.canary) == (drift.ENDPOINT, drift.CANARY)
    assert after.monitor.min_samples <= drift.TRAFFIC_ROWS
    text = (tmp_path / "params.yaml").read_text()
    assert "# how often the service checks" in text  # comments survive
    assert "source: data/raw/breast_cancer.csv" in text  # other blocks untouched
    assert drift._set_policy(tmp_path) is False  # a re-run changes nothing


@pytest.mark.parametrize(
    "example",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
        {"columns": ["a", "b"], "data": [[1, 2]]},
    ],
)
def test_columns_come_from_the_served_example(example: dict) -> None:
    assert drift._columns(json.dumps(example).encode()) == ["a", "b"]


@pytest.mark.parametrize("example", [{"instances": [[1, 2]]}, [1, 2], {"columns": [1, 2]}])
def test_an_example_without_column_names_is_one_line(example: object) -> None:
    with pytest.raises(StepFailed, match="names no columns"):
        drift._columns(json.dumps(example).encode())


def test_model_inputs_are_the_source_columns_when_nothing_is_derived(tmp_path: Path) -> None:
    rows = _rows(3)
    assert drift.model_inputs(tmp_path, rows, ["b", "a"]) == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_model_inputs_derive_the_missing_columns_with_the_repositorys_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src" / drift.PROJECT
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "features.py").write_text(
        "def add_features(df):\n"
        "    out = df.drop(columns=['id', 'target']).astype('float64')\n"
        "    out['a_over_c'] = out['a'] / out['c']\n"
        "    return out\n"
    )
    monkeypatch.delitem(sys.modules, drift.PROJECT, raising=False)
    monkeypatch.delitem(sys.modules, f"{drift.PROJECT}.features", raising=False)
    try:
        inputs = drift.model_inputs(tmp_path, _rows(3), ["a", "a_over_c"])
    finally:
        sys.modules.pop(f"{drift.PROJECT}.features", None)
        sys.modules.pop(drift.PROJECT, None)
    assert inputs == [[0.0, 0.0], [1.0, 1 / 1.5], [2.0, 2 / 1.5]]
    assert str(tmp_path / "src") not in sys.path


def test_a_repository_without_features_code_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="features code cannot derive"):
        drift.model_inputs(tmp_path, _rows(3), ["a", "not_in_the_source"])
