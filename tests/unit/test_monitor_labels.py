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
from mlrig.errors import ConfigError, DependencyMissing, ServiceError, UsageError

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


# -- a SQLAlchemy query, as the ingest stage reads one (SQLite: no driver to install) --------
def _database(tmp_path: Path) -> str:
    import sqlite3

    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE outcomes (inference_id TEXT, row INTEGER, label INTEGER)")
        conn.executemany(
            "INSERT INTO outcomes VALUES (?, ?, ?)",
            [("i1", 0, 1), ("i2", 0, 1), ("i2", 1, 1), ("nope", 0, 0)],
        )
    return f"sqlite:///{tmp_path / 'app.db'}"


def test_labels_from_a_query_join_like_a_file(tmp_path: Path) -> None:
    url = _database(tmp_path)
    query = "SELECT inference_id, row, label FROM outcomes"
    found = _labels.performance(url, _window(), _record("accuracy"), query)
    assert (found.metric, found.labelled_rows, found.unknown_ids) == ("accuracy", 3, 1)
    assert found.live == pytest.approx(2 / 3) and found.promoted_on == 0.9
    with pytest.raises(UsageError, match=re.escape("--labels-query on sqlite:///")):
        _labels.read(url, "SELECT inference_id AS id, label FROM outcomes")  # no inference_id


def test_a_query_that_writes_is_refused_and_rolled_back(tmp_path: Path) -> None:
    import sqlite3

    url = _database(tmp_path)
    with pytest.raises(UsageError, match="returns no rows: use a SELECT"):
        _labels.read(url, "DELETE FROM outcomes")
    with sqlite3.connect(tmp_path / "app.db") as conn:
        assert conn.execute("SELECT count(*) FROM outcomes").fetchone() == (4,)


def test_a_failing_query_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = _database(tmp_path)
    with pytest.raises(ServiceError, match="OperationalError: no such table: missing"):
        _labels.read(url, "SELECT inference_id, label FROM missing")
    secret_url = "postgresql+nosuchdriver://app:s3cret@127.0.0.1:1/prod"
    with pytest.raises(UsageError) as caught:
        _labels.read(secret_url, "SELECT 1")
    assert "s3cret" not in str(caught.value) and "app:***@127.0.0.1:1/prod" in str(caught.value)
    with pytest.raises(DependencyMissing) as missing:
        _labels.read("mysql+mysqldb://app:s3cret@127.0.0.1:1/prod", "SELECT 1")
    assert "s3cret" not in str(missing.value) and missing.value.hint


def test_more_rows_than_the_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_labels, "MAX_ROWS", 3)
    with pytest.raises(ConfigError, match="more than 3 rows"):
        _labels.read(_database(tmp_path), "SELECT inference_id, label FROM outcomes")


def test_labels_query_without_a_database_is_refused() -> None:
    from mlrig.core.monitor.monitor import run_monitor

    with pytest.raises(UsageError, match="--labels-query needs --labels URL"):
        run_monitor("ep", labels_query="SELECT 1", log_run=False)


def test_the_cli_takes_the_database_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from mlrig.core.monitor import monitor as core
    from mlrig.main import app

    bare = CliRunner().invoke(app, ["monitor", "ep", "--labels-query", "SELECT 1", "--no-log"])
    assert bare.exit_code == 2 and "--labels-query needs --labels URL" in bare.output
    assert "Traceback" not in bare.output

    seen: dict[str, object] = {}

    def run_monitor(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise UsageError("stopped here")

    monkeypatch.setattr(core, "run_monitor", run_monitor)
    url = "postgresql://app:s3cret@127.0.0.1:5432/prod"
    monkeypatch.setenv("MLRIG_LABELS", url)
    query = "SELECT inference_id, label FROM outcomes"
    done = CliRunner().invoke(app, ["monitor", "ep", "--labels-query", query, "--no-log"])
    assert done.exit_code == 2 and "stopped here" in done.output
    assert (seen["labels"], seen["labels_query"]) == (url, query)
    assert "s3cret" not in done.output
