"""The champion gate of an adopted repository, run by retrain between `dvc repro` and the
commit (a generated repository's evaluate stage runs its own, the template's gate.py).

The candidate is the model version this run registered (its MLflow run carries the run's
id); its score is the declared metric as the pipeline just wrote it. The champion's score is
read from the champion's run, where an earlier gate logged it as `mlrig.gate.<key>`: a value
read back from the server, checked to be a finite number before it is compared. Like the
template's gate, `champion` moves when there is none, when the champion's run has no score
to compare (a version promoted by hand), or when the candidate wins by more than
min_improvement. The decision goes to the candidate's run as `mlrig.gate.*` tags.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.bootstrap.declaration import HINT, Declaration, Gate
from mlrig.core.retrain import state as retrain_state
from mlrig.errors import ConfigError
from mlrig.paths import ANSWERS_FILE

PREFIX = "mlrig.gate."


def metric_name(gate: Gate) -> str:
    """The gate's score on a run: `mlrig.gate.<key>` (apart from what the team logs)."""
    return f"{PREFIX}{gate.key}"


def champion_score(rest: MlflowRest, model: str, version: str, gate: Gate) -> float | None:
    """The champion's score from its run; None when the run has none to compare."""
    run_id = rest.model_version(model, version).run_id
    if run_id is None:
        return None
    value = rest.run(run_id).metrics.get(metric_name(gate))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(
            f"the champion (version {version} of {model})'s run holds {metric_name(gate)} = "
            f"{value!r}, not a finite number",
            hint=f"point @{retrain_state.ALIAS} at a version whose run has a real score",
        )
    return float(value)


def candidate_score(root: Path, gate: Gate) -> float:
    """The gate metric as the pipeline just wrote it: the file read as JSON or YAML, the key
    followed through nested objects (`avg_prec.test`), a finite number; else one line."""
    import yaml

    path = root / gate.file
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"the pipeline wrote no {gate.file}", hint="check the stage that writes it"
        ) from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{gate.file} is not JSON or YAML", hint=HINT) from None
    value: Any = doc
    if isinstance(doc, dict) and gate.key in doc:
        value = doc[gate.key]
    else:
        for part in gate.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        keys = ", ".join(sorted(map(str, doc))) if isinstance(doc, dict) else "none"
        raise ConfigError(
            f"{gate.file} has no number at {gate.key!r} (its keys: {keys})",
            hint=f"fix gate.metric in {ANSWERS_FILE}'s retrain block",
        )
    return float(value)


def wins(candidate: float, champion: float, gate: Gate) -> bool:
    if gate.direction == "max":
        return candidate > champion + gate.min_improvement
    return candidate < champion - gate.min_improvement


def run(
    rest: MlflowRest,
    root: Path,
    declared: Declaration,
    saved: retrain_state.SavedState,
) -> dict[str, Any]:
    """Decide, tag the candidate's run, move `champion` when the candidate won; return the
    decision in gate.json's shape (metric, candidate, champion, margin, verdict, version,
    reason). `saved.champion` is the alias as the run found it."""
    gate, model, champion = declared.gate, saved.model, saved.champion
    candidate = candidate_score(root, gate)
    decision: dict[str, Any] = {
        "metric": gate.metric,
        "candidate": candidate,
        "champion": None,
        "margin": gate.min_improvement,
        "champion_version": champion,
    }
    versions = retrain_state.run_versions(rest, saved)
    if len(versions) > 1:
        numbers = ", ".join(v.version for v in versions)
        raise ConfigError(
            f"the pipeline registered {len(versions)} versions of {model} ({numbers}); the "
            "gate compares one",
            hint="register the model once per `dvc repro`",
        )
    if not versions:
        return {**decision, "verdict": "kept", "version": None, "reason": "no version registered"}
    version = versions[0]
    score = champion_score(rest, model, champion, gate) if champion else None
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif score is None:
        promoted, reason = True, f"the champion's run has no {metric_name(gate)} to compare"
    else:
        promoted = wins(candidate, score, gate)
        reason = "the candidate wins" if promoted else "the candidate does not win"
    verdict = "promoted" if promoted else "kept"
    decision = {
        **decision,
        "champion": score,
        "verdict": verdict,
        "version": version.version,
        "reason": reason,
    }
    tags = {f"{PREFIX}{k}": "none" if v is None else str(v) for k, v in decision.items()}
    now = int(time.time() * 1000)
    rest.log_batch(str(version.run_id), metrics=[(metric_name(gate), candidate, now, 0)], tags=tags)
    if promoted:
        rest.set_alias(model, retrain_state.ALIAS, version.version)
    return decision
