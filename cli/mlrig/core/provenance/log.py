"""The provenance a team's own training script records (`mlrig.api.log_provenance()`): the
same run tags the template's train stage writes, so `trace` and `checkout` treat an adopted
repository's runs like a generated one's.

Tags: `mlflow.source.git.commit`, `mlrig.git.remote` (no credentials), `mlrig.git.dirty`
and `mlrig.git.dirty_files`, the DVC experiment (`mlrig.exp.*`, under `dvc exp run`),
`dvc.stage`, `dvc.dep.<path>` / `dvc.out.<path>` (the hashes DVC writes to dvc.lock: a
file's MD5, a folder's `<md5>.dir`) and `mlrig.params.md5`; the stage's params are logged
as params (`train.seed`, `other.yaml:key`) unless the run has them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlrig.adapters import git
from mlrig.core.provenance import _checkout_verify as verify
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.errors import UsageError

MAX_DIRTY_FILES = 50
MAX_TAG_CHARS = 5000  # what every MLflow server accepts as a tag value
DVC_STAGE_ENV = "DVC_STAGE"  # set by `dvc repro` / `dvc exp run` for each stage's command
DVC_ROOT_ENV = "DVC_ROOT"


def _paths(entries: list[Any] | None) -> list[str]:
    """deps/outs/metrics/plots entries are a path or {path: options}."""
    return [str(next(iter(e))) if isinstance(e, dict) else str(e) for e in entries or []]


def stage_name(stage: str | None) -> str:
    """The stage: given, else the one `dvc repro` runs this process for (DVC_STAGE)."""
    name = stage or os.environ.get(DVC_STAGE_ENV, "")
    name = name.rsplit(":", 1)[-1]  # `dvc.yaml:train` when dvc.yaml is not the default one
    if not name:
        raise UsageError(
            "which DVC stage is this? DVC_STAGE is set only under `dvc repro`/`dvc exp run`",
            hint="pass the stage: log_provenance(stage='train')",
        )
    return name


def _stages(root: Path) -> dict[str, Any]:
    import yaml

    file = root / p.PIPELINE_FILE
    if not file.is_file():
        raise UsageError(f"{root} has no {p.PIPELINE_FILE}", hint="run it in a DVC pipeline")
    doc = yaml.safe_load(file.read_text()) or {}
    return dict(doc.get("stages") or {}) if isinstance(doc, dict) else {}


def _not_provenance(path: str, outputs: list[str]) -> bool:
    """What a run writes (dvc.lock, the outputs, DVC's .gitignore beside them) is not a
    change of the code that made it."""
    if path == p.LOCK_FILE:
        return True
    for out in outputs:
        out = out.rstrip("/")
        parent = os.path.dirname(out)
        if path == out or path.startswith(f"{out}/"):
            return True
        if path == (f"{parent}/.gitignore" if parent else ".gitignore"):
            return True
    return False


def dirty_files(root: Path, outputs: list[str]) -> dict[str, str]:
    """{path: md5 | "deleted"} of every source file that differs from HEAD."""
    changed = {*git.changed_tracked_files(root), *git.untracked_files(root)}
    files: dict[str, str] = {}
    for path in sorted(changed):
        if _not_provenance(path, outputs):
            continue
        full = root / path
        files[path] = verify.file_md5(full) if full.is_file() else p.DIRTY_DELETED
    return files


def strip_credentials(url: str) -> str:
    """https://user:token@host/x -> https://host/x; ssh://git:secret@host/x ->
    ssh://git@host/x; scp-like remotes and paths as they are."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    if "@" not in netloc:
        return url
    user, host = netloc.rsplit("@", 1)
    netloc = host if scheme in ("http", "https") else f"{user.split(':', 1)[0]}@{host}"
    return f"{scheme}://{netloc}" + (f"/{path}" if path or rest.endswith("/") else "")


def experiment_tags(env: Mapping[str, str]) -> dict[str, str]:
    """What `dvc exp run` tells a stage: the experiment's name, baseline and git ref."""
    name, baseline = env.get("DVC_EXP_NAME"), env.get("DVC_EXP_BASELINE_REV")
    tags: dict[str, str] = {}
    if name:
        tags[p.TAG_EXP_NAME] = name
    if baseline:
        tags[p.TAG_EXP_BASELINE] = baseline
    if name and baseline and re.fullmatch(r"[0-9a-f]{40}", baseline):
        tags[p.TAG_EXP_REF] = f"{p.EXP_REFS}/{baseline[:2]}/{baseline[2:]}/{name}"
    return tags


def flat_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{file: {key: value}} as MLflow params: params.yaml's keys bare, others `file:key`."""
    flat: dict[str, str] = {}
    for file, values in params.items():
        for key, value in values.items():
            name = key if file == "params.yaml" else f"{file}:{key}"
            flat[name] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return flat


def provenance(
    root: Path, stage: str, env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, params) of a run of `stage` in the workspace at root, as it is now: call it
    once the stage's outputs are written (an output not there yet gets no tag)."""
    stages = _stages(root)
    if stage not in stages or not isinstance(stages[stage], dict):
        raise UsageError(
            f"{p.PIPELINE_FILE} has no stage {stage!r}",
            hint=f"its stages: {', '.join(stages) or 'none'}",
        )
    spec = stages[stage]
    outputs = [
        path
        for s in stages.values()
        if isinstance(s, dict)
        for kind in ("outs", "metrics", "plots")
        for path in _paths(s.get(kind))
    ]
    tags = {p.TAG_GIT_COMMIT: git.head(root), p.TAG_STAGE: stage}
    remote = strip_credentials(git.remote_url(root) or "")
    if remote and provenance_input.remote_problem(remote) is None:  # else trace refuses it
        tags[p.TAG_GIT_REMOTE] = remote
    dirty = dirty_files(root, outputs)
    tags[p.TAG_GIT_DIRTY] = "true" if dirty else "false"
    if dirty:
        text = json.dumps(dirty, sort_keys=True)
        too_many = len(dirty) > MAX_DIRTY_FILES or len(text) > MAX_TAG_CHARS
        tags[p.TAG_DIRTY_FILES] = json.dumps({p.DIRTY_TOO_MANY: "too many"}) if too_many else text
    tags.update(experiment_tags(env))
    for prefix, paths in (
        (p.TAG_DEP_PREFIX, spec.get("deps")),
        (p.TAG_OUT_PREFIX, spec.get("outs")),
    ):
        for path in _paths(paths):
            full = verify.inside(root, path)
            md5 = verify.path_md5(full) if full is not None else None
            if md5:
                tags[f"{prefix}{path}"] = md5
    params = verify.stage_params(root, stage) if spec.get("params") else {}
    if params:
        tags[p.TAG_PARAMS_MD5] = verify.params_md5(root, stage)
    rerun = env.get(p.REPRO_OF_ENV)
    if rerun:
        tags[p.TAG_REPRO_OF] = rerun
    return tags, flat_params(params)


def workspace(repo: Path | None, env: Mapping[str, str]) -> Path:
    """The repository the run is made in: repo, else DVC_ROOT, else the one holding cwd."""
    where = repo or Path(env.get(DVC_ROOT_ENV) or Path.cwd())
    if not git.is_repo(where):
        raise UsageError(f"{where} is not in a git repository", hint="pass repo=")
    return git.toplevel(where)


def log_provenance(
    stage: str | None = None, *, repo: Path | None = None, run_id: str | None = None
) -> dict[str, str]:
    """Tag the MLflow run (default: the active one) with the provenance of `stage` in the
    repository; return the tags."""
    from mlrig.adapters import mlflow as mlflow_adapter

    env = dict(os.environ)
    root = workspace(repo, env)
    tags, params = provenance(root, stage_name(stage), env)
    mlflow_adapter.tag_run(run_id, tags, params)
    return tags
