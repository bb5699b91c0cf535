"""Is a restored workspace the run's workspace? Every file hash and the params hash the run
recorded, and `dvc status`; with --repro, the re-run's metrics and model against the recorded.

Hashes are computed the way the pipeline's train stage records them: plain MD5 of a file's
bytes (what DVC 3 writes to dvc.lock), and for params the MD5 of the stage's params as
`{file: {key: value}}` in compact, sorted JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.adapters import dvc
from mlrig.core.provenance import record as p
from mlrig.core.stack.env import temporary_env

ALWAYS_CHANGED = "always changed"  # how `dvc status` lists a stage that runs every time (ingest)
DATA_QUALITY_FILE = "metrics/data_quality.json"  # the validate stage's metrics of the snapshot
METRIC_PREFIX = "test_"  # the evaluate stage logs metrics.json's keys as test_<key>


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dir_md5(folder: Path) -> str:
    """The hash DVC 3 records for a folder: the MD5 of its sorted JSON listing of
    {md5, relpath} per file, with `.dir` appended."""
    entries = sorted(
        (
            {"md5": file_md5(f), "relpath": f.relative_to(folder).as_posix()}
            for f in folder.rglob("*")
            if f.is_file()
        ),
        key=lambda e: e["relpath"],
    )
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def path_md5(path: Path) -> str | None:
    """A file's or folder's hash as dvc.lock records it; None when neither exists."""
    if path.is_file():
        return file_md5(path)
    if path.is_dir():
        return dir_md5(path)
    return None


def inside(root: Path, path: str) -> Path | None:
    """root/path when it is a file or folder inside root, symbolic links followed; None when
    path is absolute or leads out (a recorded path or a restored commit's link)."""
    if Path(path).is_absolute():
        return None
    full = (root / path).resolve()
    return full if full.is_relative_to(root.resolve()) else None


def _stages(root: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    return dict(doc.get("stages") or {})


def stage_params(root: Path, stage: str) -> dict[str, dict[str, Any]]:
    """The stage's params as {file: {key: value}}: a bare key is a key of params.yaml, a
    mapping names other files, a dotted key reaches inside a section."""
    import yaml

    values: dict[str, dict[str, Any]] = {}
    for entry in _stages(root)[stage].get("params") or []:
        files = {"params.yaml": [entry]} if isinstance(entry, str) else dict(entry)
        for file, keys in files.items():
            full = inside(root, str(file))
            if full is None:
                raise ValueError(f"params file {file} is not inside the workspace")
            doc = yaml.safe_load(full.read_text()) or {}
            if not keys:  # a file listed without keys: all of it
                values.setdefault(file, {}).update(doc)
            for key in keys or []:
                value: Any = doc
                for part in str(key).split("."):
                    value = value[part]
                values.setdefault(file, {})[str(key)] = value
    return values


def params_md5(root: Path, stage: str) -> str:
    text = json.dumps(stage_params(root, stage), sort_keys=True, separators=(",", ":"))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _state(state: object) -> str:
    """`modified`, or for params `(train.C modified)`."""
    if isinstance(state, dict):
        return "(" + ", ".join(f"{k} {v}" for k, v in state.items()) + ")"
    return str(state)


def _status_lines(status: Mapping[str, Any]) -> list[str]:
    """`dvc status` output as one line per stage or .dvc file that differs."""
    lines = []
    for name, changes in sorted(status.items()):
        parts = []
        for change in changes if isinstance(changes, list) else [changes]:
            if change == ALWAYS_CHANGED:
                continue
            if isinstance(change, dict):
                for kind, paths in change.items():
                    if isinstance(paths, dict):
                        listed = ", ".join(f"{path} {_state(s)}" for path, s in paths.items())
                        parts.append(f"{kind}: {listed}")
                    else:
                        parts.append(f"{kind}: {paths}")
            else:
                parts.append(str(change))
        if parts or changes != [ALWAYS_CHANGED]:
            lines.append(f"dvc status: {name}: {'; '.join(parts) or 'changed'}")
    return lines


def differences(
    root: Path, files: Mapping[str, str], params: str | None, stage: str = p.TRAIN_STAGE
) -> list[str]:
    """One line per way the workspace at root differs from what the run recorded; none
    means identical: every file's md5, the params md5 and a clean `dvc status`."""
    lines = []
    for path, want in sorted(files.items()):
        full = inside(root, path)
        if full is None:
            lines.append(f"{path}: not a path inside the workspace, not read")
        elif (have := path_md5(full)) is None:
            lines.append(f"{path}: missing (the run recorded md5 {want})")
        elif have != want:
            lines.append(f"{path}: md5 {have}, the run recorded {want}")
    if params:
        try:
            have = params_md5(root, stage)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            lines.append(f"params of stage {stage}: unreadable ({type(exc).__name__}: {exc})")
        else:
            if have != params:
                lines.append(f"params of stage {stage}: md5 {have}, the run recorded {params}")
    return lines + (_status_lines(dvc.status(root)) if dvc.is_repo(root) else [])


# -- --repro -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    name: str
    recorded: str
    now: str
    equal: bool


@dataclass(frozen=True)
class Repro:
    run_id: str | None  # the re-run's MLflow run
    registered: str | None  # a model version the re-run registered (it should register none)
    comparisons: list[Comparison]

    @property
    def equal(self) -> bool:
        return all(c.equal for c in self.comparisons) and self.registered is None


def rerun(root: Path, run_id: str, env: Mapping[str, str], log: Any = None) -> None:
    """`dvc repro --force` in root, against the stack, as a verification re-run of run_id
    (the train stage then tags the run `mlrig.repro_of` and registers no model version)."""
    with temporary_env({**env, p.REPRO_OF_ENV: run_id}):
        dvc.run_cli(root, "repro", "--force", log=log, timeout=1800)


def _metric_files(root: Path) -> list[Path]:
    """The model's metric files (the run logs them as test_*), not the data's quality."""
    found = []
    for spec in _stages(root).values():
        for entry in spec.get("metrics") or []:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            full = inside(root, str(path))
            if str(path) != DATA_QUALITY_FILE and full is not None:
                found.append(full)
    return found


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def compare(root: Path, metrics: Mapping[str, float], model_md5: str | None) -> Repro:
    """The re-run at root against the run's recorded test_* metrics and model hash."""
    comparisons = []
    for file in _metric_files(root):
        values = json.loads(file.read_text()) if file.is_file() else {}
        for key, value in sorted(values.items()):
            if not isinstance(value, int | float):
                continue
            name = f"{METRIC_PREFIX}{key}"
            want = metrics.get(name)
            equal = want is not None and math.isclose(want, value, rel_tol=1e-9, abs_tol=1e-12)
            comparisons.append(Comparison(name, _number(want), _number(value), equal))
    model = inside(root, p.MODEL_FILE)
    if model_md5:
        have = file_md5(model) if model is not None and model.is_file() else "missing"
        comparisons.append(Comparison(f"{p.MODEL_FILE} md5", model_md5, have, have == model_md5))
    run_file = inside(root, p.RUN_FILE)
    info = json.loads(run_file.read_text()) if run_file is not None and run_file.is_file() else {}
    version = info.get("version")
    return Repro(info.get("run_id"), str(version) if version else None, comparisons)
