"""What a retrain reads from the repository: its plan (model, data stages, an adopted
repository's declaration), the snapshot record ingest wrote, the gate's verdict, and the
credentials it trains with."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig import contract
from mlrig.contract import StackOutputs
from mlrig.core.access import identities
from mlrig.core.bootstrap import declaration
from mlrig.core.bootstrap.declaration import Declaration
from mlrig.core.stack import stacks
from mlrig.errors import ConfigError, UsageError

RECORD = Path("data/snapshot/record.json")
# a partitioned repository's record: the watermark, with the partitions' DVC hash and rows
WATERMARK = Path("data/snapshot_state/watermark.json")
GATE = Path("gate.json")
RUN_RECORD = Path("models/mlflow_run.json")
INGEST_STAGE = "ingest"  # a generated repository's stage that brings new data


@dataclass(frozen=True)
class Snapshot:
    md5: str | None
    rows: int | None
    source: str | None

    def describe(self) -> str:
        if not self.md5:
            return "the pipeline's inputs"
        rows = f" ({self.rows} rows)" if self.rows is not None else ""
        return f"snapshot {self.md5}{rows}"


@dataclass(frozen=True)
class Plan:
    """What a retrain of the repository runs: the registered model, the stages that bring
    new data (no other stage starts before the champion is saved), and, for an adopted
    repository, its declaration (None: a generated one, whose evaluate stage gates)."""

    model: str
    data_stages: frozenset[str]
    declared: Declaration | None = None


def plan(repo: Path) -> Plan:
    """The retrain of a generated repository, or of an adopted one that declares its data
    stages and gate (`retrain` in the answers file); an adopted one without is refused in
    one line naming what to declare."""
    from mlrig.core.shared.names import ADOPTED_KEY, RETRAIN_KEY, load_answers

    answers = repo / stacks.ANSWERS_FILE
    if not answers.is_file():
        raise UsageError(
            f"{repo} is not a repository made by `mlrig init` (no {stacks.ANSWERS_FILE})",
            hint="pass --repo with the generated repository",
        )
    data = load_answers(answers)
    project = str(data["project_name"])
    if not data.get(ADOPTED_KEY):
        return Plan(project, frozenset({INGEST_STAGE}))
    if RETRAIN_KEY not in data:
        raise UsageError(
            f"{repo} was adopted (`mlrig init --adopt`): retrain needs to know the stage that "
            "brings new data and the metric (and direction) that decides promotion, and "
            f"{stacks.ANSWERS_FILE} declares no `retrain` block",
            hint=declaration.HINT,
        )
    declared = declaration.parse(data[RETRAIN_KEY], repo)
    return Plan(declared.model or project, frozenset(declared.data_stages), declared)


def project_name(repo: Path) -> str:
    """The model a retrain of the repository registers (see plan)."""
    return plan(repo).model


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON") from exc
    return data if isinstance(data, dict) else {}


def snapshot(repo: Path) -> Snapshot:
    raw = _json(repo / RECORD) or _json(repo / WATERMARK)
    rows = raw.get("rows")
    return Snapshot(
        str(raw["md5"]) if raw.get("md5") else None,
        int(rows) if isinstance(rows, int | float | str) and str(rows).isdigit() else None,
        str(raw["source"]) if raw.get("source") else None,
    )


def gate(repo: Path) -> dict[str, Any]:
    """gate.json as evaluate wrote it ({} when the pipeline has no gate)."""
    return _json(repo / GATE)


def registered_version(repo: Path) -> str | None:
    """The model version this run registered: the gate's record, else train's run record."""
    version = gate(repo).get("version") or _json(repo / RUN_RECORD).get("version")
    return str(version) if version else None


def run_id(repo: Path) -> str | None:
    """The MLflow run train's record names (None without one)."""
    found = _json(repo / RUN_RECORD).get("run_id")
    return str(found) if found else None


def outputs(repo: Path, stack: str | None = None) -> StackOutputs:
    """The outputs of the stack named by --stack, else of the repository's (resolve_name)."""
    return contract.load(stacks.resolve_name(stack, repo=repo))


def credentials(outputs: StackOutputs, repo: Path) -> dict[str, str]:
    """The stack's client environment with the repository's own machine identity for MLflow
    (a one-line error when it has none), plus the Python that runs mlrig first on PATH so
    stage commands (`python -m …`) find the same environment."""
    env = identities.repo_env(outputs, repo)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    # MLflow's telemetry thread sets and unsets a variable in os.environ while the stage
    # iterates it (urllib's proxy lookup): a KeyError that fails a run now and then
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    return env


def decision_line(version: str | None, gate: dict[str, Any]) -> str:
    """What a retrain that registered `version` tells people: both scores and the verdict."""
    if not version:  # the pipeline ran (dvc.lock changed) but registered nothing
        return f"no new model version: champion kept ({gate.get('reason') or 'none registered'})"
    if not gate:
        return f"new model version {version}"
    verdict = gate.get("verdict")
    metric, cand, champ = gate.get("metric"), gate.get("candidate"), gate.get("champion")
    versus = f"{metric} {cand} vs champion {champ if champ is not None else '(none)'}"
    if gate.get("reason"):
        versus = f"{versus} ({gate['reason']})"
    margin = f", margin {gate.get('margin')}" if gate.get("margin") is not None else ""
    moved = "champion moved to it" if verdict == "promoted" else "champion kept"
    return f"new model version {version}: {versus}{margin}: {moved}"
