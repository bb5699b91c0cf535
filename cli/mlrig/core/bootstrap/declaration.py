"""What an adopted repository declares so `mlrig retrain` can run its pipeline: the `retrain`
block of its answers file, written by `mlrig init --adopt --retrain-stage … --gate-metric …`
or added by hand, read by retrain (core/retrain/_gate.py runs the gate).

    retrain:
      data_stages: [fetch]               # the stage(s) that bring in new data
      gate:
        metric: eval/metrics.json:roc_auc   # FILE:KEY, FILE a metrics file a stage writes
        direction: max                      # max | min: which way is better
        min_improvement: 0.0                # optional: the margin the candidate must win by
      model: getting_started             # optional: the registered model (default: the project)

The block is a file anyone with the repository may have edited: it is checked here, once,
against the schema and against dvc.yaml (every stage exists, the metric file is inside the
repository and an output of a stage) before retrain runs anything.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.errors import ConfigError
from mlrig.paths import ANSWERS_FILE

PIPELINE_FILE = "dvc.yaml"
_STAGE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # a dvc.yaml stage name
# a key of a metrics file (dots go into nested objects), usable as an MLflow metric name
_KEY = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$"
HINT = (
    f"declare it in {ANSWERS_FILE}: `retrain: {{data_stages: [STAGE], gate: {{metric: "
    "FILE:KEY, direction: max|min}}` (see docs: adopting a repository)"
)


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(pattern=r"^[^:]+:[^:]+$", max_length=400)
    direction: Literal["max", "min"]
    min_improvement: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @property
    def file(self) -> str:
        return self.metric.split(":", 1)[0]

    @property
    def key(self) -> str:
        return self.metric.split(":", 1)[1]


class Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_stages: tuple[Annotated[str, Field(pattern=_STAGE)], ...] = Field(
        min_length=1, max_length=20
    )
    gate: Gate
    # the project name's rule: the repository's machine identity edits the model so named
    model: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,254}$")


def _bad(what: str) -> ConfigError:
    return ConfigError(f"{ANSWERS_FILE} retrain: {what}", hint=HINT)


def _outputs(spec: Any) -> list[str]:
    """The paths a dvc.yaml stage writes (outs and metrics; an entry is a path or {path: opts})."""
    found = []
    for kind in ("outs", "metrics"):
        entries = spec.get(kind) if isinstance(spec, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            name = next(iter(entry), None) if isinstance(entry, dict) else entry
            if isinstance(name, str):
                found.append(str(PurePosixPath(name)))
    return found


def _stages(root: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load((root / PIPELINE_FILE).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise _bad(f"the repository has no {PIPELINE_FILE}: retrain runs its DVC stages") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise _bad(f"{PIPELINE_FILE} cannot be read as YAML, so no stage can be checked") from None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    return {str(k): v for k, v in stages.items()} if isinstance(stages, dict) else {}


def _inside(root: Path, rel: str) -> bool:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or rel.startswith("~"):
        return False
    return (root / rel).resolve().is_relative_to(root.resolve())


def parse(raw: object, root: Path) -> Declaration:
    """The block `raw` checked against the schema and the pipeline at root; one ConfigError
    naming the first thing wrong."""
    try:
        declared = Declaration.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the block"
        value = f" {first['input']!r}" if not isinstance(first["input"], dict | list) else ""
        raise _bad(f"{where}{value}: {first['msg']}") from None
    stages = _stages(root)
    for stage in declared.data_stages:
        if stage not in stages:
            known = ", ".join(sorted(stages)) or "none"
            raise _bad(f"data stage {stage!r} is not in {PIPELINE_FILE} (its stages: {known})")
    gate = declared.gate
    if not _inside(root, gate.file):
        raise _bad(f"gate.metric {gate.file!r} is not a path inside the repository")
    if not _matches(gate.key, _KEY):
        raise _bad(f"gate.metric key {gate.key!r} is not a metrics key (letters, digits, _ . -)")
    file = str(PurePosixPath(gate.file))
    if not any(file in _outputs(spec) for spec in stages.values()):
        raise _bad(
            f"gate.metric file {gate.file} is written by no stage of {PIPELINE_FILE} "
            "(it must be a stage's metrics or outs)"
        )
    return declared


def _matches(text: str, pattern: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None
