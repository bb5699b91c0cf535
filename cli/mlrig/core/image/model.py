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
from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.provenance import record as p
from mlrig.core.provenance import resolve as provenance_resolve
from mlrig.core.shared.serving_model import Provenance
from mlrig.core.stack import env as stack_env
from mlrig.core.stack import stacks
from mlrig.errors import MlrigError, UsageError

ANSWERS_FILE = stacks.ANSWERS_FILE
_RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-f]{8,64})(/|$)")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")
_URI_FORMS = (
    "models:/NAME/VERSION, models:/NAME@ALIAS, models:/m-ID (a logged model) or runs:/ID/PATH"
)


@contextlib.contextmanager
def tracking_env(
    stack: str | None, *, repo: Path | None = None, model_uri: str | None = None
) -> Iterator[None]:
    """MLflow client settings for a block: an exported MLFLOW_TRACKING_URI wins unless a
    stack is named; otherwise the stack `stacks.resolve_name` answers (repo: where to look).
    Inside a generated repo, reading that repo's own model (the default, or a URI naming it)
    logs in as the repo's machine identity; anything else as the stack's admin."""
    if mlflow_adapter.tracking_configured() and not stack:
        yield
        return
    outputs = contract.load(stacks.resolve_name(stack, repo=repo))
    project = _repo_project(repo or Path.cwd())
    match = _MODEL_URI.fullmatch(model_uri or "")
    if project and (model_uri is None or (match and match.group("name") == project)):
        from mlrig.core.access import identities

        env = identities.acting_env(outputs, project)
    else:
        env = stack_env.client_env(outputs)
    with stack_env.temporary_env(mlflow_adapter.client_settings(env)):
        yield


def _repo_project(repo: Path) -> str | None:
    from mlrig.core.access import identities

    if not (repo / ANSWERS_FILE).is_file():
        return None
    try:
        return identities.project_of(repo)
    except MlrigError:
        return None


def default_model_uri(repo: Path) -> str:
    """The latest version of the registered model a generated repo trains (project_name)."""
    from mlrig.core.shared.names import load_answers

    answers = repo / ANSWERS_FILE
    if not answers.is_file():
        raise UsageError(
            f"no --model given and {repo} is not an mlrig-generated repo (no {ANSWERS_FILE})",
            hint="pass --model models:/NAME/VERSION",
        )
    name = load_answers(answers)["project_name"]
    versions = mlflow_adapter.model_versions(name, uri=f"models:/{name}")
    if not versions:
        raise UsageError(
            f"registered model {name!r} has no versions yet",
            hint="train and register it first (`dvc repro`)",
        )
    # a version whose retrain was undone is in no commit: never the default
    kept = [v for v in versions if v.tags.get(p.TAG_UNDONE) != "true"]
    if not kept:
        raise UsageError(
            f"every version of registered model {name!r} was registered by a retrain that "
            "was undone",
            hint="retrain it (`mlrig retrain`), or pass --model models:/NAME/VERSION",
        )
    return f"models:/{name}/{max(int(v.version) for v in kept)}"


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
    if logged := p.logged_model_id(uri):  # MLflow 3's log_model answer, not registered
        return None, None, mlflow_adapter.logged_model_run(logged, uri=uri)
    if uri.startswith("models:/m-"):
        raise UsageError(
            f"cannot parse model URI {uri!r}: a logged model's id is m- and 32 hex digits",
            hint="copy the URI log_model returned (model_info.model_uri)",
        )
    match = _MODEL_URI.fullmatch(uri)
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
    """Where the model came from, as its run recorded it: the registry entry, the run's
    commit (its restore point when `repo` holds one: the commit or experiment whose dvc.lock
    records the run), experiment, dirtiness and DVC hashes. Best effort past the URI: the
    repo the build runs in says nothing about a run made elsewhere."""
    name, version, run_id = describe(uri)
    tags = run_tags(run_id) if run_id else {}
    dvc = {
        **provenance_resolve.hashes(tags, p.TAG_DEP_PREFIX),
        **provenance_resolve.hashes(tags, p.TAG_OUT_PREFIX),
    }
    commit, exp_ref = tags.get(p.TAG_GIT_COMMIT), tags.get(p.TAG_EXP_REF)
    if run_id and repo is not None and provenance_resolve.has_provenance(tags):
        where = git.toplevel(repo) if git.is_repo(repo) else None
        found = provenance_resolve.resolve(where, run_id, tags)
        if found.restore_point:
            commit = found.restore_point.sha
            exp_ref = found.restore_point.ref or exp_ref
    return Provenance(
        uri,
        name,
        version,
        run_id,
        commit,
        tags.get(p.TAG_GIT_REMOTE),
        dvc,
        git_dirty=tags.get(p.TAG_GIT_DIRTY),
        exp_name=tags.get(p.TAG_EXP_NAME),
        exp_ref=exp_ref,
    )


def run_tags(run_id: str) -> dict[str, str]:
    """Every tag of the run, read from the tracking server the build talks to; {} when it
    cannot be read (provenance never stops a build)."""
    import os

    try:
        return MlflowRest.from_env(os.environ).run(run_id).tags
    except MlrigError:
        return {}
