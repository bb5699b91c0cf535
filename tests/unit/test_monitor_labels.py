"""Ground truth joined by inference id: the table's validation (one line each), unknown ids
counted, the gate's metric against the test metric the version was promoted on."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlrig.core.monitor import _labels
from mlrig.core.monitor._captures import Window
from mlrig.core.provenance.record import CodeRecord, ProvenanceRecord, RunRecord
from mlrig.errors import UsageError

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _window() -> Window:
    window = Window(since=NOW, until=NOW)
    window.add_rows(["a"], [[1.0], [2.0], [3.0]])
    window.predictions = [1, 0, 1]
    window.inference_ids = ["i1", "i2", "i2"]
    window.row_in_request = [0, 0, 1]
    return window


def _record(metric: str | None) -> ProvenanceRecord:
    tags = {"mlrig.gate.metric": metric} if metric else {}
    return ProvenanceRecord(
        ref="models:/m/1",
        run=RunRecord(id="0" * 32, tags=tags, metrics={"test_accuracy": 0.9, "test_roc_auc": 0.8}),
        code=CodeRecord(),
    )


def test_labels_join_by_inference_id_and_row(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("inference_id,row,label\ni1,0,1\ni2,0,1\ni2,1,1\nnope,0,0\n")
    found = _labels.performance(str(path), _window(), _record("accuracy"))
    assert (found.metric, found.labelled_rows, found.unknown_ids) == ("accuracy", 3, 1)
    assert found.live == pytest.approx(2 / 3) and found.promoted_on == 0.9
    default = _labels.performance(str(path), _window(), _record(None))
    assert default.metric == "roc_auc" and default.live is None  # one class only: undefined


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\nx,1\n", "lacks column(s) inference_id"),
        ("inference_id,label\nx,yes\n", "1 label(s) are not numbers"),
        ("inference_id,label,row\nx,1,-1\n", "row holds a value that is no row index"),
    ],
)
def test_a_bad_labels_table_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        _labels.read(str(path))
    with pytest.raises(UsageError, match="no such file"):
        _labels.read(str(tmp_path / "absent.csv"))
