"""Stage 5: score the test set, write metrics and plots, add the metrics to the MLflow run,
then the champion gate (gate.py): does the candidate replace the `champion` alias?"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pandas as pd
from sklearn import metrics as skm

from . import data, features, gate, tracking


def score(
    model: Any, test: pd.DataFrame, threshold: float
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    x, y = features.split_xy(test)
    proba = model.predict_proba(x)[:, 1]
    pred = (proba >= threshold).astype("int64")
    result = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, proba),
    }
    fpr, tpr, _ = skm.roc_curve(y, proba)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr})
    confusion = pd.DataFrame({"actual": y.to_numpy(), "predicted": pred})
    return {k: round(float(v), 6) for k, v in result.items()}, roc, confusion


def main() -> None:
    all_params = data.params()
    p = all_params["evaluate"]
    with open(data.MODEL_FILE, "rb") as fh:
        model = pickle.load(fh)  # noqa: S301 - our own artefact, produced by the train stage
    result, roc, confusion = score(model, pd.read_csv(data.TEST_CSV), float(p["threshold"]))
    with open(data.METRICS_FILE, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    data.PLOTS.mkdir(parents=True, exist_ok=True)
    roc.to_csv(data.PLOTS / "roc.csv", index=False)
    confusion.to_csv(data.PLOTS / "confusion.csv", index=False)

    tracking.configure_mlflow()
    from mlflow import MlflowClient

    with open(data.RUN_FILE) as fh:
        record = json.load(fh)
    client = MlflowClient()
    for key, value in result.items():
        client.log_metric(record["run_id"], f"{gate.METRIC_PREFIX}{key}", value)
    print(f"evaluate: {result}")
    print(gate.run(client, record, result, all_params["gate"]).line())


if __name__ == "__main__":
    main()
