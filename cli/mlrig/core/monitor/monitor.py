"""`mlrig monitor ENDPOINT|REF`: one window of captured traffic against the served version's
training snapshot. `run_monitor` is the API (the trainer's schedule calls it too); it returns
a MonitorResult and raises an MlrigError (one line) when there is nothing honest to compare.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.core.deploy.state import NAME_PATTERN
from mlrig.core.monitor import _captures
from mlrig.core.monitor import stats as drift_stats
from mlrig.core.monitor._result import Column, MonitorResult
from mlrig.core.monitor.stats import ColumnDrift, Thresholds
from mlrig.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.contract import StackOutputs

CAPTURES = "captures"  # <stack data dir>/captures/<ENDPOINT>/yyyy/mm/dd/hh/*.jsonl
EXPERIMENT_SUFFIX = "-monitor"
TAG_PREFIX = "mlrig.monitor."
_SINCE = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def parse_since(text: str, now: datetime) -> datetime:
    """24h, 30m, 7d, 2w, or an ISO 8601 time (UTC unless it says otherwise)."""
    if m := _SINCE.fullmatch(text.strip()):
        return now - timedelta(**{_UNITS[m["unit"]]: int(m["n"])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text[:40]!r} is neither a duration nor a time",
            hint="use e.g. 30m, 24h, 7d, 2w or 2026-12-07T10:00:00Z",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _captures_root(outputs: StackOutputs, since: datetime, until: datetime, scratch: Path) -> Path:
    """The folder of the stack's captures: the local stack's own, or for an AWS stack the
    window's objects of s3://BUCKET/captures/ copied into `scratch` (same layout)."""
    from mlrig.core.stack.local.state import Layout

    if outputs.kind == "local":
        return Layout(outputs.name).root / CAPTURES
    from mlrig.core.monitor import _s3captures

    bucket = outputs.dvc_remote.url.removeprefix("s3://").split("/", 1)[0]
    _s3captures.mirror(bucket, outputs.region or "us-east-1", since, until, scratch)
    return scratch


def _window(
    target: str, root: Path, rest: MlflowRest, since: datetime, until: datetime
) -> tuple[str | None, _captures.Window]:
    """(endpoint or None, the window) of an endpoint's captures or of one version's."""
    from mlrig.core.provenance import trace

    if re.fullmatch(NAME_PATTERN, target):
        window = _captures.read(root / target, since, until)
        if len(window.versions) > 1:
            mixed = ", ".join(f"{m} v{v} ({n})" for (m, v), n in sorted(window.versions.items()))
            raise UsageError(
                f"the window of endpoint {target} holds captures of several versions: {mixed}",
                hint="monitor one of them: `mlrig monitor models:/NAME/VERSION`, or a --since "
                "after the change",
            )
        return target, window
    parsed = trace.parse(target)
    if parsed.kind != "model" or not parsed.name:
        raise UsageError(
            f"{target[:80]!r} names no endpoint or model version",
            hint="pass an endpoint name, models:/NAME/VERSION or models:/NAME@ALIAS",
        )
    if parsed.alias:
        version = rest.model_version_by_alias(parsed.name, parsed.alias).version
    else:
        version = str(parsed.version)
    window = _captures.Window(since=since, until=until)
    if root.is_dir():
        for endpoint in sorted(p for p in root.iterdir() if re.fullmatch(NAME_PATTERN, p.name)):
            part = _captures.read(endpoint, since, until, model=parsed.name, version=version)
            _merge(window, part)
    window.versions[(parsed.name, version)] += 0
    return None, window


def _merge(into: _captures.Window, part: _captures.Window) -> None:
    into.files += part.files
    into.records += part.records
    into.cut_lines += part.cut_lines
    into.bad_records += part.bad_records
    into.bad_reason = into.bad_reason or part.bad_reason
    into.versions.update(part.versions)
    into.run_ids.update(part.run_ids)
    into.other_versions.update(part.other_versions)
    for columns, values in part.blocks:
        into.add_rows(columns, values)
    into.predictions += part.predictions
    into.inference_ids += part.inference_ids
    into.row_in_request += part.row_in_request
    into.unreadable_bodies += part.unreadable_bodies
    into.first_unreadable = into.first_unreadable or part.first_unreadable


def _model_inputs(rest: MlflowRest, name: str, version: str) -> list[str] | None:
    """The input columns of the version's MLmodel signature, or None when it has none."""
    import yaml

    try:
        text = rest.read_artifact(rest.download_uri(name, version), "MLmodel")
        inputs = json.loads((yaml.safe_load(text or b"") or {})["signature"]["inputs"])
        names = [str(i["name"]) for i in inputs if isinstance(i, dict) and "name" in i]
    except Exception:  # noqa: BLE001 - a model without a readable signature: not known
        return None
    return [n for n in names if len(n) <= 200] or None


def _run_artifact(rest: MlflowRest, run_id: str, name: str) -> bytes | None:
    """A small artifact of the run (at most 1 MiB), or None when it logged no such file."""
    uri = rest.run(run_id).artifact_uri
    return rest.read_artifact(uri, name) if uri else None


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each column as numbers when every value is one, else as text."""
    import numpy as np
    import pandas as pd

    out: dict[str, np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) or series.dtype == object:
            numeric = pd.to_numeric(series, errors="coerce")
            if series.notna().sum() and numeric.notna().sum() == series.notna().sum():
                series = numeric
        out[str(name)] = (
            series.to_numpy() if series.dtype != object else series.astype(str).to_numpy()
        )
        if out[str(name)].dtype.kind in "iub":
            out[str(name)] = out[str(name)].astype(np.int64)
    return out


def _schema(record: Any, repo: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    """(data/schema.yaml at the commit that trained the version, or a note why not)."""
    from mlrig.adapters import git
    from mlrig.core.monitor import _schema as schema_rules
    from mlrig.core.provenance import trace

    where = trace.find_repo(repo)
    point = record.code.restore_point
    text: bytes | None = None
    if where is not None and point is not None:
        text = git.show_files(where, [f"{point.sha}:data/schema.yaml"])[
            f"{point.sha}:data/schema.yaml"
        ]
    if where is not None and text is None and (where / "data" / "schema.yaml").is_file():
        text = (where / "data" / "schema.yaml").read_bytes()
    if text is None:
        return None, "no data/schema.yaml found (run inside the repository): schema not checked"
    parsed = schema_rules.parse_schema(text)
    if parsed is None:
        return None, "data/schema.yaml lists no typed columns: schema not checked"
    return parsed, None


def run_monitor(
    target: str,
    since: datetime | timedelta = timedelta(hours=24),
    stack: str | None = None,
    *,
    repo: Path | None = None,
    until: datetime | None = None,
    thresholds: Thresholds | None = None,
    labels: str | None = None,
    labels_query: str | None = None,
    log_run: bool = True,
    report: Path | None = None,
) -> MonitorResult:
    """Compare the captures of `target` (an endpoint, or models:/NAME/VERSION|@ALIAS) since
    `since` with the served version's training snapshot; log the result as an MLflow run
    (unless log_run is False) and write the HTML report when `report` names a file.
    `labels` is a file or URL, or with `labels_query` a SQLAlchemy URL (as ingest reads)."""
    if labels_query is not None and labels is None:
        raise UsageError(
            "--labels-query needs --labels URL: the SQLAlchemy URL of the database to query",
            hint="e.g. --labels postgresql://app@db/prod --labels-query 'SELECT ...'",
        )

    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.monitor import _reference
    from mlrig.core.monitor import _schema as schema_rules
    from mlrig.core.provenance import trace
    from mlrig.core.shared import dvc_tables
    from mlrig.core.stack import env as stack_env
    from mlrig.core.stack import stacks

    t = thresholds or Thresholds()
    now = datetime.now(UTC)
    until = until or now
    start = until - since if isinstance(since, timedelta) else since
    outputs = stacks.outputs(stacks.resolve_name(stack, repo=repo))
    rest = MlflowRest.from_env(stack_env.client_env(outputs))
    with tempfile.TemporaryDirectory(prefix="mlrig-captures-") as scratch:
        root = _captures_root(outputs, start, until, Path(scratch))
        endpoint, window = _window(target, root, rest, start, until)
    if not window.records:
        what = f"endpoint {endpoint}" if endpoint else target
        raise UsageError(
            f"no captures of {what} since {start:%Y-%m-%d %H:%M} UTC",
            hint="capture is off unless the deploy turns it on (`mlrig deploy --capture PCT`); "
            "or widen --since",
        )
    ((model, version),) = [k for k, n in window.versions.items() if n] or list(window.versions)
    record = trace.trace(f"models:/{model}/{version}", stack=outputs.name, repo=repo)
    live = window.frame()
    notes: list[str] = []
    if window.unreadable_bodies:
        notes.append(
            f"{window.unreadable_bodies} record(s) with a body in no scoring format, left out "
            f"(first: {window.first_unreadable})"
        )
    if window.cut_lines:
        notes.append(f"{window.cut_lines} cut last line(s) skipped (a writer still appending)")
    if window.bad_records:
        notes.append(f"{window.bad_records} bad record(s) skipped (first: {window.bad_reason})")
    other_runs = sum(n for run, n in window.run_ids.items() if run != record.the_run().id)
    if other_runs:
        notes.append(
            f"{other_runs} record(s) name another training run than v{version}'s "
            f"{record.the_run().id}: was the image built from another run?"
        )
    reference = _reference.load(
        record,
        outputs,
        [str(c) for c in live.columns],
        lambda: _run_artifact(rest, record.the_run().id, dvc_tables.PARTITIONS_ARTIFACT),
    )
    inputs = _model_inputs(rest, model, version)
    schema, why = _schema(record, repo)
    if why:
        notes.append(why)
    found = schema_rules.findings(live, schema, inputs) if schema is not None else []
    target_column = str((schema or {}).get("target") or "target")
    skip = {schema_rules.ID_COLUMN, target_column}
    ref_columns = _columns(reference.frame.drop(columns=[c for c in skip if c in reference.frame]))
    live_columns = _columns(live)
    compared = drift_stats.compare(ref_columns, live_columns, t)
    not_compared = [
        f"{c}: not in the reference {reference.path}"
        + (" (the model derives it)" if inputs and c in inputs else "")
        for c in live_columns
        if c not in ref_columns
    ]
    missing = [c for c in ref_columns if c not in live_columns]
    if missing and schema is None:
        found.append(f"{len(missing)} reference column(s) absent from the requests: {missing[:5]}")
    prediction = _prediction(reference.frame, target_column, window.predictions, t)
    enough = window.n_rows >= t.min_samples
    drifted = enough and (
        any(c.drifted for c in compared) or bool(prediction and prediction.drifted)
    )
    result = MonitorResult(
        target=target,
        endpoint=endpoint,
        model=model,
        version=version,
        run_id=record.the_run().id,
        digest=(record.model.tags.get("mlrig.image.digest") if record.model else None),
        since=start,
        until=until,
        records=window.records,
        rows=window.n_rows,
        cut_lines=window.cut_lines,
        bad_records=window.bad_records,
        bad_reason=window.bad_reason,
        reference_path=reference.path,
        reference_md5=reference.md5,
        reference_rows=len(reference.frame),
        thresholds={k: float(v) for k, v in vars(t).items()},
        columns=[Column(**c.as_dict()) for c in compared],
        prediction=Column(**prediction.as_dict()) if prediction else None,
        not_compared=not_compared,
        schema_findings=found,
        notes=notes,
        enough=enough,
        drifted=drifted,
    )
    if labels is not None:
        from mlrig.core.monitor import _labels

        result.performance = _labels.performance(labels, window, record, labels_query)
    if log_run:
        result.monitor_run_id = log_to_mlflow(rest, result)
    if report is not None:
        from mlrig.core.monitor import _report

        pair = None
        if target_column in reference.frame.columns:
            pair = (reference.frame[target_column].to_numpy(), _prediction_values(window))
        _report.write(report, result, ref_columns, live_columns, pair)
    return result


def _prediction(
    reference: pd.DataFrame, target: str, predictions: list[Any], t: Thresholds
) -> ColumnDrift | None:
    """The predictions against the reference's target (the label shares the model learned)."""

    live = _prediction_values_of(predictions)
    if target not in reference.columns or not len(live):
        return None
    ref = reference[target].to_numpy()
    kind = drift_stats.kind_of(ref)
    (found,) = drift_stats.compare(
        {"prediction": ref}, {"prediction": live}, t, {"prediction": kind}
    )
    return found


def _prediction_values_of(predictions: list[Any]) -> np.ndarray:
    import numpy as np

    values = [p for p in predictions if isinstance(p, (int, float)) and not isinstance(p, bool)]
    live = np.asarray(values, dtype=float)
    if len(live) and np.all(live == np.round(live)):
        return live.astype(np.int64)
    return live


def _prediction_values(window: _captures.Window) -> np.ndarray:
    return _prediction_values_of(window.predictions)


def metric_key(*parts: str) -> str:
    return _METRIC_KEY.sub("_", ".".join(parts))[:250]


def log_to_mlflow(rest: MlflowRest, result: MonitorResult) -> str:
    """A finished run in experiment `<model>-monitor`, tagged with the model, version,
    endpoint and training run; per-column metrics at step = the window's end in minutes since
    the epoch (and its timestamp), so successive windows plot as a line."""
    end_ms = int(result.until.timestamp() * 1000)
    step = int(result.until.timestamp() // 60)
    tags = {
        f"{TAG_PREFIX}model": result.model,
        f"{TAG_PREFIX}version": result.version,
        f"{TAG_PREFIX}endpoint": result.endpoint or "",
        f"{TAG_PREFIX}training_run": result.run_id,
        f"{TAG_PREFIX}reference": f"{result.reference_path}@{result.reference_md5}",
        f"{TAG_PREFIX}drifted": str(result.drifted).lower(),
        f"{TAG_PREFIX}enough": str(result.enough).lower(),
        f"{TAG_PREFIX}drifted_columns": ",".join(result.drifted_columns)[:4000],
        "mlflow.runName": f"monitor {result.endpoint or result.model} v{result.version}",
        "mlflow.source.name": "mlrig monitor",
    }
    params = {
        "since": result.since.isoformat(),
        "until": result.until.isoformat(),
        **{f"threshold.{k}": f"{v:g}" for k, v in result.thresholds.items()},
    }
    metrics: list[tuple[str, float, int, int]] = [
        ("records", float(result.records), end_ms, step),
        ("rows", float(result.rows), end_ms, step),
        ("drifted_columns", float(len(result.drifted_columns)), end_ms, step),
        ("schema_findings", float(len(result.schema_findings)), end_ms, step),
    ]
    for column in [*result.columns, *([result.prediction] if result.prediction else [])]:
        drift = ColumnDrift(**column.model_dump())
        for name, value in drift.metrics().items():
            if value == value and abs(value) != float("inf"):  # MLflow refuses NaN/inf in JSON
                metrics.append((metric_key("drift", column.column, name), value, end_ms, step))
    if result.performance and result.performance.live is not None:
        metrics.append((f"live_{result.performance.metric}", result.performance.live, end_ms, step))
    experiment = rest.experiment_id(f"{result.model}{EXPERIMENT_SUFFIX}")
    run_id = rest.create_run(experiment, end_ms, tags)
    rest.log_batch(run_id, metrics=metrics, params=params)
    rest.end_run(run_id, end_ms)
    return run_id
