"""Captured records read back: the agreed format, a cut last line, bad records, other
versions, the window's bounds, every scoring format, and the schema rules of the validate
stage applied to live rows."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from mlrig.core.monitor import _captures, _schema
from mlrig.core.monitor.monitor import parse_since
from mlrig.core.shared import capture
from mlrig.errors import UsageError
from tests.helpers import REPO_ROOT, capture_file, capture_line, default_template_file

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)


def _rows(n: int, start: float = 0.0) -> list[dict[str, float]]:
    return [{"a": start + i, "b": 2.0 * i} for i in range(n)]


def test_records_in_the_window_are_read_with_their_rows_and_predictions(tmp_path: Path) -> None:
    early = NOW - timedelta(hours=3)
    capture_file(tmp_path, early, [capture_line(_rows(2), [0, 1], when=early)])
    capture_file(tmp_path, NOW, [capture_line(_rows(3), [1, 1, 0], when=NOW, inference_id="x1")])
    window = _captures.read(tmp_path, NOW - timedelta(hours=1), NOW)
    assert (window.records, window.files) == (1, 1)
    assert window.frame().to_dict(orient="records") == _rows(3)
    assert window.predictions == [1, 1, 0]
    assert window.inference_ids == ["x1"] * 3 and window.row_in_request == [0, 1, 2]
    both = _captures.read(tmp_path, NOW - timedelta(hours=4), NOW)
    assert both.records == 2 and both.n_rows == 5


def test_a_cut_last_line_is_counted_and_skipped(tmp_path: Path) -> None:
    whole = capture_line(_rows(1), [1], when=NOW)
    cut = capture_line(_rows(1), [0], when=NOW)[:57]
    capture_file(tmp_path, NOW, [whole, cut])
    window = _captures.read(tmp_path, NOW - timedelta(hours=1), NOW)
    assert (window.records, window.cut_lines, window.bad_records) == (1, 1, 0)


def test_bad_records_are_counted_with_the_first_reason(tmp_path: Path) -> None:
    good = capture_line(_rows(1), [1], when=NOW)
    wrong = json.loads(good)
    wrong["mlrig"]["version"] = "../../etc"
    capture_file(tmp_path, NOW, ["not json\n", json.dumps(wrong) + "\n", good])
    window = _captures.read(tmp_path, NOW - timedelta(hours=1), NOW)
    assert (window.records, window.bad_records, window.cut_lines) == (1, 2, 0)
    assert window.bad_reason is not None and window.bad_reason.startswith("w1-000001.jsonl line 1")


def test_other_versions_are_counted_not_read_and_mixed_versions_are_seen(tmp_path: Path) -> None:
    capture_file(
        tmp_path,
        NOW,
        [
            capture_line(_rows(1), [1], when=NOW, version="1"),
            capture_line(_rows(2), [1, 0], when=NOW, version="2"),
        ],
    )
    only = _captures.read(tmp_path, NOW - timedelta(hours=1), NOW, model="m", version="2")
    assert only.records == 1 and only.n_rows == 2
    assert dict(only.other_versions) == {("m", "1"): 1}
    every = _captures.read(tmp_path, NOW - timedelta(hours=1), NOW)
    assert dict(every.versions) == {("m", "1"): 1, ("m", "2"): 1}


def test_every_scoring_format_and_base64_bodies_are_read() -> None:
    records = {"dataframe_records": [{"a": 1}, {"a": 2, "b": 3}]}
    assert _captures._rows(records) == (["a", "b"], [[1, None], [2, 3]])
    assert _captures._rows({"inputs": {"a": [1, 2], "b": [3, 4]}}) == (["a", "b"], [[1, 3], [2, 4]])
    assert _captures._rows({"inputs": {"a": 1, "b": 2}}) == (["a", "b"], [[1, 2]])
    assert _captures._rows({"instances": [{"a": 1}]}) == (["a"], [[1]])
    assert _captures._rows({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}) is None
    assert _captures._rows({"unknown": []}) is None
    escape = {"dataframe_split": {"columns": ["a\x1b[2J"], "data": [[1]]}}
    assert _captures._rows(escape) is None  # a terminal escape in a column name
    line = json.loads(capture_line(_rows(1), [1], when=NOW))
    body = line["captureData"]["endpointInput"]
    body["data"] = base64.b64encode(body["data"].encode()).decode()
    body["encoding"] = "BASE64"
    record = _captures.parse_line(json.dumps(line).encode())
    assert _captures._rows(record.captureData.endpointInput.value()) == (["a", "b"], [[0.0, 0.0]])


def test_folders_and_files_that_are_not_the_layout_are_not_entered(tmp_path: Path) -> None:
    capture_file(tmp_path, NOW, [capture_line(_rows(1), [1], when=NOW)])
    (tmp_path / "2026" / "12" / "07" / "12" / "notes.txt").write_text("x")
    long = _captures.read(tmp_path, NOW - timedelta(days=10), NOW)  # the listing path
    assert long.records == 1 and long.files == 1
    assert _captures.read(tmp_path / "absent", NOW - timedelta(hours=1), NOW).records == 0


def test_since_takes_durations_and_times() -> None:
    assert parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2026-12-07T10:00:00Z", NOW) == datetime(2026, 12, 7, 10, tzinfo=UTC)
    with pytest.raises(UsageError, match="neither a duration nor a time"):
        parse_since("yesterday", NOW)


def test_live_rows_meet_the_schema_with_the_validate_stages_rules() -> None:
    text = default_template_file("data/schema.yaml").encode()
    schema = _schema.parse_schema(text)
    assert schema is not None
    columns = [c for c in schema["columns"] if c not in ("id", "target")]
    frame = pd.DataFrame({c: [1.5, 2.5] for c in columns})
    assert _schema.findings(frame, schema) == []  # no id, no target: not expected in requests
    frame["compactness_ratio"] = [0.1, 0.2]  # a feature the model derives (its signature)
    assert _schema.findings(frame, schema, ["compactness_ratio"]) == []
    frame["surprise"] = [1, 2]
    frame["mean_radius"] = ["wide", "narrow"]
    frame.loc[0, "mean_area"] = None
    assert _schema.findings(frame, schema, ["compactness_ratio"]) == [
        "column 'surprise' is not in data/schema.yaml",
        "column 'mean_radius' should be float, found str (e.g. 'wide')",
        "column 'mean_area' has 1 null(s); data/schema.yaml allows none",
    ]
    assert _schema.parse_schema(b"columns: {a: {type: complex}}") is None
    assert _schema.parse_schema(b"[unclosed") is None


def test_the_rules_are_the_validate_stages_own_module() -> None:
    stage = _schema.validate_stage()
    shipped = REPO_ROOT / "pipeline" / "template" / "src" / "{{project_name}}" / "validate.py"
    assert Path(stage.__file__ or "").resolve() == shipped.resolve()
    assert stage.schema_errors.__module__ == stage.__name__


def test_the_agreed_format_narrows_the_one_record_model_the_reader_uses() -> None:
    when = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    line = capture_line(_rows(1), [0], when=when, run_id="ab" * 16)
    written = json.loads(line)
    written["mlrig"]["digest"] = "sha256:" + "0" * 64
    # what the serving image writes passes both, as the same values
    strict = capture.CaptureRecord.model_validate(written)
    read = _captures.parse_line(json.dumps(written).encode())
    assert isinstance(strict, capture.ReadRecord)
    assert read.model_dump() == capture.ReadRecord.model_validate(strict.model_dump()).model_dump()
    assert read.eventMetadata.inferenceTime == when
    # a newer writer's extra field, or a SageMaker-written event (its own IDs, a time
    # without milliseconds): read, but not the format mlrig's image writes
    newer = {**written, "mlrig": {**written["mlrig"], "region": "eu-west-1"}}
    sagemaker = {
        **written,
        "eventMetadata": {
            "eventId": "evt-1",
            "inferenceId": "abc-1",
            "inferenceTime": "2026-12-07T10:00:00Z",
        },
    }
    for other in (newer, sagemaker):
        _captures.parse_line(json.dumps(other).encode())
        with pytest.raises(ValidationError):
            capture.CaptureRecord.model_validate(other)
