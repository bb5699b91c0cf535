"""Stage 2: check the snapshot against the schema in the repository (data/schema.yaml) and the
quality thresholds in params.yaml (`validate:`), and write the quality metrics. The leakage
check (no row in both train and test) runs at the end of preprocess, on the split itself.

A failed check exits non-zero with one line naming the column or rule, so DVC stops before
training: no MLflow run, no model version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import data

TYPES = ("int", "float", "str", "bool")


def fail(message: str) -> SystemExit:
    return SystemExit(f"validate: {message}")


def load_schema(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        schema = yaml.safe_load(fh) or {}
    columns = schema.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise fail(f"{path.name} lists no columns")
    for name, spec in columns.items():
        if (spec or {}).get("type") not in TYPES:
            raise fail(f"{path.name}: column {name!r} needs a type, one of {', '.join(TYPES)}")
    return schema


def type_of(series: pd.Series) -> str:
    """The schema type a column's values have, as pandas read them."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        present = series.dropna()
        return "int" if len(present) and (present == present.round()).all() else "float"
    return "str"


def type_matches(want: str, have: str) -> bool:
    return want == have or (want == "float" and have == "int")


def content_columns(frame: pd.DataFrame) -> list[str]:
    """What a row says, without its ID: two rows equal here are the same example."""
    return [c for c in frame.columns if c != data.ID]


def quality(frame: pd.DataFrame, target: str | None) -> dict[str, Any]:
    """rows, nulls per column, duplicate rows (same content, IDs aside), duplicate IDs and
    the share of each class."""
    content = content_columns(frame)
    metrics: dict[str, Any] = {
        "rows": len(frame),
        "nulls": {c: int(n) for c, n in frame.isna().sum().items()},
        "duplicates": int(frame.duplicated(subset=content).sum()) if content else 0,
        "duplicate_ids": int(frame[data.ID].duplicated().sum()) if data.ID in frame else 0,
    }
    if target and target in frame and len(frame):
        shares = frame[target].value_counts(normalize=True).sort_index()
        metrics["class_balance"] = {str(k): round(float(v), 6) for k, v in shares.items()}
    return metrics


def schema_errors(frame: pd.DataFrame, schema: dict[str, Any]) -> list[str]:
    """Each way the table breaks the schema, one line each, the first column first."""
    columns: dict[str, Any] = schema["columns"]
    errors = [
        f"column {c!r} is missing (data/schema.yaml lists it)"
        for c in columns
        if c not in frame.columns
    ]
    errors += [
        f"column {c!r} is not in data/schema.yaml" for c in frame.columns if c not in columns
    ]
    for name, spec in columns.items():
        if name not in frame.columns:
            continue
        series, want = frame[name], spec["type"]
        have = type_of(series)
        if not type_matches(want, have):
            errors.append(
                f"column {name!r} should be {want}, found {have} (e.g. {series.dropna().iloc[0]!r})"
                if series.notna().any()
                else f"column {name!r} should be {want}, found no values"
            )
            continue
        nulls = int(series.isna().sum())
        if nulls and not spec.get("nullable", False):
            errors.append(f"column {name!r} has {nulls} null(s); data/schema.yaml allows none")
        allowed = spec.get("values")
        if allowed is not None:
            bad = sorted({v for v in series.dropna().unique() if v not in allowed}, key=str)
            if bad:
                errors.append(f"column {name!r} has values {bad[:5]} outside {allowed}")
    return errors


def quality_errors(metrics: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The thresholds of params.yaml's `validate:`, each named as its rule."""
    errors = []
    rows = metrics["rows"]
    if rows < int(p.get("min_rows", 0)):
        errors.append(f"rule 'min_rows': {rows} rows, at least {p['min_rows']} needed")
    share = metrics["duplicates"] / rows if rows else 0.0
    if share > float(p.get("max_duplicate_fraction", 1.0)):
        errors.append(
            f"rule 'max_duplicate_fraction': {metrics['duplicates']} duplicate rows "
            f"({share:.1%}), at most {float(p['max_duplicate_fraction']):.1%} allowed"
        )
    if metrics["duplicate_ids"]:
        errors.append(
            f"rule 'unique_ids': column {data.ID!r} has "
            f"{metrics['duplicate_ids']} duplicate value(s)"
        )
    balance = metrics.get("class_balance") or {}
    minority = min(balance.values()) if balance else None
    if minority is not None and minority < float(p.get("min_class_fraction", 0.0)):
        errors.append(
            f"rule 'min_class_fraction': the smallest class is {minority:.1%} of "
            f"rows, at least {float(p['min_class_fraction']):.1%} needed"
        )
    return errors


def check(
    frame: pd.DataFrame, schema: dict[str, Any], p: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """(quality metrics, errors): schema errors first, then the quality rules."""
    target = schema.get("target")
    metrics = quality(frame, target)
    return metrics, schema_errors(frame, schema) + quality_errors(metrics, p)


# -- leakage (run by preprocess, on the split) ---------------------------------------------
def leaked_rows(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Rows of test that are also in train: the same ID, or the same content."""
    by_id = test[data.ID].isin(set(train[data.ID])) if data.ID in test else False
    content = content_columns(test)
    seen = train[content].drop_duplicates().assign(_in_train=True)
    by_content = test[content].merge(seen, how="left", on=content)["_in_train"].notna()
    return test[by_id | by_content.to_numpy()]


def check_leakage(train: pd.DataFrame, test: pd.DataFrame) -> None:
    leaked = leaked_rows(train, test)
    if len(leaked):
        ids = ", ".join(str(i) for i in leaked[data.ID].head(5))
        raise SystemExit(
            f"preprocess: rule 'leakage': {len(leaked)} test row(s) also in the "
            f"training set (id {ids})"
        )


def main() -> None:
    p = data.params()["validate"]
    frame = data.load_snapshot()
    schema = load_schema(data.ROOT / p["schema"])
    metrics, errors = check(frame, schema, p)
    data.QUALITY_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(data.QUALITY_FILE, "w") as fh:
        json.dump(metrics, fh, indent=2)
        fh.write("\n")
    if errors:
        more = f" (and {len(errors) - 2} more)" if len(errors) > 2 else ""
        raise fail("; ".join(errors[:2]) + more)
    print(
        f"validate: {metrics['rows']} rows match {p['schema']}, "
        f"{metrics['duplicates']} duplicate(s), classes {metrics.get('class_balance')}"
    )


if __name__ == "__main__":
    main()
