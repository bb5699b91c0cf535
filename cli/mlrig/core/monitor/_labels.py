"""Ground truth joined to the captures by inference id, from the sources the pipeline's ingest
stage reads: a CSV or Parquet file (a path, or a URL one of DVC's filesystems reads), or,
with a query, a SQLAlchemy URL and the query's result. Columns `inference_id`, `label` and,
for requests of several rows, `row` (the row's index in its request, 0 when absent). Live
performance is the gate's own metric (the training run's `mlrig.gate.metric`) on the
captured predictions, next to the test metric the version was promoted on."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.core.monitor._result import Performance
from mlrig.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from mlrig.core.monitor._captures import Window
    from mlrig.core.provenance.record import ProvenanceRecord

MAX_BYTES = 512 << 20
MAX_ROWS = 5_000_000
GATE_METRIC_TAG = "mlrig.gate.metric"
DEFAULT_METRIC = "roc_auc"
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")  # the evaluate stage's


def read(source: str, query: str | None = None) -> pd.DataFrame:
    """The labels table, validated: inference_id (text), label (a number), row (an integer).
    With a query, source is a SQLAlchemy URL (as ingest's `source` with `query`)."""
    if query is not None:
        frame, name = _from_sql(source, query)
    else:
        frame, name = _from_file(source), f"--labels {source}"
    return _validated(frame, name)


def _from_sql(url: str, query: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    from mlrig.adapters import sql

    if not query.strip():
        raise UsageError("--labels-query is empty", hint="give a SELECT of inference_id, label")
    columns, rows = sql.query(url, query, MAX_ROWS)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    return frame, f"--labels-query on {sql.public_url(url)}"


def _from_file(source: str) -> pd.DataFrame:
    import pandas as pd

    from mlrig.adapters import dvc

    if _URL.match(source):
        data = dvc.read_url(source, MAX_BYTES)
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"--labels {source}: no such file")
        data = path.read_bytes()
    try:
        if source.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data), dtype={"inference_id": str})
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad table
        raise UsageError(
            f"--labels {source} is not a CSV or Parquet table ({type(exc).__name__})"
        ) from None


def _validated(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in ("inference_id", "label") if c not in frame.columns]
    if missing:
        raise UsageError(
            f"{source} lacks column(s) {', '.join(missing)}",
            hint="give inference_id (the X-Inference-Id header), label and, optionally, row",
        )
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any():
        raise UsageError(f"{source}: {int(labels.isna().sum())} label(s) are not numbers")
    rows = pd.to_numeric(frame["row"], errors="coerce") if "row" in frame.columns else 0 * labels
    if rows.isna().any() or (rows < 0).any():
        raise UsageError(f"{source}: column row holds a value that is no row index")
    return pd.DataFrame(
        {
            "inference_id": frame["inference_id"].astype(str),
            "row": rows.astype("int64"),
            "label": labels,
        }
    )


def score(metric: str, truth: list[float], predicted: list[float]) -> float | None:
    """The evaluate stage's metric on hard predictions (roc_auc of labels is balanced
    accuracy's cousin: what a served label answer allows); None when undefined."""
    from sklearn import metrics as skm

    if not truth:
        return None
    if metric == "roc_auc":
        if len(set(truth)) < 2:
            return None
        return float(skm.roc_auc_score(truth, predicted))
    functions = {
        "accuracy": skm.accuracy_score,
        "precision": skm.precision_score,
        "recall": skm.recall_score,
        "f1": skm.f1_score,
    }
    if metric not in functions:
        return None
    options = {} if metric == "accuracy" else {"zero_division": 0}
    return float(functions[metric](truth, [round(p) for p in predicted], **options))


def performance(
    source: str, window: Window, record: ProvenanceRecord, query: str | None = None
) -> Performance:
    labels = read(source, query)
    metric = record.the_run().tags.get(GATE_METRIC_TAG) or DEFAULT_METRIC
    if metric not in METRICS:
        metric = DEFAULT_METRIC
    served = {
        (iid, row): pred
        for iid, row, pred in zip(
            window.inference_ids, window.row_in_request, window.predictions, strict=True
        )
        if isinstance(pred, (int, float)) and not isinstance(pred, bool)
    }
    truth: list[float] = []
    predicted: list[float] = []
    unknown = 0
    for iid, row, label in labels.itertuples(index=False):
        pred = served.get((iid, int(row)))
        if pred is None:
            unknown += 1
            continue
        truth.append(float(label))
        predicted.append(float(pred))
    return Performance(
        metric=metric,
        live=score(metric, truth, predicted),
        promoted_on=record.the_run().metrics.get(f"test_{metric}"),
        labelled_rows=len(truth),
        unknown_ids=unknown,
    )
