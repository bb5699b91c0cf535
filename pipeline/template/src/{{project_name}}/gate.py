"""The champion gate, run by evaluate: the candidate (the version train just registered) against
the registered model's `champion` alias, on params.yaml's `gate.metric` (a key of
metrics.json, compared as the run's `test_<metric>`) with `gate.margin`.

`champion` moves only when the candidate wins by more than the margin, or when there is no
champion yet. Only a plain `dvc repro` may move it: a `dvc exp run` (DVC_EXP_NAME set) is
compared and its verdict logged, but the alias stays, and a verification re-run
(MLRIG_REPRO_OF, no version registered) is never a candidate. The decision goes to the run as
`mlrig.gate.*` tags, to gate.json, and to one printed line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from . import data

ALIAS = "champion"
METRIC_PREFIX = "test_"  # evaluate logs metrics.json's keys as test_<key>
EXP_ENV = "DVC_EXP_NAME"


@dataclass(frozen=True)
class Decision:
    metric: str
    candidate: float
    champion: float | None
    margin: float
    verdict: str  # "promoted" | "kept"
    version: str | None  # the candidate's model version
    model: str
    champion_version: str | None
    reason: str

    def line(self) -> str:
        theirs = (
            "no champion"
            if self.champion_version is None
            else f"champion v{self.champion_version} {_num(self.champion)}"
        )
        ours = f"v{self.version}" if self.version else "this run"
        return (
            f"gate: {self.metric}: candidate {ours} {_num(self.candidate)} vs {theirs}, "
            f"margin {self.margin:g}: {self.verdict} ({self.reason})"
        )

    def tags(self) -> dict[str, str]:
        values = {
            "metric": self.metric,
            "candidate": _num(self.candidate),
            "champion": _num(self.champion),
            "margin": f"{self.margin:g}",
            "verdict": self.verdict,
            "reason": self.reason,
            "champion_version": self.champion_version or "none",
        }
        return {f"mlrig.gate.{k}": v for k, v in values.items()}


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def wins(candidate: float, champion: float | None, margin: float, greater_is_better: bool) -> bool:
    if champion is None:
        return True
    if greater_is_better:
        return candidate > champion + margin
    return candidate < champion - margin


def decide(
    metric: str,
    candidate: float,
    champion: float | None,
    margin: float,
    greater_is_better: bool,
    *,
    version: str | None,
    model: str,
    champion_version: str | None,
    experiment: str | None,
) -> Decision:
    better = wins(candidate, champion, margin, greater_is_better)
    if version is None:
        verdict, reason = "kept", "a verification re-run registers no version"
    elif experiment:
        verdict = "kept"
        reason = (
            f"experiment {experiment} {'would win' if better else 'loses'}; "
            "only dvc repro moves champion"
        )
    elif champion_version is None:
        verdict, reason = "promoted", "no champion yet"
    elif better:
        verdict, reason = "promoted", "the candidate wins"
    else:
        verdict, reason = "kept", "the candidate does not win"
    return Decision(
        metric, candidate, champion, margin, verdict, version, model, champion_version, reason
    )


def current_champion(client: Any, model: str, metric: str) -> tuple[str | None, float | None]:
    """(version, its test_<metric>) of the model's champion alias; (None, None) if none."""
    from mlflow.exceptions import MlflowException

    try:
        held = client.get_model_version_by_alias(model, ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None, None
        raise
    score = client.get_run(held.run_id).data.metrics.get(f"{METRIC_PREFIX}{metric}")
    return str(held.version), score


def run(
    client: Any, record: dict[str, Any], metrics: dict[str, float], p: dict[str, Any]
) -> Decision:
    """Decide, move the alias if the candidate won, tag the run, write gate.json."""
    metric = str(p["metric"])
    if metric not in metrics:
        raise SystemExit(
            f"gate: params.yaml gate.metric {metric!r} is not in metrics.json "
            f"(one of {', '.join(sorted(metrics))})"
        )
    model, version = str(record["registered_model"]), record.get("version")
    champion_version, champion = current_champion(client, model, metric)
    if champion_version is not None and champion is None:
        champion_version = None  # a champion without the metric cannot be compared: replace it
    decision = decide(
        metric,
        float(metrics[metric]),
        champion,
        float(p.get("margin", 0.0)),
        bool(p.get("greater_is_better", True)),
        version=version,
        model=model,
        champion_version=champion_version,
        experiment=os.environ.get(EXP_ENV) or None,
    )
    if decision.verdict == "promoted":
        client.set_registered_model_alias(model, ALIAS, str(version))
    for key, value in decision.tags().items():
        client.set_tag(record["run_id"], key, value)
    with open(data.GATE_FILE, "w") as fh:
        json.dump(asdict(decision), fh, indent=2)
        fh.write("\n")
    return decision
