"""Which model an image serves and where it came from: model URIs, the tracking server they
are read from, and the provenance (registry version, run, git commit, DVC hashes) for labels.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from mlrig import contract
from mlrig.adapters import git
from mlrig.adapters import mlflow as mlflow_adapter
from mlrig.core import serving_model, stacks
from mlrig.core.serving_model import Provenance
from mlrig.errors import ConfigError, UsageError

ANSWERS_FILE = stacks.ANSWERS_FILE
_RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-f]{8,64})(/|$)")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")
_URI_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/ID/PATH"


@contextlib.contextmanager
def tracking_env(stack: str | None, *, repo: Path | None = None) -> Iterator[None]:
    """MLflow client settings for a block: an exported MLFLOW_TRACKING_URI wins unless a
    stack is named; otherwise the stack `stacks.resolve_name` answers (repo: where to look)."""
    if mlflow_adapter.tracking_configured() and not stack:
        yield
        return
    outputs = contract.load(stacks.resolve_name(stack, repo=repo))
    with stacks.temporary_env(mlflow_adapter.client_settings(stacks.client_env(outputs))):
        yield


def default_model_uri(repo: Path) -> str:
    """The latest version of the registered model a generated repo trains (project_name)."""
    import yaml

    answers = repo / ANSWERS_FILE
    if not answers.exists():
        raise UsageError(
            f"no --model given and {repo} is not an mlrig-generated repo (no {ANSWERS_FILE})",
            hint="pass --model models:/NAME/VERSION",
        )
    try:
        name = (yaml.safe_load(answers.read_text()) or {}).get("project_name")
    except yaml.YAMLError as exc:
        raise ConfigError(f"{answers} is not valid YAML") from exc
    if not name:
        raise ConfigError(f"{answers} has no project_name", hint="pass --model")
    versions = mlflow_adapter.model_versions(name, uri=f"models:/{name}")
    if not versions:
        raise UsageError(
            f"registered model {name!r} has no versions yet",
            hint="train and register it first (`dvc repro`)",
        )
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def check_uri(uri: str) -> str:
    """A model the tracking server holds (models:/ or runs:/), so the image's labels can name
    its version or run; never a path or another scheme (`file:///etc` would pack /etc)."""
    if not uri.startswith(("models:", "runs:")):
        raise UsageError(
            f"--model {uri!r} is not an MLflow registry or run URI",
            hint=f"use {_URI_FORMS}; log a local model to MLflow first",
        )
    return uri


def describe(uri: str) -> tuple[str | None, str | None, str | None]:
    """(registered name, version, run id) behind a model URI."""
    check_uri(uri)
    if run := _RUN_URI.match(uri):
        return None, None, run["run"]
    match = _MODEL_URI.match(uri)
    if not match:
        raise UsageError(f"cannot parse model URI {uri!r}", hint=f"use {_URI_FORMS}")
    name = match["name"]
    if match["alias"]:
        mv = mlflow_adapter.model_version_by_alias(name, match["alias"], uri=uri)
    elif match["version"] == "latest":
        versions = mlflow_adapter.model_versions(name, uri=uri)
        if not versions:
            raise UsageError(f"registered model {name!r} has no versions")
        mv = max(versions, key=lambda v: int(v.version))
    else:
        mv = mlflow_adapter.model_version(name, match["version"], uri=uri)
    return mv.name, mv.version, mv.run_id


def provenance(uri: str, repo: Path | None) -> Provenance:
    """Where the model came from: its registry entry, and the commit and DVC hashes of the
    repo it was built from (else the commit its MLflow run recorded). Best effort past the URI.
    """
    name, version, run_id = describe(uri)
    commit = remote = None
    dvc: dict[str, str] = {}
    if repo is not None:
        commit, remote = git.head_and_origin(repo)
        dvc = serving_model.dvc_lock_hashes(repo / "dvc.lock")
    if not commit and run_id:
        commit = mlflow_adapter.run_tag(run_id, "mlflow.source.git.commit")
    return Provenance(uri, name, version, run_id, commit, remote, dvc)
