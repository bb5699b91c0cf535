"""`mlrig trace`: any image, model version or run back to its run, code, data and restore
point, as one ProvenanceRecord (MLflow through its REST API, so it answers in a second)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlrig.adapters import git
from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion, Run
from mlrig.contract import StackOutputs
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.core.provenance import resolve
from mlrig.core.provenance._inputs import Refused
from mlrig.core.provenance.record import (
    CodeRecord,
    ComputeRecord,
    DataRecord,
    ImageRecord,
    ModelRecord,
    ProvenanceRecord,
    RunRecord,
    WindowsRecord,
)
from mlrig.core.shared.names import machine_user
from mlrig.errors import MlrigError, UsageError

_MODEL = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_RUN = re.compile(r"^(runs:/)?(?P<run>[0-9a-f]{32})(/.*)?$")
_ALIAS = re.compile(r"^@(?P<alias>[A-Za-z0-9_-]+)$")
ROLES: tuple[tuple[Literal["dep", "out"], str], ...] = (
    ("dep", p.TAG_DEP_PREFIX),
    ("out", p.TAG_OUT_PREFIX),
)
REF_FORMS = (
    "an image (name:tag, host/repo@sha256:…, sha256:…, image ID), models:/NAME/VERSION, "
    "models:/NAME@ALIAS, @ALIAS, models:/m-ID (an MLflow 3 logged model), runs:/ID or a run ID"
)


@dataclass(frozen=True)
class Parsed:
    kind: str  # "model", "logged" (an MLflow 3 logged model), "run" or "image"
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    logged_id: str | None = None  # m-<32 hex>, checked by record.logged_model_id


def parse(ref: str, project: str | None = None) -> Parsed:
    """What kind of thing REF names; @ALIAS needs the repo's project name."""
    ref = ref.strip()
    if logged := p.logged_model_id(ref):
        return Parsed("logged", logged_id=logged)
    if m := _MODEL.fullmatch(ref):
        return Parsed("model", m["name"], m["version"], m["alias"])
    if m := _ALIAS.fullmatch(ref):
        if not project:
            raise UsageError(
                f"{ref} needs the model's name: run it inside the generated repo or pass --repo",
                hint="or use models:/NAME@ALIAS",
            )
        return Parsed("model", project, None, m["alias"])
    if m := _RUN.fullmatch(ref):
        return Parsed("run", run_id=m["run"])
    if ref.startswith(("models:", "runs:")) or not ref:
        raise UsageError(f"cannot read {ref!r} as a reference", hint=f"use {REF_FORMS}")
    return Parsed("image")


def find_repo(repo: Path | None) -> Path | None:
    """The git repository to search for restore points: --repo, else the one holding cwd."""
    where = repo or Path.cwd()
    if not git.is_repo(where):
        if repo is not None:
            raise UsageError(f"--repo {repo} is not a git repository")
        return None
    return git.toplevel(where)


def project_name(repo: Path | None) -> str | None:
    from mlrig.core.shared.names import load_answers
    from mlrig.paths import ANSWERS_FILE

    answers = (repo / ANSWERS_FILE) if repo else None
    if answers is None or not answers.is_file():
        return None
    return str(load_answers(answers)["project_name"])


def connect(stack: str | None, repo: Path | None) -> tuple[MlflowRest, StackOutputs | None]:
    """The tracking server (an exported MLFLOW_TRACKING_URI wins unless --stack is given)
    and the stack's outputs when one is known (its registry is searched for images)."""
    from mlrig import contract
    from mlrig.core.stack import env as stack_env
    from mlrig.core.stack import stacks

    if os.environ.get("MLFLOW_TRACKING_URI") and not stack:
        try:
            outputs: StackOutputs | None = contract.load(stacks.resolve_name(None, repo=repo))
        except MlrigError:
            outputs = None
        return MlflowRest.from_env(os.environ), outputs
    outputs = contract.load(stacks.resolve_name(stack, repo=repo))
    return MlflowRest.from_env(stack_env.client_env(outputs)), outputs


def _model_of_run(rest: MlflowRest, run_id: str) -> ModelVersion | None:
    found = rest.search_model_versions(f"run_id='{run_id}'")
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return rest.model_version(newest.name, newest.version)  # search leaves aliases out


def _images(found: list[ImageRecord], mv: ModelVersion | None) -> list[ImageRecord]:
    """The images traced through plus every push the model version records."""
    from mlrig.core.provenance._trace_image import records_from_refs

    pushed = records_from_refs(mv.tags.get(p.MV_IMAGE_REFS, "").split()) if mv else []
    seen, out = set(), []
    for image in [*found, *pushed]:
        if (image.reference or image.digest) not in seen:
            seen.add(image.reference or image.digest)
            out.append(image)
    return out


def trace(ref: str, *, stack: str | None = None, repo: Path | None = None) -> ProvenanceRecord:
    """The provenance record of whatever REF names."""
    from mlrig.core.provenance import _trace_image as trace_image

    where = find_repo(repo)
    parsed = parse(ref, project_name(where))
    rest, outputs = connect(stack, where)
    images: list[ImageRecord] = []
    refused: list[Refused] = []
    labels: dict[str, str] = {}
    mv: ModelVersion | None = None
    run_id = parsed.run_id
    if parsed.kind == "model" and parsed.name:
        if parsed.alias:
            mv = rest.model_version_by_alias(parsed.name, parsed.alias)
        else:
            mv = rest.model_version(parsed.name, str(parsed.version))
    elif parsed.kind == "image":
        found = trace_image.find(ref, rest, outputs)
        images, mv, refused = found.images, found.version, found.refused
        labels = found.labels
        name, version = labels.get(p.LABEL_MODEL_NAME), labels.get(p.LABEL_MODEL_VERSION)
        if mv is None and name and version:
            mv = rest.model_version(name, version)
        run_id = found.labels.get(p.LABEL_RUN_ID)
        if mv is None and not run_id:
            return trace_image.unlabelled(ref, found)
    elif parsed.kind == "logged" and parsed.logged_id:
        run_id = rest.logged_model_run(parsed.logged_id)
        if not run_id:
            raise UsageError(
                f"logged model {parsed.logged_id} was logged outside any MLflow run",
                hint="log it inside `with mlflow.start_run():` so its run records the code",
            )
    if mv is not None:
        run_id = mv.run_id or run_id
    if not run_id:
        raise UsageError(f"{ref} names no MLflow run", hint="was the model logged from a run?")
    if not provenance_input.RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"{ref} names run {run_id[:80]!r}, which is no MLflow run ID",
            hint="the model version's run_id is not one MLflow made: ask who registered it",
        )
    run = rest.run(run_id)
    if mv is None and parsed.kind == "run":
        mv = _model_of_run(rest, run_id)
    if not resolve.has_provenance(run.tags):  # not made by the pipeline nor log_provenance
        from mlrig.core.provenance import _degraded

        return _degraded.record(
            ref,
            run_record(rest, run, mv),
            model_record(mv),
            _images(images, mv),
            where,
            refused,
            labels,
        )
    return assemble(ref, rest, run, mv, _images(images, mv), where, refused)


def model_record(mv: ModelVersion | None) -> ModelRecord | None:
    if mv is None:
        return None
    return ModelRecord(name=mv.name, version=mv.version, aliases=list(mv.aliases), tags=mv.tags)


def run_record(rest: MlflowRest, run: Run, mv: ModelVersion | None) -> RunRecord:
    """The run as MLflow returned it, with who logged it and whether that was the
    repository's machine identity."""
    experiment = rest.experiment_name(run.experiment_id) if run.experiment_id else None
    user = provenance_input.printable(run.tags.get(provenance_input.TAG_USER))
    project = mv.name if mv else experiment
    identity = machine_user(project) if project else None
    return RunRecord(
        id=run.id,
        experiment_id=run.experiment_id,
        experiment=experiment,
        params=run.params,
        metrics=run.metrics,
        tags=run.tags,
        recorded_by=user,
        repository_identity=identity,
        recorded_by_repository_identity=provenance_input.repository_identity_of(user, identity),
    )


def assemble(
    ref: str,
    rest: MlflowRest,
    run: Run,
    mv: ModelVersion | None,
    images: list[ImageRecord],
    repo: Path | None,
    refused_labels: list[Refused] | None = None,
) -> ProvenanceRecord:
    """The record from the run's tags, its model version and the restore point in repo. The
    tags pass provenance_input first: a refused one is reported and used for nothing."""
    tags, refused = provenance_input.checked(run.tags)
    refused = [*(refused_labels or []), *refused]
    found, searched = resolve.resolve_anywhere(repo, run.id, tags)
    point = found.restore_point
    reason = found.reason
    if refused:
        reason = provenance_input.refused_reason(run.id, refused)
    restorable = found.restorable and not refused
    remote, in_dvc = resolve.storage(searched, point.sha if point else None)
    data = [
        DataRecord(
            path=path,
            md5=md5,
            role=role,
            remote=remote if in_dvc is None or path in in_dvc else None,
        )
        for role, prefix in ROLES
        for path, md5 in sorted(resolve.hashes(tags, prefix).items())
    ]
    windows = {
        k.removeprefix(p.TAG_TEMPORAL_PREFIX): v
        for k, v in tags.items()
        if k.startswith(p.TAG_TEMPORAL_PREFIX)
    }
    target = f"models:/{mv.name}/{mv.version}" if mv else f"runs:/{run.id}"
    return ProvenanceRecord(
        ref=ref,
        images=images,
        model=model_record(mv),
        run=run_record(rest, run, mv),
        code=CodeRecord(
            commit=tags.get(p.TAG_GIT_COMMIT),
            remote=tags.get(p.TAG_GIT_REMOTE),
            dirty=tags.get(p.TAG_GIT_DIRTY) == "true",
            dirty_files=resolve.dirty_files(tags),
            exp_name=tags.get(p.TAG_EXP_NAME),
            exp_baseline=tags.get(p.TAG_EXP_BASELINE),
            exp_ref=tags.get(p.TAG_EXP_REF),
            params_md5=tags.get(p.TAG_PARAMS_MD5),
            restore_point=point,
            restorable=restorable,
            reason=reason,
            source_name=provenance_input.printable(tags.get(p.TAG_SOURCE_NAME)),
        ),
        data=data,
        windows=WindowsRecord(**windows) if windows else None,
        compute=compute_record(tags),
        restore_command=f"mlrig checkout {target}" if restorable else None,
        refused=[r.line() for r in refused],
    )


def compute_record(tags: dict[str, str]) -> ComputeRecord | None:
    """The run's mlrig.compute.* tags, when they make a valid record (tags are input)."""
    from pydantic import ValidationError

    found = {
        k.removeprefix(p.TAG_COMPUTE_PREFIX): v
        for k, v in tags.items()
        if k.startswith(p.TAG_COMPUTE_PREFIX)
    }
    if not found:
        return None
    try:
        return ComputeRecord.model_validate(found)
    except ValidationError:
        return None
