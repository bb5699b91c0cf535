"""Is a restored workspace the run's workspace? Every file hash and the params hash the run
recorded, and `dvc status`; with --repro, the re-run's metrics and model against the recorded.

Hashes are computed the way the pipeline's train stage records them: plain MD5 of a file's
bytes (what DVC 3 writes to dvc.lock), and for params the MD5 of the stage's params as
`{file: {key: value}}` in compact, sorted JSON.

A directory out (md5 `<hex>.dir`: a partitioned snapshot `data/snapshots/`, or any other
folder DVC tracks) is checked file by file against its DVC manifest (read from the workspace's
cache, else the remote, and validated by core/shared/dvc_tables.py): each file that is
missing, differs or was not in the run's directory is one line naming it; when the manifest
cannot be read, one line says the files cannot be named.
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
from mlrig.core.shared import dvc_tables
from mlrig.core.stack.env import temporary_env
from mlrig.errors import MlrigError

ALWAYS_CHANGED = "always changed"  # how `dvc status` lists a stage that runs every time (ingest)
DATA_QUALITY_FILE = "metrics/data_quality.json"  # the validate stage's metrics of the snapshot
METRIC_PREFIX = "test_"  # the evaluate stage logs metrics.json's keys as test_<key>


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dir_files(folder: Path) -> dict[str, str]:
    """{relpath: md5} of every file in folder, as DVC lists a directory."""
    return {f.relative_to(folder).as_posix(): file_md5(f) for f in folder.rglob("*") if f.is_file()}


def listing_md5(files: Mapping[str, str]) -> str:
    """The hash DVC 3 records for a folder: the MD5 of its sorted JSON listing of
    {md5, relpath} per file, with `.dir` appended."""
    entries = [{"md5": files[rel], "relpath": rel} for rel in sorted(files)]
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def dir_md5(folder: Path) -> str:
    return listing_md5(dir_files(folder))


def cache_object(root: Path, md5: str) -> bytes | None:
    """An object of the workspace's DVC cache (DVC 3's .dvc/cache/files/md5/), or None."""
    if not dvc_tables.DVC_HASH.fullmatch(md5):
        return None
    try:
        return (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes()
    except OSError:
        return None


def cached_intact(root: Path, md5: str) -> bool:
    data = cache_object(root, md5)
    return data is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() == md5


def dir_differences(
    path: str, folder: Path, want: str, fetch: dvc_tables.Fetch, where: str
) -> tuple[list[str], int]:
    """(one line per file of the directory out that is not the run's, the files verified):
    each file against the run's manifest, by name and md5."""
    files = dir_files(folder)
    have = listing_md5(files)
    try:
        entries = dvc_tables.manifest(fetch, path, want, where)
    except MlrigError as exc:
        if have == want:  # the listing's md5 covers every file's md5
            return [], len(files)
        return [
            f"{path}: md5 {have}, the run recorded {want}; not named file by file: {exc.message}"
        ], 0
    recorded = {e.relpath: e.md5 for e in entries}
    lines = []
    for rel in sorted(set(recorded) | set(files), key=dvc_tables.partition_order):
        if rel not in files:
            lines.append(f"{path}/{rel}: missing (the run recorded md5 {recorded[rel]})")
        elif rel not in recorded:
            lines.append(f"{path}/{rel}: not in the run's {path}")
        elif files[rel] != recorded[rel]:
            lines.append(f"{path}/{rel}: md5 {files[rel]}, the run recorded {recorded[rel]}")
    if not lines and have != want:  # cannot be: the manifest's md5 was checked
        lines.append(f"{path}: md5 {have}, the run recorded {want}")
    return lines, 0 if lines else len(recorded)


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


@dataclass(frozen=True)
class Verification:
    differences: list[str]  # one line per way the workspace is not the run's; none: identical
    directories: dict[str, int]  # {directory out: its files, each md5-verified}


def differences(
    root: Path, files: Mapping[str, str], params: str | None, stage: str = p.TRAIN_STAGE
) -> list[str]:
    return verify(root, files, params, stage).differences


def verify(
    root: Path,
    files: Mapping[str, str],
    params: str | None,
    stage: str = p.TRAIN_STAGE,
    remote: dvc_tables.Fetch = lambda _md5: None,
    where: str = "the workspace's cache",
) -> Verification:
    """Every file's md5 (a directory's file by file, its manifest from the workspace's cache
    or else `remote`), the params md5 and a clean `dvc status`."""

    def fetch(md5: str) -> bytes | None:
        return cache_object(root, md5) or remote(md5)

    lines: list[str] = []
    directories: dict[str, int] = {}
    for path, want in sorted(files.items()):
        full = inside(root, path)
        if full is None:
            lines.append(f"{path}: not a path inside the workspace, not read")
        elif dvc_tables.is_dir(want) and full.is_dir():
            found, verified = dir_differences(path, full, want, fetch, where)
            lines += found
            if verified:
                directories[path] = verified
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
    status = _status_lines(dvc.status(root)) if dvc.is_repo(root) else []
    return Verification(lines + status, directories)


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
